"use strict";
// The sandbox settings page: provider cards, a form built from the provider's schema, Test connection and
// Save, all through the staff REST API (session cookie + CSRF token).
//
// The form always belongs to exactly one provider (`form.provider`): it is rendered for it, read for it,
// and sent under its name, so a card switch in flight can never send one provider's fields under another's
// name. A schema answer for a card that is no longer chosen is dropped.
//
// Until a form is on screen, the controls that act on it are disabled (and ignore a submit that gets through):
// there is nothing to test or save yet. After a refused activation, focus goes to the safe choice (fixing the
// settings), and "Activate anyway" stays disabled until its confirmation is ticked: no stray Enter activates a
// provider that just failed its test.
(() => {
  const api = {
    providers: "/api/v1/providers",
    schema: (name) => `/api/v1/providers/${encodeURIComponent(name)}/schema`,
    config: "/api/v1/sandbox/config",
    test: "/api/v1/sandbox/test",
  };
  const state = { providers: [], stored: {}, selected: null, selection: 0, busy: false };
  const form = { provider: null, schema: null, pristine: "" };
  const $ = (id) => document.getElementById(id);

  function csrfToken() {
    const match = document.cookie.match(/(?:^|; )csrftoken=([^;]+)/);
    return match ? decodeURIComponent(match[1]) : "";
  }

  async function request(method, url, body) {
    const response = await fetch(url, {
      method,
      credentials: "same-origin",
      headers: { "Content-Type": "application/json", "X-CSRFToken": csrfToken(), Accept: "application/json" },
      body: body === undefined ? undefined : JSON.stringify(body),
    });
    let data = {};
    try { data = await response.json(); } catch (err) { data = { detail: response.statusText }; }
    return { ok: response.ok, status: response.status, data };
  }

  function element(tag, attributes = {}, children = []) {
    const node = document.createElement(tag);
    for (const [key, value] of Object.entries(attributes)) {
      if (key === "text") node.textContent = value;
      else if (value !== undefined && value !== null && value !== false) node.setAttribute(key, value === true ? "" : value);
    }
    for (const child of children) node.appendChild(child);
    return node;
  }

  function healthText(provider) {
    if (!provider.configured) return "not configured";
    if (provider.healthy) return "healthy";
    return `failing: ${provider.health_reason || "unknown reason"}`;
  }

  function checkedAt(provider) {
    if (!provider.configured || !provider.health_checked_at) return "";
    return ` (checked ${new Date(provider.health_checked_at).toLocaleTimeString()})`;
  }

  function renderCards() {
    const cards = $("provider-cards");
    const hadFocus = cards.contains(document.activeElement);
    cards.replaceChildren();
    for (const provider of state.providers) {
      const health = healthText(provider);
      const kind = !provider.configured ? "unconfigured" : provider.healthy ? "healthy" : "unhealthy";
      const title = element("span", { class: "card-title" }, [
        element("span", { class: `dot ${kind}`, "aria-hidden": "true" }),
        document.createTextNode(provider.label),
      ]);
      if (provider.active) title.appendChild(element("span", { class: "badge", text: "active" }));
      const chosen = provider.name === state.selected;
      const card = element("button", {
        type: "button", class: `card${chosen ? " selected" : ""}`, "data-provider": provider.name,
        "aria-pressed": String(chosen),
      }, [
        title,
        element("span", { class: "meta", text: provider.description }),
        element("span", { class: "meta", text: `Languages: ${provider.languages.join(", ")}` }),
        element("span", { class: `meta health ${kind}`, "data-health": provider.name,
          text: `${health}${checkedAt(provider)}` }),
      ]);
      card.addEventListener("click", () => choose(provider.name));
      cards.appendChild(card);
      if (chosen && hadFocus) card.focus();
    }
  }

  function inputFor(field, value) {
    const id = `field-${field.name}`;
    const common = { id, name: field.name, "aria-describedby": `${id}-help ${id}-errors`,
      "aria-required": field.required ? "true" : undefined };
    if (field.type === "select") {
      const select = element("select", common);
      for (const option of field.options) {
        select.appendChild(element("option", { value: option, text: option, selected: option === value }));
      }
      return select;
    }
    if (field.type === "boolean") {
      return element("input", { ...common, type: "checkbox", checked: Boolean(value) });
    }
    if (field.type === "integer") {
      return element("input", { ...common, type: "number", step: "1", min: field.min, max: field.max,
        value: value ?? "", class: "vIntegerField" });
    }
    if (field.secret) {
      // The stored secret is never sent to the page: leave blank to keep it.
      return element("input", { ...common, type: "password", autocomplete: "new-password", value: "",
        placeholder: value ? `${value} (leave blank to keep)` : "", class: "vTextField" });
    }
    return element("input", { ...common, type: "text", value: value ?? "", class: "vTextField" });
  }

  function ready() { return form.schema !== null && !state.busy; }

  // Whether each control can be used now: the form's actions need a form and no request under way.
  function syncControls() {
    for (const id of ["test-button", "save-button", "set-active"]) $(id).disabled = !ready();
    $("activate-anyway").disabled = !ready() || !$("confirm-anyway").checked;
  }

  function renderForm(name, schema) {
    form.provider = name;
    form.schema = schema;
    const stored = state.stored[name] || {};
    const provider = state.providers.find((item) => item.name === name);
    $("provider-form").dataset.provider = name;
    $("form-title").textContent = provider.label;
    $("form-description").textContent = provider.description;
    $("set-active").checked = provider.active;
    const runtime = $("runtime-fields");
    runtime.replaceChildren();
    const deployment = $("deployment-rows");
    deployment.replaceChildren();
    for (const field of schema.fields) {
      if (field.scope !== "runtime") {
        deployment.appendChild(element("div", { class: "form-row" }, [
          element("span", { class: "label", text: field.label || field.name }),
          element("div", { class: "readonly", "data-field": field.name, text: String(field.value) }),
          element("div", { class: "help", text: field.description }),
        ]));
        continue;
      }
      const value = stored[field.name] ?? field.default;
      const label = element("label", { for: `field-${field.name}`, class: field.required ? "required" : "",
        text: field.label || field.name });
      if (field.required) label.appendChild(element("span", { class: "required-mark", "aria-hidden": "true", text: " *" }));
      runtime.appendChild(element("div", { class: "form-row", "data-field": field.name }, [
        label,
        inputFor(field, value),
        element("div", { class: "help", id: `field-${field.name}-help`, text: field.description || "" }),
        element("ul", { class: "errorlist", id: `field-${field.name}-errors` }),
      ]));
    }
    $("deployment-fields").hidden = !schema.fields.some((field) => field.scope !== "runtime");
    hideTestResult();
    hideActivationGuard();
    setStatus("", "");
    form.pristine = JSON.stringify(formValues());
  }

  function formValues() {
    const config = {};
    for (const field of form.schema.fields) {
      if (field.scope !== "runtime") continue;
      const input = document.getElementById(`field-${field.name}`);
      if (field.type === "boolean") config[field.name] = input.checked;
      else if (field.type === "integer") config[field.name] = input.value === "" ? null : Number(input.value);
      else config[field.name] = input.value;
    }
    return config;
  }

  function isDirty() {
    return form.schema !== null && JSON.stringify(formValues()) !== form.pristine;
  }

  function clearErrors() {
    for (const list of document.querySelectorAll("#runtime-fields .errorlist")) list.replaceChildren();
    for (const input of document.querySelectorAll("#runtime-fields [aria-invalid]")) input.removeAttribute("aria-invalid");
  }

  function showErrors(data) {
    clearErrors();
    hideTestResult();
    const fieldErrors = (data && data.config) || {};
    const general = [];
    let first = null;
    for (const [name, messages] of Object.entries(fieldErrors)) {
      const list = document.getElementById(`field-${name}-errors`);
      const input = document.getElementById(`field-${name}`);
      for (const message of [].concat(messages)) {
        if (list) list.appendChild(element("li", { text: message }));
        else general.push(`${name}: ${message}`);
      }
      if (input) {
        input.setAttribute("aria-invalid", "true");
        first = first || input;
      }
    }
    for (const [name, messages] of Object.entries(data || {})) {
      if (name !== "config") general.push(`${name}: ${[].concat(messages).join(" ")}`);
    }
    setStatus(general.join(" ") || "Please correct the errors below.", "error");
    if (first) first.focus();
  }

  function setStatus(message, kind) {
    const status = $("form-status");
    status.textContent = message;
    status.className = kind;
  }

  function hideTestResult() { $("test-result").hidden = true; }
  function hideActivationGuard() {
    $("activation-guard").hidden = true;
    $("confirm-anyway").checked = false;
    syncControls();
  }

  // One request at a time: Test connection and Save are disabled while either runs, with a spinner and the
  // seconds elapsed, so a slow probe never looks like a hang.
  async function busy(label, work) {
    state.busy = true;
    syncControls();
    const started = Date.now();
    const tick = () => setStatus(`${label}… ${((Date.now() - started) / 1000).toFixed(0)} s`, "busy");
    tick();
    const timer = setInterval(tick, 500);
    $("spinner").hidden = false;
    try {
      return await work();
    } finally {
      clearInterval(timer);
      $("spinner").hidden = true;
      state.busy = false;
      syncControls();
    }
  }

  async function choose(name) {
    if (name === state.selected || state.busy) return;
    if (isDirty() && !window.confirm("Discard your unsaved changes to this provider's settings?")) return;
    await select(name);
  }

  async function select(name) {
    state.selected = name;
    const selection = ++state.selection;
    renderCards();
    $("provider-form").setAttribute("aria-busy", "true");
    const response = await request("GET", api.schema(name));
    if (selection !== state.selection) return; // another card was chosen meanwhile
    renderForm(name, response.data);
    $("provider-form").removeAttribute("aria-busy");
    syncControls();
  }

  function showTestResult({ success, message, details }) {
    $("test-result").hidden = false;
    $("test-message").textContent = `${success ? "Success" : "Failed"}: ${message}`;
    $("test-exit-code").textContent = details.exit_code ?? "—";
    $("test-time").textContent = details.execution_time != null ? `${Number(details.execution_time).toFixed(3)} s` : "—";
    $("test-stdout").textContent = details.stdout || "";
    $("test-stderr").textContent = details.stderr || "";
    $("test-raw").textContent = details.raw || "";
    $("test-raw-detail").hidden = !details.raw;
  }

  async function testConnection() {
    if (!ready()) return;
    const name = form.provider;
    const config = formValues();
    clearErrors();
    hideTestResult();
    await busy("Testing", async () => {
      const response = await request("POST", api.test, { provider_type: name, config });
      if (name !== form.provider) return;
      if (!response.ok) return showErrors(response.data);
      showTestResult(response.data);
      setStatus(response.data.success ? "Connection works." : "Connection test failed.", response.data.success ? "ok" : "error");
    });
  }

  async function submit(activateAnyway) {
    if (!ready()) return;
    const name = form.provider;
    const body = { provider_type: name, config: formValues(), set_active: $("set-active").checked,
      activate_anyway: activateAnyway };
    clearErrors();
    hideActivationGuard();
    const blocked = await busy(body.set_active ? "Testing, then saving" : "Saving", async () => {
      const response = await request("PUT", api.config, body);
      if (name !== form.provider) return;
      if (response.status === 409 && response.data.code === "probe_failed") {
        showTestResult(response.data.probe);
        $("activation-reason").textContent = response.data.detail;
        $("confirm-anyway").checked = false;
        $("activation-guard").hidden = false;
        setStatus("Not saved: the provider failed its test.", "error");
        return true;
      }
      if (!response.ok) return showErrors(response.data);
      await load(name);
      setStatus(body.set_active ? "Saved; this provider is now active." : "Saved.", "ok");
      return false;
    });
    if (blocked) $("fix-settings").focus();
  }

  // The safe choice after a refusal: back to the fields, the first one ready to be corrected.
  function fixSettings() {
    const first = document.querySelector("#runtime-fields input, #runtime-fields select");
    (first || $("save-button")).focus();
  }

  async function load(selected) {
    const [providers, config] = await Promise.all([request("GET", api.providers), request("GET", api.config)]);
    state.providers = providers.data;
    state.stored = config.data.providers;
    state.selected = null;
    await select(selected || config.data.provider_type);
  }

  $("test-button").addEventListener("click", testConnection);
  $("provider-form").addEventListener("submit", (event) => { event.preventDefault(); submit(false); });
  $("activate-anyway").addEventListener("click", () => submit(true));
  $("confirm-anyway").addEventListener("change", syncControls);
  $("fix-settings").addEventListener("click", fixSettings);
  window.addEventListener("beforeunload", (event) => {
    if (isDirty()) event.preventDefault();
  });
  load();
})();

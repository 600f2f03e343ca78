"use strict";
// The sandbox settings page: provider cards, a form built from the provider's schema, Test connection and
// Save, all through the staff REST API (session cookie + CSRF token).
(() => {
  const api = {
    providers: "/api/v1/providers",
    schema: (name) => `/api/v1/providers/${encodeURIComponent(name)}/schema`,
    config: "/api/v1/sandbox/config",
    test: "/api/v1/sandbox/test",
  };
  const state = { providers: [], stored: {}, active: null, selected: null, schema: null };
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

  function renderCards() {
    const cards = $("provider-cards");
    cards.replaceChildren();
    for (const provider of state.providers) {
      const dot = element("span", { class: `dot ${provider.healthy ? "healthy" : "unhealthy"}`,
        title: provider.health_reason || (provider.healthy ? "healthy" : "not healthy") });
      const title = element("h3", {}, [dot, document.createTextNode(provider.label)]);
      if (provider.active) title.appendChild(element("span", { class: "badge", text: "active" }));
      const card = element("button", {
        type: "button", class: `card${provider.name === state.selected ? " selected" : ""}`, role: "listitem",
        "data-provider": provider.name, "aria-pressed": String(provider.name === state.selected),
      }, [
        title,
        element("div", { class: "meta", text: provider.description }),
        element("div", { class: "meta", text: `Languages: ${provider.languages.join(", ")}` }),
        element("div", { class: "meta", text: provider.configured ? "Configured" : "Not configured" }),
      ]);
      card.addEventListener("click", () => select(provider.name));
      cards.appendChild(card);
    }
  }

  function inputFor(field, value) {
    const id = `field-${field.name}`;
    const common = { id, name: field.name, "aria-describedby": `${id}-help` };
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
    if (field.multiline) {
      const area = element("textarea", { ...common, rows: "4", class: "vLargeTextField" });
      area.value = value ?? "";
      return area;
    }
    if (field.secret) {
      // The stored secret is never sent to the page: leave blank to keep it.
      return element("input", { ...common, type: "password", autocomplete: "new-password", value: "",
        placeholder: value ? `${value} (leave blank to keep)` : "", class: "vTextField" });
    }
    return element("input", { ...common, type: "text", value: value ?? "", class: "vTextField" });
  }

  function renderForm() {
    const schema = state.schema;
    const stored = state.stored[state.selected] || {};
    const provider = state.providers.find((item) => item.name === state.selected);
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
          element("label", { text: field.label || field.name }),
          element("div", { class: "readonly", "data-field": field.name, text: String(field.value) }),
          element("div", { class: "help", text: field.description }),
        ]));
        continue;
      }
      const value = stored[field.name] ?? field.default;
      const label = element("label", { for: `field-${field.name}`, class: field.required ? "required" : "",
        text: field.label || field.name });
      const row = element("div", { class: "form-row", "data-field": field.name }, [
        label,
        inputFor(field, value),
        element("div", { class: "help", id: `field-${field.name}-help`, text: field.description || "" }),
        element("ul", { class: "errorlist", id: `field-${field.name}-errors` }),
      ]);
      runtime.appendChild(row);
    }
    $("deployment-fields").hidden = !schema.fields.some((field) => field.scope !== "runtime");
    $("test-result").hidden = true;
    setStatus("", "");
  }

  function formValues() {
    const config = {};
    for (const field of state.schema.fields) {
      if (field.scope !== "runtime") continue;
      const input = document.getElementById(`field-${field.name}`);
      if (field.type === "boolean") config[field.name] = input.checked;
      else if (field.type === "integer") config[field.name] = input.value === "" ? null : Number(input.value);
      else config[field.name] = input.value;
    }
    return config;
  }

  function clearErrors() {
    for (const list of document.querySelectorAll("#runtime-fields .errorlist")) list.replaceChildren();
  }

  function showErrors(data) {
    clearErrors();
    const fieldErrors = (data && data.config) || {};
    const general = [];
    for (const [name, messages] of Object.entries(fieldErrors)) {
      const list = document.getElementById(`field-${name}-errors`);
      for (const message of [].concat(messages)) {
        if (list) list.appendChild(element("li", { text: message }));
        else general.push(`${name}: ${message}`);
      }
    }
    for (const [name, messages] of Object.entries(data || {})) {
      if (name !== "config") general.push(`${name}: ${[].concat(messages).join(" ")}`);
    }
    setStatus(general.join(" ") || "Please correct the errors below.", "error");
  }

  function setStatus(message, kind) {
    const status = $("form-status");
    status.textContent = message;
    status.className = kind;
  }

  async function select(name) {
    state.selected = name;
    renderCards();
    const response = await request("GET", api.schema(name));
    state.schema = response.data;
    renderForm();
  }

  async function testConnection() {
    clearErrors();
    setStatus("Testing…", "");
    $("test-button").disabled = true;
    try {
      const response = await request("POST", api.test, { provider_type: state.selected, config: formValues() });
      if (!response.ok) return showErrors(response.data);
      const { success, message, details } = response.data;
      $("test-result").hidden = false;
      $("test-message").textContent = `${success ? "Success" : "Failed"}: ${message}`;
      $("test-exit-code").textContent = details.exit_code ?? "—";
      $("test-time").textContent = details.execution_time != null ? `${Number(details.execution_time).toFixed(3)} s` : "—";
      $("test-stdout").textContent = details.stdout || "";
      $("test-stderr").textContent = details.stderr || "";
      setStatus(success ? "Connection works." : "Connection test failed.", success ? "ok" : "error");
    } finally {
      $("test-button").disabled = false;
    }
  }

  async function save(event) {
    event.preventDefault();
    clearErrors();
    const body = { provider_type: state.selected, config: formValues(), set_active: $("set-active").checked };
    const response = await request("PUT", api.config, body);
    if (!response.ok) return showErrors(response.data);
    await load(state.selected);
    setStatus(body.set_active ? "Saved; this provider is now active." : "Saved.", "ok");
  }

  async function load(selected) {
    const [providers, config] = await Promise.all([request("GET", api.providers), request("GET", api.config)]);
    state.providers = providers.data;
    state.stored = config.data.providers;
    state.active = config.data.provider_type;
    await select(selected || state.active);
  }

  $("test-button").addEventListener("click", testConnection);
  $("provider-form").addEventListener("submit", save);
  load();
})();

// The program a SaaS interpreter runs: fixed text, with only base64 data and a hex marker filled in below.
(async (codeB64, argumentsB64, marker) => {
  const code = Buffer.from(codeB64, "base64").toString("utf8");
  const args = JSON.parse(Buffer.from(argumentsB64, "base64").toString("utf8"));
  const report = (outcome) =>
    console.log("\n" + marker + Buffer.from(JSON.stringify(outcome)).toString("base64") + marker);
  const failure = (err) => ({ ok: false, error: { type: (err && err.name) || "Error", message: String(err && err.message || err).slice(0, 2000) } });
  const sandboxModule = { exports: {} };
  let main;
  try {
    const load = new Function("module", "exports", "require", code + "\n;return typeof main === 'undefined' ? undefined : main;");
    const topLevel = load(sandboxModule, sandboxModule.exports, typeof require === "undefined" ? undefined : require);
    main = sandboxModule.exports.main !== undefined ? sandboxModule.exports.main : topLevel;
  } catch (err) {
    console.error(err && err.stack ? err.stack : String(err));
    return report(failure(err));
  }
  if (main === undefined) {
    if (Object.keys(args).length) return report({ ok: false, error: { type: "MissingMain", message: "code must define main() when arguments are given" } });
    return report({ ok: true, script: true });
  }
  if (typeof main !== "function") return report({ ok: false, error: { type: "MainNotCallable", message: "main is not callable" } });
  let value;
  try {
    value = await main(args);
  } catch (err) {
    console.error(err && err.stack ? err.stack : String(err));
    return report(failure(err));
  }
  try {
    const text = JSON.stringify(value === undefined ? null : value);
    if (text === undefined) throw new TypeError("main() returned a value that is not JSON");
    report({ ok: true, value_json: text });
  } catch (err) {
    report({ ok: false, error: { type: "ResultNotSerializable", message: String(err.message) } });
  }
})("{code}", "{arguments}", "{marker}");

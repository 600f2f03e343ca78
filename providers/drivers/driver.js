// The program a SaaS interpreter runs: fixed text; below, only base64 data, a hex marker and a number are
// filled in. It writes sandboxctl's own runner (executor/runner/child.js, the one self-managed sandboxes
// run) to a private folder and starts it as a separate process: the user's code runs there, never in this
// process. main()'s outcome comes back on a pipe (fd 3); this process relays the output and prints one
// report under the run's marker, which only this process ever holds.
((runnerB64, jobB64, marker, timeout) => {
  const load = (name) => (typeof require === "function" ? require(name) : process.getBuiltinModule(name));
  const childProcess = load("child_process");
  const fs = load("fs");
  const os = load("os");
  const path = load("path");
  const folder = fs.mkdtempSync(path.join(os.tmpdir(), "sandboxctl-"));
  const runner = path.join(folder, "runner.js");
  fs.writeFileSync(runner, Buffer.from(runnerB64, "base64"));
  const started = Date.now();
  const run = childProcess.spawnSync(process.execPath, [runner, "3"], {
    cwd: folder,
    input: Buffer.from(jobB64, "base64"),
    stdio: ["pipe", "pipe", "pipe", "pipe"],
    timeout: Math.ceil(timeout * 1000),
    killSignal: "SIGKILL",
    maxBuffer: 256 * 1024 * 1024,
  });
  const text = (buffer) => (buffer ? buffer.toString("utf8") : "");
  process.stdout.write(text(run.stdout));
  process.stderr.write(text(run.stderr));
  const result = run.output && run.output[3] ? run.output[3] : Buffer.alloc(0);
  let outcome = null;
  // Ready ("R"), then one MESSAGE: a 4-byte length and the JSON, which carries the cell's nonce.
  if (result.length > 5 && result[0] === 0x52) {
    try {
      outcome = JSON.parse(result.subarray(5, 5 + result.readUInt32BE(1)).toString("utf8"));
      if (!outcome || outcome.nonce !== marker) outcome = null;
      else delete outcome.nonce;
    } catch (err) {
      outcome = null;
    }
  }
  const timedOut = Boolean(run.error && run.error.code === "ETIMEDOUT");
  const report = { outcome, timed_out: timedOut, exit_code: run.status, duration: (Date.now() - started) / 1000 };
  console.log("\n" + marker + Buffer.from(JSON.stringify(report)).toString("base64") + marker);
  fs.rmSync(folder, { recursive: true, force: true });
})("{runner}", "{job}", "{marker}", {timeout});

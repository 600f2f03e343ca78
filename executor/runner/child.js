"use strict";
// In-sandbox Node.js child: waits for its opening on stdin, then runs cells — the user's code and its
// main(arguments) — one after another in one context, answering each with one MESSAGE (a 4-byte length,
// then JSON with the cell's nonce) on the result pipe (fd in argv), never on stdout, so printed text cannot
// pose as a result. An opening that keeps nothing (a one-shot run) takes exactly one cell, run as a script:
// it is done when its event loop is empty. Started by supervisor.py before the opening exists; Node's
// standard library only.

const fs = require("fs");
const vm = require("vm");

const resultFd = Number(process.argv[2]);

function readExactSync(fd, size) {
  const buffer = Buffer.alloc(size);
  let offset = 0;
  while (offset < size) {
    let count;
    try {
      count = fs.readSync(fd, buffer, offset, size - offset, null);
    } catch (err) {
      if (err.code === "EAGAIN") continue;
      if (err.code === "EOF") return null;
      throw err;
    }
    if (count === 0) return null;
    offset += count;
  }
  return buffer;
}

// One MESSAGE (a 4-byte big-endian length, then JSON), read before the event loop has anything to do.
function readMessageSync(fd) {
  const header = readExactSync(fd, 4);
  if (header === null) return null;
  const body = readExactSync(fd, header.readUInt32BE(0));
  return body === null ? null : JSON.parse(body.toString("utf8"));
}

// The stack as the user's code sees it: this runner's own frames and Node's internals are left out.
function printError(err) {
  flushOutput(); // what was printed before the failure comes before its stack
  const text = err && err.stack ? String(err.stack) : String(err);
  const lines = text.split("\n").filter((line) => !line.includes(__filename) && !/\((node:(vm|internal)[^)]*)\)|at node:(vm|internal)/.test(line));
  console.error(lines.join("\n"));
}

function failure(type, message) {
  return { ok: false, error: { type, message: String(message).slice(0, 2000) } };
}

function answer(outcome, nonce) {
  const body = Buffer.from(JSON.stringify({ ...outcome, nonce }));
  const header = Buffer.alloc(4);
  header.writeUInt32BE(body.length, 0);
  fs.writeSync(resultFd, Buffer.concat([header, body]));
}

// A one-shot run's one cell: output first, then the answer, then the process ends with the run.
function finish(outcome, nonce) {
  flushed().then(() => {
    answer(outcome, nonce);
    process.exit(outcome.ok ? 0 : 1);
  });
}

function findMain(sandboxModule) {
  const exported = sandboxModule.exports && sandboxModule.exports.main;
  if (exported !== undefined) return exported;
  if (typeof sandboxModule.exports === "function") return sandboxModule.exports;
  return globalMain();
}

// A top-level `function main` or `const main` lives in the script's global scope.
function globalMain() {
  return vm.runInThisContext("typeof main === 'undefined' ? undefined : main");
}

function serialize(value) {
  const text = JSON.stringify(value);
  if (text === undefined) throw new TypeError("main() returned a value that is not JSON");
  return text;
}

function freshModule() {
  const sandboxModule = { exports: {} };
  globalThis.module = sandboxModule;
  globalThis.exports = sandboxModule.exports;
  globalThis.require = require;
  return sandboxModule;
}

// A run with an allowlist: http, https and fetch go through the sandbox's relay (the proxy decides each
// connection), and TLS trusts the operator's extra CA bundle too. Read once: Node takes both when it starts,
// but this interpreter started before the job existed.
let egressRestore = null;
function openEgress(egress) {
  if (egressRestore) egressRestore();
  egressRestore = null;
  if (!egress) return;
  const tls = require("tls");
  if (egress.ca_file) {
    const pem = fs.readFileSync(egress.ca_file, "utf8").match(/-----BEGIN CERTIFICATE-----[^-]+-----END CERTIFICATE-----/g) || [];
    tls.setDefaultCACertificates([...tls.getCACertificates("default"), ...pem]);
  }
  Object.assign(process.env, egress.env);
  const restoreAgents = require("http").setGlobalProxyFromEnv(egress.env);
  egressRestore = () => {
    if (typeof restoreAgents === "function") restoreAgents();
    for (const name of Object.keys(egress.env)) if (process.env[name] === egress.env[name]) delete process.env[name];
  };
}

// Run the code, then main(arguments) when this code defined one. `options` are vm's (a session interrupts
// a cell past its timeout with SIGINT: breakOnSigint).
async function run(job, filename = "main.js", options = {}, mainBefore = undefined) {
  if (job.egress || egressRestore) openEgress(job.egress);
  const sandboxModule = freshModule();
  try {
    vm.runInThisContext(job.code, { filename, ...options });
  } catch (err) {
    printError(err);
    return failure(err && err.name ? err.name : "Error", err && err.message ? err.message : err);
  }
  let main = findMain(sandboxModule);
  // In a session, a main() that an earlier cell defined is not this cell's.
  if (main !== undefined && main === mainBefore && sandboxModule.exports.main === undefined) main = undefined;
  if (main === undefined) {
    if (Object.keys(job.arguments).length) return failure("MissingMain", "code must define main() when arguments are given");
    if (options.breakOnSigint) return { ok: true, script: true };
    // A plain script may still have timers or I/O pending: it is done when the event loop is empty.
    return new Promise((resolve) => process.once("beforeExit", () => resolve({ ok: true, script: true })));
  }
  if (typeof main !== "function") return failure("MainNotCallable", "main is defined but is not callable");
  let value;
  try {
    globalThis.__sandboxctlCall = () => main(job.arguments);
    value = await (options.breakOnSigint ? vm.runInThisContext("__sandboxctlCall()", options) : main(job.arguments));
  } catch (err) {
    printError(err);
    return failure(err && err.name ? err.name : "Error", err && err.message ? err.message : err);
  } finally {
    delete globalThis.__sandboxctlCall;
  }
  // As RAGFlow's runner does: a main() that forgot its `return` gets told so instead of a silent null.
  if (value === undefined) return failure("NoReturnValue", "main() must return a value");
  try {
    return { ok: true, value_json: serialize(value) };
  } catch (err) {
    return failure("ResultNotSerializable", `main() returned a value that is not JSON: ${err.message}`);
  }
}

// stdout and stderr are gathered in memory and written in blocks: every FLUSH_EVERY_MS, when a block fills,
// before a cell answers and at exit. A console.log is then no system call of its own (each costs ~0.1 ms under
// gVisor's ptrace platform, so 100,000 lines took seconds); a kill loses at most FLUSH_EVERY_MS of output.
const FLUSH_EVERY_MS = 50;
const OUTPUT_BLOCK = 64 * 1024;
const flushers = [];

function bufferOutput() {
  for (const stream of [process.stdout, process.stderr]) {
    const write = stream.write.bind(stream);
    let pending = [];
    let size = 0;
    flushers.push(() => {
      if (!size) return;
      const data = Buffer.concat(pending);
      pending = [];
      size = 0;
      write(data);
    });
    const flush = flushers[flushers.length - 1];
    stream.write = (chunk, encoding, callback) => {
      if (typeof encoding === "function") [callback, encoding] = [encoding, undefined];
      const data = typeof chunk === "string" ? Buffer.from(chunk, encoding || "utf8") : Buffer.from(chunk);
      pending.push(data);
      size += data.length;
      if (size >= OUTPUT_BLOCK) flush();
      if (typeof callback === "function") process.nextTick(callback);
      return true;
    };
    stream.originalWrite = write;
  }
  setInterval(flushOutput, FLUSH_EVERY_MS).unref();
  process.on("exit", flushOutput);
}

function flushOutput() {
  for (const flush of flushers) flush();
}

// Everything written so far handed to the pipes.
function flushed() {
  flushOutput();
  return new Promise((resolve) => process.stdout.originalWrite("", () => process.stderr.originalWrite("", resolve)));
}

// A session: cells arrive as MESSAGEs on the requests descriptor and run one at a time in this one context;
// each is answered with one MESSAGE on the result pipe. A SIGINT (the cell passed its timeout) ends the
// waiting for the cell's main(), which may still be pending: the session goes on.
function serveSession(requests) {
  let pending = Buffer.alloc(0);
  const queue = [];
  let busy = false;
  let number = 0;
  let interrupt = null;
  process.on("SIGINT", () => {
    if (interrupt) interrupt(failure("KeyboardInterrupt", "the cell was interrupted at its timeout"));
  });
  async function next() {
    if (busy || !queue.length) return;
    busy = true;
    const job = queue.shift();
    number += 1;
    const mainBefore = globalMain();
    const interrupted = new Promise((resolve) => { interrupt = resolve; });
    const outcome = await Promise.race([
      run(job, `cell${number}.js`, { breakOnSigint: true }, mainBefore).catch((err) => failure("RunnerError", err)),
      interrupted,
    ]);
    interrupt = null;
    await flushed();
    answer(outcome, job.nonce);
    busy = false;
    next();
  }
  const input = fs.createReadStream(null, { fd: requests, highWaterMark: 1 << 20 });
  input.on("data", (chunk) => {
    pending = Buffer.concat([pending, chunk]);
    while (pending.length >= 4 && pending.length >= 4 + pending.readUInt32BE(0)) {
      const size = pending.readUInt32BE(0);
      queue.push(JSON.parse(pending.subarray(4, 4 + size).toString("utf8")));
      pending = pending.subarray(4 + size);
    }
    next();
  });
  input.on("end", () => process.exit(0));
}

bufferOutput();
fs.writeSync(resultFd, "R");
const opening = readMessageSync(0);
if (opening === null) process.exit(1);
fs.mkdirSync("artifacts", { recursive: true }); // code may save into artifacts/ without creating it
if (opening.keep !== false) {
  serveSession(0);
} else {
  const job = readMessageSync(0);
  if (job === null) process.exit(1);
  run(job).then((outcome) => finish(outcome, job.nonce), (err) => finish(failure("RunnerError", err), job.nonce));
}

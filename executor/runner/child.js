"use strict";
// In-sandbox Node.js child: waits for one job on stdin, runs the user's code, calls main(arguments).
// The return value goes to the result pipe (fd in argv), never to stdout, so printed text cannot pose
// as a result. Started by supervisor.py before the job exists; Node's standard library only.

const fs = require("fs");
const vm = require("vm");

const resultFd = Number(process.argv[2]);

function readStdin() {
  const chunks = [];
  const buffer = Buffer.alloc(65536);
  for (;;) {
    let count;
    try {
      count = fs.readSync(0, buffer, 0, buffer.length, null);
    } catch (err) {
      if (err.code === "EAGAIN") continue;
      if (err.code === "EOF") break;
      throw err;
    }
    if (count === 0) break;
    chunks.push(Buffer.from(buffer.subarray(0, count)));
  }
  return Buffer.concat(chunks).toString("utf8");
}

// The stack as the user's code sees it: this runner's own frames and Node's internals are left out.
function printError(err) {
  const text = err && err.stack ? String(err.stack) : String(err);
  const lines = text.split("\n").filter((line) => !line.includes(__filename) && !/\((node:(vm|internal)[^)]*)\)|at node:(vm|internal)/.test(line));
  console.error(lines.join("\n"));
}

function failure(type, message) {
  return { ok: false, error: { type, message: String(message).slice(0, 2000) } };
}

function finish(outcome) {
  // Output first: the supervisor treats the closing of the result pipe as the end of the run.
  process.stdout.write("", () =>
    process.stderr.write("", () => {
      fs.writeSync(resultFd, JSON.stringify(outcome));
      fs.closeSync(resultFd);
      process.exit(outcome.ok ? 0 : 1);
    }),
  );
}

function findMain(sandboxModule) {
  const exported = sandboxModule.exports && sandboxModule.exports.main;
  if (exported !== undefined) return exported;
  if (typeof sandboxModule.exports === "function") return sandboxModule.exports;
  // A top-level `function main` or `const main` lives in the script's global scope.
  return vm.runInThisContext("typeof main === 'undefined' ? undefined : main");
}

function serialize(value) {
  const text = JSON.stringify(value);
  if (text === undefined) throw new TypeError("main() returned a value that is not JSON");
  return text;
}

async function run(job) {
  const sandboxModule = { exports: {} };
  globalThis.module = sandboxModule;
  globalThis.exports = sandboxModule.exports;
  globalThis.require = require;
  try {
    vm.runInThisContext(job.code, { filename: "main.js" });
  } catch (err) {
    printError(err);
    return failure(err && err.name ? err.name : "Error", err && err.message ? err.message : err);
  }
  const main = findMain(sandboxModule);
  if (main === undefined) {
    if (Object.keys(job.arguments).length) return failure("MissingMain", "code must define main() when arguments are given");
    // A plain script may still have timers or I/O pending: it is done when the event loop is empty.
    return new Promise((resolve) => process.once("beforeExit", () => resolve({ ok: true, script: true })));
  }
  if (typeof main !== "function") return failure("MainNotCallable", "main is defined but is not callable");
  let value;
  try {
    value = await main(job.arguments);
  } catch (err) {
    printError(err);
    return failure(err && err.name ? err.name : "Error", err && err.message ? err.message : err);
  }
  // As RAGFlow's runner does: a main() that forgot its `return` gets told so instead of a silent null.
  if (value === undefined) return failure("NoReturnValue", "main() must return a value");
  try {
    return { ok: true, value_json: serialize(value) };
  } catch (err) {
    return failure("ResultNotSerializable", `main() returned a value that is not JSON: ${err.message}`);
  }
}

fs.writeSync(resultFd, "R");
const job = JSON.parse(readStdin());
fs.mkdirSync("artifacts", { recursive: true }); // code may save into artifacts/ without creating it
run(job).then(finish, (err) => finish(failure("RunnerError", err)));

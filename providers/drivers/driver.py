# The program a SaaS interpreter runs: fixed text; below, only base64 data, a hex marker and a number are
# filled in. It writes sandboxctl's own runner (executor/runner/child.py, the one self-managed sandboxes
# run) to a private folder and starts it as a separate process in its own session: the user's code runs
# there, never in this process. main()'s outcome comes back on a pipe; this process relays the output and
# prints one report under the run's marker, which only this process ever holds.
def _sandboxctl_driver(runner_b64, job_b64, marker, timeout):
    import base64, json, os, shutil, signal, subprocess, sys, tempfile, threading, time

    folder = tempfile.mkdtemp(prefix="sandboxctl-")
    runner = os.path.join(folder, "runner.py")
    with open(runner, "wb") as handle:
        handle.write(base64.b64decode(runner_b64))
    read_end, write_end = os.pipe()
    started = time.monotonic()
    process = subprocess.Popen(
        [sys.executable, "-I", runner, str(write_end)], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
        stderr=subprocess.PIPE, pass_fds=(write_end,), cwd=folder, start_new_session=True)
    os.close(write_end)
    captured = {"stdout": [], "stderr": [], "result": []}

    def drain(descriptor, name):
        while True:
            chunk = os.read(descriptor, 65536)
            if not chunk:
                return
            captured[name].append(chunk)

    streams = ((process.stdout.fileno(), "stdout"), (process.stderr.fileno(), "stderr"), (read_end, "result"))
    readers = [threading.Thread(target=drain, args=stream, daemon=True) for stream in streams]
    for reader in readers:
        reader.start()
    try:
        process.stdin.write(base64.b64decode(job_b64))
        process.stdin.close()
    except OSError:
        pass
    timed_out = False
    try:
        process.wait(timeout)
    except subprocess.TimeoutExpired:
        timed_out = True
    try:
        os.killpg(process.pid, signal.SIGKILL)  # whatever the code left running ends with the run
    except OSError:
        pass
    process.wait()
    for reader in readers:
        reader.join(5)
    duration = time.monotonic() - started
    sys.stdout.write(b"".join(captured["stdout"]).decode("utf-8", "replace"))
    sys.stderr.write(b"".join(captured["stderr"]).decode("utf-8", "replace"))
    sys.stdout.flush()
    sys.stderr.flush()
    result, outcome = b"".join(captured["result"]), None
    if result[:1] == b"R" and len(result) > 5:  # ready, then one MESSAGE: a 4-byte length and the JSON
        try:
            outcome = json.loads(result[5:5 + int.from_bytes(result[1:5], "big")])
            if not isinstance(outcome, dict) or outcome.pop("nonce", None) != marker:
                outcome = None
        except ValueError:
            outcome = None
    report = {"outcome": outcome, "timed_out": timed_out, "exit_code": process.returncode, "duration": duration}
    print("\n" + marker + base64.b64encode(json.dumps(report).encode()).decode() + marker, flush=True)
    shutil.rmtree(folder, ignore_errors=True)


_sandboxctl_driver("{runner}", "{job}", "{marker}", {timeout})

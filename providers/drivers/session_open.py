# The program a SaaS interpreter runs to open a session: fixed text; below, only base64 data, a hex marker
# and numbers are filled in. It writes the session host (session_host.py) and sandboxctl's runner files to a
# private folder, starts the host detached (it outlives this execution), waits until its socket is there and
# prints the socket's path under the marker. Every later call is session_call.py.
def _sandboxctl_open(files_b64, marker, lifetime, idle):
    import base64, json, os, subprocess, sys, tempfile, time

    folder = tempfile.mkdtemp(prefix="sandboxctl-session-")
    for name, content in json.loads(base64.b64decode(files_b64)).items():
        with open(os.path.join(folder, os.path.basename(name)), "wb") as handle:
            handle.write(base64.b64decode(content))
    host = subprocess.Popen(
        [sys.executable, "-I", os.path.join(folder, "host.py"), folder, str(lifetime), str(idle)],
        stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=open(os.path.join(folder, "host.log"), "wb"),
        start_new_session=True, close_fds=True)
    socket_path = os.path.join(folder, "host.sock")
    deadline = time.monotonic() + 30
    while not os.path.exists(socket_path) and host.poll() is None and time.monotonic() < deadline:
        time.sleep(0.02)
    if os.path.exists(socket_path):
        report = {"ok": True, "socket": socket_path}
    else:
        try:
            with open(os.path.join(folder, "host.log"), "rb") as log:
                detail = log.read()[-2000:].decode("utf-8", "replace")
        except OSError:
            detail = ""
        report = {"ok": False, "code": "session_host_failed", "message": "the session host did not start: " + detail}
    print("\n" + marker + base64.b64encode(json.dumps(report).encode()).decode() + marker, flush=True)


_sandboxctl_open("{files}", "{marker}", {lifetime}, {idle})

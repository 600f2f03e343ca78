"""In-sandbox supervisor: the container's entrypoint, one job per container.

It starts the language child before any job exists (so the interpreter is already warm), tells the host
it is ready, then reads exactly one job frame from stdin, hands it to the child, streams the child's
stdout/stderr back in frames (capped), and finishes with one DONE frame carrying the exit status, the
return value read from a private pipe, resource usage and artifacts.

The child never holds this process's stdout, so nothing the user code prints can forge a frame. This
file runs inside the sandbox image with only the standard library; it must not import the project.

Frame format in both directions: 1 type byte, 4-byte big-endian length, payload.
"""

import json
import os
import selectors
import signal
import stat
import struct
import sys
import time

HEADER = struct.Struct(">cI")
READY, STDOUT, STDERR, DONE, JOB = b"R", b"O", b"E", b"D", b"J"
RUNNER_DIR = os.path.dirname(os.path.abspath(__file__))
WORK_DIR = "/work"
ARTIFACT_DIR = os.path.join(WORK_DIR, "artifacts")
ARTIFACT_TYPES = {
    ".png": "image/png",
    ".jpg": "image/jpeg",
    ".jpeg": "image/jpeg",
    ".svg": "image/svg+xml",
    ".pdf": "application/pdf",
    ".csv": "text/csv",
    ".json": "application/json",
    ".txt": "text/plain",
    ".html": "text/html",
}
RESULT_CAP = 4 * 1024 * 1024
EXIT_GRACE = 0.2  # how long to keep draining pipes held open by background processes after the child exits


def make_private() -> None:
    # The child runs as the same uid; without this it could open /proc/1/fd/1 and write frames.
    try:
        import ctypes

        ctypes.CDLL(None).prctl(4, 0, 0, 0, 0)  # PR_SET_DUMPABLE = 4
    except Exception:  # noqa: BLE001 - best effort, the host never trusts frames for classification
        pass


def send(kind: bytes, payload: bytes) -> None:
    data = HEADER.pack(kind, len(payload)) + payload
    view = memoryview(data)
    while view:
        written = os.write(1, view)
        view = view[written:]


def read_exact(fd: int, size: int) -> bytes:
    chunks = []
    while size:
        chunk = os.read(fd, size)
        if not chunk:
            raise EOFError("stdin closed before a full job frame arrived")
        chunks.append(chunk)
        size -= len(chunk)
    return b"".join(chunks)


def read_job() -> dict:
    kind, length = HEADER.unpack(read_exact(0, HEADER.size))
    if kind != JOB:
        raise ValueError(f"unexpected frame type {kind!r}")
    return json.loads(read_exact(0, length))


def node_command(result_fd: int) -> list[str]:
    memory_mb = int(os.environ.get("SANDBOX_MEMORY_MB", "512"))
    heap_mb = max(32, memory_mb * 3 // 4)  # RLIMIT_AS breaks V8; its own heap cap is the memory guard
    return ["node", f"--max-old-space-size={heap_mb}", os.path.join(RUNNER_DIR, "child.js"), str(result_fd)]


def start_child(language: str) -> tuple[int, int, int, int, int]:
    """Fork the language child with pipes for stdin, stdout, stderr and the result channel."""
    stdin_r, stdin_w = os.pipe()
    out_r, out_w = os.pipe()
    err_r, err_w = os.pipe()
    res_r, res_w = os.pipe()
    pid = os.fork()
    if pid == 0:
        try:
            os.setsid()
            os.dup2(stdin_r, 0)
            os.dup2(out_w, 1)
            os.dup2(err_w, 2)
            os.dup2(res_w, 3)
            os.closerange(4, 1024)
            os.chdir(WORK_DIR)
            if language == "python":
                # This interpreter is already up: becoming the child costs a fork, not a second start-up.
                run_python_child(3)
            else:
                command = node_command(3)
                os.execvp(command[0], command)
        finally:
            os._exit(127)
    for fd in (stdin_r, out_w, err_w, res_w):
        os.close(fd)
    return pid, stdin_w, out_r, err_r, res_r


def run_python_child(result_fd: int) -> None:
    path = os.path.join(RUNNER_DIR, "child.py")
    with open(path, encoding="utf-8") as source:
        namespace = {"__name__": "sandbox_child", "__file__": path}
        exec(compile(source.read(), path, "exec"), namespace)  # the runner's own file, baked into the image
    namespace["main"](result_fd)


def wait_ready(res_r: int) -> None:
    if os.read(res_r, 1) != b"R":
        raise RuntimeError("language child exited before it was ready")


class Stream:
    """One captured output stream: forwards up to `cap` bytes, counts the rest."""

    def __init__(self, kind: bytes, cap: int) -> None:
        self.kind = kind
        self.cap = cap
        self.sent = 0
        self.total = 0

    def feed(self, data: bytes) -> None:
        self.total += len(data)
        room = self.cap - self.sent
        if room > 0:
            chunk = data[:room]
            self.sent += len(chunk)
            send(self.kind, chunk)

    @property
    def truncated(self) -> bool:
        return self.total > self.sent


def pump(pid: int, out_r: int, err_r: int, res_r: int, job: dict) -> dict:
    """Relay output until the child is done or the deadline passes; return what was observed.

    The child flushes its output before it writes and closes the result pipe, so the end of that pipe
    means the run is over: the rest of the output is drained and the child killed, without paying for an
    interpreter's slow teardown (V8's, especially).
    """
    streams = {out_r: Stream(STDOUT, job["output_limit"]), err_r: Stream(STDERR, job["output_limit"])}
    result = bytearray()
    selector = selectors.DefaultSelector()
    for fd in (out_r, err_r, res_r):
        selector.register(fd, selectors.EVENT_READ)
    started = time.monotonic()
    deadline = started + job["timeout"]
    exited_at = None
    status = rusage = None
    timed_out = finished = False
    while selector.get_map() and not finished:
        now = time.monotonic()
        if status is None:
            waited_pid, status_now, usage = os.wait4(pid, os.WNOHANG)
            if waited_pid:
                status, rusage, exited_at = status_now, usage, now
        if exited_at is not None and now - exited_at > EXIT_GRACE:
            break
        if status is None and now >= deadline:
            timed_out = True
            kill_group(pid)
            _, status, rusage = os.wait4(pid, 0)
            exited_at = time.monotonic()
            continue
        wait = 0.05 if exited_at is not None else min(0.1, max(0.0, deadline - now))
        for key, _ in selector.select(wait):
            data = os.read(key.fd, 65536)
            if key.fd == res_r:
                if not data:
                    finished = True
                elif len(result) <= RESULT_CAP:
                    result += data
            elif data:
                streams[key.fd].feed(data)
            else:
                selector.unregister(key.fd)
    outcome = decode_result(bytes(result))
    if finished and outcome is not None:
        # The child reported: no need to wait for it to die (the container's end takes everything with it).
        drain(streams)
        exit_code = 0 if outcome.get("ok") else 1
        memory_kb = outcome.pop("maxrss_kb", None)
    else:
        kill_group(pid)
        if status is None:
            _, status, rusage = os.wait4(pid, 0)
        exit_code = os.waitstatus_to_exitcode(status)
        memory_kb = rusage.ru_maxrss if rusage else None
    elapsed = time.monotonic() - started
    return {
        "timed_out": timed_out,
        "exit_code": exit_code,
        "memory_used_kb": memory_kb,
        "duration": elapsed,
        "stdout_bytes": streams[out_r].total,
        "stderr_bytes": streams[err_r].total,
        "stdout_truncated": streams[out_r].truncated,
        "stderr_truncated": streams[err_r].truncated,
        "result": outcome,
    }


def drain(streams: dict[int, Stream]) -> None:
    """Read what is already in the output pipes without waiting for writers that may never close them."""
    for fd, stream in streams.items():
        os.set_blocking(fd, False)
        while True:
            try:
                data = os.read(fd, 65536)
            except BlockingIOError:
                break
            if not data:
                break
            stream.feed(data)


def kill_group(pid: int) -> None:
    try:
        os.killpg(pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


def decode_result(raw: bytes) -> dict | None:
    if not raw:
        return None
    if len(raw) > RESULT_CAP:
        return {"ok": False, "error": {"type": "ResultTooLarge", "message": f"return value over {RESULT_CAP} bytes"}}
    try:
        return json.loads(raw)
    except ValueError:
        return {"ok": False, "error": {"type": "ProtocolError", "message": "unreadable return value"}}


def collect_artifacts(limits: dict) -> tuple[list[dict], list[dict]]:
    """Read regular files from /work/artifacts without following links; report every file refused."""
    accepted: list[dict] = []
    rejected: list[dict] = []
    try:
        entries = sorted(os.scandir(ARTIFACT_DIR), key=lambda entry: entry.name)
    except (FileNotFoundError, NotADirectoryError):
        return accepted, rejected
    total = 0
    for entry in entries:
        reason, content = read_artifact(entry, limits, len(accepted), total)
        if reason:
            rejected.append({"name": entry.name, "reason": reason})
            continue
        total += len(content)
        accepted.append(
            {
                "name": entry.name,
                "mime_type": ARTIFACT_TYPES[os.path.splitext(entry.name)[1].lower()],
                "size": len(content),
                "content_b64": b64encode(content).decode("ascii"),
            }
        )
    return accepted, rejected


def b64encode(data: bytes) -> bytes:
    import base64  # only runs that leave artifacts pay for it

    return base64.b64encode(data)


def read_artifact(entry: os.DirEntry, limits: dict, count: int, total: int) -> tuple[str | None, bytes]:
    if entry.is_symlink():
        return "symbolic links are not followed", b""
    if not entry.is_file(follow_symlinks=False):
        return "not a regular file", b""
    extension = os.path.splitext(entry.name)[1].lower()
    if extension not in ARTIFACT_TYPES:
        return f"file type {extension or '(none)'} is not allowed", b""
    if count >= limits["max_count"]:
        return f"more than {limits['max_count']} artifacts", b""
    try:
        fd = os.open(entry.path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    except OSError as exc:
        return f"cannot open: {exc.strerror}", b""
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            return "not a regular file", b""
        if info.st_size > limits["max_bytes"]:
            return f"larger than {limits['max_bytes']} bytes", b""
        if total + info.st_size > limits["max_total_bytes"]:
            return f"artifacts together exceed {limits['max_total_bytes']} bytes", b""
        return None, os.read(fd, info.st_size + 1)[: info.st_size]
    finally:
        os.close(fd)


def main() -> None:
    language = sys.argv[1]
    pid, stdin_w, out_r, err_r, res_r = start_child(language)
    make_private()  # after the fork: the child stays an ordinary process that may read its own /proc entries
    wait_ready(res_r)
    send(READY, b"")
    job = read_job()
    with os.fdopen(stdin_w, "wb") as child_stdin:
        child_stdin.write(json.dumps(job["payload"]).encode())
    report = pump(pid, out_r, err_r, res_r, job)
    report["artifacts"], report["rejected_artifacts"] = collect_artifacts(job["artifacts"])
    send(DONE, json.dumps(report).encode())


if __name__ == "__main__":
    main()

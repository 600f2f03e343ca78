"""In-sandbox supervisor: the container's entrypoint and PID 1, one job per container.

It starts the language child before any job exists (so the interpreter is already warm), tells the host
it is ready, then reads exactly one job frame from stdin, hands the code to the child, streams the
child's stdout/stderr back in frames (capped), and finishes with one DONE frame carrying the exit
status, the return value read from the result pipe, what it measured and the artifacts.

Two walls keep user code from speaking for the supervisor:
- uids: the supervisor is root of the sandbox with only SETUID, SETGID and KILL (it keeps only KILL
  after the fork); the child is nobody (65534) with no capabilities under a seccomp filter
  (confine.py), so it cannot open /proc/1/fd/*, /proc/1/mem or the supervisor's pipes;
- a MAC: the job carries a fresh key, sent after the child exists and never given to it; every frame
  after the job carries an HMAC over a sequence number, its type and payload. A frame the host cannot
  verify ends the run as a protocol violation.

Nothing the child reports about itself is used as a measurement: memory is the peak RSS of the child
and its descendants as this process observes them when it reaps them. This file runs inside the
sandbox image with only the standard library; it must not import the project.
"""

import errno
import json
import os
import select
import selectors
import signal
import stat
import sys
import time

RUNNER_DIR = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, RUNNER_DIR)  # -I leaves the script's folder off the path; the runner's own modules are here

import relay as egress_relay  # noqa: E402
from confine import confine_child, keep_only_capabilities  # noqa: E402
from rules import ARTIFACT_TYPES, extension, name_problem  # noqa: E402
from wire import CELL, DONE, FILE, HEADER, JOB, MESSAGE, PING, READY, SESSION, STDERR, STDOUT, encode_frame, pack_message  # noqa: E402,E501

WORK_DIR = "/work"
ARTIFACT_DIR = os.path.join(WORK_DIR, "artifacts")
RESULT_CAP = 4 * 1024 * 1024
CAP_KILL = 5
EXIT_GRACE = 0.2  # after the child exits, how long to keep draining pipes a background process holds open
FILE_TIMEOUT = 60.0  # how long a file request may take the keeper (64 MiB through a pipe takes well under that)
FILE_ANSWER_CAP = 96 * 1024 * 1024  # a file's base64 and its envelope
INTERRUPT_GRACE = 1.0  # a cell past its timeout gets this long, after SIGINT, to stop and keep the session


class Channel:
    """Frames to the host on fd 1; authenticated once the job's key is known."""

    def __init__(self) -> None:
        self.key: bytes | None = None
        self.sequence = 0

    def send(self, kind: bytes, payload: bytes) -> None:
        data = encode_frame(kind, payload, self.key, self.sequence)
        if self.key is not None:
            self.sequence += 1
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


def read_request(channel: "Channel") -> tuple[bytes, dict]:
    """Answer PINGs (a restored sandbox is asked whether it is there) until the job or a session arrives."""
    while True:
        kind, length = HEADER.unpack(read_exact(0, HEADER.size))
        if kind == PING:
            read_exact(0, length)
            channel.send(READY, b"")
            continue
        if kind not in (JOB, SESSION):
            raise ValueError(f"unexpected frame type {kind!r}")
        break
    request = json.loads(read_exact(0, length))
    if kind == JOB:
        # Nothing more comes on stdin: put /dev/null there so /proc/1/fd/0 leads nowhere.
        null = os.open(os.devnull, os.O_RDONLY)
        os.dup2(null, 0)
        os.close(null)
    return kind, request


def read_frame() -> tuple[bytes, dict] | None:
    """The host's next request in a session; None when it closed our input (the session is over)."""
    try:
        kind, length = HEADER.unpack(read_exact(0, HEADER.size))
        return kind, json.loads(read_exact(0, length))
    except EOFError:
        return None


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
            confine_child()
            if language == "python":
                # This interpreter is already up: becoming the child costs a fork, not a second start-up.
                run_python_child(3)
            else:
                command = node_command(3)
                os.execvp(command[0], command)
        except BaseException as exc:  # noqa: BLE001 - report why the child could not start, then die
            os.write(2, f"sandbox child failed to start: {exc!r}\n".encode())
        finally:
            os._exit(127)
    for fd in (stdin_r, out_w, err_w, res_w):
        os.close(fd)
    return pid, stdin_w, out_r, err_r, res_r


class FileKeeper:
    """The sandbox's file keeper (workfiles.py): forked now, while this process may still make a nobody."""

    def __init__(self) -> None:
        requests_r, self.requests = os.pipe()
        self.answers, answers_w = os.pipe()
        self.pid = os.fork()
        if self.pid == 0:
            try:
                os.setsid()
                os.dup2(requests_r, 0)
                os.dup2(answers_w, 1)
                null = os.open(os.devnull, os.O_WRONLY)
                os.dup2(null, 2)
                os.closerange(3, 1024)
                os.chdir(WORK_DIR)
                confine_child()
                import workfiles

                workfiles.serve()
            finally:
                os._exit(0)
        os.close(requests_r)
        os.close(answers_w)

    def ask(self, request: dict, timeout: float = FILE_TIMEOUT) -> dict:
        """One request and its answer; a keeper that is gone (the code killed it) or silent is a clear error."""
        try:
            write_all(self.requests, pack_message(json.dumps(request).encode()))
            answer = read_message(self.answers, time.monotonic() + timeout, FILE_ANSWER_CAP)
        except (OSError, EOFError, TimeoutError, ValueError) as exc:
            return {"ok": False, "code": "file_service_gone",
                    "message": f"the sandbox's file service did not answer ({type(exc).__name__})"}
        return answer if isinstance(answer, dict) else {"ok": False, "code": "io_error", "message": "bad answer"}

    def close(self) -> None:
        for fd in (self.requests, self.answers):
            try:
                os.close(fd)
            except OSError:
                pass


def write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]


def read_message(fd: int, deadline: float, cap: int) -> object:
    """One MESSAGE from `fd` (wire.py) by `deadline`, decoded from JSON."""
    header = read_by(fd, MESSAGE.size, deadline)
    (size,) = MESSAGE.unpack(header)
    if size > cap:
        raise ValueError(f"message of {size} bytes")
    return json.loads(read_by(fd, size, deadline))


def read_by(fd: int, size: int, deadline: float) -> bytes:
    chunks = []
    while size:
        remaining = deadline - time.monotonic()
        if remaining <= 0 or not select.select([fd], [], [], remaining)[0]:
            raise TimeoutError
        chunk = os.read(fd, min(size, 1 << 20))
        if not chunk:
            raise EOFError
        chunks.append(chunk)
        size -= len(chunk)
    return b"".join(chunks)


def run_python_child(result_fd: int) -> None:
    path = os.path.join(RUNNER_DIR, "child.py")
    with open(path, encoding="utf-8") as source:
        namespace = {"__name__": "sandbox_child", "__file__": path}
        exec(compile(source.read(), path, "exec"), namespace)  # the runner's own file, baked into the image
    namespace["main"](result_fd)


def wait_ready(res_r: int, err_r: int) -> None:
    if os.read(res_r, 1) != b"R":
        os.set_blocking(err_r, False)
        try:
            reason = os.read(err_r, 4096)
        except BlockingIOError:
            reason = b""
        raise RuntimeError(f"language child exited before it was ready: {reason.decode(errors='replace')}")


class Stream:
    """One captured output stream: forwards up to `cap` bytes, counts the rest."""

    def __init__(self, channel: Channel, kind: bytes, cap: int) -> None:
        self.channel = channel
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
            self.channel.send(self.kind, chunk)

    @property
    def truncated(self) -> bool:
        return self.total > self.sent


def pump(channel: Channel, pid: int, out_r: int, err_r: int, res_r: int, job: dict) -> dict:
    """Relay output until the child reports, exits or reaches the deadline; then end every user process.

    The child flushes its output before it writes and closes the result pipe, so the end of that pipe
    means the run is over: nothing of the user's is left running (background processes included), and
    the pipes are drained to their end.
    """
    streams = {out_r: Stream(channel, STDOUT, job["output_limit"]), err_r: Stream(channel, STDERR, job["output_limit"])}
    result = bytearray()
    selector = selectors.DefaultSelector()
    for fd in (out_r, err_r, res_r):
        selector.register(fd, selectors.EVENT_READ)
    deadline = time.monotonic() + job["timeout"]
    exited_at = None
    status = None
    timed_out = reported = False
    while selector.get_map() and not reported:
        now = time.monotonic()
        if status is None:
            waited_pid, status_now = os.waitpid(pid, os.WNOHANG)
            if waited_pid:
                status, exited_at = status_now, now
        if exited_at is not None and now - exited_at > EXIT_GRACE:
            break
        if status is None and now >= deadline:
            timed_out = True
            break
        wait = 0.05 if exited_at is not None else min(0.1, max(0.0, deadline - now))
        for key, _ in selector.select(wait):
            data = os.read(key.fd, 65536)
            if key.fd == res_r:
                if not data:
                    reported = True
                    selector.unregister(res_r)
                elif len(result) <= RESULT_CAP:
                    result += data
            elif data:
                streams[key.fd].feed(data)
            else:
                selector.unregister(key.fd)
    status = end_user_processes(pid, status)
    drain(streams)
    outcome = decode_result(bytes(result)) if reported or result else None
    if outcome is not None and not timed_out:
        exit_code = 0 if outcome.get("ok") is True else 1
    else:
        exit_code = os.waitstatus_to_exitcode(status) if status is not None else None
    return {
        "timed_out": timed_out,
        "exit_code": exit_code,
        "memory_used_kb": children_peak_rss_kb(),
        "stdout_truncated": streams[out_r].truncated,
        "stderr_truncated": streams[err_r].truncated,
        "result": None if timed_out else outcome,
    }


def end_user_processes(pid: int, status: int | None) -> int | None:
    """SIGKILL every process but this one (the child, anything it started, in any session), reap them all,
    and return the child's wait status."""
    try:
        os.kill(-1, signal.SIGKILL)
    except ProcessLookupError:
        pass
    while True:
        try:
            waited_pid, waited_status = os.waitpid(-1, 0)
        except ChildProcessError:
            return status
        if waited_pid == pid and status is None:
            status = waited_status


def children_peak_rss_kb() -> int:
    """Peak resident memory of the largest reaped descendant, as this process (not the child) measured it."""
    import resource

    return resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss


def drain(streams: dict[int, Stream]) -> None:
    """Read what is left in the output pipes: every writer is dead, so each ends."""
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


def decode_result(raw: bytes) -> dict | None:
    if not raw:
        return None
    if len(raw) > RESULT_CAP:
        return {"ok": False, "error": {"type": "ResultTooLarge", "message": f"return value over {RESULT_CAP} bytes"}}
    try:
        outcome = json.loads(raw)
    except (ValueError, RecursionError):
        outcome = None
    if not isinstance(outcome, dict):
        return {"ok": False, "error": {"type": "ProtocolError", "message": "unreadable return value"}}
    return outcome


NOBODY = 65534
# Enumeration stops here, before any report is built: a flood of files (45,000 empty ones) ends the run
# `too_many_artifacts` instead of a report too large for the protocol.
MAX_ENTRIES = 1000
OPEN_DIR = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
OPEN_FILE = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC


class TooManyArtifacts(Exception):
    pass


def open_artifact_dir(rejected: list[dict]) -> int | None:
    """A descriptor of /work/artifacts opened without following links, or None when there is none to read.

    The supervisor is root of the sandbox: a path it follows as root could lead anywhere the user planted a
    link (`/root`, `/proc/1/fd`). So every step is relative to a descriptor with O_NOFOLLOW, and the folder
    must be a real directory owned by the child (uid 65534) — never something root made, or a link to it."""
    work = os.open(WORK_DIR, OPEN_DIR)
    try:
        # Judged by lstat first and then by identity: on runsc 0.0~20240729 an open with O_NOFOLLOW and
        # O_DIRECTORY was seen to follow a link to /root, so O_NOFOLLOW alone is not relied on.
        seen = os.stat("artifacts", dir_fd=work, follow_symlinks=False)
        if not stat.S_ISDIR(seen.st_mode):
            rejected.append({"name": "artifacts", "reason": "the artifacts folder is not a real folder"})
            return None
        folder = os.open("artifacts", OPEN_DIR, dir_fd=work)
    except FileNotFoundError:
        return None
    except OSError:  # ELOOP / ENOTDIR: a link or a file where the folder should be
        rejected.append({"name": "artifacts", "reason": "the artifacts folder is not a real folder"})
        return None
    finally:
        os.close(work)
    info = os.fstat(folder)
    if (info.st_dev, info.st_ino) != (seen.st_dev, seen.st_ino) or not stat.S_ISDIR(info.st_mode):
        os.close(folder)
        rejected.append({"name": "artifacts", "reason": "the artifacts folder changed while it was opened"})
        return None
    if info.st_uid != NOBODY:
        os.close(folder)
        rejected.append({"name": "artifacts", "reason": "the artifacts folder is not owned by the run"})
        return None
    return folder


def artifact_names(folder: int) -> list[str]:
    """The entries of the artifacts folder (one level), sorted; TooManyArtifacts past MAX_ENTRIES."""
    names = []
    with os.scandir(folder) as entries:
        for entry in entries:
            names.append(entry.name)
            if len(names) > MAX_ENTRIES:
                raise TooManyArtifacts
    return sorted(names)


def collect_artifacts(limits: dict, since: float | None = None) -> tuple[list[dict], list[dict], str | None]:
    """Read the files of /work/artifacts (one level, nothing promoted from /work) without following links;
    report every file refused with its reason. Returns (accepted, rejected, error code or None). A session's
    cell passes `since` (when it started): only files written since then are its artifacts.

    Runs after every user process is dead; and every open is relative to the folder's descriptor with
    O_NOFOLLOW, so even a swap between the check and the read could only swap in what the run owns."""
    accepted: list[dict] = []
    rejected: list[dict] = []
    folder = open_artifact_dir(rejected)
    if folder is None:
        return accepted, rejected, None
    try:
        try:
            names = artifact_names(folder)
        except TooManyArtifacts:
            return [], [], "too_many_artifacts"
        total = 0
        for name in names:
            if since is not None and not changed_since(folder, name, since):
                continue
            reason, content = read_artifact(folder, name, limits, len(accepted), total)
            if reason == "empty":
                continue  # an empty file is no artifact (RAGFlow's executor skips them too)
            if reason:
                rejected.append({"name": name, "reason": reason})
                continue
            total += len(content)
            accepted.append({"name": name, "mime_type": ARTIFACT_TYPES[extension(name)], "size": len(content),
                             "content_b64": b64encode(content).decode("ascii")})
    finally:
        os.close(folder)
    return accepted, rejected, None


def changed_since(folder: int, name: str, since: float) -> bool:
    try:
        return os.stat(name, dir_fd=folder, follow_symlinks=False).st_mtime >= since
    except OSError:
        return True  # read_artifact says why it cannot be read


def b64encode(data: bytes) -> bytes:
    import base64  # only runs that leave artifacts pay for it

    return base64.b64encode(data)


def read_artifact(folder: int, name: str, limits: dict, count: int, total: int) -> tuple[str | None, bytes]:
    try:
        info = os.stat(name, dir_fd=folder, follow_symlinks=False)
    except OSError as exc:
        return f"cannot open: {exc.strerror}", b""
    if stat.S_ISLNK(info.st_mode):
        return "symbolic links are not followed", b""
    if not stat.S_ISREG(info.st_mode):
        return "not a regular file", b""
    problem = name_problem(name)
    if problem:
        return problem, b""
    if info.st_size == 0:
        return "empty", b""
    if count >= limits["max_count"]:
        return f"more than {limits['max_count']} artifacts", b""
    try:
        fd = os.open(name, OPEN_FILE, dir_fd=folder)
    except OSError as exc:
        return ("symbolic links are not followed" if exc.errno == errno.ELOOP else f"cannot open: {exc.strerror}"), b""
    try:
        seen, info = info, os.fstat(fd)
        if (info.st_dev, info.st_ino) != (seen.st_dev, seen.st_ino):
            return "the file changed while it was opened", b""
        if not stat.S_ISREG(info.st_mode):
            return "not a regular file", b""
        if info.st_nlink > 1:
            return "hard links are not accepted", b""
        if info.st_uid != NOBODY:
            return "not a file the run made", b""
        if info.st_size > limits["max_bytes"]:
            return f"larger than {limits['max_bytes']} bytes", b""
        if total + info.st_size > limits["max_total_bytes"]:
            return f"artifacts together exceed {limits['max_total_bytes']} bytes", b""
        return None, read_bounded(fd, info.st_size)
    finally:
        os.close(fd)


def read_bounded(fd: int, size: int) -> bytes:
    chunks, remaining = [], size
    while remaining > 0:
        chunk = os.read(fd, remaining)
        if not chunk:
            break
        chunks.append(chunk)
        remaining -= len(chunk)
    return b"".join(chunks)


def write_input_files(keeper: FileKeeper, files: list[dict], limits: dict) -> list[dict]:
    """Write the request's files into the working folder through the keeper; returns what it wrote."""
    written = []
    for entry in files:
        answer = keeper.ask({"op": "put", "path": entry.get("path"), "content_b64": entry.get("content_b64", ""),
                             "max_total_bytes": limits.get("max_total_bytes")})
        if not answer.get("ok"):
            raise InputFileError(f"{entry.get('path')!r}: {answer.get('message')}")
        written.append({"path": answer["path"], "size": answer["size"]})
    return written


class InputFileError(Exception):
    pass


def run_job(channel: Channel, job: dict, child: tuple[int, int, int, int, int], keeper: FileKeeper) -> None:
    pid, stdin_w, out_r, err_r, res_r = child
    try:
        write_input_files(keeper, job.get("files") or [], job.get("file_limits") or {})
    except InputFileError as exc:
        end_user_processes(pid, None)
        failed = {"ok": False, "error": {"type": "InputFileError", "message": str(exc)[:2000]}}
        channel.send(DONE, json.dumps({"timed_out": False, "exit_code": None, "result": failed}).encode())
        return
    # The keeper stays until the run ends (end_user_processes kills and reaps it): one that left now would
    # hand its memory to the run, past the memory_mb the cgroup limit was measured for, and linger as a zombie.
    # A run with an allowlist gets its egress relay now, before its code runs (relay.py); it dies with the run.
    problem = egress_relay.start_for(job["payload"].get("egress"))
    if problem:
        channel.send(STDERR, problem.encode())
    with os.fdopen(stdin_w, "wb") as child_stdin:
        child_stdin.write(pack_message(json.dumps(job["payload"]).encode()))
    report = pump(channel, pid, out_r, err_r, res_r, job)
    report["artifacts"], report["rejected_artifacts"], report["artifacts_error"] = collect_artifacts(job["artifacts"])
    channel.send(DONE, json.dumps(report).encode())


def main() -> None:
    language = sys.argv[1]
    # session.py imports its helpers from this module: let it find this running copy instead of loading a
    # second, and load it now, while the sandbox warms, not when a session opens (no .pyc in a read-only image).
    sys.modules.setdefault("supervisor", sys.modules[__name__])
    import session
    channel = Channel()
    child = start_child(language)
    keeper = FileKeeper()
    keep_only_capabilities(CAP_KILL)  # SETUID/SETGID were for the drops to nobody; they are done
    pid, stdin_w, out_r, err_r, res_r = child
    wait_ready(res_r, err_r)
    channel.send(READY, b"")
    kind, request = read_request(channel)
    channel.key = bytes.fromhex(request.pop("key"))
    if kind == SESSION:
        session.serve_session(channel, child, keeper, request)
        end_user_processes(pid, None)
        return
    run_job(channel, request, child, keeper)
    if request.get("linger"):
        # Through dockerd's attach stream, a container that exits right after writing can lose the tail of
        # its output (the report included); there the worker removes the sandbox instead.
        while True:
            signal.pause()


if __name__ == "__main__":
    main()

"""The sandbox's processes as the supervisor (PID 1) starts, watches and ends them: the language child, the
file keeper, and whatever the user's code starts. Standard library only (inside the sandbox)."""

import json
import os
import select
import signal
import time

from confine import confine_child
from wire import MESSAGE, pack_message

WORK_DIR = "/work"
RUNNER_DIR = os.path.dirname(os.path.abspath(__file__))
# A keeper that takes this long without reading a byte of a request or writing a byte of its answer is gone:
# stopped or killed by the code. It is killed and never asked again (file requests answer file_service_gone),
# so no request waits on it and nothing the host holds waits with it.
KEEPER_SILENCE = 5.0
KEEPER_ANSWER_CAP = 96 * 1024 * 1024  # a file's base64 and its envelope
REAP_FOR = 0.5  # how long killed background processes get to be reaped before the next cell


def node_command(result_fd: int) -> list[str]:
    # RLIMIT_AS breaks V8, and its heap cap is set when the process starts, before any run's memory_mb is known:
    # it follows the sandbox's size; the run's own limit is the cgroup's, lowered when the run starts.
    container_mb = int(os.environ.get("SANDBOX_CONTAINER_MEMORY_MB", "512"))
    heap_mb = max(32, container_mb * 3 // 4)
    return ["node", f"--max-old-space-size={heap_mb}", os.path.join(RUNNER_DIR, "child.js"), str(result_fd)]


def start_child(language: str) -> tuple[int, int, int, int, int]:
    """Fork the language child with pipes for stdin, stdout, stderr and the result channel:
    (pid, stdin to write, stdout to read, stderr to read, results to read)."""
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


def run_python_child(result_fd: int) -> None:
    path = os.path.join(RUNNER_DIR, "child.py")
    with open(path, encoding="utf-8") as source:
        namespace = {"__name__": "sandbox_child", "__file__": path}
        exec(compile(source.read(), path, "exec"), namespace)  # the runner's own file, baked into the image
    namespace["main"](result_fd)


class Keeper:
    """The sandbox's file keeper (workfiles.py): forked now, while this process may still make a nobody."""

    def __init__(self) -> None:
        requests_r, self.requests = os.pipe()
        self.answers, answers_w = os.pipe()
        self.gone = False
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
        os.set_blocking(self.requests, False)

    def ask(self, request: dict) -> dict:
        """One request and its answer; a keeper that is gone (killed, or silent: stopped) is a clear error."""
        if self.gone:
            return keeper_gone("it stopped answering earlier")
        try:
            write_by(self.requests, pack_message(json.dumps(request).encode()), KEEPER_SILENCE)
            answer = read_message(self.answers, KEEPER_SILENCE, KEEPER_ANSWER_CAP)
        except (OSError, EOFError, TimeoutError, ValueError) as exc:
            self.give_up()
            return keeper_gone(type(exc).__name__)
        return answer if isinstance(answer, dict) else {"ok": False, "code": "io_error", "message": "bad answer"}

    def give_up(self) -> None:
        """Never ask it again; kill it (a stopped keeper would hold its half-read request for ever)."""
        self.gone = True
        try:
            os.kill(self.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass


def keeper_gone(why: str) -> dict:
    return {"ok": False, "code": "file_service_gone", "message": f"the sandbox's file service is gone ({why})"}


def write_by(fd: int, data: bytes, silence: float) -> None:
    """Write all of `data` to a non-blocking `fd`; TimeoutError when the reader takes nothing for `silence`."""
    view = memoryview(data)
    while view:
        if not select.select([], [fd], [], silence)[1]:
            raise TimeoutError
        try:
            view = view[os.write(fd, view[:1 << 20]):]
        except BlockingIOError:
            continue


def read_message(fd: int, silence: float, cap: int) -> object:
    """One MESSAGE from `fd` (wire.py), decoded from JSON; TimeoutError when no byte comes for `silence`."""
    (size,) = MESSAGE.unpack(read_by(fd, MESSAGE.size, silence))
    if size > cap:
        raise ValueError(f"message of {size} bytes")
    return json.loads(read_by(fd, size, silence))


def read_by(fd: int, size: int, silence: float) -> bytes:
    chunks = []
    while size:
        if not select.select([fd], [], [], silence)[0]:
            raise TimeoutError
        chunk = os.read(fd, min(size, 1 << 20))
        if not chunk:
            raise EOFError
        chunks.append(chunk)
        size -= len(chunk)
    return b"".join(chunks)


def kill_all_but_this() -> None:
    """SIGKILL every process of the sandbox but this one (the child, the keeper, anything they started)."""
    try:
        os.kill(-1, signal.SIGKILL)
    except ProcessLookupError:
        pass


def reap_all() -> None:
    """Reap every child of this process (after kill_all_but_this: each ends)."""
    while True:
        try:
            os.waitpid(-1, 0)
        except ChildProcessError:
            return


def user_pids() -> set[int]:
    """Live processes other than this one (zombies and threads left out: a thread's id would name its
    whole process to kill())."""
    pids = set()
    for name in os.listdir("/proc"):
        if name.isdigit() and int(name) != os.getpid() and live_process(int(name)):
            pids.add(int(name))
    return pids


def live_process(pid: int) -> bool:
    fields = {}
    try:
        with open(f"/proc/{pid}/status", encoding="ascii", errors="replace") as status:
            for line in status:
                key, _, value = line.partition(":")
                fields[key] = value.strip()
    except OSError:
        return False
    return fields.get("Tgid") == str(pid) and not fields.get("State", "").startswith(("Z", "X"))


def end_strays(keep: set[int]) -> None:
    """Kill every process a cell left behind (not the interpreter, not the keeper) and reap them."""
    deadline = time.monotonic() + REAP_FOR
    while time.monotonic() < deadline:
        strays = user_pids() - keep
        if not strays:
            return
        for pid in strays:
            try:
                os.kill(pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
        reap_quietly(keep)
        time.sleep(0.01)


def reap_quietly(keep: set[int]) -> None:
    """Reap dead strays that were re-parented to this process; never the interpreter or the keeper."""
    for name in os.listdir("/proc"):
        if name.isdigit() and int(name) not in keep and int(name) != os.getpid():
            try:
                os.waitpid(int(name), os.WNOHANG)
            except ChildProcessError:
                pass


def peak_resident_kb(pid: int) -> int | None:
    """A process's peak resident memory so far (VmHWM), read by this process from /proc."""
    try:
        with open(f"/proc/{pid}/status", encoding="ascii", errors="replace") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1])
    except (OSError, ValueError):
        return None
    return None


def reaped_peak_kb() -> int:
    """Peak resident memory of the largest reaped descendant, as this process (not the child) measured it."""
    import resource

    return resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss

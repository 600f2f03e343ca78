"""A session in the sandbox: one live interpreter that runs the host's cells in order, and its files.

The supervisor enters this after a SESSION request instead of the one JOB. The walls are the one-shot run's:
the child is nobody under the syscall filter, every frame to the host is authenticated with the session's
key and a sequence number that runs on from cell to cell (so no frame of one cell can be replayed as
another's), and what a cell is measured by (time, memory, whether it ended) is observed here or by the
host, never reported by the child. Between cells every process but the interpreter and the file keeper is
killed, and bytes written to the result pipe outside a cell are discarded: a background process started by
one cell cannot answer for the next. (Threads the code starts live in the interpreter itself, as its
variables do; they can write the session's own results, nothing of another session.)

A cell past its timeout is interrupted (SIGINT: KeyboardInterrupt in Python, an interrupted script in Node);
if the interpreter answers within INTERRUPT_GRACE the session goes on with its state, otherwise every user
process is killed and the session ends with the reason `timeout`. Standard library only.
"""

import json
import os
import secrets
import selectors
import signal
import time

from supervisor import (
    INTERRUPT_GRACE,
    RESULT_CAP,
    Channel,
    FileKeeper,
    InputFileError,
    Stream,
    collect_artifacts,
    decode_result,
    pack_message,
    read_frame,
    write_all,
    write_input_files,
)
import relay as egress_relay
from wire import CELL, DONE, FILE, MESSAGE, STDERR, STDOUT

REAP_FOR = 0.5  # how long killed background processes get to be reaped before the next cell


class Interpreter:
    """The language child of a session: its pid and pipes, and whether (and how) it has ended."""

    def __init__(self, child: tuple[int, int, int, int, int]) -> None:
        self.pid, self.stdin, self.stdout, self.stderr, self.results = child
        self.status: int | None = None
        os.set_blocking(self.results, False)

    def ended(self) -> bool:
        if self.status is None:
            waited, status = os.waitpid(self.pid, os.WNOHANG)
            if waited:
                self.status = status
        return self.status is not None

    def exit_reason(self) -> str:
        code = os.waitstatus_to_exitcode(self.status) if self.status is not None else None
        if code is not None and code < 0:
            return f"the interpreter was killed by signal {-code}"
        return f"the interpreter exited (code {code})"

    def discard_stray_results(self) -> int:
        """Bytes on the result pipe while no cell runs came from no cell: drop them."""
        dropped = 0
        while True:
            try:
                data = os.read(self.results, 65536)
            except BlockingIOError:
                return dropped
            if not data:
                return dropped
            dropped += len(data)


def serve_session(channel: Channel, child: tuple[int, int, int, int, int], keeper: FileKeeper, opening: dict) -> None:
    interpreter = Interpreter(child)
    write_all(interpreter.stdin, pack_message(json.dumps({"session": True, **opening["payload"]}).encode()))
    try:
        files = write_input_files(keeper, opening.get("files") or [], opening.get("file_limits") or {})
    except InputFileError as exc:
        channel.send(DONE, json.dumps({"ready": False, "reason": str(exc)[:2000]}).encode())
        return
    channel.send(DONE, json.dumps({"ready": True, "files": files}).encode())
    while True:
        request = read_frame()
        if request is None:
            return
        kind, body = request
        if kind == CELL:
            report = run_cell(channel, interpreter, keeper, body, opening)
            channel.send(DONE, json.dumps(report).encode())
            if report.get("session_over"):
                return
        elif kind == FILE:
            channel.send(DONE, json.dumps(keeper.ask(body)).encode())
        else:
            return


def run_cell(channel: Channel, interpreter: Interpreter, keeper: FileKeeper, cell: dict, opening: dict) -> dict:
    interpreter.discard_stray_results()
    started_wall = time.time()
    output_limit = opening["output_limit"]
    streams = {interpreter.stdout: Stream(channel, STDOUT, output_limit),
               interpreter.stderr: Stream(channel, STDERR, output_limit)}
    over = None
    # The interpreter echoes the cell's nonce in its answer: an answer meant for an earlier cell (one that
    # handed in an early answer and went on running) is never taken for this one.
    nonce = secrets.token_hex(16)
    # A cell with an allowlist gets its egress relay for the cell (relay.py); end_strays ends it with the cell.
    problem = egress_relay.start_for(cell.get("egress"))
    if problem:
        channel.send(STDERR, problem.encode())
    try:
        write_all(interpreter.stdin, pack_message(json.dumps({"code": cell["code"], "arguments": cell["arguments"],
                                                              "nonce": nonce, "egress": cell.get("egress")}).encode()))
    except OSError:
        over = "the interpreter is gone"
    outcome, interrupted, over = ((None, False, over) if over
                                  else relay(interpreter, streams, float(cell["timeout"]), nonce))
    drain_available(streams)
    keep = {interpreter.pid, keeper.pid}
    if over:
        kill_all_but_this()
    else:
        end_strays(keep)
    artifacts, rejected, artifacts_error = collect_artifacts(opening["artifacts"], since=started_wall)
    return {
        "timed_out": interrupted,
        "exit_code": None if outcome is None else (0 if outcome.get("ok") is True else 1),
        "memory_used_kb": peak_rss_kb(interpreter.pid),
        "stdout_truncated": streams[interpreter.stdout].truncated,
        "stderr_truncated": streams[interpreter.stderr].truncated,
        "result": outcome,
        "artifacts": artifacts,
        "rejected_artifacts": rejected,
        "artifacts_error": artifacts_error,
        "session_over": over,
    }


def relay(interpreter: Interpreter, streams: dict[int, Stream], timeout: float, nonce: str
          ) -> tuple[dict | None, bool, str | None]:
    """Relay output until the interpreter answers this cell: (outcome, interrupted, why the session is over)."""
    selector = selectors.DefaultSelector()
    for fd in (*streams, interpreter.results):
        selector.register(fd, selectors.EVENT_READ)
    answer = bytearray()
    deadline = time.monotonic() + timeout
    interrupted = False
    while True:
        outcome = answer_to(answer, nonce)
        if outcome is not None:
            return outcome, interrupted, None
        if len(answer) > RESULT_CAP + MESSAGE.size:
            return None, interrupted, "the interpreter's answer was larger than the protocol allows"
        if interpreter.ended():
            return None, interrupted, interpreter.exit_reason()
        now = time.monotonic()
        if now >= deadline:
            if interrupted:
                return None, True, "timeout"
            interrupted = True
            deadline = now + INTERRUPT_GRACE
            try:
                os.kill(interpreter.pid, signal.SIGINT)
            except ProcessLookupError:
                pass
        for key, _ in selector.select(min(0.1, max(0.0, deadline - now))):
            try:
                data = os.read(key.fd, 65536)
            except BlockingIOError:
                continue
            if key.fd == interpreter.results:
                answer += data
            elif data:
                streams[key.fd].feed(data)
            else:
                selector.unregister(key.fd)


def answer_to(buffer: bytearray, nonce: str) -> dict | None:
    """The answer carrying this cell's nonce, once it is complete in `buffer`; answers to other cells are
    dropped from the buffer."""
    while len(buffer) >= MESSAGE.size:
        (size,) = MESSAGE.unpack_from(buffer)
        if len(buffer) < MESSAGE.size + size:
            return None
        outcome = decode_result(bytes(buffer[MESSAGE.size:MESSAGE.size + size]))
        del buffer[:MESSAGE.size + size]
        if isinstance(outcome, dict) and outcome.pop("nonce", None) == nonce:
            return outcome
    return None


def drain_available(streams: dict[int, Stream]) -> None:
    """What the interpreter wrote before it answered is in the pipes already: read it without waiting."""
    for fd, stream in streams.items():
        os.set_blocking(fd, False)
        try:
            while True:
                data = os.read(fd, 65536)
                if not data:
                    break
                stream.feed(data)
        except BlockingIOError:
            pass
        finally:
            os.set_blocking(fd, True)


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
    """Kill every process the cell left behind (not the interpreter, not the keeper) and reap them."""
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


def kill_all_but_this() -> None:
    try:
        os.kill(-1, signal.SIGKILL)
    except ProcessLookupError:
        pass


def peak_rss_kb(pid: int) -> int | None:
    """The interpreter's peak resident memory so far, read by this process from /proc (not reported by it)."""
    try:
        with open(f"/proc/{pid}/status", encoding="ascii", errors="replace") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1])
    except (OSError, ValueError):
        return None
    return None

"""One cell's exchange with the language child: hand it the cell, pass its output on (capped), take the answer
that carries the cell's nonce, and interrupt or stop it at its deadline.

The sandbox's supervisor (supervisor.py) runs every cell — a one-shot run's one cell and each cell of a session
— through `run_cell`; so does sandboxctl's session host in a SaaS sandbox (providers/drivers/session_host.py).
What a cell is judged by from here, outside the interpreter: its deadline (this process's clock), whether the
interpreter is still alive, and that the answer carries this cell's nonce (an answer meant for an earlier cell,
one that answered early and ran on, is never taken). What the answer says (a value, an exception) comes from
the interpreter, where earlier cells of a session ran too (the README's threat model says what follows).
Standard library only.
"""

import json
import os
import secrets
import selectors
import signal
import time
from collections.abc import Callable

from wire import MESSAGE, pack_message

RESULT_CAP = 4 * 1024 * 1024
QUIET_TICK = 0.1  # how often the loop looks at the clock and the interpreter while nothing arrives


class Stream:
    """One captured output stream: passes up to `cap` bytes on to `send(kind, data)`, counts the rest."""

    def __init__(self, send: Callable[[bytes, bytes], None], kind: bytes, cap: int) -> None:
        self.send = send
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
            self.send(self.kind, chunk)

    @property
    def truncated(self) -> bool:
        return self.total > self.sent


class Interpreter:
    """The language child: its pid and pipes, and whether (and how) it has ended."""

    def __init__(self, pid: int, stdin: int, stdout: int, stderr: int, results: int) -> None:
        self.pid, self.stdin, self.stdout, self.stderr, self.results = pid, stdin, stdout, stderr, results
        self.status: int | None = None

    def ended(self) -> bool:
        if self.status is None:
            try:
                waited, status = os.waitpid(self.pid, os.WNOHANG)
            except ChildProcessError:
                waited, status = self.pid, 0
            if waited:
                self.status = status
        return self.status is not None

    def exit_code(self) -> int | None:
        return os.waitstatus_to_exitcode(self.status) if self.status is not None else None

    def exit_reason(self) -> str:
        code = self.exit_code()
        if code is not None and code < 0:
            return f"the interpreter was killed by signal {-code}"
        return f"the interpreter exited (code {code})"

    def send(self, message: dict) -> None:
        view = memoryview(pack_message(json.dumps(message).encode()))
        while view:
            view = view[os.write(self.stdin, view):]

    def interrupt(self) -> None:
        try:
            os.kill(self.pid, signal.SIGINT)
        except ProcessLookupError:
            pass

    def discard_waiting_bytes(self) -> None:
        """What the interpreter wrote while no cell ran (a timer or thread of an earlier cell, an answer that
        came too late) belongs to no cell: drop it before the next one starts."""
        for fd in (self.results, self.stdout, self.stderr):
            for _ in read_available(fd):
                pass


def run_cell(interpreter: Interpreter, cell: dict, timeout: float, grace: float, streams: dict[int, Stream]
             ) -> tuple[dict | None, bool, str | None]:
    """Run one cell ({code, arguments}): (its outcome or None, whether its deadline passed, why the interpreter
    cannot go on or None). Past `timeout` the interpreter is interrupted and gets `grace` to answer (a
    session's cell); with no grace (a one-shot run) the deadline ends it at once."""
    interpreter.discard_waiting_bytes()
    nonce = secrets.token_hex(16)
    try:
        interpreter.send({"code": cell["code"], "arguments": cell["arguments"], "nonce": nonce,
                          "egress": cell.get("egress")})  # a cell with an allowlist: where its proxy is
    except OSError:
        return None, False, "the interpreter is gone"
    try:
        return relay(interpreter, streams, timeout, grace, nonce)
    finally:
        for fd, stream in streams.items():
            for data in read_available(fd):
                stream.feed(data)


def relay(interpreter: Interpreter, streams: dict[int, Stream], timeout: float, grace: float, nonce: str
          ) -> tuple[dict | None, bool, str | None]:
    """Pass output on until the interpreter answers this cell."""
    selector = selectors.DefaultSelector()
    for fd in (*streams, interpreter.results):
        selector.register(fd, selectors.EVENT_READ)
    answer = bytearray()
    deadline = time.monotonic() + timeout
    interrupted = False
    try:
        while True:
            outcome = answer_to(answer, nonce)
            if outcome is not None:
                return outcome, interrupted, None
            if unreadable(answer):
                # Something else wrote on the result pipe (the code can): no later answer can be found in it.
                return UNREADABLE, interrupted, "the interpreter's answers became unreadable"
            if interpreter.ended():
                # Its last words may still be in the pipe: read them before concluding it died unanswered.
                for data in read_available(interpreter.results):
                    answer += data
                outcome = answer_to(answer, nonce)
                if outcome is not None:
                    return outcome, interrupted, None
                return (UNREADABLE if unreadable(answer) else None), interrupted, interpreter.exit_reason()
            now = time.monotonic()
            if now >= deadline:
                if interrupted or grace <= 0:
                    return None, True, "timeout"
                interrupted, deadline = True, now + grace
                interpreter.interrupt()
            for key, _ in selector.select(min(QUIET_TICK, max(0.0, deadline - now))):
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
    finally:
        selector.close()


def read_available(fd: int):
    """Yield what can be read from `fd` now, without waiting."""
    blocking = os.get_blocking(fd)
    os.set_blocking(fd, False)
    try:
        while True:
            try:
                data = os.read(fd, 65536)
            except (BlockingIOError, OSError):
                return
            if not data:
                return
            yield data
    finally:
        os.set_blocking(fd, blocking)


UNREADABLE = {"ok": False, "error": {"type": "ProtocolError", "message": "unreadable return value"}}


def unreadable(buffer: bytearray) -> bool:
    """Whether what is on the result pipe cannot be a next answer (a length no answer may have)."""
    return len(buffer) >= MESSAGE.size and MESSAGE.unpack_from(buffer)[0] > RESULT_CAP + 1024


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


def decode_result(raw: bytes) -> dict | None:
    if len(raw) > RESULT_CAP:
        return {"ok": False, "error": {"type": "ResultTooLarge", "message": f"return value over {RESULT_CAP} bytes"}}
    try:
        outcome = json.loads(raw)
    except (ValueError, RecursionError):
        outcome = None
    if not isinstance(outcome, dict):
        return {"ok": False, "error": {"type": "ProtocolError", "message": "unreadable return value"}}
    return outcome

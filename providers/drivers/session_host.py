# sandboxctl's session host in a SaaS sandbox: started once by the session's opener (session_open.py) and
# detached, it lives between the service's executions, which are each a fresh short call (session_call.py)
# connecting to it over a Unix socket in its private folder. It holds the session's interpreter: sandboxctl's
# own runner (executor/runner/child.py, the one self-managed sandboxes run) in session mode, a separate process
# in its own session, so the user's code never shares a process with the host or a caller. Files of the
# working folder go through workfiles.py, the self-managed file keeper's code: the same path rules, the same
# walk without following links. Standard library only; nothing here comes from a request but data.
#
# argv: the private folder (runner.py, relay.py, workfiles.py, rules.py, wire.py are in it), the session's lifetime and
# idle timeout in seconds. It ends, and takes its interpreter and folder with it, on a close request, when
# the lifetime has passed, or when no call came for the idle timeout (the service's sandbox may outlive us).
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time

FOLDER = sys.argv[1]
sys.path.insert(0, FOLDER)

import relay  # noqa: E402
import workfiles  # noqa: E402
from wire import INTERRUPT_GRACE, MESSAGE, STDERR, STDOUT, pack_message  # noqa: E402

SOCKET = os.path.join(FOLDER, "host.sock")
WORK = os.path.join(FOLDER, "work")
READY_WAIT = 30.0
REQUEST_CAP = 128 * 1024 * 1024


class Interpreter:
    """The session's interpreter (runner.py, the runner's child.py), run cell by cell through relay.py as the
    self-managed supervisor runs them."""

    def __init__(self) -> None:
        results, result_w = os.pipe()
        self.process = subprocess.Popen(
            [sys.executable, "-I", os.path.join(FOLDER, "runner.py"), str(result_w)], stdin=subprocess.PIPE,
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, pass_fds=(result_w,), cwd=WORK, start_new_session=True)
        os.close(result_w)
        self.child = relay.Interpreter(self.process.pid, self.process.stdin.fileno(), self.process.stdout.fileno(),
                                       self.process.stderr.fileno(), results)
        if self.read_ready(time.monotonic() + READY_WAIT) != b"R":
            raise RuntimeError("the interpreter did not start")
        self.child.send({"keep": True})

    def read_ready(self, deadline: float) -> bytes:
        import select

        if select.select([self.child.results], [], [], max(0.0, deadline - time.monotonic()))[0]:
            return os.read(self.child.results, 1)
        return b""

    def cell(self, request: dict) -> dict:
        limit = int(request.get("output_limit") or 1024 * 1024)
        output = {STDOUT: bytearray(), STDERR: bytearray()}

        def keep(kind: bytes, data: bytes) -> None:
            output[kind] += data

        streams = {self.child.stdout: relay.Stream(keep, STDOUT, limit),
                   self.child.stderr: relay.Stream(keep, STDERR, limit)}
        started = time.monotonic()
        outcome, timed_out, over = relay.run_cell(
            self.child, {"code": request["code"], "arguments": request.get("arguments") or {}},
            float(request["timeout"]), INTERRUPT_GRACE, streams)
        if over:
            self.kill()
        return {
            "outcome": outcome, "timed_out": timed_out, "session_over": over,
            "duration": time.monotonic() - started,
            "stdout": bytes(output[STDOUT]).decode("utf-8", "replace"),
            "stderr": bytes(output[STDERR]).decode("utf-8", "replace"),
            "stdout_truncated": streams[self.child.stdout].truncated,
            "stderr_truncated": streams[self.child.stderr].truncated,
        }

    def kill(self) -> None:
        try:
            os.killpg(self.process.pid, signal.SIGKILL)  # the interpreter and whatever its cells started
        except OSError:
            pass
        self.process.wait()


def read_request(connection: socket.socket) -> dict:
    header = receive(connection, MESSAGE.size)
    (size,) = MESSAGE.unpack(header)
    if size > REQUEST_CAP:
        raise ValueError("request too large")
    return json.loads(receive(connection, size))


def receive(connection: socket.socket, size: int) -> bytes:
    chunks = []
    while size:
        chunk = connection.recv(min(size, 1 << 20))
        if not chunk:
            raise EOFError
        chunks.append(chunk)
        size -= len(chunk)
    return b"".join(chunks)


def serve(interpreter: Interpreter, listener: socket.socket, lifetime: float, idle: float) -> None:
    ends_at = time.monotonic() + lifetime
    last_call = time.monotonic()
    listener.settimeout(1.0)
    while time.monotonic() < ends_at and time.monotonic() - last_call < idle:
        try:
            connection, _ = listener.accept()
        except TimeoutError:
            continue
        with connection:
            connection.settimeout(60)
            try:
                request = read_request(connection)
            except (OSError, EOFError, ValueError):
                continue
            op = request.get("op")
            if op == "cell":
                answer = interpreter.cell(request)
            elif op == "close":
                answer = {"ok": True}
            else:
                answer = workfiles.answer(request)
            try:
                connection.sendall(pack_message(json.dumps(answer).encode()))
            except OSError:
                pass
            last_call = time.monotonic()
            if op == "close" or answer.get("session_over"):
                return


def main() -> None:
    lifetime, idle = float(sys.argv[2]), float(sys.argv[3])
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))  # ended from outside: still take all with us
    workfiles.WORK_DIR = WORK
    os.makedirs(WORK, exist_ok=True)
    interpreter = None
    try:
        interpreter = Interpreter()
        listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        listener.bind(SOCKET + ".new")
        os.chmod(SOCKET + ".new", 0o600)
        listener.listen(8)
        os.rename(SOCKET + ".new", SOCKET)  # the opener waits for this name: it appears only when all is ready
        serve(interpreter, listener, lifetime, idle)
    finally:
        if interpreter is not None:
            interpreter.kill()
        shutil.rmtree(FOLDER, ignore_errors=True)


if __name__ == "__main__":
    main()

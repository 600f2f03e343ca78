# sandboxctl's session host in a SaaS sandbox: started once by the session's opener (session_open.py) and
# detached, it lives between the service's executions, which are each a fresh short call (session_call.py)
# connecting to it over a Unix socket in its private folder. It holds the session's interpreter: sandboxctl's
# own runner (executor/runner/child.py, the one self-managed sandboxes run) in session mode, a separate process
# in its own session, so the user's code never shares a process with the host or a caller. Files of the
# working folder go through workfiles.py, the self-managed file keeper's code: the same path rules, the same
# walk without following links. Standard library only; nothing here comes from a request but data.
#
# argv: the private folder (runner.py, workfiles.py, rules.py, wire.py are in it), the session's lifetime and
# idle timeout in seconds. It ends, and takes its interpreter and folder with it, on a close request, when
# the lifetime has passed, or when no call came for the idle timeout (the service's sandbox may outlive us).
import json
import os
import secrets
import selectors
import shutil
import signal
import socket
import subprocess
import sys
import time

FOLDER = sys.argv[1]
sys.path.insert(0, FOLDER)

import workfiles  # noqa: E402
from wire import MESSAGE, pack_message  # noqa: E402

SOCKET = os.path.join(FOLDER, "host.sock")
WORK = os.path.join(FOLDER, "work")
READY_WAIT = 30.0
INTERRUPT_GRACE = 1.0  # a cell past its timeout gets this long, after SIGINT, to stop and keep the session
REQUEST_CAP = 128 * 1024 * 1024
ANSWER_CAP = 4 * 1024 * 1024 + MESSAGE.size


class Interpreter:
    def __init__(self) -> None:
        self.results, result_w = os.pipe()
        self.process = subprocess.Popen(
            [sys.executable, "-I", os.path.join(FOLDER, "runner.py"), str(result_w)], stdin=subprocess.PIPE,
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, pass_fds=(result_w,), cwd=WORK, start_new_session=True)
        os.close(result_w)
        for fd in (self.results, self.process.stdout.fileno(), self.process.stderr.fileno()):
            os.set_blocking(fd, False)
        if self.read_results(time.monotonic() + READY_WAIT, 1) != b"R":
            raise RuntimeError("the interpreter did not start")
        self.send({"session": True})

    def read_results(self, deadline: float, size: int) -> bytes:
        data = b""
        selector = selectors.DefaultSelector()
        selector.register(self.results, selectors.EVENT_READ)
        while len(data) < size and time.monotonic() < deadline:
            if selector.select(max(0.0, deadline - time.monotonic())):
                chunk = os.read(self.results, size - len(data))
                if not chunk:
                    break
                data += chunk
        selector.close()
        return data

    def send(self, message: dict) -> None:
        self.process.stdin.write(pack_message(json.dumps(message).encode()))
        self.process.stdin.flush()

    def discard_stray_results(self) -> None:
        """Bytes an earlier cell's code wrote on the result pipe after its answer are no answer of this cell."""
        try:
            while os.read(self.results, 65536):
                pass
        except BlockingIOError:
            pass

    def cell(self, request: dict) -> dict:
        self.discard_stray_results()
        limit = int(request.get("output_limit") or 1024 * 1024)
        output = {"stdout": bytearray(), "stderr": bytearray()}
        nonce = secrets.token_hex(16)
        started = time.monotonic()
        try:
            self.send({"code": request["code"], "arguments": request.get("arguments") or {}, "nonce": nonce})
        except OSError:
            return {"outcome": None, "timed_out": False, "session_over": "the interpreter is gone"}
        outcome, interrupted, over = self.relay(output, limit, float(request["timeout"]), nonce)
        if over:
            self.kill()
        return {
            "outcome": outcome, "timed_out": interrupted, "session_over": over,
            "duration": time.monotonic() - started,
            "stdout": output["stdout"][:limit].decode("utf-8", "replace"),
            "stderr": output["stderr"][:limit].decode("utf-8", "replace"),
            "stdout_truncated": len(output["stdout"]) > limit, "stderr_truncated": len(output["stderr"]) > limit,
        }

    def relay(self, output: dict, limit: int, timeout: float, nonce: str) -> tuple:
        """Collect output until the interpreter answers this cell: (outcome, interrupted, why the session is over)."""
        streams = {self.process.stdout.fileno(): "stdout", self.process.stderr.fileno(): "stderr"}
        selector = selectors.DefaultSelector()
        for fd in (*streams, self.results):
            selector.register(fd, selectors.EVENT_READ)
        answer = bytearray()
        deadline = time.monotonic() + timeout
        interrupted = False
        try:
            while True:
                outcome = answer_to(answer, nonce)
                if outcome is not None:
                    return outcome, interrupted, None
                if len(answer) > ANSWER_CAP:
                    return None, interrupted, "the interpreter's answer was larger than the protocol allows"
                if self.process.poll() is not None:
                    return None, interrupted, f"the interpreter exited (code {self.process.returncode})"
                now = time.monotonic()
                if now >= deadline:
                    if interrupted:
                        return None, True, "timeout"
                    interrupted, deadline = True, now + INTERRUPT_GRACE
                    os.kill(self.process.pid, signal.SIGINT)
                for key, _ in selector.select(min(0.1, max(0.0, deadline - now))):
                    try:
                        data = os.read(key.fd, 65536)
                    except BlockingIOError:
                        continue
                    if key.fd == self.results:
                        answer += data
                    elif data:
                        kept = output[streams[key.fd]]
                        kept += data[: limit + 1 - len(kept)]  # one byte past the limit says it was passed
                    else:
                        selector.unregister(key.fd)
        finally:
            selector.close()

    def kill(self) -> None:
        try:
            os.killpg(self.process.pid, signal.SIGKILL)  # the interpreter and whatever its cells started
        except OSError:
            pass
        self.process.wait()


def answer_to(answer: bytearray, nonce: str):
    """The outcome for this cell once its whole answer is in; answers for earlier cells are dropped."""
    while len(answer) >= MESSAGE.size:
        (size,) = MESSAGE.unpack(answer[: MESSAGE.size])
        if len(answer) < MESSAGE.size + size:
            return None
        body = bytes(answer[MESSAGE.size: MESSAGE.size + size])
        del answer[: MESSAGE.size + size]
        try:
            outcome = json.loads(body)
        except ValueError:
            continue
        if isinstance(outcome, dict) and outcome.pop("nonce", None) == nonce:
            return outcome
    return None


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

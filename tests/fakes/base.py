"""A small threaded HTTP server for protocol fakes: records requests, executes the driver programs it is sent
for real (as the SaaS interpreter would), and answers any operation with a scripted fault."""

import json
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

HTML_ERROR = b"<html><head><title>502 Bad Gateway</title></head><body><h1>Bad Gateway</h1></body></html>"


@dataclass
class Fault:
    """How one operation misbehaves. `status` None with a `delay`: answer correctly, but late."""

    status: int | None = 500
    body: object = None  # a dict/list is sent as JSON, bytes as they are; None: a JSON error of the status
    content_type: str = "application/json"
    headers: dict = field(default_factory=dict)
    delay: float = 0.0
    times: int | None = None  # only the next `times` calls; None: every call


def run_program(language: str, program: str, timeout: float = 60) -> tuple[str, str]:
    """Run a driver program as the service's interpreter would: a Python or Node.js process of its own that
    receives the program as data (a kernel gets it over the wire), so it is not in any process's argv."""
    command = [sys.executable, "-"] if language == "python" else ["node", "-"]
    try:
        done = subprocess.run(command, input=program.encode(), capture_output=True, timeout=timeout)
    except subprocess.TimeoutExpired as exc:
        return (exc.stdout or b"").decode(errors="replace"), "the fake interpreter gave up\n"
    return done.stdout.decode(errors="replace"), done.stderr.decode(errors="replace")


class FakeServer:
    def __init__(self) -> None:
        self.faults: dict[str, Fault] = {}
        self.requests: list[tuple[str, str, dict, bytes]] = []
        self.lock = threading.Lock()
        fake = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def _handle(self):
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                with fake.lock:
                    fake.requests.append((self.command, self.path, dict(self.headers), body))
                try:
                    fake.handle(self, body)
                except (BrokenPipeError, ConnectionResetError):
                    pass  # the client gave up; a late answer is part of some scenarios

            do_GET = do_POST = do_DELETE = do_PUT = _handle

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    def paths(self, method: str | None = None) -> list[str]:
        return [path for verb, path, _, _ in self.requests if method in (None, verb)]

    def fail(self, operation: str, **fault) -> None:
        self.faults[operation] = Fault(**fault)

    def fault_for(self, operation: str) -> Fault | None:
        with self.lock:
            fault = self.faults.get(operation)
            if fault is None:
                return None
            if fault.times is not None:
                fault.times -= 1
                if fault.times <= 0:
                    del self.faults[operation]
            return fault

    def answered_by_fault(self, request: BaseHTTPRequestHandler, operation: str) -> bool:
        """Apply the operation's fault, if any: True when it answered (the normal path must not)."""
        fault = self.fault_for(operation)
        if fault is None:
            return False
        time.sleep(fault.delay)
        if fault.status is None:
            return False
        body = fault.body if fault.body is not None else {"code": fault.status, "message": f"fake {operation} fault"}
        self.reply(request, fault.status, body, fault.content_type, fault.headers)
        return True

    def handle(self, request: BaseHTTPRequestHandler, body: bytes) -> None:
        raise NotImplementedError

    @staticmethod
    def reply(request: BaseHTTPRequestHandler, status: int, payload=None, content_type="application/json",
              headers: dict | None = None) -> None:
        data = b"" if payload is None else (payload if isinstance(payload, bytes) else json.dumps(payload).encode())
        request.send_response(status)
        request.send_header("Content-Type", content_type)
        request.send_header("Content-Length", str(len(data)))
        for name, value in (headers or {}).items():
            request.send_header(name, value)
        request.end_headers()
        request.wfile.write(data)

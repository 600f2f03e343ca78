"""A small threaded HTTP server for protocol fakes: records requests, answers from a scripted mode."""

import json
import re
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

DRIVER_CALL = re.compile(r'\("([A-Za-z0-9+/=]*)", "([A-Za-z0-9+/=]*)", "(__sandboxctl_[0-9a-f]+__)"\)')


def driver_inputs(program: str) -> tuple[str, str, str]:
    """The (code, arguments JSON, marker) our driver program carries, read back without running anything."""
    import base64

    code_b64, arguments_b64, marker = DRIVER_CALL.findall(program)[-1]
    return base64.b64decode(code_b64).decode(), base64.b64decode(arguments_b64).decode(), marker


def outcome_line(marker: str, outcome: dict) -> str:
    import base64

    return "\n" + marker + base64.b64encode(json.dumps(outcome).encode()).decode() + marker + "\n"


class FakeServer:
    def __init__(self) -> None:
        self.mode = "success"
        self.requests: list[tuple[str, str, dict, bytes]] = []
        fake = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def _handle(self):
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                fake.requests.append((self.command, self.path, dict(self.headers), body))
                fake.handle(self, body)

            do_GET = do_POST = do_DELETE = do_PUT = _handle

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    def paths(self, method: str | None = None) -> list[str]:
        return [path for verb, path, _, _ in self.requests if method in (None, verb)]

    def handle(self, request: BaseHTTPRequestHandler, body: bytes) -> None:
        raise NotImplementedError

    @staticmethod
    def reply(request: BaseHTTPRequestHandler, status: int, payload=None, content_type="application/json") -> None:
        data = b"" if payload is None else (payload if isinstance(payload, bytes) else json.dumps(payload).encode())
        request.send_response(status)
        request.send_header("Content-Type", content_type)
        request.send_header("Content-Length", str(len(data)))
        request.end_headers()
        request.wfile.write(data)

"""A local stand-in for E2B's API and code-interpreter endpoint, speaking their wire protocol; it executes nothing.

API: POST /v2/sandboxes (X-API-Key), DELETE /sandboxes/{id}. Sandbox: POST /execute answering NDJSON lines
(stdout, stderr, error, end_of_execution). Modes: success, user_error, timeout (stalls), auth, server_error.
"""

import json
import re
import time
import uuid

from tests.fakes.base import FakeServer, driver_inputs, outcome_line


class FakeE2B(FakeServer):
    def __init__(self, api_key: str) -> None:
        self.api_key = api_key
        self.sandboxes: set[str] = set()
        self.killed: list[str] = []
        super().__init__()

    def handle(self, request, body: bytes) -> None:
        path = request.path.split("?")[0]
        if request.command == "POST" and path == "/execute":
            return self.execute(request, json.loads(body))
        if self.mode == "auth" or request.headers.get("X-API-Key") != self.api_key:
            return self.reply(request, 401, {"code": 401, "message": "Invalid API key"})
        if self.mode == "server_error":
            return self.reply(request, 502, {"code": 502, "message": "upstream unavailable"})
        if request.command == "POST" and path == "/v2/sandboxes":
            sandbox_id = f"i{uuid.uuid4().hex[:16]}"
            self.sandboxes.add(sandbox_id)
            template = json.loads(body).get("templateID")
            return self.reply(request, 201, {"templateID": template, "sandboxID": sandbox_id, "clientID": "fake",
                                             "envdVersion": "0.2.4", "envdAccessToken": "envd-token"})
        found = re.match(r"^/sandboxes/([^/]+)$", path)
        if request.command == "DELETE" and found:
            self.killed.append(found.group(1))
            self.sandboxes.discard(found.group(1))
            return self.reply(request, 204)
        return self.reply(request, 404, {"code": 404, "message": f"no route {path}"})

    def execute(self, request, body: dict) -> None:
        _, arguments, marker = driver_inputs(body["code"])
        now = time.time()
        if self.mode == "timeout":
            lines = [{"type": "stdout", "text": "started\n", "timestamp": now}]
        elif self.mode == "user_error":
            outcome = {"ok": False, "error": {"type": "ValueError", "message": "bad input"}}
            lines = [{"type": "stderr", "text": "ValueError: bad input\n", "timestamp": now},
                     {"type": "stdout", "text": outcome_line(marker, outcome), "timestamp": now},
                     {"type": "end_of_execution"}]
        else:
            outcome = {"ok": True, "value_json": arguments}
            lines = [{"type": "stdout", "text": "hello from the fake\n", "timestamp": now},
                     {"type": "stdout", "text": outcome_line(marker, outcome), "timestamp": now},
                     {"type": "end_of_execution"}]
        request.send_response(200)
        request.send_header("Content-Type", "application/x-ndjson")
        request.send_header("Transfer-Encoding", "chunked")
        request.end_headers()
        for line in lines:
            chunk = (json.dumps(line) + "\n").encode()
            request.wfile.write(f"{len(chunk):x}\r\n".encode() + chunk + b"\r\n")
            request.wfile.flush()
        if self.mode == "timeout":
            time.sleep(5)  # never finishes within the run's deadline
        request.wfile.write(b"0\r\n\r\n")

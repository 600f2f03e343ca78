"""A local stand-in for E2B's API and code-interpreter endpoint, speaking their wire protocol.

API (X-API-Key): POST /v2/sandboxes (Idempotency-Key: the same key answers the same sandbox), GET
/v2/sandboxes?metadata=…, DELETE /sandboxes/{id}, PUT /sandboxes/{id}/network (kept in `networks`).
Sandbox: POST /execute runs the driver program in a real Python or Node.js process and streams its output as
NDJSON (stdout, stderr, error, end_of_execution). Faults per operation (create, list, delete, execute) come
from FakeServer.fail; `execute_mode` adds what only an interpreter does: "stall" (never finishes) and
"interrupt" (the kernel is interrupted).
"""

import json
import re
import time
import urllib.parse
import uuid
from datetime import UTC, datetime, timedelta

from tests.fakes.base import FakeServer, run_program


class FakeE2B(FakeServer):
    def __init__(self, api_key: str) -> None:
        self.api_key = api_key
        self.sandboxes: dict[str, dict] = {}
        self.by_key: dict[str, str] = {}
        self.killed: list[str] = []
        self.created: list[dict] = []
        self.networks: dict[str, list[dict]] = {}  # each sandbox's network updates, in order
        self.execute_mode = "run"
        super().__init__()

    def handle(self, request, body: bytes) -> None:
        path, _, query = request.path.partition("?")
        if request.command == "POST" and path == "/execute":
            return self.execute(request, json.loads(body))
        if request.headers.get("X-API-Key") != self.api_key:
            return self.reply(request, 401, {"code": 401, "message": "Invalid API key"})
        if request.command == "POST" and path == "/v2/sandboxes":
            if not self.answered_by_fault(request, "create"):
                self.create(request, json.loads(body))
            return None
        if request.command == "GET" and path == "/v2/sandboxes":
            if not self.answered_by_fault(request, "list"):
                self.list(request, urllib.parse.parse_qs(query))
            return None
        network = re.match(r"^/sandboxes/([^/]+)/network$", path)
        if request.command == "PUT" and network:
            if network.group(1) not in self.sandboxes:
                return self.reply(request, 404, {"code": 404, "message": "sandbox not found"})
            self.networks.setdefault(network.group(1), []).append(json.loads(body))
            return self.reply(request, 204)
        found = re.match(r"^/sandboxes/([^/]+)$", path)
        if request.command == "DELETE" and found:
            if self.answered_by_fault(request, "delete"):
                return None
            if self.sandboxes.pop(found.group(1), None) is None:
                return self.reply(request, 404, {"code": 404, "message": "sandbox not found"})
            self.killed.append(found.group(1))
            return self.reply(request, 204)
        return self.reply(request, 404, {"code": 404, "message": f"no route {path}"})

    def create(self, request, body: dict) -> None:
        key = request.headers.get("Idempotency-Key")
        sandbox_id = self.by_key.get(key) if key else None
        if sandbox_id is None or sandbox_id not in self.sandboxes:
            sandbox_id = f"i{uuid.uuid4().hex[:16]}"
            self.sandboxes[sandbox_id] = {"templateID": body.get("templateID"), "metadata": body.get("metadata") or {},
                                          "started": datetime.now(UTC)}
            self.created.append({"id": sandbox_id, **body})
            if key:
                self.by_key[key] = sandbox_id
        self.reply(request, 201, {"templateID": body.get("templateID"), "sandboxID": sandbox_id, "clientID": "fake",
                                  "envdVersion": "0.2.4", "envdAccessToken": "envd-token"})

    def list(self, request, query: dict) -> None:
        wanted = dict(urllib.parse.parse_qsl(query.get("metadata", [""])[0]))
        listed = [
            {"templateID": sandbox["templateID"], "sandboxID": sandbox_id, "clientID": "fake",
             "startedAt": sandbox["started"].isoformat(),
             "endAt": (sandbox["started"] + timedelta(hours=1)).isoformat(),
             "cpuCount": 2, "memoryMB": 512, "diskSizeMB": 1024, "state": "running", "envdVersion": "0.2.4",
             "metadata": sandbox["metadata"]}
            for sandbox_id, sandbox in self.sandboxes.items()
            if all(sandbox["metadata"].get(name) == value for name, value in wanted.items())
        ]
        self.reply(request, 200, listed)

    def execute(self, request, body: dict) -> None:
        if request.headers.get("E2b-Sandbox-Id") not in self.sandboxes:
            return self.reply(request, 502, b"sandbox not found", "text/plain")
        if self.answered_by_fault(request, "execute"):
            return None
        now = time.time()
        if self.execute_mode == "stall":
            lines = [{"type": "stdout", "text": "started\n", "timestamp": now}]
        elif self.execute_mode == "interrupt":
            lines = [{"type": "error", "name": "KeyboardInterrupt", "value": "", "traceback": "KeyboardInterrupt"},
                     {"type": "end_of_execution"}]
        elif self.execute_mode == "garbage":
            lines = ["this is not json"]
        else:
            language = "python" if body.get("language") == "python" else "nodejs"
            stdout, stderr = run_program(language, body["code"])
            lines = [{"type": "stdout", "text": stdout, "timestamp": now},
                     {"type": "stderr", "text": stderr, "timestamp": now}, {"type": "end_of_execution"}]
        request.send_response(200)
        request.send_header("Content-Type", "application/x-ndjson")
        request.send_header("Transfer-Encoding", "chunked")
        request.end_headers()
        for line in lines:
            chunk = ((line if isinstance(line, str) else json.dumps(line)) + "\n").encode()
            request.wfile.write(f"{len(chunk):x}\r\n".encode() + chunk + b"\r\n")
            request.wfile.flush()
        if self.execute_mode == "stall":
            time.sleep(30)  # never finishes within the run's deadline
        request.wfile.write(b"0\r\n\r\n")

"""A local stand-in for AgentRun's data plane, speaking its wire protocol; it executes nothing.

Endpoints (under the data endpoint): POST /sandboxes, GET /sandboxes/{id}, POST /sandboxes/{id}/contexts/execute,
GET /sandboxes/{id}/health, DELETE /sandboxes/{id}; answers in the {"code": "SUCCESS", "data": …} envelope.
Requests must carry the SDK's RAM signature (Agentrun-Authorization) made with the expected AccessKey ID.
Modes: success (main() returns its arguments), user_error, timeout, auth, server_error.
"""

import json
import re
import uuid

from tests.fakes.base import FakeServer, driver_inputs, outcome_line

SANDBOX_PATH = re.compile(r"^/sandboxes/([^/]+)(/.*)?$")


class FakeAgentRun(FakeServer):
    def __init__(self, access_key_id: str) -> None:
        self.access_key_id = access_key_id
        self.sandboxes: dict[str, dict] = {}
        self.deleted: list[str] = []
        super().__init__()

    def envelope(self, data) -> dict:
        return {"code": "SUCCESS", "requestId": uuid.uuid4().hex, "data": data}

    def handle(self, request, body: bytes) -> None:
        signature = request.headers.get("Agentrun-Authorization", "")
        if self.mode == "auth" or f"Credential={self.access_key_id}/" not in signature:
            return self.reply(request, 403, {"code": "Forbidden", "message": "signature does not match",
                                             "requestId": uuid.uuid4().hex})
        if self.mode == "server_error":
            return self.reply(request, 503, {"code": "ServiceUnavailable", "message": "try again later"})
        path = request.path.split("?")[0].rstrip("/") or "/"
        if request.command == "POST" and path == "/sandboxes":
            return self.create(request, json.loads(body))
        found = SANDBOX_PATH.match(path)
        if not found or found.group(1) not in self.sandboxes:
            return self.reply(request, 404, {"code": "NotFound", "message": "sandbox not found"})
        sandbox_id, rest = found.group(1), found.group(2) or ""
        if request.command == "GET" and rest == "":
            return self.reply(request, 200, self.envelope(self.sandboxes[sandbox_id]))
        if request.command == "GET" and rest == "/health":
            return self.reply(request, 200, self.envelope({"status": "ok"}))
        if request.command == "DELETE" and rest == "":
            self.deleted.append(sandbox_id)
            return self.reply(request, 200, self.envelope(self.sandboxes.pop(sandbox_id)))
        if request.command == "POST" and rest == "/contexts/execute":
            return self.reply(request, 200, self.envelope(self.execute(json.loads(body))))
        return self.reply(request, 404, {"code": "NotFound", "message": f"no route {path}"})

    def create(self, request, body: dict) -> None:
        sandbox_id = f"sbx-{uuid.uuid4().hex[:12]}"
        self.sandboxes[sandbox_id] = {
            "sandboxId": sandbox_id,
            "templateName": body["templateName"],
            "sandboxIdleTimeoutSeconds": body.get("sandboxIdleTimeoutSeconds"),
            "status": "READY",
        }
        self.reply(request, 200, self.envelope(self.sandboxes[sandbox_id]))

    def execute(self, body: dict) -> dict:
        _, arguments, marker = driver_inputs(body["code"])
        context = {"contextId": f"ctx-{uuid.uuid4().hex[:8]}", "language": body.get("language")}
        if self.mode == "timeout":
            results = [{"type": "stdout", "text": "started\n"},
                       {"type": "error", "name": "TimeoutError", "text": "execution timeout"},
                       {"type": "endOfExecution", "status": "timeout"}]
        elif self.mode == "user_error":
            trace = 'Traceback (most recent call last):\n  File "main.py", line 2, in main\nValueError: bad input\n'
            outcome = {"ok": False, "error": {"type": "ValueError", "message": "bad input"}}
            results = [{"type": "stderr", "text": trace}, {"type": "stdout", "text": outcome_line(marker, outcome)},
                       {"type": "endOfExecution", "status": "ok"}]
        else:
            outcome = {"ok": True, "value_json": arguments}
            results = [{"type": "stdout", "text": "hello from the fake\n"},
                       {"type": "stdout", "text": outcome_line(marker, outcome)},
                       {"type": "endOfExecution", "status": "ok"}]
        return {**context, "results": results}

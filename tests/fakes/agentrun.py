"""A local stand-in for AgentRun's data plane, speaking its wire protocol.

Endpoints (under the data endpoint): POST /sandboxes (a client-chosen sandboxId that exists answers 409),
GET /sandboxes/{id}, GET /sandboxes/{id}/health, POST /sandboxes/{id}/contexts/execute (runs the driver
program in a real Python or Node.js process), DELETE /sandboxes/{id}; answers in the {"code": "SUCCESS",
"data": …} envelope. Requests must carry the SDK's RAM signature (Agentrun-Authorization) made with the
expected AccessKey ID. Faults per operation (create, get, health, execute, delete) come from
FakeServer.fail; `execute_mode` "flat" answers in the flat {stdout, stderr, exitCode} shape, "timeout" as the
service does when its own limit stops the code; `not_ready_polls` makes new sandboxes start unready.

The same server also answers the control plane's templates (ROA, signed ACS3-HMAC-SHA256 with the same
AccessKey ID): GET /2025-09-10/templates/{name} and POST /2025-09-10/templates; a new template reports
CREATING for `template_creating_polls` lookups, then READY.
"""

import json
import re
import uuid

from tests.fakes.base import FakeServer, run_program

SANDBOX_PATH = re.compile(r"^/sandboxes/([^/]+)(/.*)?$")
TEMPLATES = "/2025-09-10/templates"


class FakeAgentRun(FakeServer):
    def __init__(self, access_key_id: str) -> None:
        self.access_key_id = access_key_id
        self.sandboxes: dict[str, dict] = {}
        self.deleted: list[str] = []
        self.execute_mode = "run"
        self.not_ready_polls = 0
        self.executed_before_ready = False
        self.templates: dict[str, dict] = {}
        self.template_creating_polls = 0
        super().__init__()

    def envelope(self, data) -> dict:
        return {"code": "SUCCESS", "requestId": uuid.uuid4().hex, "data": data}

    def handle(self, request, body: bytes) -> None:
        if request.path.startswith(TEMPLATES):
            return self.control(request, body)
        signature = request.headers.get("Agentrun-Authorization", "")
        if f"Credential={self.access_key_id}/" not in signature:
            return self.reply(request, 403, {"code": "Forbidden", "message": "signature does not match",
                                             "requestId": uuid.uuid4().hex})
        path = request.path.split("?")[0].rstrip("/") or "/"
        if request.command == "POST" and path == "/sandboxes":
            if not self.answered_by_fault(request, "create"):
                self.create(request, json.loads(body))
            return None
        found = SANDBOX_PATH.match(path)
        operation = self.operation(request.command, found.group(2) if found else None)
        if self.answered_by_fault(request, operation):
            return None
        if not found or found.group(1) not in self.sandboxes:
            return self.reply(request, 404, {"code": "NotFound", "message": "sandbox not found"})
        sandbox_id = found.group(1)
        sandbox = self.sandboxes[sandbox_id]
        if operation == "get":
            return self.reply(request, 200, self.envelope(sandbox))
        if operation == "health":
            sandbox["polls"] += 1
            ready = sandbox["polls"] > self.not_ready_polls
            return self.reply(request, 200, {"status": "ok" if ready else "starting"})
        if operation == "delete":
            self.deleted.append(sandbox_id)
            return self.reply(request, 200, self.envelope(self.sandboxes.pop(sandbox_id)))
        if operation == "execute":
            if sandbox["polls"] <= self.not_ready_polls:
                self.executed_before_ready = True
            return self.reply(request, 200, self.envelope(self.execute(json.loads(body))))
        return self.reply(request, 404, {"code": "NotFound", "message": f"no route {path}"})

    @staticmethod
    def operation(method: str, rest: str | None) -> str:
        return {("GET", ""): "get", ("GET", None): "get", ("GET", "/health"): "health", ("DELETE", ""): "delete",
                ("DELETE", None): "delete", ("POST", "/contexts/execute"): "execute"}.get((method, rest), "other")

    def create(self, request, body: dict) -> None:
        sandbox_id = body.get("sandboxId") or f"sbx-{uuid.uuid4().hex[:12]}"
        if sandbox_id in self.sandboxes:
            return self.reply(request, 409, {"code": "SandboxAlreadyExists", "message": "sandbox exists"})
        self.sandboxes[sandbox_id] = {
            "sandboxId": sandbox_id,
            "templateName": body["templateName"],
            "sandboxIdleTimeoutSeconds": body.get("sandboxIdleTimeoutSeconds"),
            "status": "READY",
            "polls": 0,
        }
        return self.reply(request, 200, self.envelope(self.sandboxes[sandbox_id]))

    def execute(self, body: dict) -> dict:
        context = {"contextId": f"ctx-{uuid.uuid4().hex[:8]}", "language": body.get("language")}
        if self.execute_mode == "timeout":
            return {**context, "results": [{"type": "stdout", "text": "started\n"},
                                           {"type": "error", "name": "TimeoutError", "text": "execution timeout"},
                                           {"type": "endOfExecution", "status": "timeout"}]}
        language = "python" if body.get("language") == "python" else "nodejs"
        # The service's `timeout` is in seconds, as the SDK documents: the fake's interpreter keeps to it.
        stdout, stderr = run_program(language, body["code"], timeout=float(body.get("timeout", 30)) + 1)
        if self.execute_mode == "flat":
            return {"stdout": stdout, "stderr": stderr, "exitCode": 0}
        return {**context, "results": [{"type": "stdout", "text": stdout}, {"type": "stderr", "text": stderr},
                                       {"type": "endOfExecution", "status": "ok"}]}

    def control(self, request, body: bytes) -> None:
        envelope = {"requestId": uuid.uuid4().hex}
        if f"Credential={self.access_key_id}," not in request.headers.get("Authorization", ""):
            return self.reply(request, 403, {**envelope, "code": "InvalidAccessKeyId", "message": "denied"})
        if self.answered_by_fault(request, "template"):
            return None
        path = request.path.split("?")[0]
        if request.command == "POST" and path == TEMPLATES:
            wanted = json.loads(body)
            name = wanted["templateName"]
            if name in self.templates:
                return self.reply(request, 409, {**envelope, "code": "TemplateAlreadyExists", "message": name})
            self.templates[name] = {"templateName": name, "templateType": wanted.get("templateType"),
                                    "templateId": uuid.uuid4().hex, "status": "CREATING", "lookups": 0}
            return self.reply(request, 200, {**envelope, "code": "SUCCESS", "data": self.public(name)})
        name = path[len(TEMPLATES) + 1:]
        if request.command == "GET" and name:
            template = self.templates.get(name)
            if template is None:
                return self.reply(request, 404, {**envelope, "code": "TemplateNotFound", "message": name})
            template["lookups"] += 1
            if template["lookups"] > self.template_creating_polls:
                template["status"] = "READY"
            return self.reply(request, 200, {**envelope, "code": "SUCCESS", "data": self.public(name)})
        return self.reply(request, 404, {**envelope, "code": "NotFound", "message": path})

    def public(self, name: str) -> dict:
        return {key: value for key, value in self.templates[name].items() if key != "lookups"}

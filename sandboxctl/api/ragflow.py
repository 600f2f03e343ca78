"""RAGFlow compatibility: its executor-manager protocol (`POST /run`, `GET /healthz`) on its own port, and
answers shaped exactly as RAGFlow's executor gives them, so stock RAGFlow works unchanged.

RAGFlow's CodeExec tool judges a run failed only when stderr is non-empty while stdout is empty and there
is neither a result nor an artifact; it never reads `status` or `exit_code`. RAGFlow's executor therefore
answers every outcome but success with stdout "" and the reason in stderr, with its own exit codes (-124
for time, -137 for memory). `/run` answers the same way on both ports; `/api/v1/executions` keeps the full
detail (partial stdout and all).

On RAGFLOW_PORT, which serves only this protocol, a request without a token from a network listed in
SANDBOX_RAGFLOW_TRUSTED_NETWORKS runs as the non-staff service account `ragflow` (RAGFlow's self-managed
provider has no setting for a token); from anywhere else a token is still required.
"""

import ipaddress

from django.conf import settings
from django.http import JsonResponse
from rest_framework import authentication, exceptions

from providers.base import Status
from sandboxctl.api.intake import RefusalMiddleware
from sandboxctl.executions import artifact_store
from sandboxctl.executions.accounts import RAGFLOW_ACCOUNT, service_account
from sandboxctl.executions.models import NOTHING_RETURNED, Execution

RAGFLOW_PATHS = ("/run", "/healthz", "/")
LIMITS = {
    Status.TIMEOUT: ("time", -124, "Execution timeout"),
    Status.MEMORY_LIMIT: ("memory", -137, "Memory limit exceeded (killed by OOM)"),
}
POOL_BUSY_EXIT, RUNNER_ERROR_EXIT = -10, -3
# What the reference's runners print when the code has no main(): Python's runner does `from main import main`,
# Node's looks the function up on the module.
NO_MAIN = {
    "python": "ImportError: cannot import name 'main' from 'main' (main.py)",
    "nodejs": "Error: main is not a function",
}


def on_ragflow_port(request) -> bool:
    return request.META.get("SERVER_PORT") == str(settings.RAGFLOW_PORT)


def trusted(address: str) -> bool:
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return False
    ip = getattr(ip, "ipv4_mapped", None) or ip
    return any(ip in network for network in settings.SANDBOX_RAGFLOW_TRUSTED_NETWORKS)


class RagflowPortMiddleware(RefusalMiddleware):
    """RAGFLOW_PORT serves RAGFlow's protocol and nothing else: no API, no admin."""

    def refusal(self, request):
        if on_ragflow_port(request) and request.path not in RAGFLOW_PATHS:
            return JsonResponse({"detail": f"port {settings.RAGFLOW_PORT} serves only RAGFlow's /run and /healthz",
                                 "code": "not_found"}, status=404)
        return None


class TrustedNetworkAuthentication(authentication.BaseAuthentication):
    """No token on RAGFLOW_PORT: the `ragflow` account when the caller's network is trusted, else a 401 that
    says which setting to change. Anywhere else this authenticates nobody (a token is needed)."""

    def authenticate(self, request):
        if not on_ragflow_port(request):
            return None
        address = request.META.get("REMOTE_ADDR", "")
        if trusted(address):
            return service_account(RAGFLOW_ACCOUNT), None
        raise exceptions.AuthenticationFailed(
            f"{address} is not in SANDBOX_RAGFLOW_TRUSTED_NETWORKS: add RAGFlow's network there, "
            "or send a token (Authorization: Bearer … or X-Sandbox-Token)"
        )

    def authenticate_header(self, request) -> str:
        return "Bearer"


def with_reason(stderr: str, reason: str) -> str:
    """The program's own stderr with the reason on its last line (unless the stderr already ends with it, as a
    traceback does): a warning printed earlier never hides why the run failed."""
    lines = stderr.rstrip().splitlines()
    if reason and (not lines or lines[-1].strip() != reason.strip()):
        lines.append(reason)
    return "\n".join(lines)


def to_ragflow(execution: Execution) -> dict:
    """The execution as RAGFlow's executor would have answered it."""
    status = Status(execution.status)
    common = {
        "time_used_ms": round((execution.execution_time or 0) * 1000, 3),
        "memory_used_kb": execution.memory_used_kb or 0,
    }
    failure = {"stdout": "", "artifacts": [], "result": {**NOTHING_RETURNED, "type": "json"},
               "detail": execution.error_code or status.value, **common}
    if status in (Status.SUCCEEDED, Status.OUTPUT_LIMIT) and not execution.result_present:
        # A script without main(): the reference's runner cannot import it, a program error.
        reason = NO_MAIN.get(execution.language, NO_MAIN["python"])
        stderr = with_reason(artifact_store.output(execution, "stderr"), reason)
        return {"status": "program_error", "exit_code": 1, "stderr": stderr,
                "runtime_error_type": "nonzero_exit", **{**failure, "detail": "missing_main"}}
    if status in (Status.SUCCEEDED, Status.OUTPUT_LIMIT):
        # The reference has no output cap: a flood is a success with the output we kept, said after it.
        stderr = artifact_store.output(execution, "stderr")
        if status == Status.OUTPUT_LIMIT:
            stderr = with_reason(stderr, f"Output limit exceeded: {execution.error_message}")
        return {"status": "success", "stdout": artifact_store.output(execution, "stdout"), "stderr": stderr,
                "exit_code": 0,
                "detail": None, "artifacts": artifact_store.inline_all(execution),
                "result": {**execution.returned(), "type": "json"}, **common}
    if status in LIMITS:
        limit, exit_code, reason = LIMITS[status]
        return {"status": "resource_limit_exceeded", "exit_code": exit_code, "stderr": reason,
                "resource_limit_type": limit, **failure}
    if status == Status.FAILED:
        reason = with_reason(artifact_store.output(execution, "stderr"),
                             execution.error_message or "the program failed")
        return {"status": "program_error", "exit_code": execution.exit_code or 1, "stderr": reason,
                "runtime_error_type": "nonzero_exit", **failure}
    if not execution.is_terminal:
        reason = f"the run did not finish in time (still {status.value}; execution {execution.pk})"
        return {"status": "program_runner_error", "exit_code": RUNNER_ERROR_EXIT, "stderr": reason, **failure}
    busy = execution.error_code == "pool_exhausted"
    reason = "Container pool is busy" if busy else (execution.error_message or status.value)
    return {"status": "program_runner_error", "exit_code": POOL_BUSY_EXIT if busy else RUNNER_ERROR_EXIT,
            "stderr": reason, **failure}

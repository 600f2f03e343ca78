"""Translation of an execution into RAGFlow executor_manager's `/run` response, so its provider works unchanged."""

from providers.base import Status
from sandboxctl.executions.models import Execution

RAGFLOW_STATUS = {
    Status.SUCCEEDED: "success",
    Status.FAILED: "program_error",
    Status.TIMEOUT: "resource_limit_exceeded",
    Status.MEMORY_LIMIT: "resource_limit_exceeded",
    Status.OUTPUT_LIMIT: "resource_limit_exceeded",
    Status.REJECTED: "unauthorized_access",
}
LIMIT_TYPE = {Status.TIMEOUT: "time", Status.MEMORY_LIMIT: "memory", Status.OUTPUT_LIMIT: "output"}


def to_ragflow(execution: Execution) -> dict:
    status = Status(execution.status)
    body = {
        "status": RAGFLOW_STATUS.get(status, "program_runner_error"),
        "stdout": execution.stdout,
        "stderr": execution.stderr,
        "exit_code": execution.exit_code if execution.exit_code is not None else -999,
        "detail": execution.error_message or status.value,
        "time_used_ms": round((execution.execution_time or 0) * 1000, 3),
        "memory_used_kb": execution.memory_used_kb or 0,
        "artifacts": execution.artifacts,
        "result": {
            "present": execution.result_present,
            "value": execution.result if execution.result_present else None,
            "type": "json",
        },
    }
    if status in LIMIT_TYPE:
        body["resource_limit_type"] = LIMIT_TYPE[status]
    return body

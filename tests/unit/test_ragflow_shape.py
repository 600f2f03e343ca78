"""The RAGFlow answer shape for each status (sandboxctl/executions/ragflow.py), on unsaved rows."""

import pytest

from providers.base import Status
from sandboxctl.executions.models import Execution
from sandboxctl.executions.ragflow import to_ragflow


def execution(status: Status, **fields) -> Execution:
    return Execution(status=status, language="python", code="", execution_time=0.25, memory_used_kb=900, **fields)


def test_success_carries_output_and_the_returned_value():
    answer = to_ragflow(execution(Status.SUCCEEDED, stdout="hi\n", result=[1], result_present=True))
    assert answer["status"] == "success" and answer["exit_code"] == 0 and answer["stdout"] == "hi\n"
    assert answer["result"] == {"present": True, "value": [1], "type": "json"}
    assert answer["time_used_ms"] == 250.0 and answer["memory_used_kb"] == 900


@pytest.mark.parametrize(
    ("status", "kind", "exit_code"),
    [(Status.TIMEOUT, "time", -124), (Status.MEMORY_LIMIT, "memory", -137), (Status.OUTPUT_LIMIT, "output", -1)],
)
def test_limits_are_resource_limit_exceeded_with_ragflows_exit_codes(status, kind, exit_code):
    answer = to_ragflow(execution(status))
    assert (answer["status"], answer["resource_limit_type"], answer["exit_code"]) == (
        "resource_limit_exceeded", kind, exit_code)
    assert answer["result"] == {"present": False, "value": None, "type": "json"}


def test_a_failed_program_is_program_error_with_its_stderr():
    answer = to_ragflow(execution(Status.FAILED, stderr="Traceback…\nValueError: x\n", exit_code=1))
    assert answer["status"] == "program_error" and "ValueError" in answer["stderr"]


def test_an_exhausted_pool_reads_as_ragflows_busy_pool():
    answer = to_ragflow(execution(Status.SANDBOX_ERROR, error_code="pool_exhausted"))
    assert (answer["status"], answer["exit_code"], answer["stderr"]) == (
        "program_runner_error", -10, "Container pool is busy")


def test_a_run_still_in_flight_is_a_runner_error_not_a_success():
    assert to_ragflow(execution(Status.RUNNING))["status"] == "program_runner_error"

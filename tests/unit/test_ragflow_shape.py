"""The RAGFlow answer shape for each status (sandboxctl/api/ragflow.py), on unsaved rows."""

import pytest

from providers.base import Status
from sandboxctl.api.ragflow import to_ragflow
from sandboxctl.executions.models import Execution


def execution(status: Status, **fields) -> Execution:
    return Execution(status=status, language="python", code="", execution_time=0.25, memory_used_kb=900, **fields)


def test_success_carries_output_and_the_returned_value():
    answer = to_ragflow(execution(Status.SUCCEEDED, stdout="hi\n", result=[1], result_present=True))
    assert answer["status"] == "success" and answer["exit_code"] == 0 and answer["stdout"] == "hi\n"
    assert answer["result"] == {"present": True, "value": [1], "type": "json"}
    assert answer["time_used_ms"] == 250.0 and answer["memory_used_kb"] == 900


@pytest.mark.parametrize(
    ("status", "kind", "exit_code"),
    [(Status.TIMEOUT, "time", -124), (Status.MEMORY_LIMIT, "memory", -137)],
)
def test_limits_are_resource_limit_exceeded_with_ragflows_exit_codes(status, kind, exit_code):
    answer = to_ragflow(execution(status))
    assert (answer["status"], answer["resource_limit_type"], answer["exit_code"]) == (
        "resource_limit_exceeded", kind, exit_code)
    assert answer["result"] == {"present": False, "value": None, "type": "json"}


def test_a_failed_program_is_program_error_with_its_stderr():
    answer = to_ragflow(execution(Status.FAILED, stderr="Traceback…\nValueError: x\n", exit_code=1,
                                  error_message="ValueError: x"))
    assert answer["status"] == "program_error"
    assert answer["stderr"] == "Traceback…\nValueError: x", "a traceback that ends with the reason is not repeated"


def test_a_warning_on_stderr_never_hides_the_reason():
    answer = to_ragflow(execution(Status.FAILED, stderr="main.py:4: UserWarning: careful\n", exit_code=1,
                                  error_message="main() returned a value that is not JSON: set"))
    assert answer["stderr"].splitlines() == ["main.py:4: UserWarning: careful",
                                             "main() returned a value that is not JSON: set"]


def test_an_output_flood_is_a_success_with_the_output_kept_and_the_truncation_said_after_it():
    answer = to_ragflow(execution(Status.OUTPUT_LIMIT, stdout="x" * 100, stderr="", result=5, result_present=True,
                                  error_message="output exceeded 1048576 bytes and was truncated"))
    assert (answer["status"], answer["exit_code"], answer["stdout"]) == ("success", 0, "x" * 100)
    assert answer["result"] == {"present": True, "value": 5, "type": "json"}
    assert answer["stderr"].startswith("Output limit exceeded") and "truncated" in answer["stderr"]


@pytest.mark.parametrize(("language", "wording"), [
    ("python", "ImportError: cannot import name 'main' from 'main' (main.py)"),
    ("nodejs", "Error: main is not a function"),
])
def test_code_without_main_is_a_program_error_in_the_references_words(language, wording):
    row = execution(Status.SUCCEEDED, stdout="hello from top level\n", result_present=False)
    row.language = language
    answer = to_ragflow(row)
    assert (answer["status"], answer["stdout"], answer["exit_code"]) == ("program_error", "", 1)
    assert answer["stderr"].splitlines()[-1] == wording


def test_an_exhausted_pool_reads_as_ragflows_busy_pool():
    answer = to_ragflow(execution(Status.SANDBOX_ERROR, error_code="pool_exhausted"))
    assert (answer["status"], answer["exit_code"], answer["stderr"]) == (
        "program_runner_error", -10, "Container pool is busy")


def test_a_run_still_in_flight_is_a_runner_error_not_a_success():
    assert to_ragflow(execution(Status.RUNNING))["status"] == "program_runner_error"

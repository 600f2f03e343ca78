"""Status classification: what the worker observed decides the status; exit codes and user text never do."""

import json

import pytest

from executor.sandbox import RunReport
from providers.base import Limits, Status
from providers.self_managed import classify

LIMITS = Limits(timeout=2.0, memory_mb=128, output_limit=100)


def report(**fields) -> RunReport:
    fields.setdefault("exit_code", 0)
    fields.setdefault("result", {"ok": True, "value_json": "42"})
    return RunReport(duration=0.5, **fields)


def test_a_returned_value_is_parsed_and_succeeds():
    result = classify(report(stdout=b"hi\n"), LIMITS, "python")
    assert (result.status, result.result_present, result.result_value, result.stdout) == (
        Status.SUCCEEDED, True, 42, "hi\n")


def test_a_script_without_main_succeeds_with_no_value():
    result = classify(report(result={"ok": True, "script": True}), LIMITS, "python")
    assert (result.status, result.result_present) == (Status.SUCCEEDED, False)


@pytest.mark.parametrize(
    ("observed", "status", "code"),
    [
        ({"cancelled": True}, Status.CANCELLED, "cancelled"),
        ({"timed_out": True, "result": None}, Status.TIMEOUT, "timeout"),
        ({"oom_killed": True, "result": None}, Status.MEMORY_LIMIT, "memory_limit"),
        ({"protocol_violation": "bad tag"}, Status.SANDBOX_ERROR, "protocol_violation"),
        ({"sandbox_failure": "runsc died"}, Status.SANDBOX_ERROR, "sandbox_error"),
    ],
)
def test_the_workers_observations_win_over_any_report(observed, status, code):
    # Even with a succeeding outcome in hand, what the worker saw decides.
    result = classify(report(**observed), LIMITS, "python")
    assert (result.status, result.error_code) == (status, code)


def test_the_worker_timeout_wins_even_when_the_code_claims_success():
    result = classify(report(timed_out=True), LIMITS, "python")
    assert result.status == Status.TIMEOUT and not result.result_present


def test_an_exception_in_main_fails_with_its_type_as_code():
    outcome = {"ok": False, "error": {"type": "ZeroDivisionError", "message": "division by zero"}}
    result = classify(report(exit_code=1, result=outcome), LIMITS, "python")
    assert (result.status, result.error_code, result.error_message) == (
        Status.FAILED, "zero_division_error", "ZeroDivisionError: division by zero")


def test_memory_error_is_a_memory_limit_not_a_failure():
    outcome = {"ok": False, "error": {"type": "MemoryError", "message": ""}}
    result = classify(report(exit_code=1, result=outcome), LIMITS, "python")
    assert result.status == Status.MEMORY_LIMIT and result.memory_used_kb == 128 * 1024


def test_node_heap_exhaustion_is_a_memory_limit():
    stderr = b"FATAL ERROR: Reached heap limit Allocation failed - JavaScript heap out of memory"
    result = classify(report(exit_code=134, result=None, stderr=stderr), LIMITS, "nodejs")
    assert result.status == Status.MEMORY_LIMIT


def test_a_process_that_never_reported_failed():
    result = classify(report(exit_code=3, result=None), LIMITS, "python")
    assert (result.status, result.error_code) == (Status.FAILED, "process_exited")


def test_truncated_output_is_an_output_limit():
    result = classify(report(stdout=b"x" * 100, stdout_truncated=True), LIMITS, "python")
    assert result.status == Status.OUTPUT_LIMIT


@pytest.mark.parametrize("value_json", ["NaN", "Infinity", "{", "[" * 100 + "]" * 100])
def test_a_result_that_is_not_strict_json_fails_as_the_users_fault(value_json):
    result = classify(report(result={"ok": True, "value_json": value_json}), LIMITS, "python")
    assert (result.status, result.error_code) == (Status.FAILED, "result_not_serializable")


def test_a_lone_surrogate_in_the_value_is_kept_as_storable_text():
    result = classify(report(result={"ok": True, "value_json": json.dumps("a\ud800")}), LIMITS, "python")
    assert result.status == Status.SUCCEEDED
    result.result_value.encode("utf-8")  # storable: no lone surrogate left to break a database row


@pytest.mark.parametrize(
    "outcome",
    [{"ok": "yes", "value_json": "1"}, {"ok": True, "value_json": 1}, ["ok"], {"ok": False, "error": "x" * 10}],
)
def test_a_malformed_outcome_is_never_taken_as_success(outcome):
    result = classify(report(result=outcome), LIMITS, "python")
    assert result.status != Status.SUCCEEDED or not result.result_present

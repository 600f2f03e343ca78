"""Status transitions are atomic in the database: a run executes at most once and terminal states never change."""

import pytest

from providers.base import ExecutionResult, Status
from sandboxctl.executions.models import Execution
from sandboxctl.worker.tasks import run_execution


@pytest.fixture
def queued(transactional_db):
    return Execution.objects.create(provider="self_managed", language="python", code="def main():\n    return 1",
                                    code_sha256="0" * 64, limits={"timeout": 1, "memory_mb": 64, "output_limit": 10})


def test_only_one_delivery_can_claim_a_run(queued):
    assert Execution.claim(queued.pk, "worker-a") is not None
    assert Execution.claim(queued.pk, "worker-b") is None
    row = Execution.objects.get(pk=queued.pk)
    assert (row.status, row.worker, row.attempts) == ("running", "worker-a", 1)


def test_a_second_delivery_of_the_task_does_not_execute_again(queued):
    assert Execution.claim(queued.pk, "worker-a")
    run_execution(str(queued.pk))  # the duplicate delivery, run synchronously here
    row = Execution.objects.get(pk=queued.pk)
    assert (row.status, row.worker, row.attempts, row.stdout) == ("running", "worker-a", 1, "")


def test_terminal_states_never_change(queued):
    queued = Execution.claim(queued.pk, "worker-a")
    assert queued.finish(ExecutionResult(status=Status.SUCCEEDED, stdout="first"))
    assert not queued.finish(ExecutionResult(status=Status.FAILED, stdout="second"))
    assert not queued.end_with_error(Status.CANCELLED, "cancelled", "late cancel")
    assert not queued.requeue()
    row = Execution.objects.get(pk=queued.pk)
    assert (row.status, row.stdout, row.error_code) == ("succeeded", "first", "")


def test_a_cancelled_run_is_never_started(queued):
    assert queued.end_with_error(Status.CANCELLED, "cancelled", "by caller")
    assert Execution.claim(queued.pk, "worker-a") is None


def test_finish_requires_running(queued):
    assert not queued.finish(ExecutionResult(status=Status.SUCCEEDED))
    assert Execution.objects.get(pk=queued.pk).status == "queued"

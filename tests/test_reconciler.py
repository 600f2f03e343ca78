"""The reconciler: runs whose worker instance vanished are requeued once, then ended; runs past their deadline
end whatever their worker claims; queued runs that lost their message are sent again; unclaimed ones expire."""

import time
from datetime import timedelta

from django.core.management import call_command
from django.utils import timezone

from conftest import WORKER_NAME, latest_beat
from sandboxctl.executions.models import Execution


def orphaned_run(user, attempts: int, started_ago: timedelta = timedelta(seconds=40)) -> Execution:
    started = timezone.now() - started_ago
    return Execution.objects.create(
        provider="self_managed", language="python", code="def main():\n    return 'rescued'", code_sha256="0" * 64,
        limits={"timeout": 5, "memory_mb": 128, "output_limit": 1024}, status="running", caller=user,
        worker="vanished@nowhere#00000000", started_at=started, created_at=started, attempts=attempts,
        queue="sandbox.python",
    )


def wait_terminal(execution: Execution, timeout: float = 30) -> Execution:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        execution.refresh_from_db()
        if execution.is_terminal:
            return execution
        time.sleep(0.1)
    raise AssertionError(f"still {execution.status}")


def test_run_of_a_dead_worker_is_redelivered_once_and_completes(api, user):
    execution = orphaned_run(user, attempts=1)
    call_command("reconcile_executions")
    execution = wait_terminal(execution)
    assert execution.status == "succeeded"
    assert execution.result == "rescued"
    assert execution.attempts == 2
    assert execution.worker.startswith("pytest-worker@")


def test_run_that_already_had_its_retry_ends_as_sandbox_error(api, user):
    execution = orphaned_run(user, attempts=2)
    call_command("reconcile_executions")
    execution.refresh_from_db()
    assert (execution.status, execution.error_code) == ("sandbox_error", "worker_lost")


def test_run_on_a_live_worker_is_left_alone(api, user):
    execution = orphaned_run(user, attempts=1)
    time.sleep(2.5)  # let the worker's heartbeat land after the per-test flush
    Execution.objects.filter(pk=execution.pk).update(worker=latest_beat(WORKER_NAME).worker)
    call_command("reconcile_executions")
    execution.refresh_from_db()
    assert execution.status == "running"


def test_a_run_past_its_deadline_ends_whatever_its_worker_claims(api, user):
    execution = orphaned_run(user, attempts=1, started_ago=timedelta(minutes=10))
    time.sleep(2.5)
    Execution.objects.filter(pk=execution.pk).update(worker=latest_beat(WORKER_NAME).worker)
    call_command("reconcile_executions")
    execution.refresh_from_db()
    assert (execution.status, execution.error_code) == ("sandbox_error", "overdue")


def test_a_queued_run_whose_message_was_lost_is_sent_again(api, user, settings):
    settings.SANDBOX_QUEUE_REDISPATCH_AFTER = 1
    execution = orphaned_run(user, attempts=0)
    # Queued with a message that never reached the broker (as after a broker restart without persistence).
    Execution.objects.filter(pk=execution.pk).update(status="queued", worker="", started_at=None,
                                                     dispatched_at=timezone.now() - timedelta(minutes=1))
    call_command("reconcile_executions")
    execution = wait_terminal(execution)
    assert (execution.status, execution.result, execution.attempts) == ("succeeded", "rescued", 1)


def test_queued_run_nobody_picks_up_expires(transactional_db, user, settings):
    settings.SANDBOX_QUEUE_TTL = 60
    execution = orphaned_run(user, attempts=0, started_ago=timedelta(minutes=10))
    Execution.objects.filter(pk=execution.pk).update(status="queued", worker="", started_at=None)
    call_command("reconcile_executions")
    execution.refresh_from_db()
    assert (execution.status, execution.error_code) == ("sandbox_error", "queue_expired")

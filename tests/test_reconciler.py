"""Runs whose worker vanished are requeued once, then ended; queued runs nobody takes expire."""

import time
from datetime import timedelta

from django.core.management import call_command
from django.utils import timezone

from sandboxctl.executions.models import Execution


def orphaned_run(user, attempts: int) -> Execution:
    long_ago = timezone.now() - timedelta(minutes=10)
    return Execution.objects.create(
        provider="self_managed", language="python", code="def main():\n    return 'rescued'", code_sha256="0" * 64,
        limits={"timeout": 5, "memory_mb": 128, "output_limit": 1024}, status="running", caller=user,
        worker_host="vanished@nowhere", started_at=long_ago, created_at=long_ago, attempts=attempts,
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
    assert execution.worker_host.startswith("pytest-worker@")


def test_run_that_already_had_its_retry_ends_as_sandbox_error(api, user):
    execution = orphaned_run(user, attempts=2)
    call_command("reconcile_executions")
    execution.refresh_from_db()
    assert (execution.status, execution.error_code) == ("sandbox_error", "worker_lost")


def test_run_on_a_live_worker_is_left_alone(api, user):
    execution = orphaned_run(user, attempts=1)
    Execution.objects.filter(pk=execution.pk).update(worker_host="pytest-worker@localhost")
    time.sleep(2.5)  # let the worker's heartbeat land after the per-test flush
    call_command("reconcile_executions")
    execution.refresh_from_db()
    assert execution.status == "running"


def test_queued_run_nobody_picks_up_expires(transactional_db, user, settings):
    settings.SANDBOX_QUEUE_TTL = 60
    execution = orphaned_run(user, attempts=0)
    Execution.objects.filter(pk=execution.pk).update(status="queued", worker_host="", started_at=None)
    call_command("reconcile_executions")
    execution.refresh_from_db()
    assert (execution.status, execution.error_code) == ("sandbox_error", "queue_expired")

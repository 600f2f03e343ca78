"""Celery tasks: send and run one execution, deliver its callback, and reconcile what faults left behind.

Everything that can be lost to an infrastructure fault is recovered by `reconcile` (Celery beat, or
`manage.py reconcile_executions`): a message lost with a broker restart is sent again, a run whose
worker instance died is requeued once then ended, a run past its deadline is ended whatever its worker
claims, and a callback whose delivery task was lost is sent again.
"""

import logging
import time
from contextlib import contextmanager
from datetime import timedelta

from celery import shared_task
from django.conf import settings
from django.db import connection
from django.utils import timezone

from providers import manager
from providers.base import Limits, ProviderError, Status
from providers.heartbeats import live_workers
from providers.models import WorkerHeartbeat
from sandboxctl.executions import admission, live_output, retention
from sandboxctl.executions.dispatch import CALLBACK_TASK, RUN_TASK, dispatch, queue_callback
from sandboxctl.executions.models import Execution, SandboxRecord
from sandboxctl.worker import callbacks, sessions, spool
from sandboxctl.worker.lifecycle import worker_name
from sandboxctl.worker.retry import FINISH_RETRY_FOR, with_database_retry

log = logging.getLogger(__name__)

HEARTBEAT_KEEP = timedelta(days=1)
# A worker deletes its run's remote sandbox as the run ends; the reconciler takes over after this long.
LEFTOVER_GRACE = 30.0


@shared_task(name=RUN_TASK)
def run_execution(execution_id: str) -> None:
    execution = with_database_retry(lambda: Execution.claim(execution_id, worker_name()), f"claim {execution_id}")
    if execution is None:
        log.info("execution %s: not queued any more, skipping this delivery", execution_id)
        return
    # The provider recorded when the run was accepted: a switch in between does not re-route it.
    provider = manager.provider(execution.provider)
    limits = Limits(**execution.limits)
    failure = None
    output = live_output.publisher(execution_id)  # live output (executions/live_output.py): to the events endpoint
    try:
        outcome = provider.run(execution.code, execution.language, limits, execution.arguments,
                               should_stop=execution.was_cancelled, run_id=run_id(execution),
                               ledger=SandboxRecord(execution.pk), account=str(execution.caller_id or ""),
                               files=execution.input_files or None, on_output=output.output)
    except ProviderError as exc:
        log.warning("execution %s: provider %s failed: %s", execution_id, provider.name, exc)
        failure = (exc.code, str(exc))
    except Exception:  # noqa: BLE001 - an infrastructure fault must still end the run, never leave it running
        log.exception("execution %s: unexpected failure", execution_id)
        failure = ("internal_error", "the worker failed unexpectedly")
    output.close()  # its last chunks are written before its end is recorded
    if failure is None:
        ending = spool.Ending(execution_id, execution.worker, outcome=outcome)
    else:
        ending = spool.Ending(execution_id, execution.worker, error=(Status.SANDBOX_ERROR, *failure))
    spool.record(ending, lambda write: with_database_retry(write, f"end {execution_id}", FINISH_RETRY_FOR))
    log.info("execution %s: ended (%s)", execution_id, outcome.status if failure is None else failure[0])


@shared_task(name=CALLBACK_TASK)
def deliver_callback(execution_id: str) -> None:
    backoff = callbacks.deliver(execution_id)
    if backoff is not None:
        queue_callback(execution_id, countdown=backoff)


class Watch:
    """The scheduled reconciler judges a worker lost, or a run overdue, only once it has itself been watching
    without a gap for longer than a heartbeat may be stale. After a database outage every heartbeat is stale at
    once; the workers then get that long to beat again — and to write the run endings they spooled meanwhile
    (spool.py) — before any run is requeued or ended for them."""

    def __init__(self) -> None:
        self.since: float | None = None
        self.last: float | None = None

    def may_judge(self) -> bool:
        now = time.monotonic()
        interval = settings.CELERY_BEAT_SCHEDULE["reconcile-executions"]["schedule"]
        gap = max(3 * interval, settings.SANDBOX_WORKER_STALE_AFTER)  # skipped or slow passes are no gap
        if self.since is None or self.last is None or now - self.last > gap:
            self.since = now
        return now - self.since >= settings.SANDBOX_WORKER_STALE_AFTER

    def pass_completed(self) -> None:
        self.last = time.monotonic()


watch = Watch()
RECONCILE_LOCK = 0x5BC7_EC01  # the PostgreSQL advisory lock one reconciler pass holds (any constant of ours)


@contextmanager
def one_pass_at_a_time():
    """Yields whether this pass may run: a pass still running when beat sends the next one makes it skip, so
    slow passes never pile up on the io worker's threads (where callback deliveries must keep flowing)."""
    if connection.vendor != "postgresql":
        yield True
        return
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_try_advisory_lock(%s)", [RECONCILE_LOCK])
        mine = cursor.fetchone()[0]
    try:
        yield mine
    finally:
        if mine:
            with connection.cursor() as cursor:
                cursor.execute("SELECT pg_advisory_unlock(%s)", [RECONCILE_LOCK])


@shared_task(name="sandboxctl.worker.tasks.reconcile")
def reconcile(judge: bool | None = None) -> dict:
    """End, requeue or resend what faults left behind; returns how many of each it did. `judge` forces the
    decisions about lost workers and overdue runs (an operator's `manage.py reconcile_executions`)."""
    with one_pass_at_a_time() as mine:
        if not mine:
            return {"skipped": 1}
        return _reconcile(judge)


def _reconcile(judge: bool | None) -> dict:
    now = timezone.now()
    judging = watch.may_judge() if judge is None else judge
    counts = {
        "expired": expire_stale_queued(now),
        "admitted": admit_held_runs(),
        "redispatched": redispatch_lost_messages(now),
        **(recover_runs_of_lost_workers(now) if judging else {}),
        "overdue": end_overdue_runs(now) if judging else 0,
        "callbacks_resent": resend_lost_callbacks(now),
        "sandboxes_released": release_leftover_sandboxes(now),
        **(sessions.reconcile(now, judging)),
        "heartbeats_forgotten": WorkerHeartbeat.objects.filter(seen_at__lt=now - HEARTBEAT_KEEP).delete()[0],
        "executions_deleted": delete_expired_executions(now),
    }
    watch.pass_completed()
    return counts


def delete_expired_executions(now) -> int:
    """Storage stays bounded: executions older than SANDBOX_RETENTION_DAYS go, with their files."""
    return retention.delete_expired(now)


def expire_stale_queued(now) -> int:
    expired = now - timedelta(seconds=settings.SANDBOX_QUEUE_TTL)
    return sum(
        execution.end_with_error(Status.SANDBOX_ERROR, "queue_expired", "no worker picked this run up")
        for execution in Execution.objects.filter(status=Status.QUEUED, created_at__lt=expired)
    )


def admit_held_runs() -> int:
    """Admission normally follows each run's end; this catches an end whose process died before admitting."""
    sent = 0
    for account_id in admission.accounts_with_held_runs():
        for execution in admission.admit(account_id):
            sent += dispatch(execution)
    return sent


def redispatch_lost_messages(now) -> int:
    """A queued run not picked up while its queue in the broker is empty has lost its message: send it again.
    A duplicate is harmless: only one delivery can claim the run."""
    before = now - timedelta(seconds=settings.SANDBOX_QUEUE_REDISPATCH_AFTER)
    waiting = Execution.objects.filter(status=Status.QUEUED, dispatched_at__lt=before)
    sent = 0
    empty: dict[str, bool] = {}
    for execution in waiting:
        if execution.queue not in empty:
            empty[execution.queue] = broker_queue_size(execution.queue) == 0
        if empty[execution.queue]:
            log.warning("execution %s: its message was lost; sending it again", execution.pk)
            sent += dispatch(execution)
    return sent


def broker_queue_size(queue: str) -> int | None:
    """Messages waiting in `queue` (0 when the broker has no such queue); None when the broker cannot tell."""
    from celery import current_app
    from kombu.exceptions import ChannelError

    try:
        with current_app.connection_for_write() as connection:
            return connection.default_channel.queue_declare(queue=queue, passive=True).message_count
    except ChannelError:
        return 0
    except Exception as exc:  # noqa: BLE001 - an unreachable broker: decide nothing now
        log.warning("cannot read the size of queue %s: %s", queue, exc)
        return None


def recover_runs_of_lost_workers(now) -> dict:
    alive = set(live_workers().values_list("worker", flat=True))
    grace = timedelta(seconds=settings.SANDBOX_WORKER_STALE_AFTER)
    counts = {"requeued": 0, "worker_lost": 0}
    for execution in Execution.objects.filter(status=Status.RUNNING, started_at__lt=now - grace):
        if execution.worker in alive:
            continue
        if execution.session_id:  # a cell: its session's sandbox died with the worker, so it cannot run again
            execution.end_with_error(Status.SANDBOX_ERROR, "session_lost", "the session's worker host was lost")
            counts["worker_lost"] += 1
        elif execution.attempts < 2 and execution.requeue():
            counts["requeued"] += dispatch(execution)
        elif execution.end_with_error(Status.SANDBOX_ERROR, "worker_lost", "the worker running this was lost"):
            counts["worker_lost"] += 1
    return counts


def end_overdue_runs(now) -> int:
    """A run still running past its overdue point (executor/deadlines.py: its provider's deadline, the report
    margin and SANDBOX_OVERDUE_GRACE) is ended, whatever its worker's heartbeat says."""
    ended = 0
    for execution in Execution.objects.filter(status=Status.RUNNING):
        budget = manager.provider(execution.provider).budget(Limits(**execution.limits),
                                                              cell=bool(execution.session_id))
        limit = timedelta(seconds=budget.overdue(settings.SANDBOX_OVERDUE_GRACE))
        if execution.started_at and execution.started_at < now - limit:
            ended += execution.end_with_error(
                Status.SANDBOX_ERROR, "overdue", "the run outlived its time limit and its worker never ended it"
            )
    return ended


def resend_lost_callbacks(now) -> int:
    sent = 0
    for execution in callbacks.overdue(now):
        callbacks.release_lease(execution.pk)
        if not queue_callback(execution.pk):
            break
        sent += 1
    return sent


def run_id(execution: Execution) -> str:
    """Names one attempt of a run to a SaaS service (idempotent create, tags): a retried attempt never
    gets the sandbox an earlier attempt made."""
    return f"{execution.pk}-{execution.attempts}"


def release_leftover_sandboxes(now) -> int:
    """Delete remote sandboxes that ended runs left behind (a failed delete, a lost create answer), until the
    service deletes them or says they are gone."""
    released = 0
    finished_before = now - timedelta(seconds=LEFTOVER_GRACE)
    for execution in Execution.objects.filter(sandbox_released=False, finished_at__lt=finished_before)[:50]:
        released += release_sandboxes_of(execution)
    return released


def release_sandboxes_of(execution: Execution) -> bool:
    provider = manager.provider(execution.provider)
    try:
        found = {execution.sandbox_id} - {""}
        for attempt in range(1, execution.attempts + 1):
            found.update(provider.find_instances(f"{execution.pk}-{attempt}"))
        for instance_id in sorted(found):
            provider.destroy_instance(instance_id)
    except ProviderError as exc:
        log.warning("execution %s: its sandboxes are not deleted yet: %s", execution.pk, exc)
        return False
    Execution.objects.filter(pk=execution.pk).update(sandbox_released=True)
    log.info("execution %s: deleted the sandboxes it left behind: %s", execution.pk, sorted(found) or "none")
    return True

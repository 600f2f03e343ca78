"""Celery tasks: run one execution, deliver its callback, reconcile runs whose worker vanished."""

import logging
from datetime import timedelta

import requests
from celery import shared_task
from django.conf import settings
from django.db.models import F
from django.utils import timezone

from providers import manager
from providers.base import Limits, ProviderError, Status
from providers.models import WorkerHeartbeat
from providers.registry import provider_class
from sandboxctl.executions.models import Execution
from sandboxctl.executions.worker import worker_name

log = logging.getLogger(__name__)

CALLBACK_TIMEOUT = 10
CALLBACK_TRIES = 3


@shared_task(name="sandboxctl.executions.tasks.run_execution")
def run_execution(execution_id: str) -> None:
    execution = Execution.claim(execution_id, worker_name())
    if execution is None:
        log.info("execution %s: not queued any more, skipping this delivery", execution_id)
        return
    # The provider recorded when the run was accepted: a switch in between does not re-route it.
    provider = manager.provider(execution.provider)
    limits = Limits(**execution.limits)
    try:
        outcome = provider.run(execution.code, execution.language, limits, execution.arguments,
                               should_stop=lambda: execution.was_cancelled())
        execution.finish(outcome)
    except ProviderError as exc:
        log.warning("execution %s: provider %s failed: %s", execution_id, provider.name, exc)
        execution.end_without_running(Status.SANDBOX_ERROR, exc.code, str(exc))
    except Exception:  # noqa: BLE001 - an infrastructure fault must still end the run, never leave it running
        log.exception("execution %s: unexpected failure", execution_id)
        execution.end_without_running(Status.SANDBOX_ERROR, "internal_error", "the worker failed unexpectedly")
    log.info("execution %s: %s in %ss", execution_id, execution.status, execution.execution_time)
    if execution.callback_url and execution.is_terminal:
        deliver_callback.delay(execution_id)


@shared_task(name="sandboxctl.executions.tasks.deliver_callback", bind=True, max_retries=CALLBACK_TRIES - 1)
def deliver_callback(self, execution_id: str) -> None:
    from sandboxctl.executions.serializers import ExecutionSerializer

    execution = Execution.objects.get(pk=execution_id)
    Execution.objects.filter(pk=execution_id).update(callback_attempts=F("callback_attempts") + 1)
    try:
        response = requests.post(
            execution.callback_url, json=ExecutionSerializer(execution).data, timeout=CALLBACK_TIMEOUT,
            allow_redirects=False,
        )
        response.raise_for_status()
    except requests.RequestException as exc:
        final = self.request.retries >= self.max_retries
        Execution.objects.filter(pk=execution_id).update(
            callback_error=str(exc)[:2000], callback_status="failed" if final else "retrying"
        )
        if not final:
            raise self.retry(exc=exc, countdown=2 ** (self.request.retries + 1)) from exc
        return
    Execution.objects.filter(pk=execution_id).update(callback_status="delivered", callback_error="")


@shared_task(name="sandboxctl.executions.tasks.reconcile")
def reconcile() -> dict:
    """End or requeue runs stuck because their worker died, and queued runs nobody picked up."""
    now = timezone.now()
    stale_before = now - timedelta(seconds=settings.SANDBOX_WORKER_STALE_AFTER)
    alive = set(WorkerHeartbeat.objects.filter(seen_at__gte=stale_before).values_list("worker", flat=True))
    counts = {"requeued": 0, "failed": 0, "expired": 0}
    # Expire first: a run requeued below has an old created_at but must get its chance to run.
    expired = now - timedelta(seconds=settings.SANDBOX_QUEUE_TTL)
    for execution in Execution.objects.filter(status=Status.QUEUED, created_at__lt=expired):
        if execution.end_without_running(Status.SANDBOX_ERROR, "queue_expired", "no worker picked this run up"):
            counts["expired"] += 1
    grace = timedelta(seconds=settings.SANDBOX_WORKER_STALE_AFTER)
    for execution in Execution.objects.filter(status=Status.RUNNING, started_at__lt=now - grace):
        if execution.worker_host in alive:
            continue
        if execution.attempts < 2 and execution.requeue():
            from sandboxctl.executions.service import dispatch

            dispatch(execution, provider_class(execution.provider)().queue_for(execution.language))
            counts["requeued"] += 1
        elif execution.end_without_running(Status.SANDBOX_ERROR, "worker_lost", "the worker running this was lost"):
            counts["failed"] += 1
    return counts

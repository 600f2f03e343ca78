"""Callbacks: the final execution JSON POSTed to the caller's URL, once per terminal transition, never to a
private address.

An outbox on the execution row says what is owed: the terminal transition sets `callback_status=pending`
in the same UPDATE (models.Execution._end), whoever ends the run (worker, cancel, reconciler, broker
failure). Delivery claims the row before sending (`sending`, with a lease in `callback_due_at`), so a
re-sent task or the reconciler's sweep cannot deliver it twice at once; failures are retried with
backoff and every attempt is counted on the row.

The request itself goes through the SSRF-pinned client of executions/outbound.py.
"""

import logging
from datetime import timedelta

from django.db.models import F
from django.utils import timezone

from providers.base import Status
from sandboxctl.executions.models import CALLBACK_OWED, Execution
from sandboxctl.executions.outbound import CALLBACK_TIMEOUT, Refused, post_json
from sandboxctl.executions.representation import ExecutionSerializer

log = logging.getLogger(__name__)

CALLBACK_TRIES = 3
LEASE = timedelta(seconds=CALLBACK_TIMEOUT + 20)


def claim(execution_id) -> bool:
    """pending/retrying and due → sending, counting the attempt. False when someone else has it, or it is done."""
    now = timezone.now()
    return bool(Execution.objects.filter(
        pk=execution_id, callback_status__in=("pending", "retrying"), callback_due_at__lte=now,
    ).update(callback_status="sending", callback_due_at=now + LEASE, callback_attempts=F("callback_attempts") + 1))


def deliver(execution_id) -> float | None:
    """One delivery attempt. Returns the backoff before the next attempt, or None when nothing more is owed."""
    if not claim(execution_id):
        return None
    execution = Execution.objects.get(pk=execution_id)
    rows = Execution.objects.filter(pk=execution_id, callback_status="sending")
    try:
        status = post_json(execution.callback_url, ExecutionSerializer(execution).data, str(execution.pk))
        if not 200 <= status < 300:
            raise OSError(f"the receiver answered HTTP {status}" + (" (redirects are not followed)"
                                                                   if 300 <= status < 400 else ""))
    except Refused as exc:
        log.warning("execution %s: callback refused: %s", execution_id, exc)
        rows.update(callback_status="refused", callback_error=str(exc)[:2000], callback_due_at=None)
        return None
    except OSError as exc:
        if execution.callback_attempts >= CALLBACK_TRIES:
            rows.update(callback_status="failed", callback_error=str(exc)[:2000], callback_due_at=None)
            return None
        backoff = 2.0 ** execution.callback_attempts
        rows.update(callback_status="retrying", callback_error=str(exc)[:2000],
                    callback_due_at=timezone.now() + timedelta(seconds=backoff))
        return backoff
    rows.update(callback_status="delivered", callback_error="", callback_due_at=None)
    return None


def overdue(now=None):
    """Callbacks whose delivery task was lost (broker down when the run ended, worker died mid-delivery)."""
    now = now or timezone.now()
    return Execution.objects.filter(
        callback_status__in=CALLBACK_OWED, callback_due_at__lt=now - timedelta(seconds=30),
        status__in=[status.value for status in Status if status.is_terminal],
    )


def release_lease(execution_id) -> None:
    """A `sending` row whose lease ran out (its worker died mid-send) may be claimed again."""
    Execution.objects.filter(pk=execution_id, callback_status="sending").update(
        callback_status="retrying", callback_due_at=timezone.now()
    )

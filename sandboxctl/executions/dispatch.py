"""Handing work to the workers through the broker: a run to its queue, a callback to the callback queue.

Tasks are sent by name, so the domain never imports the worker side (sandboxctl/worker/tasks.py defines them
under these names). A run ending anywhere — a worker, a cancel in the web, the reconciler — admits the
account's next held runs and queues the callback it owes; both receivers live here, so every process that can
end a run reacts the same way.
"""

import logging

from celery import current_app
from django.dispatch import receiver
from django.utils import timezone
from kombu.exceptions import OperationalError as BrokerUnavailable

from executor.config import CALLBACK_QUEUE
from providers.base import Status
from sandboxctl.executions import admission
from sandboxctl.executions.models import Execution
from sandboxctl.executions.signals import execution_ended

log = logging.getLogger(__name__)

RUN_TASK = "sandboxctl.worker.tasks.run_execution"
CELL_TASK = "sandboxctl.worker.sessions.run_cell"  # a session's cell: to the queue of the worker holding it
CALLBACK_TASK = "sandboxctl.worker.tasks.deliver_callback"


def dispatch(execution: Execution) -> bool:
    """Send the run's task to its queue. Accepted means it will run: a broker that cannot take the message now
    leaves the run queued and held (no `dispatched_at`), and admission sends it again on the next run's end or
    reconcile pass once the broker is back."""
    try:
        task = CELL_TASK if execution.session_id else RUN_TASK
        current_app.send_task(task, args=[str(execution.pk)], queue=execution.queue)
    except BrokerUnavailable as exc:
        log.warning("execution %s: broker unavailable (%s); it stays queued until it is back", execution.pk, exc)
        Execution.objects.filter(pk=execution.pk, status=Status.QUEUED).update(dispatched_at=None)
        return False
    Execution.objects.filter(pk=execution.pk, status=Status.QUEUED).update(dispatched_at=timezone.now())
    return True


def queue_callback(execution_id, countdown: float | None = None) -> bool:
    """Queue the delivery of a run's callback; False when the broker is away (the reconciler resends it)."""
    try:
        current_app.send_task(CALLBACK_TASK, args=[str(execution_id)], queue=CALLBACK_QUEUE, countdown=countdown)
    except BrokerUnavailable as exc:
        log.warning("execution %s: callback not queued (%s); the reconciler will send it", execution_id, exc)
        return False
    return True


@receiver(execution_ended)
def admit_next(sender, caller_id: int | None, **kwargs) -> None:
    """A run of the account ended: its next held runs may go (fair share, admission.py)."""
    for execution in admission.admit(caller_id):
        dispatch(execution)


@receiver(execution_ended)
def send_callback(sender, execution_id, callback: bool, **kwargs) -> None:
    """Hand the callback owed by a terminal transition to the callback queue (the reconciler resends lost ones)."""
    if callback:
        queue_callback(execution_id)

"""Fair share between accounts: at most SANDBOX_TENANT_MAX_CONCURRENT runs of one account are in flight
(SANDBOX_RAGFLOW_MAX_CONCURRENT for the `ragflow` account: max_concurrent).

A run is in flight from the moment its task is sent to the broker (`dispatched_at` set) until it ends. An
account's other runs stay queued in the database only — held, with no broker message — so they take no
place in a broker queue or a worker thread ahead of other accounts' runs. Whenever a run of the account
ends (and on every reconcile), its oldest held runs are admitted up to the limit. The account's row is
locked while deciding, so concurrent submits and ends cannot admit more than the limit. Beyond
SANDBOX_TENANT_MAX_QUEUED queued runs, a submit is refused with 429.
"""

from django.conf import settings
from django.contrib.auth import get_user_model
from django.db import transaction
from django.db.models import Q
from django.utils import timezone

from providers.base import Status
from sandboxctl.executions.accounts import RAGFLOW_ACCOUNT
from sandboxctl.executions.models import Execution


class TooManyQueued(Exception):
    """The account already has as many queued runs as it may."""


def lock_account(account_id: int) -> None:
    """Serialise admission decisions for one account (call inside a transaction)."""
    get_user_model().objects.select_for_update().filter(pk=account_id).values_list("pk", flat=True).first()


def check_quota(account_id: int) -> None:
    queued = Execution.objects.filter(caller_id=account_id, status=Status.QUEUED).count()
    if queued >= settings.SANDBOX_TENANT_MAX_QUEUED:
        raise TooManyQueued(
            f"this account has {queued} runs queued, the most it may (SANDBOX_TENANT_MAX_QUEUED); retry when some end"
        )


def max_concurrent(account_id: int) -> int:
    """The account's cap on runs in flight. The `ragflow` service account stands for every RAGFlow user
    behind one RAGFlow, so it has its own (SANDBOX_RAGFLOW_MAX_CONCURRENT)."""
    name = get_user_model().objects.filter(pk=account_id).values_list("username", flat=True).first()
    if name == RAGFLOW_ACCOUNT:
        return settings.SANDBOX_RAGFLOW_MAX_CONCURRENT
    return settings.SANDBOX_TENANT_MAX_CONCURRENT


def in_flight(account_id: int) -> int:
    sent = Q(status=Status.QUEUED, dispatched_at__isnull=False) | Q(status=Status.RUNNING)
    return Execution.objects.filter(sent, caller_id=account_id).count()


def admit(account_id: int | None) -> list[Execution]:
    """Mark the account's oldest held runs as sent, up to its limit, and return them for the caller to send."""
    if account_id is None:
        return []
    with transaction.atomic():
        lock_account(account_id)
        room = max_concurrent(account_id) - in_flight(account_id)
        if room <= 0:
            return []
        held = list(
            Execution.objects.filter(caller_id=account_id, status=Status.QUEUED, dispatched_at__isnull=True)
            .order_by("created_at")
            .values_list("pk", flat=True)[:room]
        )
        Execution.objects.filter(pk__in=held, status=Status.QUEUED, dispatched_at__isnull=True).update(
            dispatched_at=timezone.now()
        )
        return list(Execution.objects.filter(pk__in=held))


def accounts_with_held_runs() -> list[int]:
    return list(
        Execution.objects.filter(status=Status.QUEUED, dispatched_at__isnull=True, caller__isnull=False)
        .values_list("caller_id", flat=True)
        .distinct()
    )

"""Fair share of the workers between accounts: max-min fair admission of held runs.

A run is in flight from the moment its task is sent to the broker (`dispatched_at` set) until it ends. Runs
not yet admitted stay queued in the database only — held, with no broker message — so they take no place
in a broker queue or a worker thread ahead of other accounts' runs.

Two limits decide what may be sent: the workers' capacity (`capacity()`: worker threads of the live sandbox
workers, or SANDBOX_ADMISSION_CAPACITY) and each account's own cap (`max_in_flight`). While there is room, the
account with the fewest runs in flight goes next (its oldest held run; the oldest wins a tie), so an
account with nothing in flight is always admitted before one already holding its share, and the broker
never holds more messages than the workers have threads: a newcomer never waits behind a backlog. Whenever
a run ends (and on every reconcile and submit) `admit()` fills the room again. One lock serialises the
decision, so concurrent submits and ends can never exceed a limit.
"""

from django.conf import settings
from django.contrib.auth import get_user_model
from django.db import connection, transaction
from django.db.models import Count, Q, Sum
from django.utils import timezone

from providers.base import Status
from providers.heartbeats import live_workers
from sandboxctl.executions.accounts import RAGFLOW_ACCOUNT
from sandboxctl.executions.models import Execution, SessionRequest

ADMISSION_LOCK = 0x5BC7_AD01  # the PostgreSQL advisory lock taken while deciding (any constant of our own)
HELD_SCAN_LIMIT = 2000  # held runs looked at per decision: far more than the room there ever is


class TooManyQueued(Exception):
    """The account already has as many queued runs as it may."""


def lock_account(account_id: int) -> None:
    """Serialise admission decisions for one account (call inside a transaction)."""
    get_user_model().objects.select_for_update().filter(pk=account_id).values_list("pk", flat=True).first()


class StorageQuotaExceeded(TooManyQueued):
    """The account keeps as many bytes of files as its quota allows (answered 429, as a full queue is)."""


def check_quota(account_id: int, incoming: int = 0) -> None:
    queued = Execution.objects.filter(caller_id=account_id, status=Status.QUEUED).count()
    if queued >= settings.SANDBOX_TENANT_MAX_QUEUED:
        raise TooManyQueued(
            f"this account has {queued} runs queued, the most it may (SANDBOX_TENANT_MAX_QUEUED); retry when some end"
        )
    check_storage(account_id, incoming)


def check_storage(account_id: int, incoming: int = 0) -> None:
    """Refuse a request whose `incoming` bytes (its code, arguments and input files) would take the account past
    its storage quota, or any once it is full: everything runs keep counts (Execution.stored_bytes), and the
    session file transfers in the file store now."""
    stored = Execution.objects.filter(caller_id=account_id).aggregate(total=Sum("stored_bytes"))["total"] or 0
    stored += transfers_in_flight(account_id)
    quota = settings.SANDBOX_TENANT_STORAGE_QUOTA
    if stored >= quota or stored + incoming > quota:
        raise StorageQuotaExceeded(
            f"this account keeps {stored} bytes of code, arguments, input files, results, output and artifacts, "
            f"this request would add {incoming}; its quota is {quota} (SANDBOX_TENANT_STORAGE_QUOTA); "
            f"runs older than {settings.SANDBOX_RETENTION_DAYS:g} days are deleted (SANDBOX_RETENTION_DAYS)"
        )


def transfers_in_flight(account_id: int) -> int:
    """Bytes of the account's session file transfers in the file store now (transfers.py)."""
    return SessionRequest.objects.filter(session__caller_id=account_id).exclude(blob="").aggregate(
        total=Sum("blob_bytes"))["total"] or 0


def max_in_flight(account_id: int) -> int:
    """The most runs of one account in flight at once. The `ragflow` service account stands for every RAGFlow
    user behind one RAGFlow, so it has its own cap (SANDBOX_RAGFLOW_MAX_CONCURRENT)."""
    name = get_user_model().objects.filter(pk=account_id).values_list("username", flat=True).first()
    if name == RAGFLOW_ACCOUNT:
        return settings.SANDBOX_RAGFLOW_MAX_CONCURRENT
    return settings.SANDBOX_TENANT_MAX_CONCURRENT


def capacity() -> int:
    """Runs the workers can hold at once: SANDBOX_ADMISSION_CAPACITY, or each live sandbox worker's threads."""
    if settings.SANDBOX_ADMISSION_CAPACITY > 0:
        return settings.SANDBOX_ADMISSION_CAPACITY
    workers = sum(1 for depth in live_workers().values_list("pool_depth", flat=True) if depth)
    return settings.SANDBOX_WORKER_CONCURRENCY * max(1, workers)


def in_flight(account_id: int) -> int:
    return Execution.objects.filter(_sent(), caller_id=account_id).count()


def _sent() -> Q:
    """One-shot runs sent to the workers: they hold a worker's thread. (A session's cells run on the session's
    own thread on its worker, never on one of the runs': sessions.py.)"""
    return (Q(status=Status.QUEUED, dispatched_at__isnull=False) | Q(status=Status.RUNNING)) & Q(session__isnull=True)


def _lock_admission() -> None:
    """One decision at a time, across web and worker processes. SQLite transactions here are IMMEDIATE
    (settings), which serialises them already."""
    if connection.vendor == "postgresql":
        with connection.cursor() as cursor:
            cursor.execute("SELECT pg_advisory_xact_lock(%s)", [ADMISSION_LOCK])


def choose(flying: dict[int, int], held: list[tuple[str, int]], room: int, limits: dict[int, int]) -> list[str]:
    """Max-min fair pick of up to `room` runs: `held` is (run id, account) oldest first, `flying` the runs each
    account has in flight, `limits` each account's cap. Each pick goes to the account with the fewest in
    flight that is below its cap, taking that account's oldest held run."""
    queues: dict[int, list[str]] = {}
    for run_id, account in held:
        queues.setdefault(account, []).append(run_id)
    flying = dict(flying)
    chosen = []
    while room > 0:
        ready = [account for account, runs in queues.items() if runs and flying.get(account, 0) < limits[account]]
        if not ready:
            break
        # min() keeps the first of equals, and `queues` is in order of each account's oldest held run.
        account = min(ready, key=lambda candidate: flying.get(candidate, 0))
        chosen.append(queues[account].pop(0))
        flying[account] = flying.get(account, 0) + 1
        room -= 1
    return chosen


def admit(account_id: int | None = None) -> list[Execution]:
    """Mark the next held runs of any account as sent, fairly and within the limits, and return them for the
    caller to send. `account_id` (the account whose run was submitted or ended) is not needed: a freed slot
    may belong to anyone."""
    with transaction.atomic():
        _lock_admission()
        flying = dict(
            Execution.objects.filter(_sent(), caller__isnull=False)
            .order_by().values("caller_id").annotate(count=Count("pk")).values_list("caller_id", "count")
        )
        room = capacity() - sum(flying.values())
        if room <= 0:
            return []
        held = list(
            Execution.objects.filter(status=Status.QUEUED, dispatched_at__isnull=True, caller__isnull=False)
            .order_by("created_at").values_list("pk", "caller_id")[:HELD_SCAN_LIMIT]
        )
        limits = {account: max_in_flight(account) for account in {account for _, account in held}}
        chosen = choose(flying, held, room, limits)
        if not chosen:
            return []
        Execution.objects.filter(pk__in=chosen, status=Status.QUEUED, dispatched_at__isnull=True).update(
            dispatched_at=timezone.now()
        )
        return list(Execution.objects.filter(pk__in=chosen).order_by("created_at"))


def accounts_with_held_runs() -> list[int]:
    return list(
        Execution.objects.filter(status=Status.QUEUED, dispatched_at__isnull=True, caller__isnull=False)
        .values_list("caller_id", flat=True)
        .distinct()
    )

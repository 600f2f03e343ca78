"""Bounded storage: executions and their files are deleted after SANDBOX_RETENTION_DAYS (by the reconciler),
or all of one account's at once (the admin's purge action). Files go first, then the rows: a pass that
stops half-way leaves rows whose files may be gone, which the next pass deletes, never a file no row names."""

from datetime import timedelta

from django.conf import settings
from django.db.models import QuerySet

from sandboxctl.executions import artifact_store
from sandboxctl.executions.models import CALLBACK_OWED, TERMINAL, Execution, Session

BATCH = 500  # rows per pass: a reconcile pass stays short however much has expired


def purge(executions: QuerySet) -> int:
    """Delete ended executions (at most BATCH) and their files; returns how many rows went. A run whose
    remote sandbox is not deleted yet, or whose callback is still owed, is kept until that is done (the
    reconciler and the callback task need its row)."""
    ended = executions.filter(status__in=TERMINAL, sandbox_released=True).exclude(
        callback_status__in=CALLBACK_OWED)
    batch = list(ended.only("pk", "caller_id", "artifacts", "stdout_file", "stderr_file")[:BATCH])
    for execution in batch:
        artifact_store.delete_files(execution)
    return Execution.objects.filter(pk__in=[execution.pk for execution in batch]).delete()[0]


def delete_expired(now) -> int:
    """Runs made and ended more than SANDBOX_RETENTION_DAYS ago (one just ended by the reconciler stays), and
    the records of sessions that ended that long ago (their cells are runs, deleted with the rest)."""
    before = now - timedelta(days=settings.SANDBOX_RETENTION_DAYS)
    deleted = purge(Execution.objects.filter(created_at__lt=before, finished_at__lt=before))
    Session.objects.filter(ended_at__lt=before).delete()
    return deleted


def purge_account(account_id: int) -> int:
    """Every ended execution of one account, and its files (in batches until none is left)."""
    deleted = total = purge(Execution.objects.filter(caller_id=account_id))
    while deleted:
        deleted = purge(Execution.objects.filter(caller_id=account_id))
        total += deleted
    return total

"""A finished result survives any database outage: the worker's durable spool of run endings.

When a run's end cannot be written (the database is away longer than a short retry), the worker keeps the
ending in a file under the data folder — written to a temporary name, fsynced, renamed, the folder fsynced —
and frees its thread. The worker's heartbeat loop replays the spool before each beat, so a worker seen alive
by the reconciler has already written what it holds; a restarted worker replays what its previous instance
left. An ending is written only while the run is still `running` under the instance that ran it: if the
reconciler ended or requeued the run meanwhile, the spooled ending is dropped (logged), never written over a
later decision.
"""

import json
import logging
import os
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path

from django.conf import settings
from django.db import DatabaseError, InterfaceError, OperationalError, close_old_connections

from providers.base import ExecutionResult, Status
from sandboxctl.executions.models import Execution

log = logging.getLogger(__name__)

UNREACHABLE = (OperationalError, InterfaceError)


@dataclass(frozen=True)
class Ending:
    """How one attempt of a run ended, as the worker saw it: a provider's outcome, or an error."""

    execution_id: str
    worker: str
    outcome: ExecutionResult | None = None
    error: tuple[str, str, str] | None = None  # (status, code, message)

    def write(self) -> bool:
        """Record this ending on the run if it is still running under `worker`; False when it is not."""
        execution = Execution.objects.get(pk=self.execution_id)
        if self.outcome is not None:
            return execution.finish(self.outcome, worker=self.worker)
        status, code, message = self.error
        return execution.end_with_error(Status(status), code, message, worker=self.worker)

    def to_json(self) -> str:
        outcome = asdict(self.outcome) if self.outcome is not None else None
        return json.dumps({"execution_id": self.execution_id, "worker": self.worker, "outcome": outcome,
                           "error": list(self.error) if self.error else None})

    @classmethod
    def from_json(cls, text: str) -> "Ending":
        data = json.loads(text)
        outcome = data["outcome"]
        if outcome is not None:
            outcome = ExecutionResult(**{**outcome, "status": Status(outcome["status"])})
        error = tuple(data["error"]) if data["error"] else None
        return cls(data["execution_id"], data["worker"], outcome, error)


class Spool:
    """One file per run ending, in a folder of this worker host."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder

    def keep(self, ending: Ending) -> Path:
        self.folder.mkdir(parents=True, exist_ok=True)
        target = self.folder / f"{ending.execution_id}.json"
        handle, temporary = tempfile.mkstemp(dir=self.folder, prefix=".incoming-")
        try:
            with os.fdopen(handle, "w") as stream:
                stream.write(ending.to_json())
                stream.flush()
                os.fsync(stream.fileno())
            os.replace(temporary, target)
        except BaseException:
            Path(temporary).unlink(missing_ok=True)
            raise
        _fsync_folder(self.folder)
        return target

    def entries(self) -> list[Path]:
        if not self.folder.is_dir():
            return []
        return sorted(self.folder.glob("*.json"), key=lambda path: path.stat().st_mtime)

    def drop(self, entry: Path) -> None:
        entry.unlink(missing_ok=True)
        _fsync_folder(self.folder)


def _fsync_folder(folder: Path) -> None:
    descriptor = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


def worker_spool() -> Spool:
    return Spool(Path(settings.SANDBOX_SPOOL_DIR) / settings.SANDBOX_WORKER_HOST)


def record(ending: Ending, retry) -> None:
    """Write the run's end through `retry` (a short database retry); keep it in the spool if the database
    stays away. A value the database refuses is the user's fault and ends the run at once."""
    try:
        retry(ending.write)
    except UNREACHABLE as exc:
        path = worker_spool().keep(ending)
        log.warning("execution %s: database unavailable (%s); its end is kept in %s", ending.execution_id, exc, path)
        close_old_connections()
    except DatabaseError as exc:
        log.warning("execution %s: the database refused its result: %s", ending.execution_id, exc)
        close_old_connections()
        unstorable = Ending(ending.execution_id, ending.worker, error=(
            Status.FAILED, "result_not_serializable", "the run's result could not be stored: " + str(exc)[:200]))
        retry(unstorable.write)
    except Exception:  # noqa: BLE001 - whatever went wrong, the run ends now, not at the reconciler's deadline
        log.exception("execution %s: could not record its end", ending.execution_id)
        close_old_connections()
        failed = Ending(ending.execution_id, ending.worker, error=(
            Status.SANDBOX_ERROR, "finish_failed", "the worker could not record how this run ended"))
        retry(failed.write)


def replay() -> int:
    """Write every spooled ending the database takes now; returns how many were handled. Raises the
    database's error while it is still away, so the caller tries again later."""
    spool = worker_spool()
    handled = 0
    for entry in spool.entries():
        try:
            ending = Ending.from_json(entry.read_text())
        except (OSError, ValueError, TypeError, KeyError) as exc:
            log.error("spool entry %s is unreadable (%s); moving it aside", entry, exc)
            entry.rename(entry.with_suffix(".unreadable"))
            continue
        try:
            written = ending.write()
        except Execution.DoesNotExist:
            written = False
        if written:
            log.info("execution %s: its spooled end is written", ending.execution_id)
        else:
            log.warning("execution %s: no longer running under %s; its spooled end is dropped",
                        ending.execution_id, ending.worker)
        spool.drop(entry)
        handled += 1
    return handled

"""The worker side of sessions (sandboxctl/executions/sessions.py): the sessions this process holds, the tasks
that reach them through this worker's own queue, the reaper that ends idle and old ones, and what the
reconciler does for sessions whose worker died.

A session's sandbox is a live process of this worker, so its cells and file requests must reach this worker
and no other: each sandbox worker consumes `sessions.<node name>` besides the sandbox queues, and a session
records that queue when it opens here. The worker runs tasks in threads; a session's lock keeps its requests
one at a time.
"""

import logging
import threading
import time
from dataclasses import dataclass, field
from datetime import timedelta

from celery import shared_task, signals
from django.conf import settings
from django.core.files.base import ContentFile
from django.db import close_old_connections
from django.utils import timezone

from executor.config import SAAS_QUEUE
from providers import manager
from providers.base import (
    FileRefused,
    Limits,
    ProviderError,
    ProviderSession,
    SessionGone,
    SessionTimes,
    Status,
)
from providers.heartbeats import live_workers
from sandboxctl.executions import files as stored_files
from sandboxctl.executions import live
from sandboxctl.executions.dispatch import CELL_TASK
from sandboxctl.executions.models import (
    LIVE_SESSION,
    Execution,
    Session,
    SessionRequest,
    SessionStatus,
)
from sandboxctl.executions.sessions import (
    CLOSE_TASK,
    FILE_TASK,
    OPEN_TASK,
    end_pending_work,
    file_limits,
    touch,
)
from sandboxctl.worker import spool
from sandboxctl.worker.lifecycle import sandbox_languages, worker_name
from sandboxctl.worker.retry import FINISH_RETRY_FOR, with_database_retry

log = logging.getLogger(__name__)

REAP_INTERVAL = 1.0
CHECK_ENDED_EVERY = 2.0  # how often the reaper asks the database which of its sessions were ended elsewhere
# A session still `starting` this long after it was asked for lost its opening (a broker outage).
OPENING_LOST_AFTER = timedelta(minutes=5)
FINISHED_REQUESTS_KEPT = timedelta(minutes=10)  # then a request's row (and any download it left) goes


def session_queue(node_name: str) -> str:
    return f"sessions.{node_name}"


_queue = {"name": ""}


def this_queue() -> str:
    return _queue["name"]


def set_queue(node_name: str) -> str:
    _queue["name"] = session_queue(node_name)
    return _queue["name"]


@dataclass
class Held:
    """A session this process holds, with what its reaper needs."""

    id: str
    session: ProviderSession
    idle_timeout: float
    ends_at: float  # monotonic: max_lifetime after it was asked for
    last_active: float = field(default_factory=time.monotonic)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def expired(self, now: float) -> str | None:
        if now >= self.ends_at:
            return "it reached its max_lifetime"
        if now - self.last_active >= self.idle_timeout:
            return f"idle for {self.idle_timeout:g}s"
        return None


class Registry:
    def __init__(self) -> None:
        self._held: dict[str, Held] = {}
        self._lock = threading.Lock()

    def add(self, held: Held) -> None:
        with self._lock:
            self._held[held.id] = held

    def get(self, session_id) -> Held | None:
        with self._lock:
            return self._held.get(str(session_id))

    def pop(self, session_id) -> Held | None:
        with self._lock:
            return self._held.pop(str(session_id), None)

    def all(self) -> list[Held]:
        with self._lock:
            return list(self._held.values())

    def count(self) -> int:
        with self._lock:
            return len(self._held)


held_sessions = Registry()


def end_here(session_id, status: str, reason: str) -> None:
    """Close the sandbox this process holds for the session (if any) and end the session's row."""
    held = held_sessions.pop(session_id)
    if held is not None:
        with held.lock:
            held.session.close(reason)
    session = Session.objects.filter(pk=session_id).first()
    if session is not None:
        session.end(status, reason)
        end_pending_work(session, "session_ended", f"the session ended: {reason}")
    log.info("session %s: ended (%s)", session_id, reason)


# Tasks


@shared_task(name=OPEN_TASK)
def open_session(request_id: str) -> None:
    request = SessionRequest.objects.select_related("session").filter(pk=request_id).first()
    if request is None or request.is_done:
        return
    session = request.session
    if session.status != SessionStatus.STARTING:
        request.fail("session_ended", f"the session is {session.status}")
        return
    if held_sessions.count() >= settings.SANDBOX_WORKER_MAX_SESSIONS:
        fail_opening(request, "no_capacity", f"this worker holds its most sessions "
                                             f"({settings.SANDBOX_WORKER_MAX_SESSIONS}, SANDBOX_WORKER_MAX_SESSIONS)")
        return
    provider = manager.provider(session.provider)
    try:
        opened = provider.open_session(session.language, Limits(**session.limits), request.payload.get("files") or [],
                                       file_limits(), account=str(session.caller_id or ""), session_id=str(session.pk),
                                       times=SessionTimes(session.max_lifetime, session.idle_timeout))
    except ProviderError as exc:
        fail_opening(request, exc.code, str(exc))
        return
    ends_at = time.monotonic() + max(0.0, session.max_lifetime - (timezone.now() - session.created_at).total_seconds())
    held_sessions.add(Held(str(session.pk), opened, session.idle_timeout, ends_at))
    started = Session.objects.filter(pk=session.pk, status=SessionStatus.STARTING).update(
        status=SessionStatus.ACTIVE, worker=worker_name(), queue=this_queue(), sandbox_id=opened.sandbox_id,
        started_at=timezone.now(), last_active_at=timezone.now())
    if not started:  # deleted while it opened
        end_here(session.pk, SessionStatus.ENDED, "deleted while it opened")
        request.fail("session_ended", "the session was deleted while it opened")
        return
    request.complete({"sandbox_id": opened.sandbox_id})
    log.info("session %s: open in sandbox %s", session.pk, opened.sandbox_id)


def fail_opening(request: SessionRequest, code: str, message: str) -> None:
    log.warning("session %s: did not open: %s", request.session_id, message)
    request.session.end(SessionStatus.FAILED, message)
    request.fail(code, message)


@shared_task(name=CELL_TASK)
def run_cell(execution_id: str) -> None:
    execution = with_database_retry(lambda: Execution.claim(execution_id, worker_name()), f"claim {execution_id}")
    if execution is None:
        return
    held = held_sessions.get(execution.session_id)
    if held is None:
        execution.end_with_error(Status.SANDBOX_ERROR, "session_lost",
                                 "the session is not held by this worker any more (it ended or its worker restarted)")
        return
    ending = None
    output = live.publisher(execution_id)  # live output (executions/live.py), as for one-shot runs
    with held.lock:
        held.last_active = time.monotonic()
        try:
            outcome = held.session.run(execution.code, execution.arguments, Limits(**execution.limits),
                                       should_stop=execution.was_cancelled, on_output=output.output)
        except SessionGone as exc:
            ending = spool.Ending(execution_id, execution.worker,
                                  error=(Status.SANDBOX_ERROR, "session_ended", f"the session ended: {exc.reason}"))
            outcome = None
        except Exception:  # noqa: BLE001 - an infrastructure fault ends the cell, never leaves it running
            log.exception("cell %s: unexpected failure", execution_id)
            ending = spool.Ending(execution_id, execution.worker,
                                  error=(Status.SANDBOX_ERROR, "internal_error", "the worker failed unexpectedly"))
            outcome = None
        held.last_active = time.monotonic()
    output.close()
    if outcome is not None:
        ending = spool.Ending(execution_id, execution.worker, outcome=outcome)
    spool.record(ending, lambda write: with_database_retry(write, f"end {execution_id}", FINISH_RETRY_FOR))
    touch(execution.session_id)
    reason = outcome.session_ended if outcome is not None else ending.error[2]
    if outcome is None or outcome.session_ended:
        end_here(execution.session_id, SessionStatus.ENDED, reason)


@shared_task(name=FILE_TASK)
def session_file(request_id: str) -> None:
    request = SessionRequest.objects.select_related("session").filter(pk=request_id).first()
    if request is None or request.is_done:
        return
    held = held_sessions.get(request.session_id)
    if held is None:
        discard_blob(request.blob)
        request.fail("session_lost", "the session is not held by this worker any more")
        return
    try:
        with held.lock:
            held.last_active = time.monotonic()
            answer, blob = answer_file_request(held.session, request)
            held.last_active = time.monotonic()
    except FileRefused as exc:
        request.fail(exc.code, str(exc))
    except SessionGone as exc:
        request.fail("session_ended", f"the session ended: {exc.reason}")
        end_here(request.session_id, SessionStatus.ENDED, exc.reason)
    else:
        if not request.complete(answer, blob):
            discard_blob(blob)
    finally:
        if request.kind == "put":
            discard_blob(request.blob)
    touch(request.session_id)


def answer_file_request(session: ProviderSession, request: SessionRequest) -> tuple[dict, str]:
    """Do one file request; returns (the answer, the store name of downloaded bytes or "")."""
    if request.kind == "put":
        with stored_files.store().open(request.blob, "rb") as upload:
            content = upload.read()
        return session.put_file(request.path, content), ""
    if request.kind == "get":
        content = session.get_file(request.path)
        name = stored_files.store().save(f"sessions/{request.session_id}/get-{request.pk}", ContentFile(content))
        return {"path": request.path, "size": len(content)}, name
    if request.kind == "list":
        return {"files": session.list_files()}, ""
    if request.kind == "delete":
        session.delete_file(request.path)
        return {"path": request.path}, ""
    raise FileRefused("bad_request", f"unknown file request {request.kind!r}")


def discard_blob(name: str) -> None:
    if name:
        try:
            stored_files.store().delete(name)
        except Exception:  # noqa: BLE001 - the retention sweep takes what is left
            log.warning("could not delete %s from the file store", name)


@shared_task(name=CLOSE_TASK)
def close_session(session_id: str, reason: str = "deleted") -> None:
    held = held_sessions.pop(session_id)
    if held is not None:
        with held.lock:
            held.session.close(reason)
        log.info("session %s: closed (%s)", session_id, reason)


# The reaper


def reap_once(check_ended: bool) -> None:
    """End the sessions this process holds that are idle or too old; drop those ended elsewhere."""
    now = time.monotonic()
    for held in held_sessions.all():
        reason = held.expired(now)
        if reason and not held.lock.locked():
            end_here(held.id, SessionStatus.ENDED, reason)
    if check_ended:
        ids = [held.id for held in held_sessions.all()]
        if ids:
            for session_id in Session.objects.filter(pk__in=ids).exclude(status__in=LIVE_SESSION).values_list(
                    "pk", flat=True):
                close_session(str(session_id), "ended")


def reaper_loop(stop: threading.Event) -> None:
    last_check = 0.0
    while not stop.wait(REAP_INTERVAL):
        try:
            check = time.monotonic() - last_check >= CHECK_ENDED_EVERY
            reap_once(check)
            if check:
                last_check = time.monotonic()
        except Exception:  # noqa: BLE001 - a database away: sessions are reaped on the next pass
            log.exception("session reaper pass failed")
        finally:
            close_old_connections()


_stop_reaper = threading.Event()


@signals.celeryd_after_setup.connect
def consume_session_queue(sender=None, instance=None, **kwargs) -> None:
    """A sandbox or SaaS worker also consumes its own queue: the cells and file requests of the sessions it
    holds (a SaaS session's remote sandbox is reached through the SDK objects of the worker that opened it)."""
    queues = instance.app.amqp.queues
    names = [queue.name for queue in queues.consume_from.values()]
    if sandbox_languages(names) or SAAS_QUEUE in names:
        queues.select_add(set_queue(sender))


@signals.worker_ready.connect
def start_reaper(**kwargs) -> None:
    if this_queue():
        _stop_reaper.clear()
        threading.Thread(target=reaper_loop, args=(_stop_reaper,), name="session-reaper", daemon=True).start()


@signals.worker_shutdown.connect
def end_sessions_at_shutdown(**kwargs) -> None:
    _stop_reaper.set()
    end_all_held("its worker shut down")


def end_all_held(reason: str) -> None:
    """The worker is shutting down: its sessions end with it (their sandboxes go with its pool)."""
    for held in held_sessions.all():
        try:
            end_here(held.id, SessionStatus.ENDED, reason)
        except Exception:  # noqa: BLE001 - the database may be away; the reconciler marks them lost
            log.exception("session %s: not ended cleanly", held.id)


# The reconciler's part


def reconcile(now, judging: bool) -> dict:
    counts = {"sessions_lost": 0, "sessions_unopened": 0, "session_requests_forgotten": forget_old_requests(now)}
    if judging:
        alive = set(live_workers().values_list("worker", flat=True))
        grace = timedelta(seconds=settings.SANDBOX_WORKER_STALE_AFTER)
        for session in Session.objects.filter(status=SessionStatus.ACTIVE, started_at__lt=now - grace):
            if session.worker not in alive and session.end(SessionStatus.LOST,
                                                          f"its worker host ({session.worker}) was lost"):
                end_pending_work(session, "session_lost", "the session's worker host was lost")
                delete_lost_sandbox(session)
                counts["sessions_lost"] += 1
    for session in Session.objects.filter(status=SessionStatus.STARTING, created_at__lt=now - OPENING_LOST_AFTER):
        if session.end(SessionStatus.FAILED, "no worker opened it"):
            end_pending_work(session, "session_unopened", "no worker opened the session")
            counts["sessions_unopened"] += 1
    return counts


def delete_lost_sandbox(session: Session) -> None:
    """A SaaS session's remote sandbox outlives its worker: delete it now rather than at its lifetime."""
    if not session.sandbox_id:
        return
    try:
        manager.provider(session.provider).delete_session_sandbox(session.sandbox_id)
    except Exception:  # noqa: BLE001 - a provider no longer configured; the service's lifetime ends it
        log.exception("session %s: its sandbox %s was not deleted", session.pk, session.sandbox_id)


def forget_old_requests(now) -> int:
    old = SessionRequest.objects.filter(finished_at__lt=now - FINISHED_REQUESTS_KEPT)
    for blob in old.exclude(blob="").values_list("blob", flat=True):
        discard_blob(blob)
    return old.delete()[0]

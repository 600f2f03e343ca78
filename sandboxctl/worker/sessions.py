"""The worker side of sessions (sandboxctl/executions/sessions.py): the sessions this process holds, each served by
a thread of its own; the tasks that hand them work through this worker's own queue; the reaper that ends idle
and old ones; and what the reconciler does for sessions whose worker died.

A session's sandbox is a live process of this worker, so its cells and file requests must reach this worker
and no other: each sandbox worker consumes `sessions.<node name>` besides the sandbox queues, and a session
records that queue when it opens here.

Capacity: a session occupies its own thread here (at most SANDBOX_WORKER_MAX_SESSIONS of them), never one of
Celery's threads, which are the runs'. The Celery tasks for a session only hand the work to the session's
thread and return at once, so no cell, opening or file request — however long it takes, however stuck the
sandbox — holds a thread that a one-shot run could use. Each session takes its requests one at a time from a
short queue (its one cell and at most SANDBOX_SESSION_REQUESTS_MAX file requests); a request beyond that is
refused at once (409 session_busy). Ending a session — DELETE, its idle time or lifetime, a cell that ends it,
the worker's shutdown — stops its sandbox at once, without waiting for the request in progress, which then
fails; so do the requests still queued.
"""

import logging
import queue
import threading
import time
from dataclasses import dataclass, field
from datetime import timedelta

from celery import shared_task, signals
from django.conf import settings
from django.core.files.base import ContentFile
from django.db import close_old_connections, connection
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
from sandboxctl.executions import live_output, transfers
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
# A request's row (and any download it left) goes this long after it finished; a download is normally
# deleted as soon as it is sent (api/session_views.py), this only sweeps what a crash left.
FINISHED_REQUESTS_KEPT = timedelta(minutes=2)


def session_queue(node_name: str) -> str:
    return f"sessions.{node_name}"


_queue = {"name": ""}


def this_queue() -> str:
    return _queue["name"]


def set_queue(node_name: str) -> str:
    _queue["name"] = session_queue(node_name)
    return _queue["name"]


@dataclass(frozen=True)
class Work:
    """One request for a session's thread: a cell (an Execution) or a file request (a SessionRequest)."""

    kind: str  # "cell" or "file"
    id: str


STOP = Work("stop", "")


@dataclass(eq=False)
class LiveSession:
    """A session this process holds, with the thread that serves it and what its reaper needs."""

    id: str
    idle_timeout: float
    ends_at: float  # monotonic: max_lifetime after it was asked for
    session: ProviderSession | None = None  # None while it opens
    last_active: float = field(default_factory=time.monotonic)
    busy: bool = False
    over: str | None = None
    inbox: queue.Queue = field(default_factory=lambda: queue.Queue(maxsize=settings.SANDBOX_SESSION_REQUESTS_MAX + 1))
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def expired(self, now: float) -> str | None:
        if now >= self.ends_at:
            return "it reached its max_lifetime"
        if not self.busy and now - self.last_active >= self.idle_timeout:
            return f"idle for {self.idle_timeout:g}s"
        return None

    def submit(self, work: Work) -> bool:
        """Queue work for the session's thread; False when the session is over or its queue is full."""
        if self.over is not None:
            return False
        try:
            self.inbox.put_nowait(work)
        except queue.Full:
            return False
        return True

    def end(self, reason: str) -> None:
        """Stop the session now, from any thread: its sandbox is ended at once (a request in progress fails),
        its thread then fails what is still queued and leaves."""
        with self._lock:
            if self.over is None:
                self.over = reason
            session = self.session
        if session is not None:
            session.close(reason)
        try:
            self.inbox.put_nowait(STOP)
        except queue.Full:
            pass  # the thread sees `over` after the request in progress


class Registry:
    def __init__(self) -> None:
        self._live: dict[str, LiveSession] = {}
        self._lock = threading.Lock()

    def add_if_room(self, live: LiveSession, room: int) -> bool:
        with self._lock:
            if len(self._live) >= room:
                return False
            self._live[live.id] = live
            return True

    def get(self, session_id) -> LiveSession | None:
        with self._lock:
            return self._live.get(str(session_id))

    def pop(self, session_id) -> LiveSession | None:
        with self._lock:
            return self._live.pop(str(session_id), None)

    def all(self) -> list[LiveSession]:
        with self._lock:
            return list(self._live.values())

    def count(self) -> int:
        with self._lock:
            return len(self._live)


live_sessions = Registry()


def end_here(session_id, status: str, reason: str) -> None:
    """End the session this process holds (if it does) and its row, with everything still pending."""
    live = live_sessions.pop(session_id)
    if live is not None:
        live.end(reason)
    session = Session.objects.filter(pk=session_id).first()
    if session is not None:
        session.end(status, reason)
        end_pending_work(session, "session_ended", f"the session ended: {reason}")
    log.info("session %s: ended (%s)", session_id, reason)


# The session's thread


def serve(live: LiveSession, request_id: str) -> None:
    """The session's thread: open it, then do its work one request at a time until it ends."""
    try:
        if open_here(live, request_id):
            while True:
                work = live.inbox.get()
                if work is STOP or live.over is not None:
                    if work is not STOP:
                        fail_work(work, live.over)
                    break
                live.busy = True
                live.last_active = time.monotonic()
                try:
                    do(live, work)
                finally:
                    live.busy = False
                    live.last_active = time.monotonic()
                    close_old_connections()
    except Exception:  # noqa: BLE001 - the session ends with a reason; the worker goes on
        log.exception("session %s: its thread failed", live.id)
        end_here(live.id, SessionStatus.ENDED, "the worker failed unexpectedly")
    finally:
        live_sessions.pop(live.id)
        while True:
            try:
                work = live.inbox.get_nowait()
            except queue.Empty:
                break
            if work is not STOP:
                fail_work(work, live.over or "the session ended")
        if live.session is not None:
            live.session.close(live.over or "ended")
        connection.close()


def open_here(live: LiveSession, request_id: str) -> bool:
    request = SessionRequest.objects.select_related("session").filter(pk=request_id).first()
    if request is None or request.is_done:
        return False
    session = request.session
    if session.status != SessionStatus.STARTING:
        request.fail("session_ended", f"the session is {session.status}")
        return False
    provider = manager.provider(session.provider)
    try:
        opened = provider.open_session(session.language, Limits(**session.limits), request.payload.get("files") or [],
                                       file_limits(), account=str(session.caller_id or ""), session_id=str(session.pk),
                                       times=SessionTimes(session.max_lifetime, session.idle_timeout))
    except ProviderError as exc:
        fail_opening(request, exc.code, str(exc))
        return False
    with live._lock:
        live.session = opened
        ended_meanwhile = live.over
    if ended_meanwhile is not None:  # deleted or expired while it opened
        opened.close(ended_meanwhile)
        request.fail("session_ended", f"the session ended while it opened: {ended_meanwhile}")
        return False
    started = Session.objects.filter(pk=session.pk, status=SessionStatus.STARTING).update(
        status=SessionStatus.ACTIVE, worker=worker_name(), queue=this_queue(), sandbox_id=opened.sandbox_id,
        started_at=timezone.now(), last_active_at=timezone.now())
    if not started:  # deleted while it opened
        live.end("deleted while it opened")
        request.fail("session_ended", "the session was deleted while it opened")
        return False
    request.complete({"sandbox_id": opened.sandbox_id})
    log.info("session %s: open in sandbox %s", session.pk, opened.sandbox_id)
    return True


def fail_opening(request: SessionRequest, code: str, message: str) -> None:
    log.warning("session %s: did not open: %s", request.session_id, message)
    request.session.end(SessionStatus.FAILED, message)
    request.fail(code, message)


def do(live: LiveSession, work: Work) -> None:
    if work.kind == "cell":
        run_cell(live, work.id)
    else:
        answer_file_request(live, work.id)


def fail_work(work: Work, reason: str) -> None:
    if work.kind == "cell":
        Execution(pk=work.id).end_with_error(Status.SANDBOX_ERROR, "session_ended", f"the session ended: {reason}")
    else:
        request = SessionRequest.objects.filter(pk=work.id).first()
        if request is not None:
            transfers.discard(request.blob) if request.kind == "put" else None
            request.fail("session_ended", f"the session ended: {reason}")


def run_cell(live: LiveSession, execution_id: str) -> None:
    execution = with_database_retry(lambda: Execution.claim(execution_id, worker_name()), f"claim {execution_id}")
    if execution is None:
        return
    outcome = None
    output = live_output.publisher(execution_id)  # live output (executions/live_output.py), as for one-shot runs
    try:
        outcome = live.session.run(execution.code, execution.arguments, Limits(**execution.limits),
                                   should_stop=execution.was_cancelled, on_output=output.output)
    except SessionGone as exc:
        reason = f"the session ended: {live.over or exc.reason}"
        ending = spool.Ending(execution_id, execution.worker, error=(Status.SANDBOX_ERROR, "session_ended", reason))
    except Exception:  # noqa: BLE001 - an infrastructure fault ends the cell, never leaves it running
        log.exception("cell %s: unexpected failure", execution_id)
        ending = spool.Ending(execution_id, execution.worker,
                              error=(Status.SANDBOX_ERROR, "internal_error", "the worker failed unexpectedly"))
    else:
        ending = spool.Ending(execution_id, execution.worker, outcome=outcome)
    output.close()  # its last chunks are written before its end is recorded
    spool.record(ending, lambda write: with_database_retry(write, f"end {execution_id}", FINISH_RETRY_FOR))
    touch(execution.session_id)
    if outcome is None or outcome.session_ended:
        end_here(live.id, SessionStatus.ENDED, outcome.session_ended if outcome is not None else ending.error[2])


def answer_file_request(live: LiveSession, request_id: str) -> None:
    request = SessionRequest.objects.select_related("session").filter(pk=request_id).first()
    if request is None or request.is_done:
        forget_abandoned(request)
        return
    try:
        answer, blob = file_operation(live.session, request)
    except FileRefused as exc:
        request.fail(exc.code, str(exc))
    except SessionGone as exc:
        request.fail("session_ended", f"the session ended: {live.over or exc.reason}")
        end_here(live.id, SessionStatus.ENDED, exc.reason)
    else:
        if not request.complete(answer, blob, answer.get("size", 0) if blob else 0):
            transfers.discard(blob)  # the caller stopped waiting: nobody will fetch it
            forget_abandoned(request)
    finally:
        if request.kind == "put":
            transfers.discard(request.blob)
    touch(live.id)


def forget_abandoned(request: SessionRequest | None) -> None:
    """A request its caller gave up on is answered to nobody: nothing of it is kept."""
    if request is not None:
        SessionRequest.objects.filter(pk=request.pk, error_code="abandoned").delete()


def file_operation(session: ProviderSession, request: SessionRequest) -> tuple[dict, str]:
    """Do one file request; returns (the answer, the store name of downloaded bytes or "")."""
    if request.kind == "put":
        content = transfers.read(request.blob)
        return session.put_file(request.path, content), ""
    if request.kind == "get":
        content = session.get_file(request.path)
        name = transfers.save(transfers.download_name(request.session.caller_id, request.session_id, request.pk),
                              ContentFile(content))
        return {"path": request.path, "size": len(content)}, name
    if request.kind == "list":
        return session.list_files(after=request.payload.get("after", ""), limit=request.payload.get("limit")), ""
    if request.kind == "delete":
        session.delete_file(request.path)
        return {"path": request.path}, ""
    raise FileRefused("bad_request", f"unknown file request {request.kind!r}")


# Tasks: each hands the work to the session's thread and returns at once.


@shared_task(name=OPEN_TASK)
def open_session(request_id: str) -> None:
    request = SessionRequest.objects.select_related("session").filter(pk=request_id).first()
    if request is None or request.is_done:
        return
    session = request.session
    ends_at = time.monotonic() + max(0.0, session.max_lifetime - (timezone.now() - session.created_at).total_seconds())
    live = LiveSession(str(session.pk), session.idle_timeout, ends_at)
    if not live_sessions.add_if_room(live, settings.SANDBOX_WORKER_MAX_SESSIONS):
        fail_opening(request, "no_capacity", f"this worker holds its most sessions "
                                             f"({settings.SANDBOX_WORKER_MAX_SESSIONS}, SANDBOX_WORKER_MAX_SESSIONS)")
        return
    threading.Thread(target=serve, args=(live, str(request_id)), name=f"session-{session.pk}", daemon=True).start()


def hand_to_session(session_id, work: Work) -> str | None:
    """Queue work for the session's thread; None when queued, else why not (session_lost, session_busy)."""
    live = live_sessions.get(session_id)
    if live is None:
        return "session_lost"
    if not live.submit(work):
        return "session_ended" if live.over is not None else "session_busy"
    return None


@shared_task(name=CELL_TASK)
def run_session_cell(execution_id: str) -> None:
    """A session's cell: to the session's thread (which claims it when its turn comes)."""
    session_id = Execution.objects.filter(pk=execution_id, status=Status.QUEUED).values_list(
        "session_id", flat=True).first()
    if session_id is None:
        return  # another delivery took it, or it ended meanwhile
    refused = hand_to_session(session_id, Work("cell", str(execution_id)))
    if refused == "session_lost":
        Execution(pk=execution_id).end_with_error(
            Status.SANDBOX_ERROR, "session_lost",
            "the session is not held by this worker any more (it ended or its worker restarted)")
    elif refused:
        Execution(pk=execution_id).end_with_error(Status.SANDBOX_ERROR, refused, f"the session could not take it "
                                                                                  f"({refused})")


@shared_task(name=FILE_TASK)
def session_file(request_id: str) -> None:
    request = SessionRequest.objects.filter(pk=request_id).first()
    if request is None or request.is_done:
        return
    refused = hand_to_session(request.session_id, Work("file", str(request_id)))
    if refused:
        if request.kind == "put":
            transfers.discard(request.blob)
        message = {"session_lost": "the session is not held by this worker any more",
                   "session_busy": "the session has as many file requests in flight as it may",
                   "session_ended": "the session ended"}[refused]
        request.fail(refused, message)


@shared_task(name=CLOSE_TASK)
def close_session(session_id: str, reason: str = "deleted") -> None:
    live = live_sessions.pop(session_id)
    if live is not None:
        live.end(reason)
        log.info("session %s: closed (%s)", session_id, reason)


# The reaper


def reap_once(check_ended: bool) -> None:
    """End the sessions this process holds that are idle or too old; drop those ended elsewhere."""
    now = time.monotonic()
    for live in live_sessions.all():
        reason = live.expired(now)
        if reason:
            end_here(live.id, SessionStatus.ENDED, reason)
    if check_ended:
        ids = [live.id for live in live_sessions.all()]
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
    end_all_live("its worker shut down")


def end_all_live(reason: str) -> None:
    """The worker is shutting down: its sessions end with it (their sandboxes go with its pool)."""
    for live in live_sessions.all():
        try:
            end_here(live.id, SessionStatus.ENDED, reason)
        except Exception:  # noqa: BLE001 - the database may be away; the reconciler marks them lost
            log.exception("session %s: not ended cleanly", live.id)


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
        transfers.discard(blob)
    return old.delete()[0]

"""Sessions: a sandbox that lives between cells, on one worker host, for one account.

Opening one records a Session and an `open` SessionRequest, and sends the opening to the language's sandbox
queue: the worker that takes it turns a warm sandbox of its pool into the session and answers with the name
of its own queue (`sessions.<node>`). From then on every cell (an Execution with `session` set) and every file
request goes to that queue only, so it reaches the one process that holds the sandbox (sandboxctl/worker/
sessions.py), where the session's own thread serves them one at a time. Cells run one at a time: a cell sent
while another of the session is queued or running is refused (409 session_busy), and so is a file request
beyond SANDBOX_SESSION_REQUESTS_MAX in flight. Cells and file requests are not admitted against the workers'
run capacity (admission.py): they never take a thread of the runs, only their session's own, and an account
has at most SANDBOX_TENANT_MAX_SESSIONS sessions (a worker at most SANDBOX_WORKER_MAX_SESSIONS).

A session ends on DELETE, after idle_timeout without a request, at max_lifetime (the worker's reaper), when a
cell ends it (a timeout it would not stop at, the interpreter gone: in the same commit as that cell's end), or
`lost` when its worker dies (the reconciler). Its sandbox and files go with it, at once.
"""

import hashlib
import logging
from dataclasses import asdict, replace

from celery import current_app
from django.conf import settings
from django.db import transaction
from django.utils import timezone
from kombu.exceptions import OperationalError as BrokerUnavailable

from executor import deadlines as sandbox_deadlines
from executor.config import FileLimits
from providers import manager
from providers.base import Limits, RequestedLimits, Status
from sandboxctl.egress import policy as egress_policy
from sandboxctl.executions import admission, transfers
from sandboxctl.executions.dispatch import CELL_TASK
from sandboxctl.executions.models import (
    LIVE_SESSION,
    Execution,
    RequestStatus,
    Session,
    SessionRequest,
    SessionStatus,
    request_bytes,
)

log = logging.getLogger(__name__)

OPEN_TASK = "sandboxctl.worker.sessions.open_session"
FILE_TASK = "sandboxctl.worker.sessions.session_file"
CLOSE_TASK = "sandboxctl.worker.sessions.close_session"
OPEN_WAIT = 60.0  # how long POST /sessions waits for its sandbox before it answers 202 with `starting`
FILE_WAIT = sandbox_deadlines.FILE_WAIT + sandbox_deadlines.REPORT_MARGIN
LIST_PAGE_MAX = 1000  # entries of one page of a session's file listing


class SessionsUnavailable(Exception):
    """The active provider has no sessions (the message names it)."""


class TooManySessions(Exception):
    pass


class SessionBusy(Exception):
    pass


class SessionNotActive(Exception):
    def __init__(self, session: Session) -> None:
        reason = f" ({session.end_reason})" if session.end_reason else ""
        super().__init__(f"the session is {session.status}{reason}")
        self.session = session


def file_limits() -> FileLimits:
    return FileLimits(settings.SANDBOX_SESSION_FILE_MAX_BYTES, settings.SANDBOX_SESSION_FILES_MAX_BYTES)


def input_file_limits() -> FileLimits:
    return FileLimits(settings.SANDBOX_INPUT_FILES_MAX_BYTES, settings.SANDBOX_INPUT_FILES_MAX_BYTES)


def open_session(user, language: str, idle_timeout: float | None, max_lifetime: float | None,
                 requested: RequestedLimits, files: list[dict], network: tuple = ()) -> tuple[Session, SessionRequest]:
    provider = manager.active_provider()
    if not provider.has_sessions:
        raise SessionsUnavailable(f"the active provider, {provider.label} ({provider.name}), has no sessions")
    if language not in provider.session_languages:
        raise SessionsUnavailable(f"the active provider, {provider.label} ({provider.name}), has no {language} "
                                  f"sessions; it has {', '.join(provider.session_languages)}")
    limits = egress_policy.with_allowlist(provider, provider.clamp(requested), user, network)
    with transaction.atomic():
        admission.lock_account(user.pk)
        live = Session.objects.filter(caller=user, status__in=LIVE_SESSION).count()
        if live >= settings.SANDBOX_TENANT_MAX_SESSIONS:
            raise TooManySessions(f"the account has {live} live sessions; the limit is "
                                  f"{settings.SANDBOX_TENANT_MAX_SESSIONS} (SANDBOX_TENANT_MAX_SESSIONS)")
        session = Session.objects.create(
            caller=user, provider=provider.name, language=language, limits=asdict(limits),
            idle_timeout=min(idle_timeout or settings.SANDBOX_SESSION_IDLE_TIMEOUT,
                             settings.SANDBOX_SESSION_IDLE_TIMEOUT_MAX),
            max_lifetime=min(max_lifetime or settings.SANDBOX_SESSION_MAX_LIFETIME,
                             settings.SANDBOX_SESSION_MAX_LIFETIME_MAX),
        )
        opening = SessionRequest.objects.create(session=session, kind="open", payload={"files": files})
    if not send(OPEN_TASK, opening.pk, provider.queue_for(language)):
        opening.fail("broker_unavailable", "the broker is unavailable; try again")
        session.end(SessionStatus.FAILED, "the broker was unavailable when it opened")
    return session, opening


def submit_cell(session: Session, user, code: str, arguments: dict, requested: RequestedLimits) -> Execution:
    """Record one cell and send it to the session's worker at once.

    Cells are not held by admission: they run on their session's own thread on the worker, never on one of the
    runs' threads, an account has at most SANDBOX_TENANT_MAX_SESSIONS sessions, each with at most one cell in
    flight, and the CPU is shared by account (the session's sandbox is in its account's cgroup). The storage
    quota still applies. SessionNotActive (409 session_ended) once the session has ended, even by the cell
    just before this one: that cell's end and the session's are one commit."""
    provider = manager.provider(session.provider)
    with transaction.atomic():
        locked = Session.objects.select_for_update().get(pk=session.pk)
        if locked.status != SessionStatus.ACTIVE:
            raise SessionNotActive(locked)
        limits = cell_limits(provider, locked, requested)  # the session as it is now (its allowlist may change)
        if locked.cells.filter(status__in=[Status.QUEUED, Status.RUNNING]).exists():
            raise SessionBusy("a cell of this session is queued or running; cells run one at a time")
        admission.check_storage(user.pk, request_bytes(code, arguments))
        cell = Execution.objects.create(
            provider=session.provider, language=session.language, code=code,
            code_sha256=hashlib.sha256(code.encode()).hexdigest(), arguments=arguments,
            requested_limits=asdict(requested),
            limits=asdict(limits), caller=user, session=locked, queue=locked.queue, dispatched_at=timezone.now(),
            stored_bytes=request_bytes(code, arguments),
        )
    # Sent after the commit; a message the broker does not take is sent again by the reconciler
    # (redispatch_lost_messages), as for any run whose message was lost.
    send(CELL_TASK, cell.pk, cell.queue)
    return cell


def cell_limits(provider, session: Session, requested: RequestedLimits) -> Limits:
    """A cell's limits: its own time limit (else the session's), the session's memory, its own output cap within
    the session's, and the session's egress allowlist as it is now (set_network changes it between cells)."""
    opened = session.limits
    output_cap = opened.get("output_limit")
    return replace(provider.clamp(RequestedLimits(
        timeout=requested.timeout or opened.get("timeout"), memory_mb=opened.get("memory_mb"),
        output_limit=min(requested.output_limit or output_cap, output_cap) if output_cap else requested.output_limit,
    )), egress=tuple(opened.get("egress") or ()))


def set_network(session: Session, user, requested: tuple) -> Session:
    """PATCH: the session's allowlist from its next cell on, within its account's ceiling (egress/policy.py)."""
    limits = egress_policy.with_allowlist(manager.provider(session.provider), Limits(**session.limits), user,
                                          requested)
    with transaction.atomic():
        locked = Session.objects.select_for_update().get(pk=session.pk)
        if locked.status not in LIVE_SESSION:
            raise SessionNotActive(locked)
        locked.limits = {**locked.limits, "egress": list(limits.egress)}
        locked.save(update_fields=["limits"])
    return locked


def file_request(session: Session, kind: str, path: str = "", blob: str = "", blob_bytes: int = 0,
                 payload: dict | None = None) -> SessionRequest:
    """Queue one file request (put, get, list, delete) to the session's worker. SessionBusy when the session has
    as many in flight as it may (SANDBOX_SESSION_REQUESTS_MAX)."""
    if session.status != SessionStatus.ACTIVE:
        raise SessionNotActive(session)
    with transaction.atomic():
        Session.objects.select_for_update().filter(pk=session.pk).values_list("pk", flat=True).first()
        in_flight = SessionRequest.objects.filter(session=session, status=RequestStatus.QUEUED).exclude(
            kind="open").count()
        if in_flight >= settings.SANDBOX_SESSION_REQUESTS_MAX:
            raise SessionBusy(f"the session has {in_flight} file requests in flight, the most it may "
                              f"(SANDBOX_SESSION_REQUESTS_MAX); retry when they are answered")
        request = SessionRequest.objects.create(session=session, kind=kind, path=path, blob=blob,
                                                blob_bytes=blob_bytes, payload=payload or {})
    if not send(FILE_TASK, request.pk, session.queue):
        request.fail("broker_unavailable", "the broker is unavailable; try again")
    return request


def abandon(request: SessionRequest) -> None:
    """Its caller stopped waiting (gone, or past its wait): whatever the worker answers now goes to nobody."""
    if request.fail("abandoned", "the caller stopped waiting"):
        return  # the worker deletes what it fetches for it (its complete() finds the request ended)
    delivered(request)


def delivered(request: SessionRequest) -> None:
    """The answer has been given (or can be given no more): nothing of the request is kept, no body in a row."""
    request.refresh_from_db(fields=["blob"])
    if request.kind == "get":
        transfers.discard(request.blob)
    SessionRequest.objects.filter(pk=request.pk).delete()


def close(session: Session, reason: str = "deleted by the caller") -> bool:
    """End the session now; its worker removes the sandbox (or its reaper does, should this message be lost)."""
    ended = session.end(SessionStatus.ENDED, reason)
    end_pending_work(session, "session_ended", f"the session ended: {reason}")
    if ended and session.queue:
        send(CLOSE_TASK, session.pk, session.queue, reason)
    return ended


def end_pending_work(session: Session, code: str, message: str) -> None:
    """Queued or running cells and unanswered requests of an ended session end with it."""
    for cell in Execution.objects.filter(session=session, status__in=[Status.QUEUED, Status.RUNNING]):
        cell.end_with_error(Status.SANDBOX_ERROR, code, message)
    for request in SessionRequest.objects.filter(session=session, status="queued"):
        request.fail(code, message)


def touch(session_id) -> None:
    Session.objects.filter(pk=session_id, status=SessionStatus.ACTIVE).update(last_active_at=timezone.now())


def send(task: str, object_id, queue: str, *args) -> bool:
    try:
        current_app.send_task(task, args=[str(object_id), *args], queue=queue)
    except BrokerUnavailable as exc:
        log.warning("%s %s: broker unavailable (%s)", task, object_id, exc)
        return False
    return True

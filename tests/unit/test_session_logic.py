"""Sessions without a sandbox: the state machine, where requests are routed, the reaper's expiry, the caps on what
is in flight, and what is kept of a request once it is answered (SQLite and the in-memory broker)."""

import time
from contextlib import contextmanager

import pytest
from celery.signals import before_task_publish
from django.core.files.base import ContentFile

from providers.base import ExecutionResult, RequestedLimits, Status
from sandboxctl.executions import admission, sessions, transfers
from sandboxctl.executions.artifact_store import store
from sandboxctl.executions.dispatch import CELL_TASK
from sandboxctl.executions.models import Execution, Session, SessionRequest, SessionStatus
from sandboxctl.worker.sessions import LiveSession


@pytest.fixture
def account(transactional_db, django_user_model):
    return django_user_model.objects.create_user("agent")


@pytest.fixture
def active(account):
    return Session.objects.create(caller=account, provider="self_managed", language="python", status="active",
                                  limits={"timeout": 10, "memory_mb": 256, "output_limit": 1024}, idle_timeout=60,
                                  max_lifetime=600, worker="w#1", queue="sessions.w")


@contextmanager
def published():
    """The tasks sent meanwhile, as Celery publishes them: [(task name, queue, args)] (whatever the broker; in the
    stack tier a live worker may consume them at once)."""
    seen = []

    def record(sender=None, routing_key=None, body=None, **kwargs) -> None:
        seen.append((sender, routing_key, list(body[0])))

    before_task_publish.connect(record, weak=False)
    try:
        yield seen
    finally:
        before_task_publish.disconnect(record)


def test_opening_goes_to_the_languages_sandbox_queue(account):
    with published() as seen:
        session, opening = sessions.open_session(account, "nodejs", None, None, RequestedLimits(), [])
    assert session.status == SessionStatus.STARTING
    assert seen == [(sessions.OPEN_TASK, "sandbox.nodejs", [str(opening.pk)])]


def test_cells_and_file_requests_go_to_the_queue_of_the_worker_holding_the_session(active, account):
    with published() as seen:
        cell = sessions.submit_cell(active, account, "x = 1", {}, RequestedLimits())
        listing = sessions.file_request(active, "list")
    assert seen == [(CELL_TASK, "sessions.w", [str(cell.pk)]), (sessions.FILE_TASK, "sessions.w", [str(listing.pk)])]


def test_a_second_cell_while_one_is_in_flight_is_refused(active, account):
    sessions.submit_cell(active, account, "x = 1", {}, RequestedLimits())
    with pytest.raises(sessions.SessionBusy):
        sessions.submit_cell(active, account, "x = 2", {}, RequestedLimits())


def test_file_requests_in_flight_are_capped_per_session(active, settings):
    settings.SANDBOX_SESSION_REQUESTS_MAX = 2
    for _ in range(2):
        sessions.file_request(active, "list")
    with pytest.raises(sessions.SessionBusy):
        sessions.file_request(active, "list")


def test_a_cell_that_ends_the_session_ends_it_in_the_same_commit(active, account):
    submitted = sessions.submit_cell(active, account, "import os\nos._exit(3)", {}, RequestedLimits())
    cell = Execution.claim(submitted.pk, "w#1")
    ended = ExecutionResult(status=Status.FAILED, session_ended="the interpreter exited (code 3)")
    assert cell.finish(ended, worker="w#1")
    active.refresh_from_db()
    assert (active.status, active.end_reason) == ("ended", "the interpreter exited (code 3)")
    with pytest.raises(sessions.SessionNotActive):
        sessions.submit_cell(active, account, "print(1)", {}, RequestedLimits())


def test_closing_ends_what_is_pending(active, account):
    cell = sessions.submit_cell(active, account, "x = 1", {}, RequestedLimits())
    listing = sessions.file_request(active, "list")
    assert sessions.close(active)
    cell.refresh_from_db()
    listing.refresh_from_db()
    assert (cell.status, cell.error_code) == ("sandbox_error", "session_ended")
    assert (listing.status, listing.error_code) == ("failed", "session_ended")
    assert not sessions.close(active), "closing an ended session changes nothing"


def test_cells_do_not_take_the_room_of_one_shot_runs(active, account):
    sessions.submit_cell(active, account, "import time\ntime.sleep(40)", {}, RequestedLimits())
    assert admission.in_flight(account.pk) == 0


def test_an_answered_request_leaves_no_row_and_no_bytes(active):
    download = sessions.file_request(active, "get", "big.bin")
    name = transfers.save(transfers.download_name(active.caller_id, active.pk, download.pk), ContentFile(b"x" * 10))
    assert download.complete({"path": "big.bin", "size": 10}, name, 10)
    assert admission.transfers_in_flight(active.caller_id) == 10, "bytes in flight count against the quota"
    sessions.delivered(download)
    assert not SessionRequest.objects.filter(pk=download.pk).exists()
    assert not store().exists(name)
    assert admission.transfers_in_flight(active.caller_id) == 0


def test_an_abandoned_request_is_answered_to_nobody(active):
    download = sessions.file_request(active, "get", "big.bin")
    sessions.abandon(download)
    name = transfers.save(transfers.download_name(active.caller_id, active.pk, download.pk), ContentFile(b"late"))
    assert not download.complete({"path": "big.bin", "size": 4}, name, 4), "the worker learns nobody waits"
    transfers.discard(name)  # as the worker does when complete() says so
    assert not store().exists(name)


def test_a_session_expires_when_idle_unless_busy_and_always_at_its_lifetime():
    now = time.monotonic()
    live = LiveSession("s", idle_timeout=10, ends_at=now + 100, last_active=now - 11)
    assert live.expired(now) == "idle for 10s"
    live.busy = True
    assert live.expired(now) is None, "a long cell is no idleness"
    assert live.expired(now + 100) == "it reached its max_lifetime", "the lifetime holds even for a busy session"


def test_an_ended_session_takes_no_more_work_and_refuses_it_at_once():
    from sandboxctl.worker.sessions import Work

    live = LiveSession("s", idle_timeout=10, ends_at=time.monotonic() + 100)
    assert live.submit(Work("file", "a"))
    live.end("deleted by the caller")
    assert not live.submit(Work("file", "b"))
    assert live.over == "deleted by the caller"

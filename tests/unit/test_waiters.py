"""Waiting for a run's end on SQLite, where there is no NOTIFY: the process's one watcher thread finds ended
runs for every waiter at once, threads and coroutines alike."""

import asyncio
import threading
import time

import pytest

from providers.base import Status
from sandboxctl.executions import notify
from sandboxctl.executions.models import Execution
from sandboxctl.executions.service import await_end

pytestmark = pytest.mark.django_db(transaction=True)


def queued_run() -> Execution:
    return Execution.objects.create(provider="self_managed", language="python", code="x", limits={"timeout": 1})


def test_a_waiting_thread_is_woken_when_its_run_ends():
    execution = queued_run()
    woken = threading.Event()
    ticket = notify.waiters.register(execution.pk, woken.set)
    try:
        assert not woken.wait(0.3), "woken while the run is still queued"
        assert execution.end_with_error(Status.CANCELLED, "cancelled", "ended by the test")
        assert woken.wait(5)
    finally:
        notify.waiters.unregister(execution.pk, ticket)
    assert notify.waiters.count() == 0


def test_a_coroutine_waits_until_the_end_or_its_timeout():
    execution = queued_run()
    started = time.monotonic()
    assert asyncio.run(await_end(execution.pk, 0.5)) is False
    assert 0.5 <= time.monotonic() - started < 3

    def end_soon():
        time.sleep(0.3)
        execution.end_with_error(Status.CANCELLED, "cancelled", "ended by the test")

    ender = threading.Thread(target=end_soon)
    ender.start()
    started = time.monotonic()
    assert asyncio.run(await_end(execution.pk, 10)) is True
    assert time.monotonic() - started < 3
    ender.join()


def test_a_run_that_ended_before_anyone_waited_is_found_at_once():
    execution = queued_run()
    execution.end_with_error(Status.CANCELLED, "cancelled", "ended by the test")
    started = time.monotonic()
    assert asyncio.run(await_end(execution.pk, 10)) is True
    assert time.monotonic() - started < 1

"""Tell waiting requests that an execution ended (or a session's request was answered: sessions.py waits on
those the same way, by id), without a thread or a query loop per waiting request.

Each web process keeps one registry of waiters by execution id, and two things wake them:
- on PostgreSQL, one LISTEN connection in a background thread (the worker sends NOTIFY once the row's
  terminal change is committed);
- one watcher thread that asks, in a single query, which of all the awaited executions have ended: the
  only source on other databases, and on PostgreSQL the safety net for a notice lost while the listener
  reconnected.
A waiter is a callable (a threading.Event's `set`, or an asyncio.Event set through its loop), so a thousand
waiting requests cost a thousand dictionary entries here, not a thousand threads or queries.
"""

import logging
import threading
import time
from collections.abc import Callable

from django.apps import apps
from django.db import connection

from providers.base import Status

log = logging.getLogger(__name__)

CHANNEL = "sandboxctl_execution_done"
# How often the watcher looks, by the age of the newest waiter: a trivial run ends within milliseconds, so
# a fresh wait is checked often; an old one only needs to learn of its end within a fraction of a second.
WATCH_STEPS = ((0.05, 0.002), (0.2, 0.005), (1.0, 0.02), (5.0, 0.05))
WATCH_STEADY = 0.25
WATCH_BATCH = 500  # ids per query, well under SQLite's limit on parameters
WATCH_STEADY_WITH_NOTICES = 1.0  # PostgreSQL: the watcher only covers notices lost during a reconnect

Wake = Callable[[], None]


def uses_postgres() -> bool:
    return connection.vendor == "postgresql"


def announce_finished(execution_id: str) -> None:
    if not uses_postgres():
        return
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_notify(%s, %s)", [CHANNEL, str(execution_id)])


class Waiters:
    """Who waits for which execution, and the threads (started on first use) that wake them."""

    def __init__(self) -> None:
        self._waiting: dict[str, dict[int, Wake]] = {}
        self._lock = threading.Lock()
        self._newest = 0.0
        self._ticket = 0
        self._look_now = threading.Event()
        self._threads: dict[str, threading.Thread] = {}

    def register(self, execution_id, wake: Wake) -> int:
        """Call `wake` (from another thread) once the execution has ended; returns a ticket to unregister."""
        self.start()
        with self._lock:
            self._ticket += 1
            self._waiting.setdefault(str(execution_id), {})[self._ticket] = wake
            self._newest = time.monotonic()
            ticket = self._ticket
        self._look_now.set()  # it may have ended before anyone waited: the watcher checks at once
        return ticket

    def unregister(self, execution_id, ticket: int) -> None:
        with self._lock:
            waiting = self._waiting.get(str(execution_id))
            if waiting is not None:
                waiting.pop(ticket, None)
                if not waiting:
                    del self._waiting[str(execution_id)]

    def count(self) -> int:
        with self._lock:
            return sum(len(waiting) for waiting in self._waiting.values())

    def wake(self, execution_id: str) -> None:
        with self._lock:
            wakes = list(self._waiting.get(execution_id, {}).values())
        for wake in wakes:
            wake()

    # The threads

    def start(self) -> None:
        """Start the threads if they are not running. Never blocks (it runs on the event loop): until LISTEN
        is up, the watcher alone wakes waiters."""
        with self._lock:
            self._start("execution-watcher", self._watch)
            if uses_postgres():
                self._start("execution-listener", self._listen)

    def _start(self, name: str, target: Callable[[], None]) -> bool:
        thread = self._threads.get(name)
        if thread is not None and thread.is_alive():
            return False
        self._threads[name] = threading.Thread(target=target, name=name, daemon=True)
        self._threads[name].start()
        return True

    def _watch(self) -> None:
        notices = uses_postgres()
        while True:
            with self._lock:
                ids, newest = list(self._waiting), self._newest
            if not ids:
                self._look_now.wait()
                self._look_now.clear()
                continue
            try:
                ended = _ended_among(ids)
            except Exception as exc:  # noqa: BLE001 - a database away: waiters keep waiting, we retry
                log.warning("execution watcher could not read the database: %s", exc)
                connection.close()
                ended = []
                time.sleep(1)
            for execution_id in ended:
                self.wake(execution_id)
            self._look_now.wait(_interval(time.monotonic() - newest, notices))
            self._look_now.clear()

    def _listen(self) -> None:
        import psycopg

        while True:
            try:
                with psycopg.connect(_conninfo(), autocommit=True) as conn:
                    conn.execute(f"LISTEN {CHANNEL}")
                    for notice in conn.notifies():
                        self.wake(notice.payload)
            except Exception as exc:  # noqa: BLE001 - reconnect; the watcher covers the gap
                log.warning("execution listener lost its connection: %s", exc)
                time.sleep(1)


def _interval(age: float, notices: bool) -> float:
    if notices:
        return WATCH_STEADY_WITH_NOTICES
    for younger_than, step in WATCH_STEPS:
        if age < younger_than:
            return step
    return WATCH_STEADY


def _ended_among(ids: list[str]) -> list[str]:
    # By name: models imports this module to announce ends, so this one may not import models.
    execution = apps.get_model("executions", "Execution")
    terminal = [status.value for status in Status if status.is_terminal]
    request = apps.get_model("executions", "SessionRequest")  # a session's opening or file request
    ended = []
    for start in range(0, len(ids), WATCH_BATCH):
        batch = ids[start:start + WATCH_BATCH]
        ended += [str(pk) for pk in execution.objects.filter(pk__in=batch, status__in=terminal)
                  .values_list("pk", flat=True)]
        ended += [str(pk) for pk in request.objects.filter(pk__in=batch).exclude(status="queued")
                  .values_list("pk", flat=True)]
    return ended


def _conninfo() -> str:
    from psycopg.conninfo import make_conninfo

    settings = connection.settings_dict
    parts = {
        "dbname": settings["NAME"],
        "user": settings.get("USER") or None,
        "password": settings.get("PASSWORD") or None,
        "host": settings.get("HOST") or None,
        "port": str(settings["PORT"]) if settings.get("PORT") else None,
    }
    return make_conninfo(**{key: value for key, value in parts.items() if value})


waiters = Waiters()

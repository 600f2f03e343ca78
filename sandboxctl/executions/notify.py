"""Tell waiting web requests that an execution ended, without them polling the database in a tight loop.

On PostgreSQL the worker sends NOTIFY after the row changed; each web process keeps one LISTEN
connection in a background thread and wakes the requests waiting for that id. Other databases fall back
to polling. A missed notification only costs latency: waiters still re-check the row every so often.
"""

import logging
import threading

from django.db import connection

log = logging.getLogger(__name__)

CHANNEL = "sandboxctl_execution_done"


def uses_postgres() -> bool:
    return connection.vendor == "postgresql"


def announce_finished(execution_id: str) -> None:
    if not uses_postgres():
        return
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_notify(%s, %s)", [CHANNEL, str(execution_id)])


class Listener:
    """One LISTEN connection per process, started on first use, waking registered waiters by id."""

    def __init__(self) -> None:
        self._waiters: dict[str, set[threading.Event]] = {}
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._ready = threading.Event()

    def register(self, execution_id: str) -> threading.Event:
        self._ensure_started()
        event = threading.Event()
        with self._lock:
            self._waiters.setdefault(str(execution_id), set()).add(event)
        return event

    def unregister(self, execution_id: str, event: threading.Event) -> None:
        with self._lock:
            waiting = self._waiters.get(str(execution_id))
            if waiting is not None:
                waiting.discard(event)
                if not waiting:
                    del self._waiters[str(execution_id)]

    def _ensure_started(self) -> None:
        with self._lock:
            if self._thread is not None and self._thread.is_alive():
                return
            self._ready.clear()
            self._thread = threading.Thread(target=self._run, name="execution-listener", daemon=True)
            self._thread.start()
        # Only the first request of a process waits here, and at most briefly.
        self._ready.wait(2)

    def _run(self) -> None:
        import time

        import psycopg

        while True:
            try:
                with psycopg.connect(_conninfo(), autocommit=True) as conn:
                    conn.execute(f"LISTEN {CHANNEL}")
                    self._ready.set()
                    for notice in conn.notifies():
                        self._wake(notice.payload)
            except Exception as exc:  # noqa: BLE001 - reconnect; waiters fall back to periodic checks
                log.warning("execution listener lost its connection: %s", exc)
                time.sleep(1)

    def _wake(self, execution_id: str) -> None:
        with self._lock:
            for event in self._waiters.get(execution_id, ()):
                event.set()


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


listener = Listener()

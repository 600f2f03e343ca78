"""Riding out a database restart: an action retried with backoff while the database cannot be reached."""

import logging
import time

from django.db import InterfaceError, OperationalError, close_old_connections

log = logging.getLogger(__name__)

DATABASE_RETRY_FOR = 30.0  # a database restart takes seconds; a run must not be lost to one
# A run's end is retried briefly in its own thread, then kept in the worker's durable spool (spool.py), so a
# long outage neither loses the result nor holds a worker thread.
FINISH_RETRY_FOR = 5.0


def with_database_retry(action, what: str, retry_for: float = DATABASE_RETRY_FOR):
    """Run `action`, retrying with backoff while the database is unreachable (a restart, dropped connections)."""
    deadline = time.monotonic() + retry_for
    delay = 0.2
    while True:
        try:
            return action()
        except (OperationalError, InterfaceError) as exc:
            if time.monotonic() + delay > deadline:
                raise
            log.warning("%s: database unavailable (%s); retrying in %.1fs", what, exc, delay)
            close_old_connections()
            time.sleep(delay)
            delay = min(delay * 2, 5.0)

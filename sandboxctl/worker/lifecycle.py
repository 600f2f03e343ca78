"""Celery worker lifecycle: start this host's sandbox pool, report a heartbeat, remove everything at shutdown.

The pool lives in the worker's main process, so it must run tasks in threads (`-P threads`): then one
pool serves every task of the host, and a sandbox is handed to exactly one run.

A worker instance is named by its Celery node name plus a random boot id: a worker restarted under the same
node name is a new instance, so the runs and sandboxes of the old one are seen as orphans (its heartbeat
goes stale) instead of being mistaken for the new one's.
"""

import logging
import secrets
import threading

from celery import signals
from django.conf import settings
from django.db import InterfaceError, OperationalError, close_old_connections
from django.utils import timezone

from executor.config import sandbox_queue
from providers.base import LANGUAGES
from sandboxctl.worker import spool

log = logging.getLogger(__name__)

HEARTBEAT_INTERVAL = 2.0
_state = {"name": "", "stop": threading.Event()}


def worker_name() -> str:
    return _state["name"] or settings.SANDBOX_WORKER_HOST


def instance_name(node_name: str) -> str:
    return f"{node_name}#{secrets.token_hex(4)}"


def sandbox_languages(queues: list[str]) -> tuple[str, ...]:
    return tuple(language for language in LANGUAGES if sandbox_queue(language) in queues)


@signals.worker_init.connect
def start_sandbox_pool(sender=None, **kwargs) -> None:
    # Celery imports this module while the app is configured, before Django's app registry is ready.
    from sandboxctl.worker.pool import start_pool

    _state["name"] = instance_name(sender.hostname)
    _state["stop"].clear()
    queues = [queue.name for queue in sender.app.amqp.queues.consume_from.values()] if sender.app.amqp.queues else []
    languages = sandbox_languages(queues)
    if sender.pool_cls.__module__.split(".")[-1] not in ("thread", "threads", "solo") and languages:
        raise RuntimeError("sandbox workers must run with -P threads (the pool lives in the worker process)")
    beat()  # alive before the pool makes anything, so no other worker takes its sandboxes for orphans
    if languages:
        start_pool(worker_name(), languages)
    threading.Thread(target=_heartbeat_loop, name="worker-heartbeat", daemon=True).start()


@signals.worker_shutdown.connect
def stop_sandbox_pool(**kwargs) -> None:
    from sandboxctl.worker.pool import stop_pool  # see start_sandbox_pool

    _state["stop"].set()
    stop_pool()


def _heartbeat_loop() -> None:
    while not _state["stop"].is_set():
        try:
            spool.replay()  # before the beat: a worker the reconciler sees alive has written the ends it held
            beat()
        except (OperationalError, InterfaceError) as exc:
            log.warning("heartbeat skipped, the database is unavailable: %s", exc)
        except Exception:  # noqa: BLE001 - a missed beat is reported by staleness, not by crashing the worker
            log.exception("heartbeat failed")
        finally:
            close_old_connections()
        _state["stop"].wait(HEARTBEAT_INTERVAL)


def beat() -> None:
    from providers.models import WorkerHeartbeat
    from providers.self_managed import current_pool

    pool = current_pool()
    WorkerHeartbeat.objects.update_or_create(
        worker=worker_name(),
        defaults={
            "host": settings.SANDBOX_WORKER_HOST,
            "pool_depth": pool.depth() if pool else {},
            "pool_failing": pool.failing() if pool else {},
            "runtime": pool.runtime if pool else {},
            "seen_at": timezone.now(),
        },
    )

"""What /readyz checks: the database, the broker, and warm sandboxes per language on live workers."""

from django.conf import settings
from django.db import connection

from providers.config_store import active_name
from providers.heartbeats import live_workers, unserved, warm_sandboxes
from sandboxctl.celery import app


def check() -> tuple[list[str], dict]:
    problems: list[str] = []
    details: dict = {}
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1")
        details["database"] = "ok"
    except Exception as exc:  # noqa: BLE001 - any failure means not ready
        problems.append(f"database: {exc.__class__.__name__}")
        return problems, details
    details["broker"] = _check_broker(problems)
    details["warm_sandboxes"] = _check_pool(problems)
    details["runtimes"] = _runtimes()
    return problems, details


def _check_broker(problems: list[str]) -> str:
    try:
        with app.connection_for_write(settings.CELERY_BROKER_URL) as conn:
            conn.ensure_connection(max_retries=1, timeout=2)
        return "ok"
    except Exception as exc:  # noqa: BLE001
        problems.append(f"broker: {exc.__class__.__name__}")
        return "unavailable"


def _runtimes() -> dict[str, dict]:
    """The container runtime (name, version, gVisor platform) each live worker's sandboxes run on."""
    return {beat.worker: beat.runtime for beat in live_workers() if beat.runtime}


def _check_pool(problems: list[str]) -> dict[str, int]:
    """Ready when, for each language, a live worker serves it and can make sandboxes. A pool drained by load
    is not a problem (its runs wait for a refill); a pool whose creations fail is."""
    depth = warm_sandboxes()
    if active_name() != "self_managed":
        return depth
    problems.extend(unserved(list(live_workers()), depth).values())
    return depth

"""Warm sandboxes per language, summed over workers whose heartbeat is fresh (the pools live in the workers)."""

from datetime import timedelta

from django.conf import settings
from django.utils import timezone

from providers.base import LANGUAGES
from providers.models import WorkerHeartbeat


def live_workers():
    fresh = timezone.now() - timedelta(seconds=settings.SANDBOX_WORKER_STALE_AFTER)
    return WorkerHeartbeat.objects.filter(seen_at__gte=fresh)


def warm_sandboxes() -> dict[str, int]:
    depth = {language: 0 for language in LANGUAGES}
    for beat in live_workers():
        for language, count in beat.pool_depth.items():
            depth[language] = depth.get(language, 0) + count
    return depth

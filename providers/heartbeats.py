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


def unserved(beats, languages) -> dict[str, str]:
    """The languages no live worker can make sandboxes for now, each with why. A pool drained by load still
    serves (its runs wait for a refill); a pool whose creations fail does not. /readyz and the self-managed
    provider's health both read this."""
    problems = {}
    for language in languages:
        serving = [beat for beat in beats if language in beat.pool_depth]
        if not serving:
            problems[language] = f"no live worker serves {language}"
        elif all(language in beat.pool_failing for beat in serving):
            problems[language] = f"{language} sandboxes cannot be created: {serving[0].pool_failing[language]}"
    return problems


"""Admin sign-in throttled per user name and per source address, so passwords cannot be guessed at speed.

Failed attempts are counted in the shared cache (the broker's Redis, so every web process sees one count)
for SANDBOXCTL_LOGIN_WINDOW seconds. Past SANDBOXCTL_LOGIN_FAILURES_PER_USER for a user name, or
SANDBOXCTL_LOGIN_FAILURES_PER_SOURCE for an address, every further attempt is a 429 — the right password
included, so a guesser cannot tell when it found it — until the window passes.
"""

import hashlib

from django.conf import settings
from django.contrib import admin
from django.core.cache import cache
from django.http import HttpResponse


def failure_keys(username: str, source: str) -> list[str]:
    """The cache keys counting failed sign-ins for this user name and this source address."""
    digest = hashlib.sha256(username.strip().lower().encode()).hexdigest()[:32]  # any text makes a safe key
    return [f"login-failures:user:{digest}", f"login-failures:source:{source}"]


def _keys(request) -> list[tuple[str, int]]:
    user_key, source_key = failure_keys(request.POST.get("username", ""), request.META.get("REMOTE_ADDR", ""))
    return [(user_key, settings.SANDBOXCTL_LOGIN_FAILURES_PER_USER),
            (source_key, settings.SANDBOXCTL_LOGIN_FAILURES_PER_SOURCE)]


def _record_failure(keys: list[tuple[str, int]]) -> None:
    for key, _ in keys:
        if cache.add(key, 1, settings.SANDBOXCTL_LOGIN_WINDOW):
            continue
        try:
            cache.incr(key)
        except ValueError:  # expired between the two calls
            cache.add(key, 1, settings.SANDBOXCTL_LOGIN_WINDOW)


def login(request, extra_context=None):
    """admin.site.login, refusing attempts past the limits and counting the failed ones."""
    if request.method != "POST":
        return admin.site.login(request, extra_context)
    keys = _keys(request)
    if any((cache.get(key) or 0) >= limit for key, limit in keys):
        response = HttpResponse("Too many failed sign-in attempts; try again later.", status=429,
                                content_type="text/plain")
        response["Retry-After"] = str(settings.SANDBOXCTL_LOGIN_WINDOW)
        return response
    response = admin.site.login(request, extra_context)
    if request.user.is_authenticated:
        cache.delete(keys[0][0])
    else:
        _record_failure(keys)
    return response

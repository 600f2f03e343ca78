"""Admin sign-in throttled so passwords cannot be guessed at speed, without letting anyone lock the operator out.

Failed attempts are counted in the shared cache (the broker's Redis, so every web process sees one count)
for SANDBOXCTL_LOGIN_WINDOW seconds, three ways:

- per user name *and* source address: past SANDBOXCTL_LOGIN_FAILURES_PER_USER, that source may not try
  that name again until the window passes;
- per source address: past SANDBOXCTL_LOGIN_FAILURES_PER_SOURCE, that source may not try any name;
- per user name from anywhere: past SANDBOXCTL_LOGIN_FAILURES_PER_USER_ANYWHERE (much higher), a source that
  has failed for that name even once may not try it again (a guesser spread over many addresses gets one
  guess per address per window).

A source that has not failed is never refused for someone else's failures below the per-source limit, so
anonymous requests cannot keep the operator out (the lockout by address django-axes documents as its
default). A refused attempt is a 429 — the right password included, so a guesser cannot tell when it
found it.
"""

import hashlib

from django.conf import settings
from django.contrib import admin
from django.core.cache import cache
from django.http import HttpResponse


def failure_keys(username: str, source: str) -> list[str]:
    """The cache keys counting failed sign-ins: this user name from this source, this source, this user name."""
    digest = hashlib.sha256(username.strip().lower().encode()).hexdigest()[:32]  # any text makes a safe key
    return [f"login-failures:pair:{digest}:{source}", f"login-failures:source:{source}",
            f"login-failures:user:{digest}"]


def refused(counts: dict[str, int], keys: list[str]) -> bool:
    pair, source, user = (counts.get(key) or 0 for key in keys)
    return (pair >= settings.SANDBOXCTL_LOGIN_FAILURES_PER_USER
            or source >= settings.SANDBOXCTL_LOGIN_FAILURES_PER_SOURCE
            or (user >= settings.SANDBOXCTL_LOGIN_FAILURES_PER_USER_ANYWHERE and pair >= 1))


def _record_failure(keys: list[str]) -> None:
    for key in keys:
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
    keys = failure_keys(request.POST.get("username", ""), request.META.get("REMOTE_ADDR", ""))
    if refused(cache.get_many(keys), keys):
        response = HttpResponse("Too many failed sign-in attempts; try again later.", status=429,
                                content_type="text/plain")
        response["Retry-After"] = str(settings.SANDBOXCTL_LOGIN_WINDOW)
        return response
    response = admin.site.login(request, extra_context)
    if request.user.is_authenticated:
        cache.delete(keys[0])
    else:
        _record_failure(keys)
    return response

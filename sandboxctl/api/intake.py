"""What the API refuses before it does any work: oversized bodies, JSON it will not parse, request floods.

- Bodies over SANDBOX_REQUEST_MAX_BYTES get a 413 JSON answer on every endpoint, before anything reads them.
- JSON with NaN/Infinity, or nested so deep that parsing it would exhaust the stack, is a 400.
- Each account may make SANDBOX_TENANT_RATE requests (DRF throttling, shared by all web processes through
  the cache).
"""

import functools
import json
import logging

from asgiref.sync import iscoroutinefunction, markcoroutinefunction
from django.conf import settings
from django.core.cache import caches
from django.http import JsonResponse
from rest_framework import parsers
from rest_framework.exceptions import ParseError
from rest_framework.throttling import UserRateThrottle

log = logging.getLogger(__name__)


def body_limit(method: str, path: str) -> tuple[int, str]:
    """The largest body this request may send, and the setting that says so: a file put into a session may be
    as large as SANDBOX_SESSION_FILE_MAX_BYTES; every other body SANDBOX_REQUEST_MAX_BYTES."""
    if method.upper() == "PUT" and path.startswith("/api/v1/sessions/") and "/files/" in path:
        return settings.SANDBOX_SESSION_FILE_MAX_BYTES, "SANDBOX_SESSION_FILE_MAX_BYTES"
    return settings.SANDBOX_REQUEST_MAX_BYTES, "SANDBOX_REQUEST_MAX_BYTES"


def too_large(size: int | None = None, method: str = "", path: str = "") -> dict:
    limit, setting = body_limit(method, path)
    told = f"is {size} bytes" if size is not None else "is too large"
    return {"detail": f"the request body {told}; the limit is {limit} bytes ({setting})", "code": "too_large"}


class RefusalMiddleware:
    """A middleware that may refuse a request before its view and does no I/O: it runs in place in sync and
    async chains alike. (Django's MiddlewareMixin would run its hooks on a thread in an async chain.)"""

    sync_capable = True
    async_capable = True

    def __init__(self, get_response) -> None:
        self.get_response = get_response
        self.is_async = iscoroutinefunction(get_response)
        if self.is_async:
            markcoroutinefunction(self)

    def __call__(self, request):
        refusal = self.refusal(request)
        if self.is_async:
            return self._answer(refusal, request)
        return refusal or self.get_response(request)

    async def _answer(self, refusal, request):
        return refusal or await self.get_response(request)

    def refusal(self, request):
        raise NotImplementedError


class RequestSizeLimitMiddleware(RefusalMiddleware):
    def refusal(self, request):
        try:
            size = int(request.META.get("CONTENT_LENGTH") or 0)
        except ValueError:
            size = 0
        if size > body_limit(request.method, request.path)[0]:
            return JsonResponse(too_large(size, request.method, request.path), status=413)
        return None


class AllowedHostMiddleware(RefusalMiddleware):
    """ALLOWED_HOSTS where Django's CommonMiddleware does not run (the waiting requests' chain, asgi.py):
    an unknown Host is a 400."""

    def refusal(self, request):
        request.get_host()  # raises DisallowedHost, which Django answers 400
        return None


def _refuse_constant(name: str) -> None:
    raise ValueError(f"{name} is not valid JSON")


class StrictJSONParser(parsers.JSONParser):
    """JSON as RFC 8259 has it: no NaN or Infinity; too deep a nesting is a 400, not a crash."""

    def parse(self, stream, media_type=None, parser_context=None):
        encoding = (parser_context or {}).get("encoding", settings.DEFAULT_CHARSET)
        try:
            return json.loads(stream.read().decode(encoding), parse_constant=_refuse_constant)
        except RecursionError:
            raise ParseError("JSON parse error - nested too deeply") from None
        except ValueError as exc:
            raise ParseError(f"JSON parse error - {exc}") from None


@functools.cache
def process_cache():
    """One cache client for the whole process. Django keeps its caches per async context, so under ASGI
    each request would otherwise build a Redis client — and open a Redis connection — of its own."""
    return caches.create_connection("default")


class TenantRateThrottle(UserRateThrottle):
    """Requests per account (or per address when anonymous), at SANDBOX_TENANT_RATE. A cache that cannot be
    reached lets requests through: the broker being away must not turn every request into an error."""

    scope = "tenant"

    @property
    def cache(self):
        return process_cache()

    def get_rate(self) -> str:
        return settings.SANDBOX_TENANT_RATE

    def allow_request(self, request, view) -> bool:
        try:
            return super().allow_request(request, view)
        except Exception as exc:  # noqa: BLE001 - any cache failure
            log.warning("request throttling skipped, the cache is unavailable: %s", exc)
            return True

"""What the API refuses before it does any work: oversized bodies, JSON it will not parse, request floods.

- Bodies over SANDBOX_REQUEST_MAX_BYTES get a 413 JSON answer on every endpoint, before anything reads them.
- JSON with NaN/Infinity, or nested so deep that parsing it would exhaust the stack, is a 400.
- Each account may make SANDBOX_TENANT_RATE requests (DRF throttling, shared by all web processes through
  the cache).
"""

import json
import logging

from django.conf import settings
from django.http import JsonResponse
from rest_framework import parsers
from rest_framework.exceptions import ParseError
from rest_framework.throttling import UserRateThrottle

log = logging.getLogger(__name__)


def too_large(size: int | None = None) -> dict:
    limit = settings.SANDBOX_REQUEST_MAX_BYTES
    told = f"is {size} bytes" if size is not None else "is too large"
    return {"detail": f"the request body {told}; the limit is {limit} bytes (SANDBOX_REQUEST_MAX_BYTES)",
            "code": "too_large"}


class RequestSizeLimitMiddleware:
    def __init__(self, get_response) -> None:
        self.get_response = get_response

    def __call__(self, request):
        try:
            size = int(request.META.get("CONTENT_LENGTH") or 0)
        except ValueError:
            size = 0
        if size > settings.SANDBOX_REQUEST_MAX_BYTES:
            return JsonResponse(too_large(size), status=413)
        return self.get_response(request)


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


class TenantRateThrottle(UserRateThrottle):
    """Requests per account (or per address when anonymous), at SANDBOX_TENANT_RATE. A cache that cannot be
    reached lets requests through: the broker being away must not turn every request into an error."""

    scope = "tenant"

    def get_rate(self) -> str:
        return settings.SANDBOX_TENANT_RATE

    def allow_request(self, request, view) -> bool:
        try:
            return super().allow_request(request, view)
        except Exception as exc:  # noqa: BLE001 - any cache failure
            log.warning("request throttling skipped, the cache is unavailable: %s", exc)
            return True

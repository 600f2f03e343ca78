"""One JSON error shape for the API; an unreachable database is a 503 to retry, anything unexpected a 500
without a traceback."""

import logging

from django.core.exceptions import RequestDataTooBig
from django.db import InterfaceError, OperationalError
from rest_framework.response import Response
from rest_framework.views import exception_handler as drf_exception_handler

from sandboxctl.api.intake import too_large

log = logging.getLogger(__name__)


def exception_handler(exc, context):
    response = drf_exception_handler(exc, context)
    if response is not None:
        return response
    if isinstance(exc, RequestDataTooBig):
        return Response(too_large(), status=413)
    if isinstance(exc, OperationalError | InterfaceError):
        log.warning("database unavailable in %s: %s", context.get("view").__class__.__name__, exc)
        return Response({"detail": "the database is unavailable; retry shortly", "code": "database_unavailable"},
                        status=503, headers={"Retry-After": "5"})
    log.exception("unhandled error in %s", context.get("view").__class__.__name__)
    return Response({"detail": "internal error", "code": "internal_error"}, status=500)

"""One JSON error shape for the API; unexpected exceptions become a 500 without a traceback."""

import logging

from rest_framework.response import Response
from rest_framework.views import exception_handler as drf_exception_handler

log = logging.getLogger(__name__)


def exception_handler(exc, context):
    response = drf_exception_handler(exc, context)
    if response is not None:
        return response
    log.exception("unhandled error in %s", context.get("view").__class__.__name__)
    return Response({"detail": "internal error", "code": "internal_error"}, status=500)

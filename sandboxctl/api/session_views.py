"""The sessions API: /api/v1/sessions, its cells and its files (sandboxctl/executions/sessions.py does the work).

A session is its account's: another account gets 404 for it, its cells and its files. Opening one, a cell and a
file request wait for the worker holding the sandbox the way a `wait=true` run does (waiting.py): as a
coroutine, holding no thread.
"""

import tempfile

from django.conf import settings
from django.core.files import File
from django.db.models import Count
from django.http import StreamingHttpResponse
from django.shortcuts import get_object_or_404
from django.utils.http import content_disposition_header
from drf_spectacular.utils import OpenApiResponse, extend_schema
from rest_framework import generics, status
from rest_framework.exceptions import APIException, Throttled, ValidationError
from rest_framework.response import Response
from rest_framework.views import APIView

from executor.runner.rules import path_problem
from sandboxctl.api.serializers import (
    CellRequestSerializer,
    ListingSerializer,
    PayloadTooLarge,
    SessionRequestSerializer,
    SessionUpdateSerializer,
)
from sandboxctl.api.views import QueueFull, egress_refused, waited_answer
from sandboxctl.api.waiting import Answer, Pending, awaiting, pending
from sandboxctl.egress import policy as egress_policy
from sandboxctl.executions import sessions, transfers
from sandboxctl.executions.admission import TooManyQueued
from sandboxctl.executions.models import Execution, Session, SessionRequest
from sandboxctl.executions.representation import ExecutionSerializer, ExecutionSummarySerializer, SessionSerializer
from sandboxctl.executions.service import wait_budget

# How a refused file request is answered: the code the sandbox (or the worker) gave, as an HTTP status.
FILE_STATUS = {
    "not_found": 404, "bad_path": 400, "link": 400, "not_a_folder": 400, "is_a_folder": 400, "not_a_file": 400,
    "bad_request": 400, "too_large": 413, "no_space": 413, "file_service_gone": 409, "session_ended": 409,
    "session_lost": 409, "session_busy": 409, "abandoned": 409, "broker_unavailable": 503,
}
OPEN_FAILURE_STATUS = {"no_capacity": 503, "pool_exhausted": 503, "broker_unavailable": 503}
UPLOAD_CHUNK = 1 << 20


class SessionConflict(APIException):
    status_code = status.HTTP_409_CONFLICT

    def __init__(self, message: str, code: str = "session_ended") -> None:
        super().__init__({"detail": message, "code": code})


def visible_sessions(request):
    queryset = Session.objects.annotate(cell_count=Count("cells")).order_by("-created_at")
    if not request.user.is_staff:
        queryset = queryset.filter(caller=request.user)
    return queryset


def session_of(request, pk) -> Session:
    return get_object_or_404(visible_sessions(request), pk=pk)


def session_location(request, session: Session) -> str:
    return request.build_absolute_uri(f"/api/v1/sessions/{session.pk}")


class SessionListView(generics.ListAPIView):
    serializer_class = SessionSerializer

    def get_queryset(self):
        return visible_sessions(self.request)

    @extend_schema(request=SessionRequestSerializer, responses={201: SessionSerializer, 202: SessionSerializer,
                                                                400: None, 429: None, 503: SessionSerializer})
    def post(self, request):
        serializer = SessionRequestSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        data = serializer.validated_data
        try:
            session, opening = sessions.open_session(request.user, data["language"], data.get("idle_timeout"),
                                                     data.get("max_lifetime"), serializer.requested_limits(),
                                                     data["files"], data["network"])
        except (egress_policy.BeyondCeiling, egress_policy.EgressUnsupported) as exc:
            raise egress_refused(exc) from exc
        except sessions.SessionsUnavailable as exc:
            return Response({"detail": str(exc), "code": "sessions_unsupported"}, status=400)
        except sessions.TooManySessions as exc:
            raise Throttled(wait=30, detail=str(exc)) from exc
        location = session_location(request, session)
        return pending(Pending(opening.pk, sessions.OPEN_WAIT, lambda: opened_answer(session, opening, location)))


def opened_answer(session: Session, opening: SessionRequest, location: str) -> Answer:
    session.refresh_from_db()
    opening.refresh_from_db()
    body = SessionSerializer(session).data
    headers = {"Location": location}
    if not opening.is_done:
        return Answer(body, 202, headers)  # the reconciler's sweep forgets the opening once it is answered
    sessions.delivered(opening)
    if opening.status == "failed":
        body = {**body, "error": {"code": opening.error_code, "message": opening.error_message}}
        code = OPEN_FAILURE_STATUS.get(opening.error_code, 502)
        return Answer(body, code, {"Retry-After": "5"} if code == 503 else {})
    return Answer(body, 201, headers)


session_list = awaiting(SessionListView.as_view())


class SessionDetailView(APIView):
    @extend_schema(responses={200: SessionSerializer})
    def get(self, request, pk):
        return Response(SessionSerializer(session_of(request, pk)).data)

    @extend_schema(request=SessionUpdateSerializer, responses={200: SessionSerializer, 403: None, 409: None})
    def patch(self, request, pk):
        """Change the session's egress allowlist (`network`) from its next cell on, within the ceiling."""
        session = session_of(request, pk)
        serializer = SessionUpdateSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        try:
            session = sessions.set_network(session, request.user, serializer.validated_data["network"])
        except (egress_policy.BeyondCeiling, egress_policy.EgressUnsupported) as exc:
            raise egress_refused(exc) from exc
        except sessions.SessionNotActive as exc:
            return Response({"detail": str(exc), "code": "session_ended", "status": exc.session.status}, status=409)
        return Response(SessionSerializer(session_of(request, pk)).data)

    @extend_schema(responses={204: None})
    def delete(self, request, pk):
        """End the session: its sandbox and files are removed. Deleting an ended session is a no-op."""
        sessions.close(session_of(request, pk))
        return Response(status=204)


class SessionCellsView(generics.ListAPIView):
    """The session's cells (newest first); POST runs one."""

    serializer_class = ExecutionSummarySerializer

    def get_queryset(self):
        return Execution.objects.filter(session=session_of(self.request, self.kwargs["pk"]))

    @extend_schema(request=CellRequestSerializer,
                   responses={200: ExecutionSerializer, 202: ExecutionSerializer, 409: None})
    def post(self, request, pk):
        session = session_of(request, pk)
        serializer = CellRequestSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        data = serializer.validated_data
        try:
            cell = sessions.submit_cell(session, request.user, data["code"], data["arguments"],
                                        serializer.requested_limits())
        except sessions.SessionBusy as exc:
            return Response({"detail": str(exc), "code": "session_busy"}, status=409)
        except sessions.SessionNotActive as exc:
            return Response({"detail": str(exc), "code": "session_ended", "status": exc.session.status}, status=409)
        except TooManyQueued as exc:
            raise QueueFull(str(exc)) from exc
        location = request.build_absolute_uri(f"/api/v1/executions/{cell.id}")
        if not data["wait"]:
            return Response(ExecutionSerializer(cell).data, status=202, headers={"Location": location})
        return pending(Pending(cell.pk, wait_budget(cell), lambda: waited_answer(cell, location)))


session_cells = awaiting(SessionCellsView.as_view())


def request_path(path: str) -> str:
    problem = path_problem(path)
    if problem:
        raise ValidationError({"path": [problem]})
    return path


def file_request(request, pk, kind: str, path: str = "", blob: str = "", blob_bytes: int = 0,
                 payload: dict | None = None) -> SessionRequest:
    session = session_of(request, pk)
    try:
        return sessions.file_request(session, kind, path, blob, blob_bytes, payload)
    except (sessions.SessionNotActive, sessions.SessionBusy) as exc:
        transfers.discard(blob)
        if isinstance(exc, sessions.SessionBusy):
            raise SessionConflict(str(exc), code="session_busy") from exc
        raise SessionConflict(str(exc)) from exc


def waiting_for(file_request: SessionRequest, answer) -> Pending:
    return Pending(file_request.pk, sessions.FILE_WAIT, answer, abandon=lambda: sessions.abandon(file_request))


def refused(file_request: SessionRequest) -> Answer:
    code = FILE_STATUS.get(file_request.error_code, 502)
    return Answer({"detail": file_request.error_message, "code": file_request.error_code}, code)


def answered(file_request: SessionRequest, ok: int = 200) -> Answer:
    file_request.refresh_from_db()
    if not file_request.is_done:
        sessions.abandon(file_request)
        return Answer({"detail": "the session's worker did not answer in time", "code": "timeout"}, 504)
    answer = refused(file_request) if file_request.status == "failed" else Answer(
        None if ok == 204 else file_request.answer, ok)
    sessions.delivered(file_request)
    return answer


class SessionFilesView(APIView):
    @extend_schema(operation_id="api_v1_sessions_files_list", parameters=[ListingSerializer],
                   responses={200: OpenApiResponse(description="{files: [{path, size, modified}], truncated, next}")})
    def get(self, request, pk):
        """The session's files, a page at a time in path order: `after` (the `next` of the page before) and
        `limit` (at most 1000)."""
        page = ListingSerializer(data=request.query_params)
        page.is_valid(raise_exception=True)
        listing = file_request(request, pk, "list", payload=page.validated_data)
        return pending(waiting_for(listing, lambda: answered(listing)))


session_files = awaiting(SessionFilesView.as_view())


class SessionFileView(APIView):
    """One file of the session's working folder: PUT its raw bytes, GET them back, DELETE it."""

    @extend_schema(operation_id="api_v1_sessions_file_put", request={"application/octet-stream": bytes},
                   responses={201: OpenApiResponse(description="{path, size}"), 400: None, 413: None})
    def put(self, request, pk, path: str):
        request_path(path)
        session = session_of(request, pk)  # 404 before reading a body for a session that is not the caller's
        blob, size = receive_upload(request, session)
        put = file_request(request, pk, "put", path, blob, size)
        return pending(waiting_for(put, lambda: answered(put, 201)))

    @extend_schema(operation_id="api_v1_sessions_file_get",
                   responses={(200, "application/octet-stream"): bytes, 404: None})
    def get(self, request, pk, path: str):
        request_path(path)
        get = file_request(request, pk, "get", path)
        return pending(waiting_for(get, lambda: download(get)))

    @extend_schema(operation_id="api_v1_sessions_file_delete", responses={204: None, 404: None})
    def delete(self, request, pk, path: str):
        request_path(path)
        removal = file_request(request, pk, "delete", path)
        return pending(waiting_for(removal, lambda: answered(removal, 204)))


session_file = awaiting(SessionFileView.as_view())


def receive_upload(request, session: Session) -> tuple[str, int]:
    """Copy the raw body into the file store (never whole into memory); returns its name there and its size."""
    limit = settings.SANDBOX_SESSION_FILE_MAX_BYTES
    with tempfile.TemporaryFile() as spool:
        size = 0
        while chunk := request._request.read(UPLOAD_CHUNK):
            size += len(chunk)
            if size > limit:
                raise PayloadTooLarge({"detail": f"the file is over {limit} bytes (SANDBOX_SESSION_FILE_MAX_BYTES)",
                                       "code": "too_large"})
            spool.write(chunk)
        spool.seek(0)
        return transfers.save(transfers.upload_name(session.caller_id, session.pk), File(spool)), size


def download(get: SessionRequest):
    """The file's bytes, streamed from the store, which forgets them once the response is over (sent or not)."""
    get.refresh_from_db()
    if not get.is_done or get.status == "failed":
        return answered(get)
    response = StreamingHttpResponse(transfers.Download(get.blob), content_type="application/octet-stream")
    response["Content-Length"] = str(get.answer.get("size", 0))
    response["Content-Disposition"] = content_disposition_header(True, get.path.rsplit("/", 1)[-1])
    response["X-Content-Type-Options"] = "nosniff"
    response["Content-Security-Policy"] = "sandbox; default-src 'none'"
    SessionRequest.objects.filter(pk=get.pk).delete()  # the bytes are the response's now: it deletes them
    return response

from django.conf import settings
from django.db import connection
from django.http import Http404, HttpResponse, JsonResponse
from django.shortcuts import get_object_or_404
from django.utils import timezone
from django.utils.http import content_disposition_header
from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework import generics, status
from rest_framework.exceptions import APIException, Throttled, ValidationError
from rest_framework.response import Response
from rest_framework.views import APIView

from providers.base import Status
from sandboxctl.api import ragflow
from sandboxctl.api.auth import BearerTokenAuthentication
from sandboxctl.api.metrics import authorised
from sandboxctl.api.readiness import check
from sandboxctl.api.serializers import ExecutionFilter, ExecutionRequestSerializer, RagflowRunSerializer
from sandboxctl.api.waiting import Answer, Pending, awaiting, pending
from sandboxctl.egress import policy as egress_policy
from sandboxctl.executions import artifact_store
from sandboxctl.executions.admission import TooManyQueued
from sandboxctl.executions.models import Execution
from sandboxctl.executions.representation import ExecutionSerializer, ExecutionSummarySerializer
from sandboxctl.executions.service import (
    FilesUnsupported,
    IdempotencyConflict,
    Submission,
    UnsupportedLanguage,
    submit,
    wait_budget,
)

RETRY_AFTER_SECONDS = "2"
QUEUE_FULL_RETRY_AFTER = 10
FILTERS = ("status", "language", "provider")


def visible_executions(request):
    queryset = Execution.objects.all()
    if not request.user.is_staff:
        queryset = queryset.filter(caller=request.user)
    return queryset


def submit_request(request, submission: Submission) -> tuple[Execution, bool]:
    key = request.headers.get("Idempotency-Key") or None
    if key and len(key) > 255:
        raise ValidationError({"Idempotency-Key": ["must be at most 255 characters"]})
    try:
        return submit(submission, request.user, request.auth if hasattr(request.auth, "pk") else None, key)
    except IdempotencyConflict as exc:
        raise Conflict(str(exc)) from exc
    except UnsupportedLanguage as exc:
        raise ValidationError({"language": [str(exc)]}) from exc
    except FilesUnsupported as exc:
        raise ValidationError({"files": [str(exc)]}) from exc
    except TooManyQueued as exc:
        raise QueueFull(str(exc)) from exc
    except (egress_policy.BeyondCeiling, egress_policy.EgressUnsupported) as exc:
        raise egress_refused(exc) from exc


def egress_refused(exc: Exception) -> APIException:
    """A request beyond its account's egress ceiling is a 403 naming the entries refused; one its provider
    cannot hold its sandboxes to, a 400 naming the provider."""
    if isinstance(exc, egress_policy.BeyondCeiling):
        return BeyondCeiling({"detail": str(exc), "code": "egress_beyond_ceiling", "refused": exc.refused})
    return ValidationError({"network": [str(exc)]})


class BeyondCeiling(APIException):
    status_code = status.HTTP_403_FORBIDDEN
    default_code = "egress_beyond_ceiling"


class Conflict(APIException):
    status_code = status.HTTP_409_CONFLICT
    default_code = "idempotency_conflict"


class QueueFull(Throttled):
    default_code = "too_many_queued"

    def __init__(self, detail: str) -> None:
        super().__init__(wait=QUEUE_FULL_RETRY_AFTER, detail=detail)


def pool_exhausted(execution: Execution) -> bool:
    return execution.status == Status.SANDBOX_ERROR and execution.error_code == "pool_exhausted"


class ExecutionListView(generics.ListAPIView):
    serializer_class = ExecutionSummarySerializer

    def get_queryset(self):
        filters = ExecutionFilter(data={name: value for name in FILTERS
                                        if (value := self.request.query_params.get(name))})
        filters.is_valid(raise_exception=True)
        return visible_executions(self.request).filter(**filters.validated_data)

    @extend_schema(
        request=ExecutionRequestSerializer,
        responses={200: ExecutionSerializer, 202: ExecutionSerializer},
        parameters=[OpenApiParameter("Idempotency-Key", str, OpenApiParameter.HEADER, required=False)],
    )
    def post(self, request):
        serializer = ExecutionRequestSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        data = serializer.validated_data
        submission = Submission(
            language=data["language"],
            code=data["code"],
            arguments=data["arguments"],
            limits=serializer.requested_limits(),
            callback_url=data["callback_url"],
            files=tuple(data["files"]),
            network=data["network"],
        )
        try:
            execution, _ = submit_request(request, submission)
        except Conflict as exc:
            return Response({"detail": str(exc), "code": "idempotency_conflict"}, status=status.HTTP_409_CONFLICT)
        location = request.build_absolute_uri(f"/api/v1/executions/{execution.id}")
        if not data["wait"]:
            return Response(ExecutionSerializer(execution).data, status=202, headers={"Location": location})
        # The wait itself holds no thread: see waiting.py.
        return pending(Pending(execution.pk, wait_budget(execution), lambda: waited_answer(execution, location)))


def waited_answer(execution: Execution, location: str) -> Answer:
    execution.refresh_from_db()
    body = ExecutionSerializer(execution).data
    if pool_exhausted(execution):
        return Answer(body, 503, {"Retry-After": RETRY_AFTER_SECONDS})
    return Answer(body, 200 if execution.is_terminal else 202, {"Location": location})


execution_list = awaiting(ExecutionListView.as_view())


class ExecutionDetailView(generics.RetrieveAPIView):
    serializer_class = ExecutionSerializer

    def get_queryset(self):
        return visible_executions(self.request)


class ExecutionArtifactView(APIView):
    """One artifact's bytes, for its own account (or staff): another account gets 404, as for the run."""

    @extend_schema(responses={(200, "application/octet-stream"): bytes})
    def get(self, request, pk, index: int):
        execution = get_object_or_404(visible_executions(request), pk=pk)
        if index >= len(execution.artifacts):
            raise Http404("no such artifact")
        artifact = execution.artifacts[index]
        response = HttpResponse(artifact_store.content(artifact), content_type="application/octet-stream")
        # An attachment that is never sniffed or rendered: an html or svg the code wrote runs nowhere.
        response["Content-Disposition"] = content_disposition_header(True, artifact.get("name") or "artifact")
        response["X-Content-Type-Options"] = "nosniff"
        response["Content-Security-Policy"] = "sandbox; default-src 'none'"
        return response


class ExecutionCancelView(APIView):
    @extend_schema(request=None, responses={200: ExecutionSerializer, 409: None})
    def post(self, request, pk):
        execution = get_object_or_404(visible_executions(request), pk=pk)
        # A queued run is cancelled before it starts; a running one is ended here and its result discarded.
        if not execution.end_with_error(Status.CANCELLED, "cancelled", "cancelled by the caller"):
            return Response(
                {"detail": f"execution already ended with status {execution.status}", "code": "already_finished"},
                status=status.HTTP_409_CONFLICT,
            )
        return Response(ExecutionSerializer(execution).data)


class RagflowRunView(APIView):
    """RAGFlow executor_manager's `/run`, translated onto the same execution path (see ragflow.py)."""

    authentication_classes = [BearerTokenAuthentication, ragflow.TrustedNetworkAuthentication]

    @extend_schema(request=RagflowRunSerializer, responses={200: dict})
    def post(self, request):
        serializer = RagflowRunSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        data = serializer.validated_data
        # RAGFlow cannot ask for a network: its runs may reach what its account's ceiling allows.
        submission = Submission(language=data["language"], code=data["code_b64"], arguments=data["arguments"],
                                network=egress_policy.whole_ceiling(request.user))
        execution, _ = submit_request(request, submission)
        # As long as RAGFlow's own client waits, holding no thread meanwhile (waiting.py).
        return pending(Pending(execution.pk, settings.SANDBOX_RAGFLOW_WAIT, lambda: ragflow_answer(execution)))


def ragflow_answer(execution: Execution) -> Answer:
    execution.refresh_from_db()
    return Answer(ragflow.to_ragflow(execution), 200)


ragflow_run = awaiting(RagflowRunView.as_view())


async def healthz(request):
    """Answered on the event loop itself: no thread or database needed, so it answers under any load."""
    return JsonResponse({"status": "ok"})


def readyz(request):
    """Ready when the database and broker answer and each language has warm sandboxes on a live worker."""
    problems, details = check()
    status_code = 200 if not problems else 503
    answer = {"status": "ok" if not problems else "unavailable", "checked_at": timezone.now().isoformat()}
    # Anyone may learn whether it is ready; what it runs on and the counts need the metrics token or staff.
    if authorised(request) or getattr(request.user, "is_staff", False):
        answer.update(details, problems=problems)
    connection.close_if_unusable_or_obsolete()
    return JsonResponse(answer, status=status_code)

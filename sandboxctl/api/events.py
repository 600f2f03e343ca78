"""GET /api/v1/executions/{id}/events: a run's output while it runs, as Server-Sent Events (text/event-stream).

Events, in order:
- `status` `{"status": …}`: the status when the client connects (not on a resume), then each change;
- `stdout` / `stderr` `{"text": …}`: the output as the worker read it (within the run's output cap);
- `execution`: the final execution, as GET /api/v1/executions/{id} answers it; then the stream ends.
Status changes and chunks carry ids: a client that reconnects with `Last-Event-ID` gets what came after it.
A run that is already over gets what is left of its live output, its status and the final execution.
Another account's run is a 404, as for the run itself.

The view itself is a short sync DRF view (auth, throttle, the owner check); the stream is a coroutine that
waits on the live output (sandboxctl/executions/live_output.py, Redis) and on the run's end (service.await_end, the
database's notice), so a client costs a socket, not a thread. Without Redis it still ends with the final
execution. A stream lasts at most SANDBOX_WAIT_CAP; a client then resumes.
"""

import asyncio
import json
from collections.abc import AsyncIterator

from django.conf import settings
from django.http import StreamingHttpResponse
from django.shortcuts import get_object_or_404
from drf_spectacular.utils import OpenApiParameter, OpenApiResponse, extend_schema
from rest_framework.renderers import BaseRenderer, JSONRenderer
from rest_framework.utils.encoders import JSONEncoder
from rest_framework.views import APIView

from sandboxctl.api.views import visible_executions
from sandboxctl.api.waiting import in_pool
from sandboxctl.executions import live_output
from sandboxctl.executions.models import Execution
from sandboxctl.executions.representation import ExecutionSerializer
from sandboxctl.executions.service import await_end

KEEPALIVE = 15.0  # a comment line this often keeps proxies from closing a quiet stream
RETRY_MS = 2000


class EventStreamRenderer(BaseRenderer):
    """Lets `Accept: text/event-stream` through DRF's content negotiation; refusals are still JSON bodies."""

    media_type = "text/event-stream"
    format = "event-stream"

    def render(self, data, accepted_media_type=None, renderer_context=None) -> bytes:
        return json.dumps(data).encode()


def event(kind: str, data: dict, event_id: str | None = None) -> bytes:
    head = f"id: {event_id}\n" if event_id else ""
    return f"{head}event: {kind}\ndata: {json.dumps(data, ensure_ascii=False, cls=JSONEncoder)}\n\n".encode()


def entry_event(entry: live_output.Entry) -> bytes:
    if entry.kind == "status":
        return event("status", {"status": entry.data}, entry.id)
    return event(entry.kind, {"text": entry.data}, entry.id)


class ExecutionEventsView(APIView):
    renderer_classes = [JSONRenderer, EventStreamRenderer]

    @extend_schema(
        parameters=[OpenApiParameter("Last-Event-ID", str, OpenApiParameter.HEADER, required=False)],
        responses={(200, "text/event-stream"): OpenApiResponse(description="status, stdout, stderr, execution")},
    )
    def get(self, request, pk):
        execution = get_object_or_404(visible_executions(request), pk=pk)
        after = live_output.valid_id(request.headers.get("Last-Event-ID"))
        response = StreamingHttpResponse(
            stream(execution.pk, execution.status, execution.is_terminal, after, request),
            content_type="text/event-stream")
        response["Cache-Control"] = "no-cache"
        response["X-Accel-Buffering"] = "no"  # nginx: pass each event on at once
        return response


async def stream(execution_id, status: str, over: bool, after: str | None, request) -> AsyncIterator[bytes]:
    yield f"retry: {RETRY_MS}\n\n".encode()
    if after is None:
        yield event("status", {"status": status})
    async with live_output.following(execution_id, after) as follow:
        if not over:
            ended = asyncio.ensure_future(await_end(execution_id, settings.SANDBOX_WAIT_CAP))
            try:
                async for chunk in until_end(follow, ended):
                    yield chunk
            finally:
                ended.cancel()
            if not ended.result():
                return  # past SANDBOX_WAIT_CAP: the client resumes with Last-Event-ID
        if follow is not None:  # what the worker wrote just before the end, if the reader has not passed it on yet
            await live_output.reader().rest(follow)
            while not follow.entries.empty():
                yield entry_event(follow.entries.get_nowait())
    final = await in_pool(final_execution, execution_id, request)
    yield event("status", {"status": final["status"]})
    yield event("execution", final)


async def until_end(follow: live_output.Follow | None, ended: asyncio.Future) -> AsyncIterator[bytes]:
    """Live entries as they come, and a keep-alive comment when quiet, until `ended` is done."""
    while True:
        waiting = {ended}
        getter = None
        if follow is not None:
            getter = asyncio.ensure_future(follow.entries.get())
            waiting.add(getter)
        done, _ = await asyncio.wait(waiting, timeout=KEEPALIVE, return_when=asyncio.FIRST_COMPLETED)
        if getter is not None and getter in done:
            yield entry_event(getter.result())
            continue
        if getter is not None:
            getter.cancel()
        if ended in done:
            return
        yield b": keep-alive\n\n"


def final_execution(execution_id, request) -> dict:
    return dict(ExecutionSerializer(Execution.objects.get(pk=execution_id), context={"request": request}).data)

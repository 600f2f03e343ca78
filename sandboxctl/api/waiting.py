"""Requests that wait for a run's end as coroutines, so a waiting request costs a socket, not a thread.

The DRF views stay synchronous and short: authentication, throttling, validation and the submit happen
there. A view that has to wait for the run answers `pending(Pending(...))`; `awaiting(view)`
runs the DRF view on a small bounded pool of threads, then awaits the run's end on the event loop
(service.await_end: woken by notify.py, no thread held), then fills the answer in on the pool again.

Under ASGI (sandboxctl/asgi.py) a thousand waiting requests are a thousand coroutines; under WSGI (Django's
test server) the same views work, each holding its thread while it waits.
"""

import asyncio
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from functools import wraps

from asgiref.sync import sync_to_async
from django.conf import settings
from django.core.handlers.asgi import ASGIRequest
from django.db import close_old_connections
from django.http.response import HttpResponseBase
from rest_framework.response import Response

from sandboxctl.api.errors import exception_handler
from sandboxctl.executions.service import await_end

# The synchronous parts of API requests run here. Bounded, so a flood of requests queues for a thread
# instead of opening a thread and a database connection each.
EXECUTOR = ThreadPoolExecutor(max_workers=settings.SANDBOX_WEB_THREADS, thread_name_prefix="web-sync")


@dataclass
class Answer:
    data: object
    status: int
    headers: dict = field(default_factory=dict)


@dataclass
class Pending:
    """What a view waits for: this execution's (or session request's) end, at most `timeout` seconds; then
    `answer()` (run on the pool) gives the response's body, status and headers, or a whole response.
    `abandon()`, when given, runs if the client goes away while it waits (whatever comes now is for nobody)."""

    execution_id: object
    timeout: float
    answer: Callable[[], Answer]
    abandon: Callable[[], None] | None = None


def pending(wait: Pending) -> Response:
    response = Response()
    response.pending = wait
    return response


def _in_pool_thread(function: Callable, *args, **kwargs):
    # These threads live on between requests, where Django's request signals never reach them: close the
    # connection here as Django would at a request's end (CONN_MAX_AGE, broken connections).
    close_old_connections()
    try:
        return function(*args, **kwargs)
    finally:
        close_old_connections()


async def in_pool(function: Callable, *args, **kwargs):
    """Run blocking work (the database) from a coroutine on the bounded pool, never on the event loop."""
    return await sync_to_async(_in_pool_thread, thread_sensitive=False, executor=EXECUTOR)(function, *args, **kwargs)


async def run_sync(request, function: Callable, *args, **kwargs):
    """Under ASGI, on the bounded pool. Under WSGI (Django's test client and server), in the request's own
    thread, as a sync view would run: its connection, its transaction, Django's signals closing it."""
    if isinstance(request, ASGIRequest):
        return await in_pool(function, *args, **kwargs)
    return await sync_to_async(function, thread_sensitive=True)(*args, **kwargs)


def awaiting(view: Callable) -> Callable:
    """An async view around a (DRF) sync view: the view runs on the pool; a `pending` answer is awaited."""

    @wraps(view)
    async def wait_then_answer(request, *args, **kwargs):
        response = await run_sync(request, view, request, *args, **kwargs)
        wait = getattr(response, "pending", None)
        if wait is None:
            return response
        try:
            await await_end(wait.execution_id, wait.timeout)
        except asyncio.CancelledError:  # the client disconnected (Django cancels the view)
            if wait.abandon is not None:
                await run_sync(request, wait.abandon)
            raise
        try:
            answer = await run_sync(request, wait.answer)
            if isinstance(answer, HttpResponseBase):  # a whole answer of its own (a file's bytes, streamed)
                return answer
        except Exception as exc:  # noqa: BLE001 - answered as the DRF view answers it (a database away: 503)
            failed = exception_handler(exc, {"view": view})
            headers = {name: value for name, value in failed.headers.items() if name.lower() != "content-type"}
            answer = Answer(failed.data, failed.status_code, headers)
        response.data, response.status_code = answer.data, answer.status
        for name, value in answer.headers.items():
            response[name] = value
        return response

    return wait_then_answer

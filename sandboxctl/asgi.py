"""The ASGI application, served by gunicorn with sandboxctl.api.server.Worker (uvicorn): see server.py.

Two Django handlers share one process. The requests that may wait for a run (POST /api/v1/executions and
RAGFlow's POST /run) go through a chain of middleware that runs on the event loop: Django's own middleware
runs each hook on a thread of the request's, so a thousand requests arriving together would start a
thousand threads. They take tokens (and RAGFlow's trusted networks), not sessions. Everything else —
the admin, the console, the other API views — goes through the full chain in settings.MIDDLEWARE. /mcp is
the MCP server (sandboxctl/agents/mcp_server.py), whose tool calls come back in here as REST requests.
"""

import os

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "sandboxctl.settings")
# Under ASGI, Django runs sync code on short-lived threads, where a persistent connection is never reused:
# PostgreSQL connections come from a pool instead (settings.py); other databases connect per use.
os.environ.setdefault("DATABASE_POOL", "true")
os.environ.setdefault("DATABASE_CONN_MAX_AGE", "0")

from django.core.asgi import get_asgi_application  # noqa: E402 - after the environment above
from django.core.handlers.asgi import ASGIHandler  # noqa: E402
from django.test.utils import override_settings  # noqa: E402

from sandboxctl.executions import notify  # noqa: E402

WAITING_REQUESTS = {("POST", "/api/v1/executions"), ("POST", "/run")}
WAITING_MIDDLEWARE = [
    "sandboxctl.api.intake.AllowedHostMiddleware",
    "sandboxctl.api.intake.RequestSizeLimitMiddleware",
    "sandboxctl.api.ragflow.RagflowPortMiddleware",
]
HEALTH = b'{"status": "ok"}'
HEALTH_PATHS = ("/healthz", "/")  # RAGFlow's executor answers health on / too


class WaitingRequestsHandler(ASGIHandler):
    def load_middleware(self, is_async: bool = False) -> None:
        with override_settings(MIDDLEWARE=WAITING_MIDDLEWARE):
            super().load_middleware(is_async)

    async def __call__(self, scope, receive, send):
        # Without Django's per-request ThreadSensitiveContext: each request would start a thread of its own
        # for its few sync moments (the request signals' receivers, rendering the JSON answer), and under a
        # burst the event loop spent its time starting threads. Those moments take microseconds; they share
        # asgiref's one thread instead. The views' own sync work runs on waiting.EXECUTOR.
        await self.handle(scope, receive, send)


django_application = get_asgi_application()
waiting_application = WaitingRequestsHandler()

from sandboxctl.agents.mcp_server import PATH as MCP_PATH  # noqa: E402 - needs Django set up
from sandboxctl.agents.mcp_server import McpEndpoint  # noqa: E402


async def application(scope, receive, send):
    if scope["type"] != "http":
        return await django_application(scope, receive, send)
    if scope["method"] in ("GET", "HEAD") and scope["path"] in HEALTH_PATHS:
        # Liveness answered on the event loop: instant however busy Django's threads are (readiness, with
        # the database and the workers, is /readyz).
        await send({"type": "http.response.start", "status": 200,
                    "headers": [(b"content-type", b"application/json"), (b"content-length", b"%d" % len(HEALTH))]})
        await send({"type": "http.response.body", "body": HEALTH if scope["method"] == "GET" else b""})
        return None
    if (scope["method"], scope["path"]) in WAITING_REQUESTS:
        return await waiting_application(scope, receive, send)
    if scope["path"] == MCP_PATH:
        return await mcp_application(scope, receive, send)
    return await django_application(scope, receive, send)


# The MCP server (agents/mcp_server.py): its tools call this application's REST API in-process.
mcp_application = McpEndpoint(application)


# Listen for ended runs from the start, so the first waiting request is woken by a notice, not the watcher.
notify.waiters.start()

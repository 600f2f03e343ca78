"""The MCP server at /mcp on the main port: Streamable HTTP, stateless (state lives in session ids), on the official
SDK's low-level server, mounted in the ASGI app (sandboxctl/asgi.py).

Every request needs an API token (`Authorization: Bearer …`, as the REST API; 401 otherwise), and its tool calls
are made in-process as REST requests with that same token (inprocess.py, calls.py), so an account's tools see
only its runs and sessions and the API's throttling, validation, fair share and quotas apply unchanged. Tool
calls that wait for a run are coroutines like the API's waits (no thread held), and pass the run's output on
as progress notifications while it runs. It is not served on RAGFlow's port.
"""

import asyncio
import json
import logging

import mcp_types as types
from django.conf import settings
from django.http.request import split_domain_port, validate_host
from mcp.server import Server
from mcp.server.context import ServerRequestContext
from mcp.server.transport_security import TransportSecuritySettings
from rest_framework.exceptions import AuthenticationFailed

from sandboxctl.agents import calls
from sandboxctl.agents.inprocess import InProcessRest
from sandboxctl.agents.tools import mcp_tools
from sandboxctl.api import auth
from sandboxctl.api.waiting import in_pool

log = logging.getLogger(__name__)

PATH = "/mcp"
INSTRUCTIONS = ("sandboxctl runs Python and Node.js code in isolated gVisor sandboxes with no network. run_code "
                "runs a program once; open_session keeps an interpreter and its files between run_cell calls. Print "
                "what you want to read; save charts as image files to see them.")


def build_server(rest_app) -> Server:
    """The MCP server whose tools call the REST API `rest_app` (an ASGI application) in-process."""

    async def list_tools(ctx: ServerRequestContext, params) -> types.ListToolsResult:
        return types.ListToolsResult.model_validate({"tools": mcp_tools()})

    async def call_tool(ctx: ServerRequestContext, params: types.CallToolRequestParams) -> types.CallToolResult:
        rest = InProcessRest(rest_app, ctx.request.scope)
        sent = 0

        async def progress(message: str) -> None:
            nonlocal sent
            sent += 1
            await ctx.session.report_progress(sent, None, message)

        outcome = await calls.call(params.name, params.arguments or {}, rest, progress)
        return types.CallToolResult.model_validate(outcome.wire())

    return Server("sandboxctl", version="1", instructions=INSTRUCTIONS, on_list_tools=list_tools,
                  on_call_tool=call_tool)


class McpEndpoint:
    """The ASGI application behind /mcp: refusals first (RAGFlow's port, an unknown Host, no valid token), then the
    SDK's Streamable HTTP transport, whose task group is started on the first request (the server runs without
    ASGI lifespan events)."""

    def __init__(self, rest_app) -> None:
        self.server = build_server(rest_app)
        self.http = self.server.streamable_http_app(
            streamable_http_path=PATH, stateless_http=True, max_request_body_size=settings.SANDBOX_REQUEST_MAX_BYTES,
            # Hosts are checked here against ALLOWED_HOSTS, as Django checks them; every request needs a token.
            transport_security=TransportSecuritySettings(enable_dns_rebinding_protection=False),
        )
        self._running: asyncio.Future | None = None
        self._ready = asyncio.Event()

    async def __call__(self, scope, receive, send) -> None:
        refusal = await self.refusal(scope)
        if refusal is not None:
            status, body, headers = refusal
            await answer(send, status, body, headers)
            return
        await self.started()
        await self.http(scope, receive, send)

    async def refusal(self, scope) -> tuple[int, dict, list] | None:
        server = scope.get("server") or ("", None)
        if server[1] == settings.RAGFLOW_PORT:
            return 404, {"detail": f"port {settings.RAGFLOW_PORT} serves only RAGFlow's /run and /healthz",
                         "code": "not_found"}, []
        headers = {name.decode("latin-1"): value.decode("latin-1") for name, value in scope.get("headers", [])}
        domain, _ = split_domain_port(headers.get("host", ""))
        if not domain or not validate_host(domain, settings.ALLOWED_HOSTS):
            return 400, {"detail": "this Host is not in ALLOWED_HOSTS", "code": "bad_host"}, []
        challenge = [(b"www-authenticate", b"Bearer")]
        try:
            key = auth.key_from(headers.get("authorization", ""), headers.get("x-sandbox-token"))
        except AuthenticationFailed as exc:
            return 401, {"detail": str(exc.detail), "code": "not_authenticated"}, challenge
        if key is None:
            return 401, {"detail": "send an API token: Authorization: Bearer <token>", "code": "not_authenticated"}, \
                challenge
        token = await in_pool(auth.token_for, key)
        if token is None:
            return 401, {"detail": "invalid token", "code": "not_authenticated"}, challenge
        return None

    async def started(self) -> None:
        """Start the transport's session manager (its task group) on this event loop, once, and keep it running."""
        if self._running is None:
            self._ready = asyncio.Event()
            self._running = asyncio.ensure_future(self._run(self._ready))
        ready = asyncio.ensure_future(self._ready.wait())
        await asyncio.wait({ready, self._running}, return_when=asyncio.FIRST_COMPLETED)
        if not self._ready.is_set():
            ready.cancel()
            self._running.result()  # raises why it could not start

    async def _run(self, ready: asyncio.Event) -> None:
        async with self.server.session_manager.run():
            ready.set()
            await asyncio.Event().wait()


async def answer(send, status: int, body: dict, headers: list) -> None:
    content = json.dumps(body).encode()
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"), (b"content-length", b"%d" % len(content)),
                            *headers]})
    await send({"type": "http.response.body", "body": content})

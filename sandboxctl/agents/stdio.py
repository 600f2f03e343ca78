"""`sandboxctl mcp --url … --token …`: sandboxctl's tools for desktop MCP clients, which launch a server as a
process and speak MCP on its stdin and stdout. This process holds no state and no Django: it forwards every
list and call to a sandboxctl server's /mcp over HTTP (the SDK's Streamable HTTP client) and relays the
progress notifications that carry a run's output.
"""

import logging

import httpx2
import mcp_types as types
from mcp import Client
from mcp.client.streamable_http import streamable_http_client
from mcp.server import Server
from mcp.server.context import ServerRequestContext
from mcp.server.stdio import stdio_server
from mcp.shared._httpx_utils import create_mcp_http_client

log = logging.getLogger(__name__)

CONNECT_TIMEOUT = 30.0
READ_TIMEOUT = 900.0  # a tool call waits for a run (queued, then up to its own limit) on one response stream


def build_server(remote: Client) -> Server:
    async def list_tools(ctx: ServerRequestContext, params) -> types.ListToolsResult:
        return await remote.list_tools()

    async def call_tool(ctx: ServerRequestContext, params: types.CallToolRequestParams) -> types.CallToolResult:
        async def relay(progress: float, total: float | None, message: str | None) -> None:
            await ctx.session.report_progress(progress, total, message)

        return await remote.call_tool(params.name, params.arguments or {}, progress_callback=relay)

    return Server("sandboxctl", version="1", on_list_tools=list_tools, on_call_tool=call_tool)


async def serve(url: str, token: str) -> None:
    """Connect to the server's /mcp (failing at once, on stderr, when it cannot be reached), then serve stdio."""
    http = create_mcp_http_client(headers={"Authorization": f"Bearer {token}"},
                                  timeout=httpx2.Timeout(CONNECT_TIMEOUT, read=READ_TIMEOUT))
    endpoint = url.rstrip("/") + "/mcp"
    async with http, Client(streamable_http_client(endpoint, http_client=http)) as remote:
        server = build_server(remote)
        async with stdio_server() as (read_stream, write_stream):
            await server.run(read_stream, write_stream, server.create_initialization_options())

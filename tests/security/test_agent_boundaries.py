"""Attacks on the agent surfaces, against the real ASGI server: /mcp and the live-output events.

- /mcp without a token, with a malformed or unknown one, or a deactivated account's: 401, nothing listed or run;
- /mcp on RAGFlow's port (which trusts loopback without a token): 404, even with a token;
- /mcp with a Host outside ALLOWED_HOSTS (DNS rebinding): 400;
- one account's tools reaching another account's runs, sessions, cells and files, by id: not_found, nothing done;
- another account's run's events: 404 (and its live stream is never read).
"""

import asyncio

import httpx2
import pytest
import requests
from mcp import Client
from mcp.client.streamable_http import streamable_http_client
from mcp.shared._httpx_utils import create_mcp_http_client
from test_web_tier import start_server, stop_server

from sandboxctl.executions.models import ApiToken, Execution, Session

LIST = {"jsonrpc": "2.0", "id": 1, "method": "tools/list", "params": {}}
CALL = {"jsonrpc": "2.0", "id": 2, "method": "tools/call",
        "params": {"name": "run_code", "arguments": {"language": "python", "code": "print('ran')"}}}
pytestmark = pytest.mark.django_db(transaction=True)  # the server process must see the accounts made here
MCP_HEADERS = {"Accept": "application/json, text/event-stream", "MCP-Protocol-Version": "2025-11-25"}


@pytest.fixture(scope="module")
def web(sandbox_worker, django_db_setup, tmp_path_factory):
    server = start_server(tmp_path_factory.mktemp("agents-attacks"))
    yield server
    stop_server(server)


def account(django_user_model, name: str) -> str:
    return ApiToken.issue(django_user_model.objects.create_user(name), name="t")[1]


def post_mcp(url: str, body: dict, **headers) -> requests.Response:
    return requests.post(url, json=body, headers={**MCP_HEADERS, **headers}, timeout=60)


@pytest.mark.parametrize("authorization", [None, "Bearer", "Bearer not-a-token", "Basic YWRtaW46YWRtaW4="])
def test_mcp_needs_a_valid_token(web, authorization):
    headers = {"Authorization": authorization} if authorization else {}
    for body in (LIST, CALL):
        answer = post_mcp(web.url("/mcp"), body, **headers)
        assert answer.status_code == 401, answer.text
        assert answer.headers["WWW-Authenticate"] == "Bearer"
    assert not Execution.objects.exists()


def test_a_deactivated_accounts_token_is_refused(web, django_user_model):
    token = account(django_user_model, "leaver")
    django_user_model.objects.filter(username="leaver").update(is_active=False)
    assert post_mcp(web.url("/mcp"), CALL, Authorization=f"Bearer {token}").status_code == 401
    assert not Execution.objects.exists()


def test_mcp_is_not_served_on_ragflows_port(web, django_user_model):
    token = account(django_user_model, "ragflow-prober")
    for headers in ({}, {"Authorization": f"Bearer {token}"}):
        answer = post_mcp(web.url("/mcp", ragflow=True), CALL, **headers)
        assert answer.status_code == 404, answer.text
    assert not Execution.objects.exists()


def test_mcp_refuses_a_host_it_does_not_serve(web, django_user_model):
    token = account(django_user_model, "rebinder")
    answer = post_mcp(web.url("/mcp"), CALL, Authorization=f"Bearer {token}", Host="attacker.example")
    assert answer.status_code == 400
    assert not Execution.objects.exists()


def call(web, token: str, name: str, arguments: dict):
    async def scenario():
        http = create_mcp_http_client(headers={"Authorization": f"Bearer {token}"},
                                      timeout=httpx2.Timeout(30, read=300))
        async with http, Client(streamable_http_client(web.url("/mcp"), http_client=http)) as client:
            return await client.call_tool(name, arguments)

    return asyncio.run(scenario())


def test_one_accounts_tools_cannot_reach_anothers_runs_and_sessions(web, django_user_model):
    owner, intruder = account(django_user_model, "owner"), account(django_user_model, "intruder")
    run = call(web, owner, "run_code", {"language": "python", "code": "print('secret output')"})
    opened = call(web, owner, "open_session", {"language": "python"})
    session = opened.structured_content["session"]["id"]
    call(web, owner, "upload_file", {"session_id": session, "path": "secret.txt", "content": "owner's data"})
    attempts = {
        "get_execution": {"execution_id": run.structured_content["id"]},
        "run_cell": {"session_id": session, "code": "print(open('secret.txt').read())"},
        "download_file": {"session_id": session, "path": "secret.txt"},
        "list_files": {"session_id": session},
        "upload_file": {"session_id": session, "path": "secret.txt", "content": "overwritten"},
        "end_session": {"session_id": session},
    }
    for name, arguments in attempts.items():
        result = call(web, intruder, name, arguments)
        assert result.is_error, name
        assert result.structured_content["error"]["code"] == "not_found", (name, result.structured_content)
        assert "secret output" not in str(result.content) and "owner's data" not in str(result.content)
    # Nothing of the owner's was touched: no cell ran, the file and the session are as they were.
    assert not Execution.objects.filter(session_id=session).exists()
    assert Session.objects.get(pk=session).status == "active"
    kept = call(web, owner, "download_file", {"session_id": session, "path": "secret.txt"})
    assert kept.content[0].resource.text == "owner's data"
    call(web, owner, "end_session", {"session_id": session})


def test_another_accounts_events_are_not_found(web, django_user_model):
    owner, intruder = account(django_user_model, "owner2"), account(django_user_model, "intruder2")
    run = call(web, owner, "run_code", {"language": "python", "code": "print('secret output')"})
    answer = requests.get(web.url(f"/api/v1/executions/{run.structured_content['id']}/events"), timeout=30,
                          headers={"Authorization": f"Bearer {intruder}", "Last-Event-ID": "0-1"})
    assert answer.status_code == 404
    assert "secret output" not in answer.text

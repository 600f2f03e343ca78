"""The agent tools' pure parts (fast tier): one set of definitions rendered for MCP, OpenAI and Anthropic; GET
/api/v1/tools; how the REST API's answers become MCP content and tool errors; the SSE parsing; the live-output
stream ids; and the events endpoint without Redis (the status and the final execution)."""

import asyncio
import base64
import json

import jsonschema
import pytest
from django.utils import timezone

from sandboxctl.agents import calls
from sandboxctl.agents.inprocess import parse_event
from sandboxctl.agents.tools import TOOLS, anthropic_tools, mcp_tools, openai_tools
from sandboxctl.executions import live_output
from sandboxctl.executions.models import ApiToken, Execution


def test_one_definition_per_tool_rendered_three_ways():
    schemas = {tool["name"]: tool["inputSchema"] for tool in mcp_tools()}
    assert {tool["function"]["name"]: tool["function"]["parameters"] for tool in openai_tools()} == schemas
    assert {tool["name"]: tool["input_schema"] for tool in anthropic_tools()} == schemas
    assert set(schemas) == {"run_code", "open_session", "run_cell", "upload_file", "download_file", "list_files",
                            "end_session", "get_execution"}
    for tool in TOOLS:
        jsonschema.Draft202012Validator.check_schema(tool.schema())
        assert set(tool.schema()["required"]) <= set(tool.schema()["properties"])


def test_the_tools_endpoint_needs_a_token_and_lists_every_style(client, django_user_model):
    assert client.get("/api/v1/tools").status_code == 401
    token = ApiToken.issue(django_user_model.objects.create_user("agent"), name="t")[1]
    answer = client.get("/api/v1/tools", HTTP_AUTHORIZATION=f"Bearer {token}").json()
    assert answer["openai"] == openai_tools() and answer["anthropic"] == anthropic_tools()
    assert answer["mcp"] == {"url": "http://testserver/mcp", "tools": mcp_tools()}


class Recorded:
    """A REST API that answers from a script, recording what it was asked."""

    base_url = "http://testserver"

    def __init__(self, *answers: calls.Answer, events=()) -> None:
        self.answers = list(answers)
        self.asked = []
        self.streamed = list(events)

    async def request(self, method, path, json_body=None, body=None):
        self.asked.append((method, path, json_body, body))
        return self.answers.pop(0)

    async def events(self, path):
        self.asked.append(("EVENTS", path, None, None))
        for item in self.streamed:
            yield item


def answer(status: int, body) -> calls.Answer:
    return calls.Answer(status, json.dumps(body).encode(), "application/json")


def run(coroutine):
    return asyncio.run(coroutine)


FINAL = {"id": "r1", "status": "succeeded", "exit_code": 0, "execution_time": 0.5, "stdout": "hi\n", "stderr": "",
         "result": {"present": True, "value": 42}, "error": None, "truncated": {"stdout": False, "stderr": False},
         "session": None, "artifacts": [
             {"name": "chart.png", "mime_type": "image/png", "size": 4, "url": "http://testserver/a/0",
              "content_b64": base64.b64encode(b"\x89PNG").decode()},
             {"name": "table.csv", "mime_type": "text/csv", "size": 4, "url": "http://testserver/a/1",
              "content_b64": base64.b64encode(b"a,b\n").decode()},
             {"name": "big.bin", "mime_type": "application/octet-stream", "size": 10**7, "url": "http://testserver/a/2",
              "content_b64": None}]}


def test_run_code_follows_the_run_and_renders_mcp_content():
    rest = Recorded(answer(202, {**FINAL, "status": "queued"}),
                    events=[("status", {"status": "running"}), ("stdout", {"text": "hi\n"}), ("execution", FINAL)])
    progress = []

    async def report(message):
        progress.append(message)

    outcome = run(calls.call("run_code", {"language": "python", "code": "print('hi')",
                                          "files": [{"path": "a.txt", "content": "é"}]}, rest, report))
    method, path, body, _ = rest.asked[0]
    assert (method, path) == ("POST", "/api/v1/executions")
    assert body["wait"] is False and body["files"] == [{"path": "a.txt", "content_b64": base64.b64encode(
        "é".encode()).decode()}]
    assert rest.asked[1][:2] == ("EVENTS", "/api/v1/executions/r1/events")
    assert progress == ["stdout: hi\n"]
    kinds = [block["type"] for block in outcome.content]
    assert kinds == ["text", "text", "text", "image", "resource", "resource_link"]
    image = FINAL["artifacts"][0]["content_b64"]
    assert outcome.content[3] == {"type": "image", "data": image, "mimeType": "image/png"}
    assert outcome.content[4]["resource"] == {"uri": "http://testserver/a/1", "mimeType": "text/csv", "text": "a,b\n"}
    assert outcome.content[5]["uri"] == "http://testserver/a/2"
    assert outcome.is_error is False and outcome.structured["result"] == {"present": True, "value": 42}


@pytest.mark.parametrize("status,body,code,message", [
    (400, {"language": ["must be one of: python, nodejs, javascript"]}, "invalid",
     "language: must be one of: python, nodejs, javascript"),
    (404, {"detail": "No Session matches the given query."}, "not_found", "No Session matches the given query."),
    (409, {"detail": "a cell is running", "code": "session_busy"}, "session_busy", "a cell is running"),
    (429, {"detail": "too many", "code": "too_many_queued"}, "too_many_queued", "too many"),
    (503, {"id": "s", "error": {"code": "no_capacity", "message": "full"}}, "no_capacity", "full"),
])
def test_refusals_become_tool_errors_with_the_apis_code(status, body, code, message):
    outcome = run(calls.call("open_session", {"language": "python"}, Recorded(answer(status, body))))
    assert outcome.is_error and outcome.structured == {"error": {"code": code, "message": message}}
    assert outcome.content == [{"type": "text", "text": f"error {code}: {message}"}]


def test_arguments_are_checked_against_the_schema_before_any_request():
    rest = Recorded()
    outcome = run(calls.call("run_cell", {"code": "1"}, rest))
    assert outcome.is_error and outcome.structured["error"]["code"] == "invalid"
    assert "session_id" in outcome.structured["error"]["message"] and rest.asked == []
    assert run(calls.call("nope", {}, rest)).structured["error"]["code"] == "unknown_tool"


def test_a_failed_run_is_a_tool_error_with_its_code():
    failed = {**FINAL, "status": "failed", "artifacts": [], "result": {"present": False},
              "error": {"code": "value_error", "message": "ValueError: no"}}
    outcome = run(calls.call("get_execution", {"execution_id": "r1"}, Recorded(answer(200, failed))))
    assert outcome.is_error and "error value_error: ValueError: no" in outcome.content[0]["text"]


def test_download_file_gives_images_as_images_and_text_as_text():
    png = calls.Answer(200, b"\x89PNG...", "application/octet-stream")
    outcome = run(calls.call("download_file", {"session_id": "s", "path": "plot.png"}, Recorded(png)))
    assert outcome.content[0]["type"] == "image" and outcome.content[0]["mimeType"] == "image/png"
    text = calls.Answer(200, b"x,y\n", "application/octet-stream")
    outcome = run(calls.call("download_file", {"session_id": "s", "path": "dir/a b.csv"}, Recorded(text)))
    assert outcome.content[0]["resource"]["text"] == "x,y\n"
    assert outcome.content[0]["resource"]["uri"] == "http://testserver/api/v1/sessions/s/files/dir/a%20b.csv"


def test_server_sent_events_are_parsed():
    assert parse_event('id: 1-0\nevent: stdout\ndata: {"text": "a"}') == ("stdout", {"text": "a"})
    assert parse_event(": keep-alive") is None
    assert parse_event("retry: 2000") is None


def test_stream_ids_order_and_resume_points():
    assert live_output.order("1700000000000-2") > live_output.order("1700000000000-1") > live_output.order("999-9")
    assert live_output.valid_id("1700000000000-0") == "1700000000000-0"
    assert live_output.valid_id("garbage") is None and live_output.valid_id("") is None
    assert live_output.valid_id("9" * 50) is None


def test_a_follower_gets_each_entry_once_in_order():
    async def scenario():
        follow = live_output.Follow("k", "5-0")
        follow.offer([live_output.Entry("4-0", "stdout", "old"), live_output.Entry("6-0", "stdout", "a")])
        # Read again after a rewind for another follower: nothing twice.
        follow.offer([live_output.Entry("6-0", "stdout", "a"), live_output.Entry("7-0", "stderr", "b")])
        return [follow.entries.get_nowait().data for _ in range(follow.entries.qsize())]

    assert asyncio.run(scenario()) == ["a", "b"]


def test_without_redis_the_events_are_the_status_and_the_final_execution(client, django_user_model,
                                                                         transactional_db, settings):
    settings.CELERY_BROKER_URL = "memory://"  # `make test` runs this tier with Redis as the broker
    assert live_output.redis_url() is None
    user = django_user_model.objects.create_user("agent")
    token = ApiToken.issue(user, name="t")[1]
    execution = Execution.objects.create(language="python", code="print(1)", arguments={}, caller=user,
                                         status="succeeded", stdout="1\n", finished_at=timezone.now(), limits={})
    response = client.get(f"/api/v1/executions/{execution.pk}/events", HTTP_AUTHORIZATION=f"Bearer {token}")
    assert response.status_code == 200 and response["Content-Type"] == "text/event-stream"

    async def read() -> str:
        return b"".join([chunk async for chunk in response.streaming_content]).decode()

    body = asyncio.run(read())
    events = [parse_event(block) for block in body.split("\n\n") if block.strip()]
    events = [event for event in events if event]
    assert [kind for kind, _ in events] == ["status", "status", "execution"]
    assert events[-1][1]["stdout"] == "1\n"
    other = ApiToken.issue(django_user_model.objects.create_user("other"), name="t")[1]
    assert client.get(f"/api/v1/executions/{execution.pk}/events",
                      HTTP_AUTHORIZATION=f"Bearer {other}").status_code == 404

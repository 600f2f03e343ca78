"""What a tool call does: a translation onto sandboxctl's REST API, and of its answers into MCP content.

Every call is made as REST requests with the caller's own credentials (mcp_server.py sends them in-process), so
authentication, throttling, validation, fair share, quotas and the owner checks are the REST API's own — one path,
as RAGFlow's /run is. A refusal becomes a tool error carrying the API's code and message, never a protocol error.
A run the tool waits for is followed through GET /api/v1/executions/{id}/events; its output goes to `progress` as
it is written (MCP progress notifications). Results are MCP content: text for the status, stdout, stderr and
result; image content for image files; embedded resources for other files the answer carries, and resource links
(their download URL) for larger ones. No Django here.
"""

import base64
import binascii
import json
import mimetypes
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Protocol
from urllib.parse import quote

import jsonschema

from sandboxctl.agents.tools import BY_NAME

TERMINAL = {"succeeded", "failed", "timeout", "memory_limit", "output_limit", "cancelled", "sandbox_error"}
# HTTP statuses the API answers without a `code` of its own.
STATUS_CODES = {400: "invalid", 401: "not_authenticated", 403: "forbidden", 404: "not_found", 405: "not_allowed",
                409: "conflict", 413: "too_large", 429: "throttled", 503: "unavailable"}

Progress = Callable[[str], Awaitable[None]]


@dataclass
class Answer:
    status: int
    content: bytes
    content_type: str = ""

    def json(self):
        try:
            return json.loads(self.content or b"null")
        except ValueError:
            return {"detail": self.content[:500].decode("utf-8", "replace")}


class Rest(Protocol):
    """The REST API as the caller: `request` answers one request; `events` yields (event, data) of a text/event-
    stream until it ends. `base_url` makes the API's paths absolute."""

    base_url: str

    async def request(self, method: str, path: str, json_body=None, body: bytes | None = None) -> Answer: ...

    def events(self, path: str) -> AsyncIterator[tuple[str, dict]]: ...


@dataclass
class Outcome:
    content: list[dict] = field(default_factory=list)  # MCP content blocks, as on the wire
    structured: dict | None = None
    is_error: bool = False

    def wire(self) -> dict:
        """The CallToolResult's fields, as on the wire."""
        answer = {"content": self.content, "isError": self.is_error}
        if self.structured is not None:
            answer["structuredContent"] = self.structured
        return answer


class Refused(Exception):
    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


async def call(name: str, arguments: dict, rest: Rest, progress: Progress | None = None) -> Outcome:
    tool = BY_NAME.get(name)
    if tool is None:
        return failure("unknown_tool", f"no tool named {name!r}; the tools are: {', '.join(BY_NAME)}")
    try:
        jsonschema.validate(arguments, tool.schema())
    except jsonschema.ValidationError as exc:
        where = ".".join(str(part) for part in exc.absolute_path) or "arguments"
        return failure("invalid", f"{where}: {exc.message}")
    try:
        return await HANDLERS[name](arguments, rest, progress)
    except Refused as exc:
        return failure(exc.code, str(exc))


def failure(code: str, message: str) -> Outcome:
    return Outcome([text(f"error {code}: {message}")], {"error": {"code": code, "message": message}}, True)


def checked(answer: Answer, *ok: int):
    """The answer's JSON when its status is one of `ok`; else Refused with the API's code and message."""
    if answer.status in ok:
        return answer.json() if answer.content else None
    body = answer.json()
    code = STATUS_CODES.get(answer.status, "error")
    if isinstance(body, dict) and isinstance(body.get("error"), dict):  # a session that did not open
        raise Refused(str(body["error"].get("code") or code), str(body["error"].get("message") or ""))
    if isinstance(body, dict) and "detail" in body:
        raise Refused(str(body.get("code") or code), str(body["detail"]))
    if isinstance(body, dict):  # DRF's field errors: {"field": ["message", …]}
        raise Refused(code, "; ".join(f"{name}: {flat(problems)}" for name, problems in body.items()))
    raise Refused(code, f"the API answered {answer.status}")


def flat(problems) -> str:
    return " ".join(map(str, problems)) if isinstance(problems, list) else str(problems)


def input_files(files: list[dict] | None) -> list[dict]:
    """The tools take a file's text or its base64; the API takes base64."""
    encoded = []
    for entry in files or []:
        encoded.append({"path": entry["path"], "content_b64": entry["content_b64"] if "content_b64" in entry
                        else base64.b64encode(entry.get("content", "").encode()).decode()})
    return encoded


def file_bytes(arguments: dict) -> bytes:
    if "content_b64" in arguments:
        try:
            return base64.b64decode(arguments["content_b64"], validate=True)
        except (binascii.Error, ValueError):
            raise Refused("invalid", "content_b64: must be base64") from None
    return arguments.get("content", "").encode()


def given(arguments: dict, *names: str) -> dict:
    return {name: arguments[name] for name in names if name in arguments}


def session_path(arguments: dict, tail: str = "") -> str:
    return f"/api/v1/sessions/{quote(arguments['session_id'], safe='')}{tail}"


# The tools


async def run_code(arguments: dict, rest: Rest, progress: Progress | None) -> Outcome:
    body = {**given(arguments, "language", "code", "arguments", "timeout", "memory_mb", "network"),
            "files": input_files(arguments.get("files")), "wait": False}
    execution = checked(await rest.request("POST", "/api/v1/executions", body), 200, 202)
    return await finished(execution, rest, progress)


async def open_session(arguments: dict, rest: Rest, progress: Progress | None) -> Outcome:
    body = {**given(arguments, "language", "idle_timeout", "max_lifetime", "memory_mb", "network"),
            "files": input_files(arguments.get("files"))}
    session = checked(await rest.request("POST", "/api/v1/sessions", body), 201, 202)
    state = "is open" if session["status"] == "active" else f"is {session['status']} (still starting: try again soon)"
    return Outcome([text(f"session {session['id']} ({session['language']}) {state}; it ends after "
                         f"{session['idle_timeout']:g} s without a request, or at {session.get('expires_at')}")],
                   {"session": session})


async def run_cell(arguments: dict, rest: Rest, progress: Progress | None) -> Outcome:
    body = {**given(arguments, "code", "arguments", "timeout"), "wait": False}
    cell = checked(await rest.request("POST", session_path(arguments, "/executions"), body), 200, 202)
    return await finished(cell, rest, progress)


async def upload_file(arguments: dict, rest: Rest, progress: Progress | None) -> Outcome:
    answer = checked(await rest.request("PUT", session_path(arguments, f"/files/{quote(arguments['path'])}"),
                                        body=file_bytes(arguments)), 201)
    return Outcome([text(f"wrote {answer['path']} ({answer['size']} bytes)")], answer)


async def download_file(arguments: dict, rest: Rest, progress: Progress | None) -> Outcome:
    path = session_path(arguments, f"/files/{quote(arguments['path'])}")
    answer = await rest.request("GET", path)
    if answer.status != 200:
        checked(answer, 200)
    mime_type = mimetypes.guess_type(arguments["path"])[0] or "application/octet-stream"
    block = file_block(rest.base_url + path, arguments["path"], mime_type, answer.content)
    return Outcome([block], {"path": arguments["path"], "size": len(answer.content), "mime_type": mime_type})


async def list_files(arguments: dict, rest: Rest, progress: Progress | None) -> Outcome:
    listing = checked(await rest.request("GET", session_path(arguments, "/files")), 200)
    lines = [f"{entry['path']}\t{entry['size']} bytes" for entry in listing["files"]] or ["(no files)"]
    if listing.get("truncated"):
        lines.append("(more files not listed)")
    return Outcome([text("\n".join(lines))], listing)


async def end_session(arguments: dict, rest: Rest, progress: Progress | None) -> Outcome:
    checked(await rest.request("DELETE", session_path(arguments)), 204)
    return Outcome([text(f"session {arguments['session_id']} ended")], {"ended": True})


async def get_execution(arguments: dict, rest: Rest, progress: Progress | None) -> Outcome:
    path = f"/api/v1/executions/{quote(arguments['execution_id'], safe='')}"
    return rendered(checked(await rest.request("GET", path), 200))


HANDLERS = {"run_code": run_code, "open_session": open_session, "run_cell": run_cell, "upload_file": upload_file,
            "download_file": download_file, "list_files": list_files, "end_session": end_session,
            "get_execution": get_execution}


# Waiting for a run, and what it gives back


async def finished(execution: dict, rest: Rest, progress: Progress | None) -> Outcome:
    """Follow the run's events to its end, passing its output on as it comes; then render the final run."""
    if execution["status"] not in TERMINAL:
        async for kind, data in rest.events(f"/api/v1/executions/{execution['id']}/events"):
            if kind in ("stdout", "stderr") and progress is not None:
                await progress(f"{kind}: {data.get('text', '')}")
            elif kind == "execution":
                execution = data
                break
        else:  # the stream ended first (its cap): what the run is now
            execution = checked(await rest.request("GET", f"/api/v1/executions/{execution['id']}"), 200)
    return rendered(execution)


def rendered(execution: dict) -> Outcome:
    over = execution["status"] in TERMINAL
    head = f"execution {execution['id']}: {execution['status']}"
    if execution.get("exit_code") is not None:
        head += f" (exit code {execution['exit_code']}"
        head += f", {execution['execution_time']:.3f} s)" if execution.get("execution_time") is not None else ")"
    if execution.get("error"):
        head += f"\nerror {execution['error']['code']}: {execution['error']['message']}"
    if not over:
        head += "\nstill running: call get_execution with this id later"
    blocks = [text(head)]
    for stream in ("stdout", "stderr"):
        if execution.get(stream):
            cut = " (truncated at the output limit)" if (execution.get("truncated") or {}).get(stream) else ""
            blocks.append(text(f"{stream}{cut}:\n{execution[stream]}"))
    result = execution.get("result") or {}
    if result.get("present"):
        blocks.append(text(f"result: {json.dumps(result.get('value'), ensure_ascii=False)}"))
    for artifact in execution.get("artifacts") or []:
        blocks.append(artifact_block(artifact))
    summary = {name: execution.get(name) for name in ("id", "status", "exit_code", "result", "error",
                                                      "execution_time", "truncated", "session")}
    summary["artifacts"] = [{name: artifact.get(name) for name in ("name", "mime_type", "size", "url")}
                            for artifact in execution.get("artifacts") or []]
    return Outcome(blocks, summary, is_error=over and execution["status"] != "succeeded")


def artifact_block(artifact: dict) -> dict:
    mime_type = artifact.get("mime_type") or "application/octet-stream"
    if artifact.get("content_b64") is None:  # larger than the answer inlines: a link to its download
        return {"type": "resource_link", "uri": artifact["url"], "name": artifact["name"], "mimeType": mime_type,
                "size": artifact.get("size", 0)}
    return file_block(artifact["url"], artifact["name"], mime_type, base64.b64decode(artifact["content_b64"]))


def file_block(uri: str, name: str, mime_type: str, content: bytes) -> dict:
    """An image as image content; text as an embedded text resource; other bytes as an embedded blob."""
    if mime_type.startswith("image/") and mime_type != "image/svg+xml":
        return {"type": "image", "data": base64.b64encode(content).decode(), "mimeType": mime_type}
    try:
        decoded = content.decode("utf-8")
    except UnicodeDecodeError:
        return {"type": "resource", "resource": {"uri": uri, "mimeType": mime_type,
                                                 "blob": base64.b64encode(content).decode()}}
    return {"type": "resource", "resource": {"uri": uri, "mimeType": mime_type, "text": decoded}}


def text(value: str) -> dict:
    return {"type": "text", "text": value}

"""A small Python client for the sandboxctl API.

    from sandboxctl.client import execute_code
    result = execute_code("def main(x):\\n    return x * 2", arguments={"x": 21},
                          base_url="http://localhost:8000", token="sbx_…")
    result.metadata["result"]  # {"present": True, "value": 42}

    from sandboxctl.client import Session
    with Session("python", base_url="http://localhost:8000", token="sbx_…") as session:
        session.upload("sales.csv", open("sales.csv", "rb").read())
        session.run("import pandas as pd\ndf = pd.read_csv('sales.csv')")
        session.run("def main():\n    return float(df.amount.sum())").value

    from sandboxctl.client import stream
    for event, data in stream(run_id, base_url=…, token=…):   # a run's output while it runs
        print(event, data)          # status {...}, stdout {"text": …}, …, then execution {the final run}

    from sandboxctl.client import Tools
    tools = Tools(base_url=…, token=…)
    tools.definitions("openai")     # or "anthropic": function definitions for a model
    tools.call("run_code", {"language": "python", "code": "print(6 * 7)"}).text
"""

import base64
import itertools
import json
import os
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from urllib.parse import quote, urlencode

import requests


@dataclass
class RunResult:
    stdout: str
    stderr: str
    exit_code: int | None
    execution_time: float | None
    metadata: dict = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return self.metadata.get("status") == "succeeded"

    @property
    def value(self):
        """What main() returned (None when it returned nothing or there was no main)."""
        return (self.metadata.get("result") or {}).get("value")


class SandboxctlError(Exception):
    """The API refused the request (bad input, auth) or could not be reached."""

    def __init__(self, message: str, status_code: int | None = None, body: dict | None = None) -> None:
        super().__init__(message)
        self.status_code = status_code
        self.body = body or {}


def execute_code(
    code: str,
    language: str = "python",
    timeout: float = 30,
    arguments: dict | None = None,
    base_url: str | None = None,
    token: str | None = None,
    memory_mb: int | None = None,
    files: dict[str, bytes] | None = None,
    network: list[str] | None = None,
) -> RunResult:
    """Run `code` (calling its `main(**arguments)`) and wait for the result. `files` ({path: bytes}) are put
    into the run's working folder first; `network` lists the hosts it may reach (within the account's ceiling)."""
    base_url, token = _where(base_url, token)
    body = {"language": language, "code": code, "arguments": arguments or {}, "timeout": timeout, "wait": True,
            "files": _encoded(files)}
    if memory_mb is not None:
        body["memory_mb"] = memory_mb
    if network is not None:
        body["network"] = {"allow": list(network)}
    response = _request("POST", base_url, "/api/v1/executions", token, timeout + 120, json=body)
    return _run_result(response)


def _run_result(response: requests.Response) -> RunResult:
    payload = _json(response)
    if response.status_code >= 400 and response.status_code != 503:
        raise SandboxctlError(f"sandboxctl refused the request: {payload}", response.status_code, payload)
    metadata = {key: value for key, value in payload.items() if key not in ("stdout", "stderr", "exit_code")}
    return RunResult(
        stdout=payload.get("stdout", ""),
        stderr=payload.get("stderr", ""),
        exit_code=payload.get("exit_code"),
        execution_time=payload.get("execution_time"),
        metadata=metadata,
    )


class Session:
    """A sandbox that keeps its state between cells, and its files: a context manager that opens the session
    and deletes it (with its sandbox and files) at the end."""

    def __init__(self, language: str = "python", base_url: str | None = None, token: str | None = None,
                 idle_timeout: float | None = None, max_lifetime: float | None = None, memory_mb: int | None = None,
                 files: dict[str, bytes] | None = None, network: list[str] | None = None) -> None:
        self.base_url, self.token = _where(base_url, token)
        self.request = {"language": language, "idle_timeout": idle_timeout, "max_lifetime": max_lifetime,
                        "memory_mb": memory_mb, "files": _encoded(files),
                        "network": {"allow": list(network)} if network is not None else None}
        self.id: str | None = None
        self.info: dict = {}

    def __enter__(self) -> "Session":
        return self.open()

    def __exit__(self, *exc_info) -> None:
        self.close()

    def open(self) -> "Session":
        body = {key: value for key, value in self.request.items() if value is not None}
        self.info = self._checked(self._call("POST", "/api/v1/sessions", 180, json=body), expected=(201,))
        self.id = self.info["id"]
        return self

    def run(self, code: str, arguments: dict | None = None, timeout: float = 30) -> RunResult:
        """One cell: module-level state stays for the next; `main(**arguments)`, if the cell defines it, is
        called and its value is `RunResult.value`."""
        body = {"code": code, "arguments": arguments or {}, "timeout": timeout}
        return _run_result(self._call("POST", f"{self._path()}/executions", timeout + 120, json=body))

    def allow(self, network: list[str]) -> dict:
        """Change the hosts this session's next cells may reach (within the account's ceiling; [] for none)."""
        self.info = self._checked(self._call("PATCH", self._path(), 60, json={"network": {"allow": list(network)}}))
        return self.info

    def upload(self, path: str, data: bytes) -> dict:
        return self._checked(self._call("PUT", self._file(path), 300, data=data), expected=(201,))

    def download(self, path: str) -> bytes:
        response = self._call("GET", self._file(path), 300)
        if response.status_code != 200:
            self._checked(response, expected=(200,))
        return response.content

    def files(self) -> list[dict]:
        """Every file of the session's working folder, fetched a page at a time."""
        found, after = [], ""
        while True:
            page = self._checked(self._call("GET", f"{self._path()}/files?{urlencode({'after': after})}", 120))
            found += page["files"]
            if not page.get("next"):
                return found
            after = page["next"]

    def delete(self, path: str) -> None:
        response = self._call("DELETE", self._file(path), 120)
        if response.status_code != 204:
            self._checked(response, expected=(204,))

    def close(self) -> None:
        if self.id is not None:
            self._call("DELETE", self._path(), 60)
            self.id = None

    def _path(self) -> str:
        if self.id is None:
            raise SandboxctlError("the session is not open")
        return f"/api/v1/sessions/{self.id}"

    def _file(self, path: str) -> str:
        return f"{self._path()}/files/{quote(path)}"

    def _call(self, method: str, path: str, timeout: float, **kwargs) -> requests.Response:
        return _request(method, self.base_url, path, self.token, timeout, **kwargs)

    @staticmethod
    def _checked(response: requests.Response, expected: tuple[int, ...] = (200,)) -> dict:
        payload = _json(response)
        if response.status_code not in expected:
            raise SandboxctlError(f"sandboxctl refused the request: {payload}", response.status_code, payload)
        return payload


RESUME_TRIES = 5


def stream(execution_id: str, base_url: str | None = None, token: str | None = None,
           last_event_id: str | None = None) -> Iterator[tuple[str, dict]]:
    """A run's events while it runs (GET /api/v1/executions/{id}/events): ("status", {status}), ("stdout" |
    "stderr", {text}) as the output is written, and last ("execution", {the final run}). A dropped connection is
    resumed where it stopped (Last-Event-ID)."""
    base_url, token = _where(base_url, token)
    tries = 0
    while True:
        headers = {"Accept": "text/event-stream"}
        if last_event_id:
            headers["Last-Event-ID"] = last_event_id
        try:
            response = requests.get(f"{base_url}/api/v1/executions/{execution_id}/events", stream=True,
                                    headers={"Authorization": f"Bearer {token}", **headers}, timeout=(30, 60))
            if response.status_code != 200:
                payload = _json(response)
                raise SandboxctlError(f"sandboxctl refused the request: {payload}", response.status_code, payload)
            for event_id, event, data in _events(response):
                last_event_id = event_id or last_event_id
                yield event, data
                if event == "execution":
                    return
        except requests.RequestException as exc:
            tries += 1
            if tries > RESUME_TRIES:
                raise SandboxctlError(f"lost the event stream from {base_url}: {exc}") from exc
            time.sleep(min(2.0, 0.2 * tries))
        # The stream ended without the final event (the server's cap, a restart): resume after the last id.


def _events(response: requests.Response) -> Iterator[tuple[str | None, str, dict]]:
    event_id, event, data = None, "message", []
    for line in response.iter_lines(decode_unicode=True, chunk_size=None):
        if line == "":
            if data:
                yield event_id, event, json.loads("\n".join(data))
            event_id, event, data = None, "message", []
        elif not line.startswith(":"):
            name, _, value = line.partition(":")
            value = value[1:] if value.startswith(" ") else value
            if name == "id":
                event_id = value
            elif name == "event":
                event = value
            elif name == "data":
                data.append(value)


@dataclass
class ToolResult:
    """A tool's answer: MCP content blocks (text, image, resource, resource_link), `structured` data, and whether
    it failed (with the failure's code and message in `structured["error"]`)."""

    content: list[dict]
    structured: dict | None = None
    is_error: bool = False

    @property
    def text(self) -> str:
        """The answer as one text, for a model that takes tool results as text (OpenAI's tool messages)."""
        return "\n".join(_as_text(block) for block in self.content)

    def tool_result(self, tool_use_id: str) -> dict:
        """The answer as an Anthropic `tool_result` block for the `tool_use` with this id."""
        return {"type": "tool_result", "tool_use_id": tool_use_id, "content": self.anthropic(),
                "is_error": self.is_error}

    def anthropic(self) -> list[dict]:
        """The answer as Anthropic tool_result content: text blocks, and images as image blocks."""
        blocks = []
        for block in self.content:
            if block.get("type") == "image":
                blocks.append({"type": "image", "source": {"type": "base64", "media_type": block["mimeType"],
                                                           "data": block["data"]}})
            else:
                blocks.append({"type": "text", "text": _as_text(block)})
        return blocks


def _as_text(block: dict) -> str:
    kind = block.get("type")
    if kind == "text":
        return block["text"]
    if kind == "image":
        return f"[an image, {block.get('mimeType')}, {len(block.get('data', '')) * 3 // 4} bytes]"
    if kind == "resource":
        resource = block.get("resource", {})
        if "text" in resource:
            return f"file {resource.get('uri')}:\n{resource['text']}"
        return f"[a file, {resource.get('mimeType')}: {resource.get('uri')}]"
    if kind == "resource_link":
        return f"[a file, {block.get('mimeType')}, {block.get('size')} bytes: {block.get('uri')}]"
    return json.dumps(block)


class Tools:
    """sandboxctl's agent tools for a model that calls functions: `definitions("openai" | "anthropic")` to give
    the model, `call(name, arguments)` to run what it asked for (through the server's /mcp, as an MCP client would).
    """

    PROTOCOL_VERSION = "2025-11-25"

    def __init__(self, base_url: str | None = None, token: str | None = None, timeout: float = 900) -> None:
        self.base_url, self.token = _where(base_url, token)
        self.timeout = timeout
        self._ids = itertools.count(1)

    def definitions(self, style: str = "openai") -> list[dict]:
        response = _request("GET", self.base_url, "/api/v1/tools", self.token, 60)
        return Session._checked(response)[style]

    def call(self, name: str, arguments: dict | None = None) -> ToolResult:
        message = {"jsonrpc": "2.0", "id": next(self._ids), "method": "tools/call",
                   "params": {"name": name, "arguments": arguments or {}}}
        headers = {"Accept": "application/json, text/event-stream", "MCP-Protocol-Version": self.PROTOCOL_VERSION}
        response = _request("POST", self.base_url, "/mcp", self.token, self.timeout, json=message, headers=headers,
                            stream=True)
        if response.status_code != 200:
            payload = _json(response)
            raise SandboxctlError(f"sandboxctl refused the request: {payload}", response.status_code, payload)
        for answer in _mcp_messages(response):
            if answer.get("id") != message["id"]:
                continue  # a progress notification
            if "error" in answer:
                raise SandboxctlError(f"the tool call failed: {answer['error']}", 200, answer)
            result = answer["result"]
            return ToolResult(result.get("content", []), result.get("structuredContent"), result.get("isError", False))
        raise SandboxctlError("sandboxctl's /mcp answered no result")


def _mcp_messages(response: requests.Response) -> Iterator[dict]:
    if response.headers.get("content-type", "").startswith("application/json"):
        yield response.json()
        return
    for _, _, data in _events(response):
        yield data


def _where(base_url: str | None, token: str | None) -> tuple[str, str]:
    base_url = (base_url or os.environ.get("SANDBOXCTL_URL", "http://localhost:8000")).rstrip("/")
    return base_url, token or os.environ.get("SANDBOXCTL_TOKEN", "")


def _encoded(files: dict[str, bytes] | None) -> list[dict]:
    return [{"path": path, "content_b64": base64.b64encode(content).decode()}
            for path, content in (files or {}).items()]


def _request(method: str, base_url: str, path: str, token: str, timeout: float, headers: dict | None = None,
             **kwargs) -> requests.Response:
    try:
        return requests.request(method, f"{base_url}{path}", headers={"Authorization": f"Bearer {token}",
                                                                       **(headers or {})},
                                timeout=timeout, **kwargs)
    except requests.RequestException as exc:
        raise SandboxctlError(f"cannot reach sandboxctl at {base_url}: {exc}") from exc


def _json(response: requests.Response) -> dict:
    try:
        return response.json()
    except ValueError:
        return {"detail": response.text[:500]}

"""The REST API called in-process: a tool call's requests go through the same ASGI application as an HTTP client's
(sandboxctl/asgi.py), with the caller's own credentials, Host and address, but never leave the process.

What waits does so as the API's waits do (coroutines, woken by the database's notices; events read from the
live-output stream), so a tool call that waits for a run holds no thread either.
"""

import asyncio
import json
from collections.abc import AsyncIterator
from urllib.parse import unquote

from sandboxctl.agents.calls import Answer

# Of the caller's headers, the ones its in-process requests carry: who it is and which site it asked for.
FORWARDED = (b"authorization", b"x-sandbox-token", b"host", b"user-agent")


class InProcessRest:
    """`calls.Rest` over an ASGI application, as the HTTP request `scope` that made the tool call."""

    def __init__(self, app, scope: dict) -> None:
        self.app = app
        self.headers = [(name, value) for name, value in scope.get("headers", []) if name in FORWARDED]
        self.origin = {name: scope[name] for name in ("scheme", "server", "client", "http_version") if name in scope}
        host = dict(self.headers).get(b"host", b"localhost").decode("latin-1")
        self.base_url = f"{scope.get('scheme', 'http')}://{host}"

    def _scope(self, method: str, path: str, body: bytes, content_type: bytes, accept: bytes) -> dict:
        headers = [*self.headers, (b"content-type", content_type), (b"content-length", str(len(body)).encode()),
                   (b"accept", accept)]
        raw, _, query = path.partition("?")
        return {"type": "http", "asgi": {"version": "3.0", "spec_version": "2.3"}, "http_version": "1.1",
                **self.origin, "method": method, "path": unquote(raw), "raw_path": raw.encode(),
                "query_string": query.encode(), "root_path": "", "headers": headers}

    async def request(self, method: str, path: str, json_body=None, body: bytes | None = None) -> Answer:
        if json_body is not None:
            content, content_type = json.dumps(json_body).encode(), b"application/json"
        else:
            content, content_type = body or b"", b"application/octet-stream"
        scope = self._scope(method, path, content, content_type, b"application/json")
        status, headers, chunks = 500, {}, []
        gone = asyncio.Event()

        async def send(message: dict) -> None:
            nonlocal status, headers
            if message["type"] == "http.response.start":
                status = message["status"]
                headers = {name.lower(): value for name, value in message.get("headers", [])}
            elif message["type"] == "http.response.body":
                chunks.append(message.get("body", b""))

        try:
            await self.app(scope, self._receiver(content, gone), send)
        finally:
            gone.set()
        return Answer(status, b"".join(chunks), headers.get(b"content-type", b"").decode("latin-1"))

    async def events(self, path: str) -> AsyncIterator[tuple[str, dict]]:
        """The (event, data) of a text/event-stream, as they are sent, until it ends or the caller stops."""
        scope = self._scope("GET", path, b"", b"application/json", b"text/event-stream")
        pieces: asyncio.Queue[bytes | None] = asyncio.Queue()
        gone = asyncio.Event()
        status = 0

        async def send(message: dict) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            elif message["type"] == "http.response.body":
                pieces.put_nowait(message.get("body", b""))
                if not message.get("more_body"):
                    pieces.put_nowait(None)

        async def serve() -> None:
            try:
                await self.app(scope, self._receiver(b"", gone), send)
            finally:
                pieces.put_nowait(None)

        task = asyncio.ensure_future(serve())
        try:
            buffer = b""
            while (piece := await pieces.get()) is not None:
                if status != 200:
                    continue  # a refusal (404): no events; the caller reads the run as it is
                buffer += piece
                while b"\n\n" in buffer:
                    block, buffer = buffer.split(b"\n\n", 1)
                    parsed = parse_event(block.decode("utf-8", "replace"))
                    if parsed is not None:
                        yield parsed
        finally:
            gone.set()  # the server side sees a disconnect and stops streaming
            if not task.done():
                task.cancel()
            await asyncio.gather(task, return_exceptions=True)

    @staticmethod
    def _receiver(body: bytes, gone: asyncio.Event):
        sent = False

        async def receive() -> dict:
            nonlocal sent
            if not sent:
                sent = True
                return {"type": "http.request", "body": body, "more_body": False}
            await gone.wait()  # Django listens for a disconnect while it streams
            return {"type": "http.disconnect"}

        return receive


def parse_event(block: str) -> tuple[str, dict] | None:
    kind, data = "message", []
    for line in block.split("\n"):
        if line.startswith(":"):
            continue
        name, _, value = line.partition(":")
        value = value[1:] if value.startswith(" ") else value
        if name == "event":
            kind = value
        elif name == "data":
            data.append(value)
    if not data:
        return None
    try:
        return kind, json.loads("\n".join(data))
    except ValueError:
        return None

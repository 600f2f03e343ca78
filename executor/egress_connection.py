"""One connection through the egress proxy (egress_proxy.py): one proxy request, judged on its own, then a
tunnel or one forwarded exchange.

- `CONNECT host:port` opens a tunnel whose first bytes must be a TLS ClientHello whose server name is the host
  the CONNECT named (tls_hello.py) — no domain fronting by SNI — or one plain HTTP request whose Host header
  names that host (undici's proxy agent tunnels http:// URLs too); anything else is refused;
- `GET http://host:port/path` (absolute form) is forwarded as one request whose Host header must name the
  URL's host, with `Connection: close`; the answer comes back as it is (redirects are the client's to follow,
  through the proxy again).
The host must be allowed by the run's allowlist and every address it resolves to must pass the address rules
(the channel decides both); the connection goes to an address that was checked. h11 frames every message
both ways, so nothing can be smuggled behind a request. Bytes are counted both ways against the run's cap;
no byte either way for `idle_timeout` ends a connection.
"""

import asyncio
import contextlib
import logging
import time
from http import HTTPStatus
from typing import Protocol
from urllib.parse import urlsplit

import h11

from executor import tls_hello
from executor.addresses import Address
from executor.egress import EntryError, literal_address, normal_host

log = logging.getLogger(__name__)

CHUNK = 64 * 1024
HEAD_MAX = 16 * 1024
# Hop-by-hop headers are the proxy's own business (RFC 9110 7.6.1); message framing (Content-Length,
# Transfer-Encoding) is h11's, which re-frames every message it forwards.
HOP_BY_HOP = {b"connection", b"keep-alive", b"proxy-connection", b"proxy-authorization", b"proxy-authenticate",
              b"te", b"trailer", b"upgrade"}


class Refusal(Exception):
    """A connection the proxy will not make: `reason` is what the run's record and stderr say."""

    def __init__(self, reason: str, status: int = 403) -> None:
        super().__init__(reason)
        self.reason = reason
        self.status = status


class Run(Protocol):
    """What a connection asks of the run it belongs to (egress_proxy.Channel)."""

    settings: object
    label: str
    bytes: int

    def record(self, host: str, port: int) -> dict: ...

    def settle(self, entry: dict) -> None: ...

    def take_connection(self) -> None: ...

    async def destination(self, host: str, port: int) -> list[Address]: ...


class Connection:
    """One connection from the sandbox's relay: one proxy request, then a tunnel or one forwarded exchange."""

    def __init__(self, channel: Run, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.channel = channel
        self.settings = channel.settings
        self.reader = reader
        self.writer = writer
        self.http = h11.Connection(h11.SERVER, max_incomplete_event_size=HEAD_MAX)
        self.entry: dict | None = None
        self.upstream: tuple[asyncio.StreamReader, asyncio.StreamWriter] | None = None
        self.last_byte = time.monotonic()

    async def handle(self) -> None:
        try:
            async with asyncio.timeout(self.settings.connection_max_time):
                request = await asyncio.wait_for(self._request(), self.settings.head_timeout)
                if request is None:
                    return
                if request.method == b"CONNECT":
                    await self._tunnel(request)
                else:
                    await self._forward(request)
        except Refusal as exc:
            await self._refuse(exc)
        except TimeoutError:
            if self.entry is not None and not self.entry["reason"]:
                self.entry["reason"] = "timed out"
        except (ConnectionError, h11.ProtocolError, tls_hello.NotTLS, tls_hello.BadHello) as exc:
            if self.entry is not None and not self.entry["reason"]:
                self.entry["reason"] = f"ended: {exc}"[:200]
        finally:
            if self.upstream is not None:
                self.upstream[1].close()
            if self.entry is not None:
                self.channel.settle(self.entry)

    async def _request(self) -> h11.Request | None:
        while True:
            event = self.http.next_event()
            if event is h11.NEED_DATA:
                data = await self.reader.read(CHUNK)
                if not data:
                    return None
                self.http.receive_data(data)
                continue
            if isinstance(event, h11.Request):
                return event
            return None

    # CONNECT: a TLS tunnel to the host it names.

    async def _tunnel(self, request: h11.Request) -> None:
        host, port = self._authority(request.target.decode("latin-1"))
        await self._open(host, port)
        self.writer.write(self.http.send(h11.Response(status_code=200, headers=[],
                                                      reason=b"Connection established")))
        first = bytes(self.http.trailing_data[0])
        while not first:
            first = await asyncio.wait_for(self.reader.read(CHUNK), self.settings.head_timeout)
            if not first:
                return
        if first[0] != tls_hello.HANDSHAKE:
            # Plain HTTP through a tunnel (undici's proxy agent tunnels http:// URLs too): one request, judged
            # as a proxy request is, with its Host header held to the host the CONNECT named.
            self.http = h11.Connection(h11.SERVER, max_incomplete_event_size=HEAD_MAX)
            self.http.receive_data(first)
            inner = await asyncio.wait_for(self._request(), self.settings.head_timeout)
            if inner is None or not inner.target.startswith(b"/"):
                raise Refusal("a CONNECT tunnel carries TLS or HTTP requests to its own host only")
            self._check_host_header(inner, host, port, "the CONNECT host")
            await self._exchange(inner, host, port, inner.target.decode("latin-1"))
            return
        hello = await asyncio.wait_for(self._client_hello(first), self.settings.head_timeout)
        self._check_server_name(host, hello)
        await self._relay(hello)

    async def _client_hello(self, data: bytes) -> bytes:
        """The tunnel's first bytes up to the whole ClientHello (NotTLS / BadHello when they are not one)."""
        buffer = bytearray(data)
        while True:
            if buffer and buffer[0] != tls_hello.HANDSHAKE:
                raise Refusal("a CONNECT tunnel carries TLS only (send plain HTTP as a proxy request)")
            try:
                if tls_hello.handshake_message(bytes(buffer)) is not None:
                    return bytes(buffer)
            except tls_hello.NotTLS:
                raise Refusal("a CONNECT tunnel carries TLS only (send plain HTTP as a proxy request)") from None
            except tls_hello.BadHello as exc:
                raise Refusal(f"the TLS ClientHello cannot be judged: {exc}") from None
            if len(buffer) > tls_hello.MAX_HELLO + 1024:
                raise Refusal("the TLS ClientHello cannot be judged: too large")
            chunk = await self.reader.read(CHUNK)
            if not chunk:
                raise ConnectionError("the client closed the tunnel before its ClientHello")
            buffer += chunk

    def _check_server_name(self, host: str, data: bytes) -> None:
        try:
            name = tls_hello.parse_hello(tls_hello.handshake_message(data)).server_name
        except tls_hello.BadHello as exc:
            raise Refusal(f"the TLS ClientHello cannot be judged: {exc}") from None
        if name is None:
            if literal_address(host) is None:
                raise Refusal(f"the TLS ClientHello names no server; the CONNECT named {host}")
            return
        try:
            named = normal_host(name)
        except EntryError:
            named = name
        if named != host:
            raise Refusal(f"the TLS server name ({name[:100]}) is not the CONNECT host")

    # Absolute-form HTTP: one request, forwarded.

    async def _forward(self, request: h11.Request) -> None:
        target = request.target.decode("latin-1")
        if target.startswith("/"):
            raise Refusal("this is a proxy: send an absolute URL (http://host/path) or CONNECT", status=400)
        parts = urlsplit(target)
        if parts.scheme != "http" or not parts.hostname:
            raise Refusal("only http:// URLs are forwarded; https goes through CONNECT", status=400)
        host, port = self._authority(parts.netloc.rsplit("@", 1)[-1], default_port=80)
        self.entry = self.channel.record(host, port)
        self._check_host_header(request, host, port, "the URL's host")
        await self._open(host, port)
        await self._exchange(request, host, port, (parts.path or "/") + (f"?{parts.query}" if parts.query else ""))

    def _check_host_header(self, request: h11.Request, host: str, port: int, what: str) -> None:
        """Every Host header must name `host` (and `port`, when it names one): no other site of the same
        server is reached through a connection the allowlist opened for this one (virtual-host fronting)."""
        for name, value in request.headers:
            if name != b"host":
                continue
            given = value.decode("latin-1")
            named, named_port = _split_authority(given.strip())
            try:
                same = normal_host(named) == host and (not named_port or named_port == str(port))
            except EntryError:
                same = False
            if not same:
                raise Refusal(f"the Host header ({given[:100]}) is not {what}")

    async def _exchange(self, request: h11.Request, host: str, port: int, path: str) -> None:
        """Forward one request to the open upstream connection, and its answer back, then close."""
        upstream = h11.Connection(h11.CLIENT)
        authority = host if port == 80 else f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
        headers = [(name, value) for name, value in request.headers if name.lower() not in HOP_BY_HOP | {b"host"}]
        headers = [(b"host", authority.encode("ascii")), *headers, (b"connection", b"close")]
        await self._send_up(upstream.send(h11.Request(method=request.method, target=path.encode("latin-1"),
                                                      headers=headers)))
        await self._copy_request_body(upstream)
        await self._copy_response(upstream)

    async def _copy_request_body(self, upstream: h11.Connection) -> None:
        while True:
            event = self.http.next_event()
            if event is h11.NEED_DATA:
                data = await self._read_from(self.reader)
                if not data:
                    raise ConnectionError("the client closed before its request body ended")
                self.http.receive_data(data)
            elif isinstance(event, h11.Data):
                await self._send_up(upstream.send(event))
            elif isinstance(event, h11.EndOfMessage):
                await self._send_up(upstream.send(event))
                return

    async def _copy_response(self, upstream: h11.Connection) -> None:
        reader = self.upstream[0]
        while True:
            event = upstream.next_event()
            if event is h11.NEED_DATA:
                upstream.receive_data(await self._read_from(reader))  # b"" at its end: h11 judges the framing
                continue
            if isinstance(event, h11.InformationalResponse | h11.Response):
                headers = [(name, value) for name, value in event.headers if name.lower() not in HOP_BY_HOP]
                if isinstance(event, h11.Response):
                    headers.append((b"connection", b"close"))
                    event = h11.Response(status_code=event.status_code, headers=headers, reason=event.reason)
                else:
                    event = h11.InformationalResponse(status_code=event.status_code, headers=headers,
                                                      reason=event.reason)
                await self._send_down(self.http.send(event))
            elif isinstance(event, h11.Data):
                await self._send_down(self.http.send(event))
            elif isinstance(event, h11.EndOfMessage | h11.ConnectionClosed):
                await self._send_down(self.http.send(h11.EndOfMessage()) or b"")
                return

    # Shared: the decision, the upstream connection, the byte counts.

    def _authority(self, text: str, default_port: int | None = None) -> tuple[str, int]:
        """(host, port) of `host:port`, `[v6]:port` or, with a default port, a bare host."""
        host, port = _split_authority(text.strip())
        if not port:
            if default_port is None:
                raise Refusal(f"{text[:100]!r} names no port", status=400)
            port = str(default_port)
        if not port.isdigit() or not 0 < int(port) < 65536:
            raise Refusal(f"{text[:100]!r} has no valid port", status=400)
        try:
            return normal_host(host), int(port)
        except EntryError:
            raise Refusal(f"{host[:100]!r} is not a host name", status=400) from None

    async def _open(self, host: str, port: int) -> None:
        self.entry = self.entry or self.channel.record(host, port)
        # Every attempt counts, refused or not: a run cannot keep the proxy (and its resolver) busy for long.
        self.channel.take_connection()
        addresses_found = await self.channel.destination(host, port)
        failures = []
        for address in addresses_found:
            try:
                self.upstream = await asyncio.wait_for(asyncio.open_connection(str(address), port, limit=CHUNK),
                                                       self.settings.connect_timeout)
                self.entry["allowed"] = True
                return
            except (OSError, TimeoutError) as exc:
                failures.append(f"{address}: {exc.__class__.__name__}")
        raise Refusal(f"could not connect ({', '.join(failures)[:200]})", status=502)

    async def _relay(self, first: bytes) -> None:
        await self._send_up(first)
        upstream_reader, _ = self.upstream
        await _first_of(self._pump(self.reader, self._send_up), self._pump(upstream_reader, self._send_down),
                        self._watch_idle())

    async def _pump(self, source: asyncio.StreamReader, send) -> None:
        while data := await source.read(CHUNK):
            await send(data)

    async def _watch_idle(self) -> None:
        while True:
            quiet = time.monotonic() - self.last_byte
            if quiet >= self.settings.idle_timeout:
                self.entry["reason"] = f"idle for {self.settings.idle_timeout:g}s"
                return
            await asyncio.sleep(self.settings.idle_timeout - quiet)

    async def _read_from(self, reader: asyncio.StreamReader) -> bytes:
        return await asyncio.wait_for(reader.read(CHUNK), self.settings.idle_timeout)

    async def _send_up(self, data: bytes) -> None:
        self._count(data, "bytes_out")
        self.upstream[1].write(data)
        await self.upstream[1].drain()

    async def _send_down(self, data: bytes) -> None:
        self._count(data, "bytes_in")
        self.writer.write(data)
        await self.writer.drain()

    def _count(self, data: bytes, direction: str) -> None:
        self.last_byte = time.monotonic()
        self.entry[direction] += len(data)
        self.channel.bytes += len(data)
        if self.channel.bytes > self.settings.max_bytes:
            self.entry["reason"] = f"this run's byte cap ({self.settings.max_bytes} bytes) was reached"
            raise ConnectionError(self.entry["reason"])

    async def _refuse(self, refusal: Refusal) -> None:
        if self.entry is None:
            self.entry = self.channel.record("", 0)
        if not self.entry["reason"]:
            self.entry["reason"] = refusal.reason
        # 403: the policy refused it; 502: it was allowed but could not be made (no address, no answer).
        self.entry["allowed"] = refusal.status == 502
        if self.http.our_state is h11.SEND_RESPONSE:
            body = f"sandboxctl: connection to {self.entry['host']}:{self.entry['port']} refused: {refusal.reason}\n"
            response = h11.Response(status_code=refusal.status, headers=[
                (b"content-type", b"text/plain; charset=utf-8"), (b"content-length", str(len(body)).encode()),
                (b"connection", b"close")], reason=HTTPStatus(refusal.status).phrase.encode())
            with contextlib.suppress(ConnectionError, h11.LocalProtocolError):
                self.writer.write(self.http.send(response) + self.http.send(h11.Data(data=body.encode())))
                await self.writer.drain()
        log.info("egress %s: %s:%s refused: %s", self.channel.label, self.entry["host"], self.entry["port"],
                 refusal.reason)


async def _first_of(*coroutines) -> None:
    """Run them together until the first ends; cancel the rest (a tunnel ends when either side does)."""
    tasks = [asyncio.ensure_future(coroutine) for coroutine in coroutines]
    try:
        done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
        for task in done:
            task.result()
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


def _split_authority(text: str) -> tuple[str, str]:
    """(host, port text) of an authority; a bracketed IPv6 host loses its brackets."""
    if text.startswith("["):
        host, close, rest = text[1:].partition("]")
        if not close or (rest and not rest.startswith(":")):
            raise Refusal(f"{text[:100]!r} is not host:port", status=400)
        return host, rest[1:]
    if text.count(":") > 1:
        raise Refusal(f"{text[:100]!r}: an IPv6 address goes in brackets", status=400)
    host, _, port = text.partition(":")
    return host, port

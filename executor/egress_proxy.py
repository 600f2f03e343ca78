"""The egress proxy: the only way out of a sandbox, for the runs an operator lets out, to the hosts it allows.

A sandbox keeps `--network=none`. While a run (or session cell) with an allowlist is in it, the worker binds a
Unix socket in that sandbox's own channel folder (mounted read-only in it and in no other sandbox; the socket
is root's, so only the sandbox's relay can use it), and this proxy ties every connection arriving on that
socket to that run's allowlist: one sandbox cannot use another's, whatever it guesses, because it can reach
no other socket. When the run ends the socket goes, with every connection through it. Runs without an
allowlist never touch the proxy.

Each connection is one proxy request, judged on its own:
- `CONNECT host:port` opens a tunnel that must carry TLS, and the ClientHello's server name must be the host
  the CONNECT named (tls_hello.py) — no plaintext after a CONNECT, no domain fronting by SNI;
- `GET http://host:port/path` (absolute form) is forwarded as one request whose Host header must name the
  URL's host, with `Connection: close`; the answer comes back as it is (redirects are the client's to follow,
  through the proxy again).
The host must be allowed by the allowlist (egress.py); the proxy resolves it itself, every address it
resolves to must pass the address rules (addresses.py) unless it lies in SANDBOX_EGRESS_ALLOWED_NETWORKS, and
it connects to an address it checked. Per run: at most `max_connections` connections and `max_bytes` both ways;
per connection: `idle_timeout` without a byte either way and `connection_max_time` in all. Every connection is
recorded (host, port, allowed, reason, bytes each way) for the run's answer.

Why in the worker process and not a program of its own: a channel lives exactly as long as a run in one of
this worker's sandboxes, and the worker already holds both (no second process to supervise, no IPC to
authenticate; if the worker dies, its sandboxes and their channels go with it). One thread runs an asyncio
loop for every channel of the worker; HTTP framing is h11's.
"""

import asyncio
import contextlib
import logging
import os
import socket
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from http import HTTPStatus
from pathlib import Path
from urllib.parse import urlsplit

import h11

from executor import addresses, tls_hello
from executor.addresses import Address, Network
from executor.egress import SOCKET_NAME, Allowlist, EntryError, literal_address, normal_host

log = logging.getLogger(__name__)

CHUNK = 64 * 1024
HEAD_MAX = 16 * 1024
# Hop-by-hop headers are the proxy's own business (RFC 9110 7.6.1); message framing (Content-Length,
# Transfer-Encoding) is h11's, which re-frames every message it forwards.
HOP_BY_HOP = {b"connection", b"keep-alive", b"proxy-connection", b"proxy-authorization", b"proxy-authenticate",
              b"te", b"trailer", b"upgrade"}
NOT_ALLOWED = "not in this run's allowlist"


@dataclass(frozen=True)
class ProxySettings:
    allowed_networks: tuple[Network, ...] = ()  # non-global networks reachable anyway (tests, internal mirrors)
    hosts: Mapping[str, tuple[Address, ...]] = field(default_factory=dict)  # names resolved without DNS
    max_connections: int = 256  # per run
    max_bytes: int = 256 * 1024 * 1024  # per run, both ways together
    idle_timeout: float = 60.0  # per connection: no byte either way for this long ends it
    connection_max_time: float = 600.0  # per connection, in all
    connect_timeout: float = 10.0
    head_timeout: float = 10.0  # the request head, and a tunnel's ClientHello, must arrive within this
    record_max: int = 200  # connections recorded one by one per run; further ones merge into a like record


class Refusal(Exception):
    """A connection the proxy will not make: `reason` is what the run's record and stderr say."""

    def __init__(self, reason: str, status: int = 403) -> None:
        super().__init__(reason)
        self.reason = reason
        self.status = status


class EgressProxy:
    """One per worker process: a thread with an asyncio loop serving every open channel."""

    def __init__(self, settings: ProxySettings) -> None:
        self.settings = settings
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        ready = threading.Event()

        def serve() -> None:
            self._loop = asyncio.new_event_loop()
            asyncio.set_event_loop(self._loop)
            ready.set()
            self._loop.run_forever()

        self._thread = threading.Thread(target=serve, name="egress-proxy", daemon=True)
        self._thread.start()
        ready.wait()

    def stop(self) -> None:
        if self._loop is not None:
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(5)

    def open(self, folder: Path, entries: tuple[str, ...], label: str = "") -> "Channel":
        """Serve a sandbox's channel folder with this allowlist until `Channel.close()`. The socket exists and
        listens when this returns, so the run may start at once."""
        if self._loop is None:
            raise RuntimeError("the egress proxy is not running")
        path = folder / SOCKET_NAME
        path.unlink(missing_ok=True)
        listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            listener.bind(str(path))
            os.chmod(path, 0o600)  # root's: the sandbox's relay (root there) may connect, its user code may not
            listener.listen(64)
            listener.setblocking(False)
        except OSError:
            listener.close()
            raise
        channel = Channel(self, path, Allowlist(entries), label)
        future = asyncio.run_coroutine_threadsafe(channel.serve(listener), self._loop)
        future.result(timeout=10)
        return channel

    def call(self, coroutine, timeout: float = 10.0):
        return asyncio.run_coroutine_threadsafe(coroutine, self._loop).result(timeout)


class Channel:
    """One run's (or cell's) use of one sandbox's socket: its allowlist, caps and record."""

    def __init__(self, proxy: EgressProxy, path: Path, allowlist: Allowlist, label: str) -> None:
        self.proxy = proxy
        self.settings = proxy.settings
        self.path = path
        self.allowlist = allowlist
        self.label = label
        self.records: list[dict] = []
        self.connections = 0
        self.bytes = 0
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task] = set()
        self._closed = False
        self._final: list[dict] | None = None

    async def serve(self, listener: socket.socket) -> None:
        self._server = await asyncio.start_unix_server(self._accept, sock=listener, limit=CHUNK)

    def close(self) -> list[dict]:
        """Stop serving: the socket goes, open connections are cut; returns the run's record (the same list
        however often it is asked)."""
        if self._final is None:
            with contextlib.suppress(Exception):
                self.proxy.call(self._close())
            self.path.unlink(missing_ok=True)
            self._final = [dict(record) for record in self.records]
        return self._final

    async def _close(self) -> None:
        self._closed = True
        if self._server is not None:
            self._server.close()
        for task in list(self._tasks):
            task.cancel()
        if self._tasks:
            await asyncio.wait(self._tasks, timeout=5)

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        self._tasks.add(task)
        try:
            await Connection(self, reader, writer).handle()
        except asyncio.CancelledError:
            pass
        except Exception:  # noqa: BLE001 - one connection's fault never reaches the loop
            log.exception("egress %s: a connection failed", self.label)
        finally:
            self._tasks.discard(task)
            writer.close()

    # What a connection asks of its run.

    def record(self, host: str, port: int) -> dict:
        entry = {"host": host, "port": port, "allowed": False, "reason": "", "bytes_out": 0, "bytes_in": 0}
        if len(self.records) < self.settings.record_max:
            self.records.append(entry)
        return entry

    def settle(self, entry: dict) -> None:
        """A connection past the record cap adds its bytes to a like record instead of a line of its own."""
        if any(record is entry for record in self.records):
            return
        for record in self.records:
            if all(record[key] == entry[key] for key in ("host", "port", "allowed", "reason")):
                record["bytes_out"] += entry["bytes_out"]
                record["bytes_in"] += entry["bytes_in"]
                return

    def take_connection(self) -> None:
        if self._closed:
            raise Refusal("the run has ended")
        if self.connections >= self.settings.max_connections:
            raise Refusal(f"this run's connection cap ({self.settings.max_connections}) is reached")
        if self.bytes >= self.settings.max_bytes:
            raise Refusal(f"this run's byte cap ({self.settings.max_bytes} bytes) is reached")
        self.connections += 1

    async def destination(self, host: str, port: int) -> list[Address]:
        """The checked addresses of an allowed host; Refusal saying why not."""
        by_name = self.allowlist.allows_name(host, port)
        if not by_name and not self.allowlist.may_allow_by_address(port):
            raise Refusal(NOT_ALLOWED)
        found = await self._resolve(host, port)
        if not by_name and not self.allowlist.allows_addresses(found, port):
            raise Refusal(NOT_ALLOWED)
        try:
            return addresses.checked(host, found, self.settings.allowed_networks)
        except addresses.Refused as exc:
            raise Refusal(str(exc)) from None

    async def _resolve(self, host: str, port: int) -> list[Address]:
        literal = literal_address(host)
        if literal is not None:
            return [literal]
        if host in self.settings.hosts:
            return list(self.settings.hosts[host])
        try:
            return await asyncio.wait_for(
                asyncio.get_running_loop().run_in_executor(None, addresses.resolve, host, port),
                self.settings.connect_timeout)
        except (OSError, TimeoutError):
            raise Refusal(f"{host} does not resolve", status=502) from None


class Connection:
    """One connection from the sandbox's relay: one proxy request, then a tunnel or one forwarded exchange."""

    def __init__(self, channel: Channel, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
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

"""The egress proxy: the only way out of a sandbox, for the runs an operator lets out, to the hosts it allows.

A sandbox keeps `--network=none`. While a run (or session cell) with an allowlist is in it, the worker binds a
Unix socket in that sandbox's own channel folder (mounted read-only in it and in no other sandbox; the socket
is root's, so only the sandbox's relay can use it), and this proxy ties every connection arriving on that
socket to that run's allowlist: one sandbox cannot use another's, whatever it guesses, because it can reach
no other socket. When the run ends the socket goes, with every connection through it. Runs without an
allowlist never touch the proxy.

Each connection is one proxy request (egress_connection.py says what is accepted). The host must be allowed
by the run's allowlist (egress.py); the proxy resolves it itself, every address it resolves to must pass the
address rules (addresses.py) unless it lies in SANDBOX_EGRESS_ALLOWED_NETWORKS, and it connects to an address
it checked. Per run: at most `max_connections` attempts and `max_bytes` both ways; per connection:
`idle_timeout` without a byte either way and `connection_max_time` in all. Every connection is recorded (host,
port, allowed, reason, bytes each way) for the run's answer.

Why in the worker process and not a program of its own: a channel lives exactly as long as a run in one of
this worker's sandboxes, and the worker already holds both (no second process to supervise, no IPC to
authenticate; if the worker dies, its sandboxes and their channels go with it). One thread runs an asyncio
loop for every channel of the worker.
"""

import asyncio
import contextlib
import logging
import os
import socket
import threading
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from executor import addresses
from executor.addresses import Address, Network
from executor.egress import SOCKET_NAME, Allowlist, literal_address
from executor.egress_connection import CHUNK, Connection, Refusal

log = logging.getLogger(__name__)

NOT_ALLOWED = "not in this run's allowlist"


@dataclass(frozen=True)
class ProxySettings:
    allowed_networks: tuple[Network, ...] = ()  # non-global networks reachable anyway (tests, internal mirrors)
    hosts: Mapping[str, tuple[Address, ...]] = field(default_factory=dict)  # names resolved without DNS
    max_connections: int = 256  # per run: attempts, refused or not
    max_bytes: int = 256 * 1024 * 1024  # per run, both ways together
    idle_timeout: float = 60.0  # per connection: no byte either way for this long ends it
    connection_max_time: float = 600.0  # per connection, in all
    connect_timeout: float = 10.0
    head_timeout: float = 10.0  # the request head, and a tunnel's ClientHello, must arrive within this
    record_max: int = 200  # connections recorded one by one per run; further ones merge into a like record


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

"""Live output: a run's stdout/stderr as it is written, and its status changes, carried from the worker to the
web process that holds an events request (GET /api/v1/executions/{id}/events), with no database write per chunk.

One Redis stream per execution, `sandboxctl:live:<id>`, on the broker's Redis:
- the worker appends entries `{k: kind, d: data}`: kind `status` (data: the new status) or `stdout`/`stderr`
  (data: text, decoded incrementally as UTF-8, only what the run's output cap keeps — the executor hands over
  nothing past it). One thread per worker process writes for all its runs, coalescing what arrives within
  FLUSH_INTERVAL into one pipelined round trip, so a sandbox's reader never waits for Redis; the stream is
  capped (XADD MAXLEN ~) and expires LIVE_TTL after its last write. Live output is best effort: when Redis
  cannot take it, it is dropped (and logged) — the run's record still has all of it.
- each web process reads the streams its clients follow with one XREAD BLOCK loop on one connection (a client
  costs a queue, not a thread or a connection); a new stream joins the loop at once (CLIENT UNBLOCK).
Stream ids are the events' ids, so Last-Event-ID resumes with "everything after this id".

Without Redis (the fast tier's `memory://` broker) nothing is published and nothing is read: the events
endpoint then gives the status and the final execution only.
"""

import asyncio
import codecs
import logging
import threading
import time
import weakref
from collections import defaultdict
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass

from django.conf import settings

log = logging.getLogger(__name__)

KEY_PREFIX = "sandboxctl:live:"
LIVE_TTL = 600  # seconds a run's stream is kept after its last write: long enough to resume, short to forget
MAX_ENTRIES = 20_000  # per run; the output cap bounds the bytes, this the number of entries
FLUSH_INTERVAL = 0.02  # the worker writes at most this often per process (the first chunk goes at once)
FLUSH_WAIT = 2.0  # at a run's end, how long the worker waits for its last chunks to be written
READ_BLOCK_MS = 5000  # the web's XREAD blocks this long at most (a new stream wakes it at once anyway)
READ_COUNT = 500  # entries per stream per read
STREAMS = ("stdout", "stderr")


def key(execution_id) -> str:
    return f"{KEY_PREFIX}{execution_id}"


def redis_url() -> str | None:
    """The broker's Redis (the embedded one is a unix socket), or None when the broker is not Redis."""
    url = settings.CELERY_BROKER_URL
    if url.startswith(("redis://", "rediss://")):
        return url
    if url.startswith("socket://"):
        return url.replace("socket://", "unix://", 1)
    return None


@dataclass(frozen=True)
class Entry:
    id: str  # the stream id, "<ms>-<seq>"
    kind: str  # status | stdout | stderr
    data: str


def order(stream_id: str) -> tuple[int, int]:
    """A stream id as a sortable pair; anything unreadable sorts first (a resume from the start)."""
    try:
        ms, _, seq = stream_id.partition("-")
        return int(ms), int(seq or 0)
    except ValueError:
        return 0, 0


def valid_id(stream_id: str | None) -> str | None:
    """A Last-Event-ID worth resuming after, or None (start from the beginning)."""
    if not stream_id or len(stream_id) > 40 or order(stream_id) == (0, 0):
        return None
    return stream_id


# The worker side


class Writer:
    """The one thread of a worker process that writes every run's live entries to Redis."""

    def __init__(self) -> None:
        self._pending: dict[str, list[list[str]]] = {}
        self._writing: set[str] = set()
        self._changed = threading.Condition()
        self._thread: threading.Thread | None = None
        self._client = None
        self._last_write = 0.0
        self._warned_at = 0.0
        self._urgent = False  # a run's end waits in flush(): write without waiting for the window

    def add(self, stream_key: str, kind: str, data: str) -> None:
        with self._changed:
            entries = self._pending.setdefault(stream_key, [])
            if entries and entries[-1][0] == kind and kind != "status":
                entries[-1][1] += data  # coalesce: one entry per stream per write
            else:
                entries.append([kind, data])
            self._changed.notify_all()
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._run, name="live-output", daemon=True)
                self._thread.start()

    def flush(self, stream_key: str, timeout: float = FLUSH_WAIT) -> None:
        """Return once what was added for `stream_key` is written (or dropped), or after `timeout`. A run's end
        waits here, so its entries are written at once, not at the end of the coalescing window."""
        deadline = time.monotonic() + timeout
        with self._changed:
            if stream_key in self._pending:
                self._urgent = True
                self._changed.notify_all()
            while stream_key in self._pending or stream_key in self._writing:
                left = deadline - time.monotonic()
                if left <= 0:
                    return
                self._changed.wait(left)

    def _run(self) -> None:
        while True:
            with self._changed:
                while not self._pending:
                    self._changed.wait()
                # Coalesce what else arrives in the window, unless a run's end waits for its entries (flush).
                window_ends = self._last_write + FLUSH_INTERVAL
                while not self._urgent and (left := window_ends - time.monotonic()) > 0:
                    self._changed.wait(left)
                self._urgent = False
                batch, self._pending = self._pending, {}
                self._writing = set(batch)
            try:
                self._write(batch)
            finally:
                self._last_write = time.monotonic()
                with self._changed:
                    self._writing = set()
                    self._changed.notify_all()

    def _write(self, batch: dict[str, list[list[str]]]) -> None:
        import redis

        try:
            if self._client is None:
                self._client = redis.Redis.from_url(redis_url(), socket_timeout=2, socket_connect_timeout=2)
            pipe = self._client.pipeline(transaction=False)
            for stream_key, entries in batch.items():
                for kind, data in entries:
                    pipe.xadd(stream_key, {"k": kind, "d": data}, maxlen=MAX_ENTRIES, approximate=True)
                pipe.expire(stream_key, LIVE_TTL)
            pipe.execute()
        except redis.RedisError as exc:
            self._client = None
            if time.monotonic() - self._warned_at > 60:
                self._warned_at = time.monotonic()
                log.warning("live output dropped (%d runs): Redis is unavailable: %s", len(batch), exc)


writer = Writer()


class Publisher:
    """One run's live output. `output` is the executor's `on_output(stream, chunk)`; it never blocks."""

    def __init__(self, execution_id) -> None:
        self.key = key(execution_id)
        self.enabled = redis_url() is not None
        self._decoders = {stream: codecs.getincrementaldecoder("utf-8")("replace") for stream in STREAMS}

    def status(self, status: str) -> None:
        if self.enabled:
            writer.add(self.key, "status", status)

    def output(self, stream: str, chunk: bytes) -> None:
        if self.enabled and stream in self._decoders:
            text = self._decoders[stream].decode(chunk)
            if text:
                writer.add(self.key, stream, text)

    def close(self) -> None:
        """The run is over: write what is left, before its end is recorded (so a follower sees every chunk
        before the final execution)."""
        if not self.enabled:
            return
        for stream, decoder in self._decoders.items():
            rest = decoder.decode(b"", final=True)
            if rest:
                writer.add(self.key, stream, rest)
        writer.flush(self.key)


def publisher(execution_id, status: str = "running") -> Publisher:
    """The live output of a run that has just started (its status is published at once)."""
    live = Publisher(execution_id)
    live.status(status)
    return live


# The web side


class Follow:
    """One client following one run: the entries after `after`, in order, each once."""

    def __init__(self, stream_key: str, after: str | None) -> None:
        self.key = stream_key
        self.last = after or "0-0"
        self.entries: asyncio.Queue[Entry] = asyncio.Queue()

    def offer(self, entries: list[Entry]) -> None:
        for entry in entries:
            if order(entry.id) > order(self.last):
                self.last = entry.id
                self.entries.put_nowait(entry)


class Reader:
    """The XREAD loop of a web process, shared by every follower in it (started with the first, ended with the
    last). It runs on the event loop of the process's server."""

    def __init__(self) -> None:
        self._follows: dict[str, set[Follow]] = defaultdict(set)
        self._positions: dict[str, str] = {}
        self._task: asyncio.Task | None = None
        self._client = None  # commands from followers (CLIENT UNBLOCK, the last read at a run's end)
        self._loop_client = None  # the loop's own connection, blocked in XREAD
        self._loop_client_id: int | None = None

    def _redis(self):
        import redis.asyncio

        if self._client is None:
            self._client = redis.asyncio.Redis.from_url(redis_url(), socket_connect_timeout=2)
        return self._client

    async def add(self, follow: Follow) -> None:
        self._follows[follow.key].add(follow)
        position = self._positions.get(follow.key)
        if position is None or order(follow.last) < order(position):
            self._positions[follow.key] = follow.last
        if self._task is None or self._task.done():
            self._task = asyncio.get_running_loop().create_task(self._read_loop())
        else:
            await self._wake()

    def remove(self, follow: Follow) -> None:
        follows = self._follows.get(follow.key)
        if follows is not None:
            follows.discard(follow)
            if not follows:
                del self._follows[follow.key]
                self._positions.pop(follow.key, None)

    async def _wake(self) -> None:
        """Make the loop's blocked XREAD return, so it reads the new stream from now on."""
        if self._loop_client_id is None:
            return
        try:
            await self._redis().client_unblock(self._loop_client_id)
        except Exception as exc:  # noqa: BLE001 - the loop picks the stream up within READ_BLOCK_MS anyway
            log.debug("live output: could not wake the reader: %s", exc)

    async def _read_loop(self) -> None:
        import redis.asyncio

        while self._follows:
            try:
                if self._loop_client is None:
                    self._loop_client = redis.asyncio.Redis.from_url(
                        redis_url(), single_connection_client=True, socket_connect_timeout=2)
                    self._loop_client_id = await self._loop_client.client_id()
                answer = await self._loop_client.xread(dict(self._positions), count=READ_COUNT, block=READ_BLOCK_MS)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # noqa: BLE001 - Redis away: followers still get the run's end from the database
                log.warning("live output: cannot read from Redis: %s", exc)
                await self._drop_loop_client()
                await asyncio.sleep(1.0)
                continue
            for raw_key, raw_entries in answer or []:
                stream_key = raw_key.decode() if isinstance(raw_key, bytes) else raw_key
                entries = [decode(entry_id, fields) for entry_id, fields in raw_entries]
                if stream_key in self._positions and entries:
                    self._positions[stream_key] = entries[-1].id
                for follow in list(self._follows.get(stream_key, ())):
                    follow.offer(entries)
        await self._drop_loop_client()

    async def _drop_loop_client(self) -> None:
        client, self._loop_client, self._loop_client_id = self._loop_client, None, None
        if client is not None:
            try:
                await client.aclose()
            except Exception:  # noqa: BLE001 - it is being dropped anyway
                pass

    async def rest(self, follow: Follow) -> None:
        """Everything of the stream after what the follower has seen (at the run's end: nothing may be lost to
        the loop not having read yet)."""
        try:
            raw = await self._redis().xrange(follow.key, min=f"({follow.last}", max="+")
        except Exception as exc:  # noqa: BLE001 - the final execution carries the whole output anyway
            log.debug("live output: could not read the rest of %s: %s", follow.key, exc)
            return
        follow.offer([decode(entry_id, fields) for entry_id, fields in raw])


def decode(entry_id, fields: dict) -> Entry:
    def text(value) -> str:
        return value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)

    values = {text(name): text(value) for name, value in fields.items()}
    return Entry(text(entry_id), values.get("k", ""), values.get("d", ""))


# One reader per event loop: a web process has one; a test server may run each response on a loop of its own, and
# an asyncio Redis client belongs to the loop it was made on.
_readers: "weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, Reader]" = weakref.WeakKeyDictionary()


def reader() -> Reader:
    loop = asyncio.get_running_loop()
    if loop not in _readers:
        _readers[loop] = Reader()
    return _readers[loop]


@asynccontextmanager
async def following(execution_id, after: str | None) -> AsyncIterator[Follow | None]:
    """Follow a run's live entries after `after` (a Last-Event-ID); None without Redis."""
    if redis_url() is None:
        yield None
        return
    follow = Follow(key(execution_id), valid_id(after))
    loop_reader = reader()
    await loop_reader.add(follow)
    try:
        yield follow
    finally:
        loop_reader.remove(follow)

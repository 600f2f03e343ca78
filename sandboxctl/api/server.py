"""The web server: uvicorn's event loop in gunicorn's worker processes (the `uvicorn-worker` package), with
the bounds a public port needs that uvicorn itself does not set.

    gunicorn sandboxctl.asgi -k sandboxctl.api.server.Worker --bind … --bind …

Requests that wait for a run are coroutines (sandboxctl/api/waiting.py), so what a client may hold
is a connection. Per web process, on every bound port alike (the main one and RAGFlow's):
- a request's headers must arrive within SANDBOX_WEB_HEADER_TIMEOUT and be at most
  SANDBOX_WEB_HEADER_MAX_BYTES; its body must arrive within SANDBOX_WEB_BODY_TIMEOUT and be at most
  SANDBOX_REQUEST_MAX_BYTES (Django's ASGI handler would otherwise read any body to its end first);
- at most SANDBOX_WEB_MAX_CONNECTIONS connections are open, SANDBOX_WEB_MAX_CONNECTIONS_PER_ADDRESS of
  them from one address; a connection past either is answered 503 and closed before anything is read.
The address is the TCP peer's: behind a reverse proxy, the proxy's (give the proxy its own limits).

Why uvicorn rather than granian: both hold thousands of idle or waiting connections in one process, but
granian's bounds live in Rust (a header read timeout and a request backpressure, no body timeout and no
per-address cap) and cannot be extended from Python, while uvicorn's protocol is a Python class these
few hooks extend. gunicorn stays the process manager `make run` and the images already use.
"""

import json
import logging
import resource
import sys
from collections import Counter

from django.conf import settings
from uvicorn.protocols.http.httptools_impl import STATUS_LINE, HttpToolsProtocol
from uvicorn_worker import UvicornWorker

log = logging.getLogger("sandboxctl.api.server")
SWITCH_INTERVAL = 0.0005


class OpenConnections:
    """Open connections of this process, in all and by peer address."""

    def __init__(self) -> None:
        self.total = 0
        self.by_address: Counter[str] = Counter()

    def admit(self, address: str) -> str | None:
        """Count the connection in, or say which limit refuses it."""
        if self.total >= settings.SANDBOX_WEB_MAX_CONNECTIONS:
            return "SANDBOX_WEB_MAX_CONNECTIONS"
        if self.by_address[address] >= settings.SANDBOX_WEB_MAX_CONNECTIONS_PER_ADDRESS:
            return "SANDBOX_WEB_MAX_CONNECTIONS_PER_ADDRESS"
        self.total += 1
        self.by_address[address] += 1
        return None

    def release(self, address: str) -> None:
        self.total -= 1
        self.by_address[address] -= 1
        if not self.by_address[address]:
            del self.by_address[address]


open_connections = OpenConnections()


class BoundedHttpProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol with read timeouts, size caps and connection caps (see the module)."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.admitted = False
        self.refused = False
        self.reading: str | None = None  # "headers", "body", or None between requests
        self.header_bytes = 0
        self.body_bytes = 0
        self.method_and_path = ("GET", "/")
        self.read_timer = None

    # Connections

    def connection_made(self, transport) -> None:
        super().connection_made(transport)
        refusal = open_connections.admit(self.address)
        if refusal is not None:
            log.warning("refused a connection from %s: %s reached", self.address, refusal)
            self.refuse(503, {"detail": f"too many open connections ({refusal})", "code": "too_many_connections"})
            return
        self.admitted = True
        self.start_reading("headers")  # a connection that never sends a byte is dropped too

    def connection_lost(self, exc) -> None:
        self.stop_timer()
        if self.admitted:
            self.admitted = False
            open_connections.release(self.address)
        super().connection_lost(exc)

    @property
    def address(self) -> str:
        return self.client[0] if self.client else ""

    def data_received(self, data: bytes) -> None:
        if self.refused:
            return
        super().data_received(data)
        if self.reading == "headers" and not self.refused:  # still incomplete: bound what they may pile up
            self.header_bytes += len(data)
            if self.header_bytes > settings.SANDBOX_WEB_HEADER_MAX_BYTES:
                self.refuse_large_headers()

    # Parser callbacks

    def on_message_begin(self) -> None:
        super().on_message_begin()
        if self.reading != "headers":  # the next request on a kept-alive connection
            self.start_reading("headers")

    def on_headers_complete(self) -> None:
        if self.parser.get_http_version() not in ("1.0", "1.1"):  # HTTP/0.9 has no headers, status or length
            self.refuse(400, {"detail": "HTTP/1.0 or HTTP/1.1 only", "code": "http_version"})
            return
        if len(self.url) + sum(len(name) + len(value) + 4 for name, value in self.headers) > \
                settings.SANDBOX_WEB_HEADER_MAX_BYTES:  # they came in one piece
            self.refuse_large_headers()
            return
        size = self.content_length()
        self.method_and_path = (self.parser.get_method().decode("latin-1"),
                                self.url.split(b"?", 1)[0].decode("latin-1"))
        if size is not None and size > body_limit(*self.method_and_path):
            self.refuse(413, too_large(size, *self.method_and_path))  # before Django's ASGI handler reads it all
            return
        self.start_reading("body")
        super().on_headers_complete()

    def on_body(self, body: bytes) -> None:
        if self.refused:
            return
        self.body_bytes += len(body)
        if self.body_bytes > body_limit(*self.method_and_path):  # a chunked body, sent without a length
            self.refuse(413, too_large(None, *self.method_and_path))
            return
        super().on_body(body)

    def on_message_complete(self) -> None:
        if self.refused:
            return
        self.stop_timer()
        self.reading = None
        super().on_message_complete()

    # Helpers

    def refuse_large_headers(self) -> None:
        self.refuse(431, {"detail": "request headers over SANDBOX_WEB_HEADER_MAX_BYTES", "code": "headers_too_large"})

    def content_length(self) -> int | None:
        for name, value in self.headers:
            if name == b"content-length":
                try:
                    return int(value)
                except ValueError:
                    return None
        return None

    def start_reading(self, part: str) -> None:
        self.stop_timer()
        self.reading, self.header_bytes, self.body_bytes = part, 0, 0
        timeout = settings.SANDBOX_WEB_HEADER_TIMEOUT if part == "headers" else settings.SANDBOX_WEB_BODY_TIMEOUT
        self.read_timer = self.loop.call_later(timeout, self.read_timed_out)

    def stop_timer(self) -> None:
        if self.read_timer is not None:
            self.read_timer.cancel()
            self.read_timer = None

    def read_timed_out(self) -> None:
        self.read_timer = None
        setting = "SANDBOX_WEB_HEADER_TIMEOUT" if self.reading == "headers" else "SANDBOX_WEB_BODY_TIMEOUT"
        log.info("dropped a connection from %s: its request's %s did not arrive in time", self.address, self.reading)
        self.refuse(408, {"detail": f"the request's {self.reading} did not arrive within {setting}",
                          "code": "request_timeout"})

    def refuse(self, status: int, body: dict) -> None:
        """Answer `status` and close, reading nothing more; a request already started sees a disconnect."""
        self.refused = True
        self.stop_timer()
        if self.transport.is_closing():
            return
        content = json.dumps(body).encode()
        head = [STATUS_LINE[status], b"content-type: application/json\r\n",
                b"content-length: %d\r\n" % len(content), b"connection: close\r\n", b"\r\n"]
        self.transport.write(b"".join(head) + content)
        self.transport.close()


def too_large(size: int | None, method: str, path: str) -> dict:
    from sandboxctl.api import intake  # Django is set up once the app is loaded

    return intake.too_large(size, method, path)


def body_limit(method: str, path: str) -> int:
    from sandboxctl.api import intake

    return intake.body_limit(method, path)[0]


class Worker(UvicornWorker):
    """gunicorn's worker running uvicorn with the bounded protocol. Django speaks no ASGI lifespan; the
    peer address is never taken from X-Forwarded-For (the trusted-network rule of RAGFlow's port and the
    per-address cap both mean the TCP peer)."""

    CONFIG_KWARGS = {"loop": "uvloop", "http": BoundedHttpProtocol, "lifespan": "off", "ws": "none",
                     "proxy_headers": False}

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        # Waiting requests may be many minutes long: a restart closes them after gunicorn's grace period.
        self.config.timeout_graceful_shutdown = self.cfg.graceful_timeout
        raise_open_files_limit()
        # The event loop hands work to threads and back for every request, and starts a short-lived thread
        # for each (Django's per-request thread). Each handover waits for the GIL; with the default 5 ms
        # switch interval a burst of a thousand requests kept the loop — and /healthz — waiting seconds.
        sys.setswitchinterval(SWITCH_INTERVAL)


def raise_open_files_limit() -> None:
    """Every open connection is a file descriptor; the soft limit (often 1024) would cap them first."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = hard if hard != resource.RLIM_INFINITY else 65536
    if soft < wanted:
        resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, hard))

"""Requests made for a caller (callbacks) never reach the host or its network (SSRF): an HTTP client that
resolves the host once, requires every address it resolves to be public (or inside
SANDBOX_CALLBACK_ALLOWED_NETWORKS), connects to the address it checked (no second lookup) and follows no
redirect. The API refuses a literal forbidden address at submit time with the same rules. The rules
themselves live in executor/addresses.py, shared with the sandboxes' egress proxy.
"""

import http.client
import json
import socket
import ssl
from urllib.parse import urlsplit

from django.conf import settings

from executor import addresses
from executor.addresses import Address, Refused, parse_literal

__all__ = ["Refused", "address_problem", "literal_host_problem", "parse_literal", "post_json", "resolve_checked"]

CALLBACK_TIMEOUT = 10.0


def address_problem(address: Address) -> str | None:
    """Why a callback may not go to this address, or None (executor/addresses.py holds the rules)."""
    return addresses.address_problem(address, settings.SANDBOX_CALLBACK_ALLOWED_NETWORKS)


def literal_host_problem(url: str) -> str | None:
    """At submit time: a URL whose host is a literal forbidden address is refused at once."""
    host = urlsplit(url).hostname or ""
    if not host:
        return "has no host"
    address = parse_literal(host)
    if address is None:
        return None
    problem = address_problem(address)
    if problem is None:
        return None
    return f"points to {problem}; allow its network in SANDBOX_CALLBACK_ALLOWED_NETWORKS if intended"


def resolve_checked(host: str, port: int) -> str:
    """The one address a delivery connects to: every address the name resolves to must be allowed."""
    return str(addresses.resolve_checked(host, port, settings.SANDBOX_CALLBACK_ALLOWED_NETWORKS)[0])


class _PinnedHTTPSConnection(http.client.HTTPSConnection):
    """HTTPS to a checked address, with the certificate verified against the URL's host name."""

    def __init__(self, address: str, port: int, server_hostname: str, **kwargs) -> None:
        super().__init__(address, port, context=ssl.create_default_context(), **kwargs)
        self._server_hostname = server_hostname

    def connect(self) -> None:
        sock = socket.create_connection((self.host, self.port), self.timeout)
        self.sock = self._context.wrap_socket(sock, server_hostname=self._server_hostname)


def post_json(url: str, body: dict, idempotency_key: str) -> int:
    """POST `body` to `url` through the address check; the HTTP status, or raises OSError / Refused."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise Refused("only http and https URLs with a host are allowed")
    port = parts.port or (443 if parts.scheme == "https" else 80)
    address = resolve_checked(parts.hostname, port)
    if parts.scheme == "https":
        connection = _PinnedHTTPSConnection(address, port, parts.hostname, timeout=CALLBACK_TIMEOUT)
    else:
        connection = http.client.HTTPConnection(address, port, timeout=CALLBACK_TIMEOUT)
    path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    host_header = parts.hostname if parts.port is None else f"{parts.hostname}:{parts.port}"
    payload = json.dumps(body).encode()
    try:
        connection.request("POST", path, body=payload, headers={
            "Host": host_header, "Content-Type": "application/json", "User-Agent": "sandboxctl-callback/1",
            # The same for every attempt: a receiver that saw an attempt whose answer was lost can drop the retry.
            "Idempotency-Key": idempotency_key,
        })
        return connection.getresponse().status
    except (http.client.HTTPException, ssl.SSLError) as exc:
        raise OSError(f"{exc.__class__.__name__}: {exc}") from exc
    finally:
        connection.close()

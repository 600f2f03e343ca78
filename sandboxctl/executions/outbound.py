"""Requests made for a caller (callbacks) never reach the host or its network (SSRF): an HTTP client that
resolves the host once, requires every address it resolves to be public (or inside
SANDBOX_CALLBACK_ALLOWED_NETWORKS), connects to the address it checked (no second lookup) and follows no
redirect. The API refuses a literal forbidden address at submit time with the same rules.
"""

import http.client
import ipaddress
import json
import socket
import ssl
from urllib.parse import urlsplit

from django.conf import settings

CALLBACK_TIMEOUT = 10.0
Address = ipaddress.IPv4Address | ipaddress.IPv6Address


class Refused(Exception):
    """The callback may not be sent to this URL; retrying cannot help."""


def _embedded_ipv4(address: Address) -> Address:
    """The IPv4 address hidden in an IPv6 one (mapped, 6to4, Teredo), which is what a connection would reach."""
    if isinstance(address, ipaddress.IPv6Address):
        for embedded in (address.ipv4_mapped, address.sixtofour, address.teredo and address.teredo[1]):
            if embedded:
                return embedded
    return address


def address_problem(address: Address) -> str | None:
    """Why a callback may not go to this address, or None."""
    if any(address in network for network in settings.SANDBOX_CALLBACK_ALLOWED_NETWORKS):
        return None
    for candidate in (address, _embedded_ipv4(address)):
        if candidate.is_multicast or not candidate.is_global:
            return f"{address} is not a public address"
    return None


def literal_host_problem(url: str) -> str | None:
    """At submit time: a URL whose host is a literal forbidden address is refused at once."""
    host = urlsplit(url).hostname or ""
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return None if host else "has no host"
    problem = address_problem(address)
    if problem is None:
        return None
    return f"points to {problem}; allow its network in SANDBOX_CALLBACK_ALLOWED_NETWORKS if intended"


def resolve_checked(host: str, port: int) -> str:
    """The one address a delivery connects to: every address the name resolves to must be allowed."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except socket.gaierror as exc:
        raise OSError(f"cannot resolve {host}: {exc}") from exc
    addresses = [ipaddress.ip_address(info[4][0].split("%", 1)[0]) for info in infos]
    for address in addresses:
        problem = address_problem(address)
        if problem:
            raise Refused(f"{host} resolves to {problem}")
    return str(addresses[0])


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

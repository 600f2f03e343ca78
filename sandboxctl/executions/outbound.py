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


# Ranges Python 3.11's `ipaddress` still calls global, which a callback must never reach: deprecated
# site-local, documentation (RFC 9637), SRv6 segment ids (RFC 9602), and the local-use NAT64 prefix (RFC 8215),
# whose embedded IPv4 address sits where the operator's prefix length puts it, so it cannot be judged.
NOT_GLOBAL_V6 = tuple(ipaddress.ip_network(net) for net in ("fec0::/10", "3fff::/20", "5f00::/16", "64:ff9b:1::/48"))
NAT64_WELL_KNOWN = ipaddress.ip_network("64:ff9b::/96")
IPV4_COMPATIBLE = ipaddress.ip_network("::/96")
ISATAP_IDS = (0x00005EFE, 0x02005EFE)  # the upper half of an ISATAP interface id; the lower half is IPv4


def embedded_ipv4(address: ipaddress.IPv6Address) -> list[ipaddress.IPv4Address]:
    """The IPv4 addresses an IPv6 address carries, which are what a connection to it reaches on a network
    that translates or tunnels it: mapped, IPv4-compatible, NAT64 (RFC 6052 /96), 6to4, Teredo, ISATAP."""
    value = int(address)
    low32 = ipaddress.IPv4Address(value & 0xFFFFFFFF)
    found = []
    if address.ipv4_mapped:
        found.append(address.ipv4_mapped)
    if address in IPV4_COMPATIBLE or address in NAT64_WELL_KNOWN:
        found.append(low32)
    if address.sixtofour:
        found.append(address.sixtofour)
    if address.teredo:
        found += list(address.teredo)
    if (value >> 32) & 0xFFFFFFFF in ISATAP_IDS:
        found.append(low32)
    return found


def _forbidden(address: Address) -> bool:
    if address.is_multicast or address.is_reserved or not address.is_global:
        return True
    return isinstance(address, ipaddress.IPv6Address) and any(address in net for net in NOT_GLOBAL_V6)


def _allowed(address: Address) -> bool:
    return any(address in network for network in settings.SANDBOX_CALLBACK_ALLOWED_NETWORKS)


def address_problem(address: Address) -> str | None:
    """Why a callback may not go to this address, or None. An address that embeds IPv4 is judged by the IPv4
    address it reaches (the IPv6 wrapper itself is in ranges Python calls reserved), every other by itself."""
    if _allowed(address):
        return None
    inner = embedded_ipv4(address) if isinstance(address, ipaddress.IPv6Address) else []
    if any(address in net for net in NOT_GLOBAL_V6 if address.version == 6):
        return f"{address} is not a public address"
    for candidate in inner or [address]:
        if not _allowed(candidate) and _forbidden(candidate):
            return f"{address} is not a public address" + (f" (it reaches {candidate})" if inner else "")
    return None


def parse_literal(host: str) -> Address | None:
    """The address a host names literally, in any form the resolver would read without a lookup
    (`127.1`, `0x7f000001`, `[::ffff:7f00:1]`), or None for a name."""
    try:
        return ipaddress.ip_address(host)
    except ValueError:
        pass
    try:
        infos = socket.getaddrinfo(host, None, type=socket.SOCK_STREAM, flags=socket.AI_NUMERICHOST)
    except (socket.gaierror, UnicodeError, ValueError):
        return None
    return ipaddress.ip_address(infos[0][4][0].split("%", 1)[0])


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

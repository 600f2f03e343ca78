"""Which addresses a connection made for untrusted input may reach: public ones only, judged by what an address
reaches. The one home of these rules: callbacks (sandboxctl/executions/outbound.py) and the sandboxes' egress
proxy (executor/egress_proxy.py) both judge addresses here, each with its own allowance of private networks
(SANDBOX_CALLBACK_ALLOWED_NETWORKS, SANDBOX_EGRESS_ALLOWED_NETWORKS).

An IPv6 address that carries an IPv4 one (mapped, IPv4-compatible, NAT64, 6to4, Teredo, ISATAP) is judged by
the IPv4 address inside; ranges Python still calls global but are not (site-local, documentation, SRv6, the
local-use NAT64 prefix) are refused outright. A name is resolved once and every address it resolves to must
pass; the caller connects to an address that was checked, never to the name again (no DNS rebinding).
"""

import ipaddress
import socket
from collections.abc import Iterable

Address = ipaddress.IPv4Address | ipaddress.IPv6Address
Network = ipaddress.IPv4Network | ipaddress.IPv6Network


class Refused(Exception):
    """The destination may not be reached; retrying cannot help."""


# Ranges Python 3.11's `ipaddress` still calls global, which must never be reached: deprecated site-local,
# documentation (RFC 9637), SRv6 segment ids (RFC 9602), and the local-use NAT64 prefix (RFC 8215), whose
# embedded IPv4 address sits where the operator's prefix length puts it, so it cannot be judged.
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


def _inside(address: Address, allowed: Iterable[Network]) -> bool:
    return any(address.version == network.version and address in network for network in allowed)


def address_problem(address: Address, allowed: Iterable[Network] = ()) -> str | None:
    """Why this address may not be reached ("… is not a public address"), or None. `allowed` lists private
    networks reachable anyway."""
    why = _why_not(address, tuple(allowed))
    return f"{address} is {why}" if why else None


def _why_not(address: Address, allowed: tuple[Network, ...]) -> str | None:
    """An address that embeds IPv4 is judged by the IPv4 address it reaches (the IPv6 wrapper itself is in
    ranges Python calls reserved), every other by itself."""
    if _inside(address, allowed):
        return None
    inner = embedded_ipv4(address) if isinstance(address, ipaddress.IPv6Address) else []
    if any(address in net for net in NOT_GLOBAL_V6 if address.version == 6):
        return "not a public address"
    for candidate in inner or [address]:
        if not _inside(candidate, allowed) and _forbidden(candidate):
            return "not a public address" + (f" (it reaches {candidate})" if inner else "")
    return None


def parse_literal(host: str) -> Address | None:
    """The address a host names literally, in any form the resolver would read without a lookup
    (`127.1`, `0x7f000001`, `[::ffff:7f00:1]`), or None for a name."""
    host = host.strip("[]")
    try:
        return ipaddress.ip_address(host)
    except ValueError:
        pass
    try:
        infos = socket.getaddrinfo(host, None, type=socket.SOCK_STREAM, flags=socket.AI_NUMERICHOST)
    except (socket.gaierror, UnicodeError, ValueError):
        return None
    return ipaddress.ip_address(infos[0][4][0].split("%", 1)[0])


def resolve(host: str, port: int) -> list[Address]:
    """Every address `host` resolves to (OSError when it does not resolve)."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (socket.gaierror, UnicodeError) as exc:
        raise OSError(f"cannot resolve {host}: {exc}") from exc
    found: list[Address] = []
    for info in infos:
        address = ipaddress.ip_address(info[4][0].split("%", 1)[0])
        if address not in found:
            found.append(address)
    return found


def checked(host: str, addresses: list[Address], allowed: Iterable[Network] = ()) -> list[Address]:
    """`addresses` (what `host` resolved to) when every one may be reached; Refused naming the first that may
    not. All must pass, not just one: which one a client would use is not ours to choose."""
    allowed = tuple(allowed)
    if not addresses:
        raise OSError(f"{host} resolves to no address")
    for address in addresses:
        why = _why_not(address, allowed)
        if why:
            named = str(address) == host.strip("[]")
            raise Refused(f"{address} is {why}" if named else f"{host} resolves to {address}, {why}")
    return addresses


def resolve_checked(host: str, port: int, allowed: Iterable[Network] = ()) -> list[Address]:
    """The addresses a connection to `host` may use, each checked; connect to one of these, never to the name."""
    literal = parse_literal(host)
    return checked(host, [literal] if literal is not None else resolve(host, port), allowed)

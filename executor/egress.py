"""Egress allowlists: what a run may reach through the egress proxy (egress_proxy.py), written as entries.

An entry is one of:
- `example.com` — that host name; `*.example.com` — any name under it (not the name itself); `*` — any name;
- `203.0.113.7`, `203.0.113.0/24`, `[2001:db8::]/32` — addresses (an IP literal in the network, or a name
  whose every address is in it);
- any of these with `:PORT` (one port) or `:*` (every port); with no port, 80 and 443.
Operators name sets of entries as presets (`pypi`, `npm` and their own, SANDBOX_EGRESS_PRESETS); a preset
name stands for its entries wherever an entry may be written.

Every destination must also pass the address rules (addresses.py): an entry never makes a loopback, private,
link-local or metadata address reachable; only SANDBOX_EGRESS_ALLOWED_NETWORKS does. The runner's side —
what a run with egress finds in its environment — is here too (`sandbox_env`), so the proxy's address and
the relay's port have one home. Standard library only: the web (validation, ceilings) and the worker (the
proxy) both use it.
"""

import ipaddress
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from executor.addresses import Address, Network
from executor.config import SandboxConfig

DEFAULT_PORTS = frozenset({80, 443})
ANY_PORT = None  # an entry's `ports` when it allows every port
MAX_ENTRIES = 64  # in one allowlist, presets expanded
BUILTIN_PRESETS: dict[str, tuple[str, ...]] = {
    "pypi": ("pypi.org:443", "files.pythonhosted.org:443"),  # the index and the files it links to
    "npm": ("registry.npmjs.org:443",),
}
PRESET_NAME = re.compile(r"^[a-z][a-z0-9_-]{0,39}$")
LABEL = re.compile(r"^(?!-)[a-z0-9-]{1,63}(?<!-)$")

# Inside a sandbox with egress: the relay (runner/relay.py) listens on the sandbox's own loopback at this port
# and carries each connection to the proxy over the Unix socket the worker bound for this sandbox, in the
# folder mounted at SANDBOX_CHANNEL_DIR (read-only; the socket is root's, so only the relay can use it).
RELAY_PORT = 3128
PROXY_URL = f"http://127.0.0.1:{RELAY_PORT}"
SANDBOX_CHANNEL_DIR = "/run/sandboxctl"
SOCKET_NAME = "proxy.sock"
CA_NAME = "ca.pem"


class EntryError(ValueError):
    """An allowlist entry that cannot be read; the message says why."""


@dataclass(frozen=True)
class Entry:
    """One parsed entry. `host` is a name (kind `host`), a parent domain (`wildcard`) or "" (`any`, `network`)."""

    kind: str  # host | wildcard | any | network
    host: str = ""
    network: Network | None = None
    ports: frozenset[int] | None = DEFAULT_PORTS

    def __str__(self) -> str:
        if self.kind == "network":
            net = self.network
            text = (str(net.network_address) if net.prefixlen == net.max_prefixlen else str(net))
            if net.version == 6:
                text = f"[{net.network_address}]" + ("" if net.prefixlen == 128 else f"/{net.prefixlen}")
        else:
            text = {"host": self.host, "wildcard": f"*.{self.host}", "any": "*"}[self.kind]
        if self.ports == DEFAULT_PORTS:
            return text
        return f"{text}:*" if self.ports is ANY_PORT else f"{text}:{min(self.ports)}"

    def allows_port(self, port: int) -> bool:
        return self.ports is ANY_PORT or port in self.ports

    def matches_name(self, host: str, port: int) -> bool:
        """Whether this entry allows `host` (a normalised name or IP literal) on `port` by name alone."""
        if not self.allows_port(port):
            return False
        if self.kind == "any":
            return True
        if self.kind == "host":
            return host == self.host
        if self.kind == "wildcard":
            return host.endswith("." + self.host)
        literal = literal_address(host)
        return literal is not None and _in(literal, self.network)

    def covers(self, other: "Entry") -> bool:
        """Whether everything `other` allows, this allows too (a request within its account's ceiling)."""
        if not _ports_within(other.ports, self.ports):
            return False
        if self.kind == "any":
            return True
        if self.kind == "host":
            return other.kind == "host" and other.host == self.host
        if self.kind == "wildcard":
            return other.kind in ("host", "wildcard") and (other.host.endswith("." + self.host)
                                                           or (other.kind == "wildcard" and other.host == self.host))
        return (other.kind == "network" and other.network.version == self.network.version
                and other.network.subnet_of(self.network))


def _ports_within(inner: frozenset[int] | None, outer: frozenset[int] | None) -> bool:
    if outer is ANY_PORT:
        return True
    return inner is not ANY_PORT and inner <= outer


def _in(address: Address, network: Network) -> bool:
    return address.version == network.version and address in network


def literal_address(host: str) -> Address | None:
    """The address a host names as a plain IP literal (brackets allowed), or None for a name."""
    try:
        return ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        return None


def normal_host(host: str) -> str:
    """A host as the proxy compares it: lower case, no trailing dot, IDNA for non-ASCII names; an IP literal as
    its canonical text. EntryError when it is not a host name at all."""
    host = host.strip().rstrip(".").lower()
    literal = literal_address(host)
    if literal is not None:
        return str(literal)
    try:
        host = host.encode("idna").decode("ascii")
    except UnicodeError:
        raise EntryError(f"{host!r} is not a valid host name") from None
    labels = host.split(".")
    if len(host) > 253 or not all(LABEL.match(label) for label in labels):
        raise EntryError(f"{host!r} is not a valid host name")
    return host


def parse_entry(text: str) -> Entry:
    """One entry as written (presets already expanded); EntryError saying what is wrong with it."""
    if not isinstance(text, str) or not text.strip():
        raise EntryError("an entry must be a non-empty string")
    raw = text.strip().lower()
    target, ports = _split_port(raw)
    if target == "*":
        return Entry("any", ports=ports)
    if target.startswith("*."):
        parent = normal_host(target[2:])
        if literal_address(parent) is not None:
            raise EntryError(f"{text!r}: a wildcard names a domain, not an address")
        return Entry("wildcard", host=parent, ports=ports)
    network = _network(target)
    if network is not None:
        return Entry("network", network=network, ports=ports)
    host = normal_host(target)
    if "." not in host:
        raise EntryError(f"{text!r} is neither a preset nor a host name with a domain")
    return Entry("host", host=host, ports=ports)


def _split_port(raw: str) -> tuple[str, frozenset[int] | None]:
    """(target, ports) from `target[:port]`; bracketed IPv6 (`[2001:db8::1]:443`) keeps its colons."""
    if raw.startswith("["):
        close = raw.find("]")
        if close < 0:
            raise EntryError(f"{raw!r}: an unclosed [")
        head, rest = raw[:close + 1], raw[close + 1:]
        prefix = ""
        if rest.startswith("/"):
            prefix, colon, port = rest.partition(":")
            rest = colon + port
        if rest and not rest.startswith(":"):
            raise EntryError(f"{raw!r}: unexpected text after ]")
        return head + prefix, _port(rest[1:]) if rest else DEFAULT_PORTS
    if raw.count(":") == 1:
        target, port = raw.split(":")
        return target, _port(port)
    return raw, DEFAULT_PORTS  # no port, or a bare IPv6 address or network (which has no port)


def _port(text: str) -> frozenset[int] | None:
    if text == "*":
        return ANY_PORT
    if not text.isdigit() or not 1 <= int(text) <= 65535:
        raise EntryError(f"{text!r} is not a port (1-65535 or *)")
    return frozenset({int(text)})


def _network(target: str) -> Network | None:
    try:
        return ipaddress.ip_network(target.replace("[", "").replace("]", ""), strict=True)
    except ValueError as exc:
        if "/" in target or literal_address(target.split("/")[0]) is not None:
            raise EntryError(f"{target!r} is not a network: {exc}") from None
        return None


def expand(entries: Iterable[str], presets: Mapping[str, Iterable[str]]) -> list[str]:
    """The entries with each preset name replaced by its entries, normalised, without duplicates, in order;
    EntryError naming the first that cannot be read."""
    entries = list(entries)
    if len(entries) > MAX_ENTRIES:  # before any is read: a body may hold a million
        raise EntryError(f"{len(entries)} entries; at most {MAX_ENTRIES}")
    found: dict[str, None] = {}
    for text in entries:
        if not isinstance(text, str):
            raise EntryError("an entry must be a string")
        name = text.strip().lower()
        members = presets.get(name) if PRESET_NAME.match(name) else None
        for member in (members if members is not None else [text]):
            found[str(parse_entry(member))] = None
    if len(found) > MAX_ENTRIES:
        raise EntryError(f"{len(found)} entries with presets expanded; at most {MAX_ENTRIES}")
    return list(found)


def beyond(requested: Iterable[str], ceiling: Iterable[str]) -> list[str]:
    """The requested entries (expanded) that the ceiling's (expanded) do not cover: what a request may not have."""
    limits = [parse_entry(text) for text in ceiling]
    return [text for text in requested if not any(limit.covers(parse_entry(text)) for limit in limits)]


class Allowlist:
    """A run's allowlist as the proxy asks it: by name first; by address for names the network entries cover."""

    def __init__(self, entries: Iterable[str]) -> None:
        self.entries = tuple(parse_entry(text) for text in entries)

    def __bool__(self) -> bool:
        return bool(self.entries)

    def __str__(self) -> str:
        return ", ".join(str(entry) for entry in self.entries)

    def allows_name(self, host: str, port: int) -> bool:
        return any(entry.matches_name(host, port) for entry in self.entries)

    def may_allow_by_address(self, port: int) -> bool:
        """Whether a name not allowed by name could still be allowed by where it resolves (a network entry)."""
        return any(entry.kind == "network" and entry.allows_port(port) for entry in self.entries)

    def allows_addresses(self, addresses: Iterable[Address], port: int) -> bool:
        networks = [entry.network for entry in self.entries if entry.kind == "network" and entry.allows_port(port)]
        addresses = list(addresses)
        return bool(addresses) and all(any(_in(address, net) for net in networks) for address in addresses)


def job_egress(entries: Iterable[str], config: SandboxConfig) -> dict | None:
    """What the in-sandbox runner needs for a run with an allowlist (None without one: nothing is started):
    where the relay listens and what it relays to (supervisor.py), the environment and the extra CA bundle
    the language child takes on (child.py, child.js)."""
    if not tuple(entries):
        return None
    ca_file = f"{SANDBOX_CHANNEL_DIR}/{CA_NAME}" if config.egress_ca_bundle else None
    return {"port": RELAY_PORT, "socket": f"{SANDBOX_CHANNEL_DIR}/{SOCKET_NAME}", "ca_file": ca_file,
            "env": sandbox_env(config.egress_pip_index_url, config.egress_npm_registry, ca_file)}


def sandbox_env(pip_index_url: str = "", npm_registry: str = "", ca_file: str | None = None) -> dict[str, str]:
    """The environment a run with egress gets on top of the sandbox's own: every client's proxy settings point
    at the relay; local addresses stay direct (a server the code runs itself); pip and npm use the operator's
    mirror when there is one; the CA bundle (the public CAs and the operator's, in one file) when there is one."""
    env = {}
    for name in ("HTTP_PROXY", "HTTPS_PROXY", "http_proxy", "https_proxy", "npm_config_proxy",
                 "npm_config_https_proxy"):
        env[name] = PROXY_URL
    for name in ("NO_PROXY", "no_proxy", "npm_config_noproxy"):
        env[name] = "localhost,127.0.0.1,::1"
    # /tmp is small: no second copy of each download in pip's cache. Debian's interpreter is marked externally
    # managed (PEP 668), which refuses even a user install; what pip installs here goes to the user's site on
    # /tmp (the system is read-only) and lives as long as the sandbox.
    env.update(PIP_DISABLE_PIP_VERSION_CHECK="1", PIP_NO_CACHE_DIR="1", PIP_BREAK_SYSTEM_PACKAGES="1")
    if pip_index_url:
        env["PIP_INDEX_URL"] = pip_index_url
    if npm_registry:
        env["npm_config_registry"] = npm_registry
    if ca_file:
        for name in ("SSL_CERT_FILE", "REQUESTS_CA_BUNDLE", "CURL_CA_BUNDLE", "PIP_CERT", "NODE_EXTRA_CA_CERTS",
                     "npm_config_cafile"):
            env[name] = ca_file
    return env


def refusal_lines(records: Iterable[dict], limit: int = 20) -> str:
    """One stderr line per refused connection (the first `limit`), as the run's stderr ends with them."""
    refused = [record for record in records if not record.get("allowed")]
    lines = [f"sandboxctl: connection to {_authority(record)} refused: {record.get('reason')}" if record.get("host")
             else f"sandboxctl: a request to the egress proxy was refused: {record.get('reason')}"
             for record in refused[:limit]]
    if len(refused) > limit:
        lines.append(f"sandboxctl: {len(refused) - limit} more connections refused")
    return "".join(f"{line}\n" for line in lines)


def _authority(record: dict) -> str:
    host = str(record.get("host"))
    return f"[{host}]:{record.get('port')}" if ":" in host else f"{host}:{record.get('port')}"

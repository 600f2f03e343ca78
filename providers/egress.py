"""Egress on each provider: the self-managed pool's proxy channel around a run, and what a SaaS service is told.

A run's allowlist arrives in its Limits (`egress`, entries with presets expanded, within its account's
ceiling: sandboxctl/egress/). On the self-managed pool it becomes a channel of this worker's egress proxy
(executor/egress_proxy.py), bound in the sandbox's own channel folder for the run alone; the proxy's record
of every connection comes back in the result (`egress`), and each refused one as a line of stderr. A provider
that cannot hold a run to its allowlist says so before the run is accepted (`egress_problem`: the API
answers 400 naming the provider).
"""

import logging
from collections.abc import Iterator
from contextlib import contextmanager

from executor.egress import parse_entry, refusal_lines
from executor.egress_proxy import Channel, EgressProxy
from providers.base import ExecutionResult, Limits, ProviderError

log = logging.getLogger(__name__)

# This worker's egress proxy, started with its pool (sandboxctl/worker/pool.py); None in the web.
_proxy: EgressProxy | None = None


def attach_proxy(proxy: EgressProxy | None) -> None:
    global _proxy
    _proxy = proxy


def current_proxy() -> EgressProxy | None:
    return _proxy


@contextmanager
def channel_for(sandbox, limits: Limits, label: str) -> Iterator[Channel | None]:
    """The run's channel while it runs in `sandbox` (None without an allowlist: nothing is opened)."""
    if not limits.egress:
        yield None
        return
    folder = sandbox.channel_dir
    if folder is None or _proxy is None:
        raise ProviderError("this worker cannot give runs egress (no channel to its proxy)", code="egress_unavailable")
    try:
        channel = _proxy.open(folder, limits.egress, label)
    except OSError as exc:
        raise ProviderError(f"the run's egress channel could not be opened: {exc}", code="egress_unavailable") from exc
    try:
        yield channel
    finally:
        channel.close()


def record(result: ExecutionResult, channel: Channel | None) -> ExecutionResult:
    """The channel's record of the run's connections into its result; each refused one ends its stderr."""
    if channel is not None:
        result.egress = channel.close()
        result.stderr += refusal_lines(result.egress)
    return result


def e2b_network(entries: tuple[str, ...]) -> dict:
    """E2B's network options for an allowlist: everything denied but the entries (E2B matches names on the
    HTTP Host and the TLS server name, and addresses by CIDR; it has no ports, so an entry's port is not kept)."""
    allowed = []
    for text in entries:
        entry = parse_entry(text)
        if entry.kind == "any":
            allowed.append("0.0.0.0/0")
        elif entry.kind == "network":
            allowed.append(str(entry.network))
        else:
            allowed.append(entry.host if entry.kind == "host" else f"*.{entry.host}")
    return {"allow_out": allowed, "deny_out": ["0.0.0.0/0"]}

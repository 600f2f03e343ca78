"""What a run may reach: the intersection of what it asks for (`network: {"allow": [...]}`) with its account's
ceiling. A request beyond the ceiling is refused whole (the API answers 403 naming the entries), never
quietly trimmed: a run that silently lost a host would fail later in a way nobody can read.

Entries and presets are executor/egress.py's; presets come from SANDBOX_EGRESS_PRESETS. Ceilings keep preset
names as written, so an operator's change to a preset reaches every ceiling naming it; a request's entries
are expanded as it is accepted, so the worker needs no presets and a run keeps what it was given.
"""

import logging
from dataclasses import replace

from django.conf import settings
from django.db import IntegrityError, transaction
from django.db.models import F
from django.db.models.signals import post_save

from executor.config import Limits
from executor.egress import PRESET_NAME, EntryError, beyond, expand, parse_entry
from sandboxctl.egress.models import AccountEgress, EgressDefault, EgressTally

log = logging.getLogger(__name__)

__all__ = ["BeyondCeiling", "EgressUnsupported", "EntryError", "allowlist_for", "ceiling", "check", "count_run",
           "default_ceiling", "metrics_lines", "set_ceiling", "set_default", "tally", "whole_ceiling",
           "with_allowlist"]


class BeyondCeiling(Exception):
    """A request asked for entries its account's ceiling does not cover; `refused` names them."""

    def __init__(self, refused: list[str]) -> None:
        self.refused = refused
        super().__init__(f"beyond this account's egress ceiling: {', '.join(refused)} (staff set ceilings in the "
                         "admin or with `manage.py set_egress`)")


def presets() -> dict[str, list[str]]:
    return settings.SANDBOX_EGRESS_PRESETS


def check(entries: list) -> list[str]:
    """The entries expanded (presets replaced, normalised); EntryError naming the first bad one."""
    return expand(entries, presets())


def written(entries: list) -> list[str]:
    """Entries as a ceiling keeps them: preset names as names, everything else normalised (EntryError)."""
    check(entries)
    kept: list[str] = []
    for text in entries:
        name = text.strip().lower()
        entry = name if PRESET_NAME.match(name) and name in presets() else str(parse_entry(text))
        if entry not in kept:
            kept.append(entry)
    return kept


def ceiling(account) -> list[str]:
    """The account's ceiling as written (empty: nowhere)."""
    row = AccountEgress.objects.filter(account=account).values_list("allow", flat=True).first()
    return list(row or [])


def whole_ceiling(account) -> tuple[str, ...]:
    """The account's ceiling expanded: what RAGFlow's `/run` (which cannot ask) is given. An entry that no longer
    reads (a preset the operator removed) is left out and logged."""
    found: list[str] = []
    for text in ceiling(account):
        try:
            found += [entry for entry in check([text]) if entry not in found]
        except EntryError as exc:
            log.warning("account %s: egress ceiling entry %r is ignored: %s", account, text, exc)
    return tuple(found)


def allowlist_for(account, requested: list[str] | tuple[str, ...]) -> tuple[str, ...]:
    """What a run or session that asked for `requested` gets: those entries, expanded, when the account's
    ceiling covers every one; BeyondCeiling naming the ones it does not. Nothing asked: nothing given."""
    if not requested:
        return ()
    wanted = check(list(requested))
    refused = beyond(wanted, whole_ceiling(account))
    if refused:
        raise BeyondCeiling(refused)
    return tuple(wanted)


class EgressUnsupported(Exception):
    """The provider cannot hold its sandboxes to an egress allowlist (the message names it)."""


def with_allowlist(provider, limits: Limits, account, requested) -> Limits:
    """A run's (or session's) `limits` with the egress allowlist its request gets: BeyondCeiling past its
    account's ceiling, EgressUnsupported when its provider cannot hold a sandbox to one."""
    allowlist = allowlist_for(account, requested)
    if allowlist:
        problem = provider.egress_problem(allowlist)
        if problem:
            raise EgressUnsupported(problem)
    return replace(limits, egress=allowlist)


def set_ceiling(account, entries: list[str]) -> list[str]:
    """Replace the account's ceiling (EntryError for a bad entry); returns it as kept."""
    kept = written(entries)
    AccountEgress.objects.update_or_create(account=account, defaults={"allow": kept})
    return kept


def default_ceiling() -> list[str]:
    return list(EgressDefault.objects.filter(pk=1).values_list("allow", flat=True).first() or [])


def set_default(entries: list[str]) -> list[str]:
    kept = written(entries)
    EgressDefault.objects.update_or_create(pk=1, defaults={"allow": kept})
    return kept


def give_default(sender, instance, created: bool, raw: bool = False, **kwargs) -> None:
    """A new account starts with the default ceiling (none unless staff set one)."""
    if not created or raw:
        return
    default = default_ceiling()
    if default:
        AccountEgress.objects.get_or_create(account=instance, defaults={"allow": default})


post_save.connect(give_default, sender=settings.AUTH_USER_MODEL, dispatch_uid="egress-default-for-new-accounts")


def tally(account_id, records: list[dict]) -> None:
    """Count a run's connections by outcome for /metrics (called once, as its end is recorded)."""
    for outcome in ("allowed", "refused"):
        chosen = [record for record in records if bool(record.get("allowed")) == (outcome == "allowed")]
        if not chosen:
            continue
        counts = {"connections": len(chosen), "bytes_out": sum(int(r.get("bytes_out") or 0) for r in chosen),
                  "bytes_in": sum(int(r.get("bytes_in") or 0) for r in chosen)}
        rows = EgressTally.objects.filter(account_id=account_id, outcome=outcome)
        if rows.update(**{name: F(name) + value for name, value in counts.items()}):
            continue
        try:
            with transaction.atomic():
                EgressTally.objects.create(account_id=account_id, outcome=outcome, **counts)
        except IntegrityError:  # another run of the account made the row meanwhile
            rows.update(**{name: F(name) + value for name, value in counts.items()})


def metrics_lines() -> list[str]:
    lines = []
    tallies = list(EgressTally.objects.select_related("account").order_by("account_id", "outcome"))
    for name, field, help_text in (
        ("sandboxctl_egress_connections_total", "connections", "Connections through the egress proxy"),
        ("sandboxctl_egress_bytes_out_total", "bytes_out", "Bytes sent out through the egress proxy"),
        ("sandboxctl_egress_bytes_in_total", "bytes_in", "Bytes received through the egress proxy"),
    ):
        lines += [f"# HELP {name} {help_text}, by account and outcome (allowed, refused).", f"# TYPE {name} counter"]
        for row in tallies:
            account = _label(row.account.get_username() if row.account else "")
            lines.append(f'{name}{{account="{account}",outcome="{row.outcome}"}} {getattr(row, field)}')
    return lines


def _label(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def count_run(account_id, records: list[dict]) -> None:
    """`tally`, for a run whose end was just recorded: a counter that cannot be written is logged, never a
    reason to doubt the run's own record."""
    try:
        tally(account_id, records)
    except Exception:  # noqa: BLE001 - the run's end is stored already; only /metrics misses this run
        log.exception("egress tallies of account %s not updated", account_id)

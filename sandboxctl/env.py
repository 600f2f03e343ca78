"""Typed readers for settings taken from the environment, each with a safe default.

A value that cannot be read raises ImproperlyConfigured naming the variable and the value, so a typo
stops the process at start instead of quietly meaning something else.
"""

import ipaddress
import os
import re

from django.core.exceptions import ImproperlyConfigured

TRUE = ("1", "true", "yes", "on")
FALSE = ("0", "false", "no", "off")


def _raw(name: str) -> str | None:
    value = os.environ.get(name)
    return None if value is None or value.strip() == "" else value.strip()


def _bad(name: str, raw: str, wanted: str) -> ImproperlyConfigured:
    return ImproperlyConfigured(f"{name}={raw!r} is not {wanted}")


def env_str(name: str, default: str = "") -> str:
    return os.environ.get(name, default)


def env_int(name: str, default: int) -> int:
    raw = _raw(name)
    if raw is None:
        return default
    try:
        return int(raw)
    except ValueError:
        raise _bad(name, raw, "an integer") from None


def env_float(name: str, default: float) -> float:
    raw = _raw(name)
    if raw is None:
        return default
    try:
        return float(raw)
    except ValueError:
        raise _bad(name, raw, "a number") from None


def env_bool(name: str, default: bool = False) -> bool:
    raw = _raw(name)
    if raw is None:
        return default
    if raw.lower() in TRUE:
        return True
    if raw.lower() in FALSE:
        return False
    raise _bad(name, raw, f"a boolean (one of {', '.join(TRUE + FALSE)})")


def env_list(name: str, default: str = "") -> list[str]:
    return [item.strip() for item in os.environ.get(name, default).split(",") if item.strip()]


def env_networks(name: str, default: str = "") -> list[ipaddress.IPv4Network | ipaddress.IPv6Network]:
    networks = []
    for item in env_list(name, default):
        try:
            networks.append(ipaddress.ip_network(item, strict=False))
        except ValueError:
            raise _bad(name, item, "a network such as 10.0.0.0/8 or ::1/128") from None
    return networks


def env_rate(name: str, default: str) -> str:
    """A request rate in DRF's form: a count per s, m, h or d (e.g. "1200/min")."""
    raw = _raw(name) or default
    if not re.fullmatch(r"\d+/(s|sec|second|m|min|minute|h|hour|d|day)", raw):
        raise _bad(name, raw, 'a rate such as "1200/min"')
    return raw


def env_choice(name: str, default: str, choices: tuple[str, ...]) -> str:
    raw = _raw(name) or default
    if raw not in choices:
        raise _bad(name, raw, f"one of {', '.join(choices)}")
    return raw


def env_json_object(name: str, default: dict) -> dict:
    """A JSON object (e.g. a storage backend's options)."""
    import json

    raw = _raw(name)
    if raw is None:
        return default
    try:
        value = json.loads(raw)
    except ValueError:
        value = None
    if not isinstance(value, dict):
        raise _bad(name, raw, "a JSON object")
    return value


def env_host_map(name: str) -> dict[str, tuple]:
    """Names and the addresses they stand for, like /etc/hosts: "mirror.internal=10.0.0.5,api.test=::1" (a name
    given twice stands for both addresses)."""
    found: dict[str, tuple] = {}
    for item in env_list(name, ""):
        host, equals, address = item.partition("=")
        try:
            parsed = ipaddress.ip_address(address.strip())
        except ValueError:
            raise _bad(name, item, "name=address pairs such as mirror.internal=10.0.0.5") from None
        if not equals or not host.strip():
            raise _bad(name, item, "name=address pairs such as mirror.internal=10.0.0.5")
        key = host.strip().lower().rstrip(".")
        found[key] = (*found.get(key, ()), parsed)
    return found

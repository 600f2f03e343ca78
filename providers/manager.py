"""Builds the active provider from SystemSetting and rebuilds it when the settings change.

Every run asks for the active provider; the settings are one small query, and the provider instance is
reused until they change, so the web process and every worker follow a switch without a restart.
"""

import threading

from providers.base import SandboxProvider
from providers.models import SystemSetting
from providers.registry import provider_class

PROVIDER_TYPE = "sandbox.provider_type"

_lock = threading.Lock()
_cached: tuple[tuple, SandboxProvider] | None = None


def active_provider_name() -> str:
    setting = SystemSetting.objects.filter(name=PROVIDER_TYPE).first()
    return setting.value if setting else "self_managed"


def active_provider() -> SandboxProvider:
    global _cached
    rows = {row.name: row for row in SystemSetting.objects.filter(name__startswith="sandbox.")}
    name = rows[PROVIDER_TYPE].value if PROVIDER_TYPE in rows else "self_managed"
    config_row = rows.get(f"sandbox.{name}")
    version = (name, config_row.updated_at if config_row else None)
    with _lock:
        if _cached is None or _cached[0] != version:
            provider = provider_class(name)()
            provider.initialize(config_row.parsed() if config_row else {})
            _cached = (version, provider)
        return _cached[1]

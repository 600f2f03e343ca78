"""Builds the active provider from SystemSetting and rebuilds it when the settings change.

Every run asks for the active provider; the settings are one small query, and the provider instance is
reused until they change, so the web process and every worker follow a switch without a restart.
"""

import threading

from providers import config_store
from providers.base import SandboxProvider
from providers.models import SystemSetting
from providers.registry import provider_class

_lock = threading.Lock()
_cache: dict[str, tuple[object, SandboxProvider]] = {}


def _versions() -> dict[str, object]:
    return dict(SystemSetting.objects.filter(name__startswith="sandbox.").values_list("name", "updated_at"))


def active_provider() -> SandboxProvider:
    """One query: which provider is active, and the version of its settings."""
    rows = SystemSetting.objects.filter(name__startswith="sandbox.").values_list("name", "updated_at", "value")
    versions = {name: updated for name, updated, _ in rows}
    active = next((value for name, _, value in rows if name == config_store.PROVIDER_TYPE), "")
    name = active or config_store.DEFAULT_PROVIDER
    return provider(name, versions.get(config_store.setting_name(name)))


def provider(name: str, version: object = None) -> SandboxProvider:
    """The configured instance of provider `name`, rebuilt when its settings row changed."""
    if version is None:
        version = _versions().get(config_store.setting_name(name))
    with _lock:
        cached = _cache.get(name)
        if cached is None or cached[0] != version:
            instance = provider_class(name)()
            instance.initialize(config_store.load(name))
            _cache[name] = (version, instance)
        return _cache[name][1]


def build(name: str, config: dict) -> SandboxProvider:
    """A throw-away instance for unsaved settings (the admin page's Test connection)."""
    instance = provider_class(name)()
    instance.initialize(config)
    return instance

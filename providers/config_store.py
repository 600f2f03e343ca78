"""Reading and writing provider configuration in SystemSetting, with secrets encrypted and never shown."""

import json

from django.db import transaction

from providers import encryption
from providers.models import SystemSetting
from providers.registry import provider_class
from providers.schema import with_defaults

PROVIDER_TYPE = "sandbox.provider_type"
DEFAULT_PROVIDER = "self_managed"


def setting_name(provider: str) -> str:
    return f"sandbox.{provider}"


def active_name() -> str:
    row = SystemSetting.objects.filter(name=PROVIDER_TYPE).first()
    return row.value if row and row.value else DEFAULT_PROVIDER


def version(provider: str) -> str:
    """Changes whenever the provider's stored settings change."""
    row = SystemSetting.objects.filter(name=setting_name(provider)).values_list("updated_at", flat=True).first()
    return row.isoformat() if row else "unset"


def _stored(provider: str) -> dict:
    row = SystemSetting.objects.filter(name=setting_name(provider)).first()
    return json.loads(row.value or "{}") if row else {}


def _secret_names(provider: str) -> set[str]:
    return {item.name for item in provider_class(provider).get_config_schema() if item.secret}


def load(provider: str) -> dict:
    """The configuration with secrets decrypted, for the provider itself only."""
    config = _stored(provider)
    for name in _secret_names(provider) & set(config):
        config[name] = encryption.decrypt(config[name])
    return config


def masked(provider: str) -> dict:
    """The configuration as an API or page may show it."""
    config = load(provider)
    for name in _secret_names(provider) & set(config):
        config[name] = encryption.mask(config[name])
    return config


def merge_secrets(provider: str, submitted: dict) -> tuple[dict, dict[str, list[str]]]:
    """A secret left blank, or sent back masked, keeps the stored value — unless a field that says where
    requests go was changed: a stored secret never follows the settings to another endpoint.

    Returns (merged settings, field errors).
    """
    merged = dict(submitted)
    stored = load(provider)
    changed = changed_endpoints(provider, stored, submitted)
    errors: dict[str, list[str]] = {}
    for name in _secret_names(provider):
        value = merged.get(name)
        if (value in (None, "") or str(value).startswith(encryption.MASK)) and name in stored:
            if changed:
                errors[name] = [f"re-enter {name} when changing {', '.join(changed)}"]
            else:
                merged[name] = stored[name]
    return merged, errors


def changed_endpoints(provider: str, stored: dict, submitted: dict) -> list[str]:
    schema = provider_class(provider).get_config_schema()
    before, after = with_defaults(schema, stored), with_defaults(schema, submitted)
    return [item.name for item in schema if item.endpoint and before.get(item.name) != after.get(item.name)]


def save(provider: str, config: dict, activate: bool) -> None:
    """Store an already validated configuration (secrets in plaintext here, encrypted on the way in)."""
    stored = dict(config)
    for name in _secret_names(provider) & set(stored):
        if stored[name] not in (None, ""):
            stored[name] = encryption.encrypt(str(stored[name]))
    with transaction.atomic():
        SystemSetting.objects.update_or_create(
            name=setting_name(provider),
            defaults={"value": json.dumps(stored), "data_type": SystemSetting.DataType.JSON, "source": "admin"},
        )
        if activate:
            SystemSetting.objects.update_or_create(
                name=PROVIDER_TYPE,
                defaults={"value": provider, "data_type": SystemSetting.DataType.STRING, "source": "admin"},
            )

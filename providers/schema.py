"""Self-describing provider configuration: each provider lists its fields, the admin form and validation follow."""

from dataclasses import asdict, dataclass, field
from typing import Any


@dataclass(frozen=True)
class ConfigField:
    name: str
    type: str = "string"
    label: str = ""
    description: str = ""
    default: Any = None
    required: bool = False
    min: int | None = None
    max: int | None = None
    options: tuple[str, ...] = ()
    secret: bool = False
    # Says where requests (and with them the secrets) go: a secret is never reused for a changed endpoint.
    endpoint: bool = False
    # "runtime" fields are edited in the admin page; "deployment" ones come from the environment, read-only.
    scope: str = "runtime"
    value: Any = field(default=None, compare=False)

    def describe(self) -> dict:
        described = asdict(self)
        described["options"] = list(self.options)
        if self.scope == "runtime":
            described.pop("value")
        return described


def validate(fields: list[ConfigField], config: dict) -> dict[str, list[str]]:
    """Field errors for `config` against `fields`: {field name: [messages]}; empty when valid."""
    errors: dict[str, list[str]] = {}
    known = {item.name for item in fields if item.scope == "runtime"}
    for name in config:
        if name not in known:
            errors.setdefault(name, []).append("is not a setting of this provider")
    for item in fields:
        if item.scope != "runtime":
            continue
        message = _check(item, config.get(item.name))
        if message:
            errors.setdefault(item.name, []).append(message)
    return errors


def _check(item: ConfigField, value: Any) -> str | None:
    if value in (None, ""):
        return "is required" if item.required else None
    if item.type == "integer":
        if isinstance(value, bool) or not isinstance(value, int):
            return "must be a whole number"
        if item.min is not None and value < item.min:
            return f"must be ≥ {item.min}"
        if item.max is not None and value > item.max:
            return f"must be ≤ {item.max}"
    elif item.type == "boolean":
        if not isinstance(value, bool):
            return "must be true or false"
    elif item.type == "select":
        if value not in item.options:
            return f"must be one of: {', '.join(item.options)}"
    elif not isinstance(value, str):
        return "must be text"
    elif len(value) > 4096:
        return "is too long"
    return None


def with_defaults(fields: list[ConfigField], config: dict) -> dict:
    merged = {item.name: item.default for item in fields if item.scope == "runtime" and item.default is not None}
    merged.update({key: value for key, value in config.items() if value not in (None, "")})
    return merged

"""Provider names to classes. A provider is listed here once and described by its own class."""

from providers.base import SandboxProvider
from providers.self_managed import SelfManagedProvider

PROVIDERS: dict[str, type[SandboxProvider]] = {
    SelfManagedProvider.name: SelfManagedProvider,
}


def provider_class(name: str) -> type[SandboxProvider]:
    try:
        return PROVIDERS[name]
    except KeyError:
        raise LookupError(f"unknown provider {name!r}") from None

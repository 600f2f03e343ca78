"""Provider names to classes. A provider is listed here once and described by its own class."""

from providers.aliyun_codeinterpreter import AliyunCodeInterpreterProvider
from providers.base import SandboxProvider
from providers.e2b import E2BProvider
from providers.self_managed import SelfManagedProvider

PROVIDERS: dict[str, type[SandboxProvider]] = {
    provider.name: provider for provider in (SelfManagedProvider, AliyunCodeInterpreterProvider, E2BProvider)
}


def provider_class(name: str) -> type[SandboxProvider]:
    try:
        return PROVIDERS[name]
    except KeyError:
        raise LookupError(f"unknown provider {name!r}") from None

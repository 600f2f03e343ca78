"""This worker host's warm pool: made from the settings when the worker starts, attached to the self-managed
provider (which runs every self-managed run on it), shut down with the worker. Only worker processes import
this: the web never pays for the executor's machinery."""

import logging
import threading
from pathlib import Path

from django.conf import settings
from django.db import close_old_connections

from executor.config import PRELOADED, KindSize, PoolConfig, SandboxConfig
from executor.egress_proxy import EgressProxy, ProxySettings
from executor.pool import SandboxPool
from providers import egress, self_managed
from providers.heartbeats import live_workers

log = logging.getLogger(__name__)

_lock = threading.Lock()


def sandbox_config() -> SandboxConfig:
    return SandboxConfig(
        backend=settings.SANDBOX_BACKEND,
        runtime=settings.SANDBOX_RUNTIME,
        allow_insecure_runtime=settings.SANDBOX_ALLOW_INSECURE_RUNTIME,
        container_memory_mb=settings.SANDBOX_MEMORY_MAX_MB,
        cpus=settings.SANDBOX_CPUS,
        python_preload=settings.SANDBOX_PYTHON_PRELOAD if settings.SANDBOX_BACKEND == "runsc" else "",
        labels={"sandboxctl.worker-host": settings.SANDBOX_WORKER_HOST},
        runsc_path=settings.SANDBOX_RUNSC_PATH,
        runsc_platform=settings.SANDBOX_RUNSC_PLATFORM,
        runsc_root=Path(settings.SANDBOX_RUNSC_STATE_DIR) / "runsc",
        bundle_dir=Path(settings.SANDBOX_RUNSC_STATE_DIR) / "bundles",
        rootfs_dir=settings.SANDBOX_ROOTFS_DIR,
        snapshot_dir=settings.SANDBOX_SNAPSHOT_DIR,
        snapshot_variants=settings.SANDBOX_SNAPSHOT_VARIANTS,
        image_cache_dir=settings.SANDBOX_IMAGE_CACHE_DIR,
        egress_pip_index_url=settings.SANDBOX_EGRESS_PIP_INDEX_URL,
        egress_npm_registry=settings.SANDBOX_EGRESS_NPM_REGISTRY,
        egress_ca_bundle=Path(settings.SANDBOX_EGRESS_CA_BUNDLE) if settings.SANDBOX_EGRESS_CA_BUNDLE else None,
    )


def egress_proxy() -> EgressProxy:
    """This worker's egress proxy (executor/egress_proxy.py): idle until a run with an allowlist opens a channel."""
    return EgressProxy(ProxySettings(
        allowed_networks=tuple(settings.SANDBOX_EGRESS_ALLOWED_NETWORKS),
        hosts=settings.SANDBOX_EGRESS_RESOLVE,
        max_connections=settings.SANDBOX_EGRESS_MAX_CONNECTIONS,
        max_bytes=settings.SANDBOX_EGRESS_MAX_BYTES,
        idle_timeout=settings.SANDBOX_EGRESS_IDLE_TIMEOUT,
        connection_max_time=settings.SANDBOX_EGRESS_CONNECTION_MAX_TIME,
    ))


def make_backend(config: SandboxConfig, owner: str):
    # Each host imports only the backend it drives (a runsc host never needs docker-py).
    if config.backend == "docker":
        from executor.docker_sandbox import DockerBackend

        return DockerBackend(config, settings.SANDBOX_SITE, owner)
    from executor.runsc_sandbox import RunscBackend

    return RunscBackend(config, settings.SANDBOX_SITE, owner)


def pool_sizes(languages: tuple[str, ...], config: SandboxConfig) -> dict[str, KindSize]:
    minimum = {"python": settings.SANDBOX_POOL_SIZE_PYTHON, "nodejs": settings.SANDBOX_POOL_SIZE_NODEJS,
               PRELOADED: settings.SANDBOX_POOL_SIZE_PYTHON_PRELOADED}
    kinds = list(languages) + ([PRELOADED] if "python" in languages and config.preload_modules else [])
    return {kind: KindSize(minimum[kind], max(minimum[kind], settings.SANDBOX_POOL_MAX)) for kind in kinds}


def live_owners() -> set[str]:
    """Worker instances with a fresh heartbeat: the only owners whose sandboxes are not orphans."""
    try:
        return set(live_workers().values_list("worker", flat=True))
    finally:
        close_old_connections()


def start_pool(name: str, languages: tuple[str, ...]) -> SandboxPool:
    """Start this worker's pool (once per process); `name` is this worker instance, the owner of its sandboxes."""
    with _lock:
        if self_managed.current_pool() is None:
            sandbox = sandbox_config()
            if sandbox.insecure:
                log.critical("INSECURE: sandboxes run with runtime %r, not gVisor", sandbox.runtime)
            config = PoolConfig(
                name=name,
                site=settings.SANDBOX_SITE,
                size=pool_sizes(languages, sandbox),
                acquire_timeout=settings.SANDBOX_POOL_ACQUIRE_TIMEOUT,
                creators=settings.SANDBOX_POOL_CREATORS,
                max_creations_per_second=settings.SANDBOX_POOL_MAX_CREATIONS_PER_SECOND,
                sweep_interval=settings.SANDBOX_POOL_SWEEP_INTERVAL,
            )
            pool = SandboxPool(make_backend(sandbox, name), config, live_owners=live_owners)
            pool.start()
            if sandbox.backend == "runsc":  # the docker backend's sandboxes have no egress channel
                proxy = egress_proxy()
                proxy.start()
                egress.attach_proxy(proxy)
            self_managed.attach_pool(pool)
        return self_managed.current_pool()


def stop_pool() -> None:
    with _lock:
        pool = self_managed.current_pool()
        if pool is not None:
            self_managed.attach_pool(None)
            pool.shutdown()
        proxy = egress.current_proxy()
        if proxy is not None:
            egress.attach_proxy(None)
            proxy.stop()

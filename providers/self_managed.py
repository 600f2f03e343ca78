"""The self-managed provider: this worker host's warm pool of single-use gVisor sandboxes."""

import logging
import threading
from pathlib import Path

from django.conf import settings

from executor.config import PRELOADED, KindSize, PoolConfig, SandboxConfig, sandbox_queue
from executor.deadlines import SANDBOX_DRAIN, SANDBOX_KILL_GRACE
from executor.pool import PoolExhausted, SandboxPool
from executor.sandbox import RunReport, SandboxError
from providers.base import (
    ExecutionResult,
    Health,
    Limits,
    ProviderError,
    SandboxProvider,
    Status,
    apply_outcome,
    mark_memory_limit,
    mark_timeout,
    set_status,
)
from providers.schema import ConfigField

log = logging.getLogger(__name__)

_pool: SandboxPool | None = None
_pool_lock = threading.Lock()


def sandbox_config() -> SandboxConfig:
    return SandboxConfig(
        backend=settings.SANDBOX_BACKEND,
        runtime=settings.SANDBOX_RUNTIME,
        allow_insecure_runtime=settings.SANDBOX_ALLOW_INSECURE_RUNTIME,
        memory_mb=settings.SANDBOX_MEMORY_MAX_MB,
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
    )


def make_backend(config: SandboxConfig, owner: str):
    # Only worker processes drive a backend: the web never pays for importing docker-py and runsc's machinery.
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
    from django.db import close_old_connections

    from providers.heartbeats import live_workers  # models: this module is imported before the registry is ready

    try:
        return set(live_workers().values_list("worker", flat=True))
    finally:
        close_old_connections()


def start_pool(name: str, languages: tuple[str, ...]) -> SandboxPool:
    """Start this worker's pool (once per process); `name` is this worker instance, the owner of its sandboxes."""
    global _pool
    with _pool_lock:
        if _pool is None:
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
            _pool = SandboxPool(make_backend(sandbox, name), config, live_owners=live_owners)
            _pool.start()
        return _pool


def stop_pool() -> None:
    global _pool
    with _pool_lock:
        if _pool is not None:
            _pool.shutdown()
            _pool = None


def current_pool() -> SandboxPool | None:
    return _pool


class SelfManagedProvider(SandboxProvider):
    name = "self_managed"
    run_overhead = SANDBOX_KILL_GRACE + SANDBOX_DRAIN
    label = "Self-managed gVisor pool"
    description = "Warm single-use gVisor (runsc) containers on the worker hosts; no network, no secrets."

    @classmethod
    def get_config_schema(cls) -> list[ConfigField]:
        return [
            ConfigField("timeout_max", "integer", "Longest run (s)", "Runs asking for more are clamped to this.",
                        default=int(settings.SANDBOX_TIMEOUT_MAX), min=1, max=int(settings.SANDBOX_TIMEOUT_MAX)),
            ConfigField("memory_max_mb", "integer", "Most memory per run (MB)",
                        "Runs asking for more are clamped to this.", default=settings.SANDBOX_MEMORY_MAX_MB,
                        min=settings.SANDBOX_MEMORY_MIN_MB, max=settings.SANDBOX_MEMORY_MAX_MB),
            ConfigField("output_limit", "integer", "Output cap per stream (bytes)",
                        "stdout and stderr are each truncated past this.", default=settings.SANDBOX_OUTPUT_LIMIT,
                        min=1024, max=settings.SANDBOX_OUTPUT_LIMIT),
            ConfigField("pool_size_python", "integer", "Warm Python sandboxes per worker", scope="deployment",
                        value=settings.SANDBOX_POOL_SIZE_PYTHON, description="SANDBOX_POOL_SIZE_PYTHON"),
            ConfigField("pool_size_nodejs", "integer", "Warm Node.js sandboxes per worker", scope="deployment",
                        value=settings.SANDBOX_POOL_SIZE_NODEJS, description="SANDBOX_POOL_SIZE_NODEJS"),
            ConfigField("runtime", "string", "Container runtime", scope="deployment", value=settings.SANDBOX_RUNTIME,
                        description="SANDBOX_RUNTIME; runc only with SANDBOX_ALLOW_INSECURE_RUNTIME"),
            ConfigField("hard_timeout_max", "integer", "Server maximum run time (s)", scope="deployment",
                        value=int(settings.SANDBOX_TIMEOUT_MAX), description="SANDBOX_TIMEOUT_MAX"),
            ConfigField("hard_memory_max_mb", "integer", "Container memory limit (MB)", scope="deployment",
                        value=settings.SANDBOX_MEMORY_MAX_MB, description="SANDBOX_MEMORY_MAX_MB"),
        ]

    def timeout_cap(self) -> float:
        return float(self.config.get("timeout_max", settings.SANDBOX_TIMEOUT_MAX))

    def memory_cap_mb(self) -> int:
        configured = int(self.config.get("memory_max_mb", settings.SANDBOX_MEMORY_MAX_MB))
        return min(configured, settings.SANDBOX_MEMORY_MAX_MB)

    def output_cap(self) -> int:
        return int(self.config.get("output_limit", settings.SANDBOX_OUTPUT_LIMIT))

    def queue_for(self, language: str) -> str:
        return sandbox_queue(language)

    def acquire_wait(self, limits: Limits) -> float:
        # A busy host only slows a refill down, so a run may wait for its sandbox as long as its own limit.
        return max(settings.SANDBOX_POOL_ACQUIRE_TIMEOUT, limits.timeout)

    def run(self, code: str, language: str, limits: Limits, arguments: dict, should_stop=None, run_id: str = "",
            ledger=None, account: str = "") -> ExecutionResult:
        """One run in a fresh sandbox of this worker's pool (the kind chosen from the code), removed afterwards.
        A busy host only slows a refill down (the sandbox made for a waiting run starts at full CPU weight), so
        the run waits for its sandbox as long as its own time limit, never less than the pool's minimum wait."""
        pool = current_pool()
        if pool is None:
            raise ProviderError("this worker has no sandbox pool")
        try:
            sandbox = pool.acquire(language, timeout=self.acquire_wait(limits), code=code)
        except PoolExhausted as exc:
            raise ProviderError(str(exc), code="pool_exhausted") from exc
        except SandboxError as exc:
            raise ProviderError(str(exc)) from exc
        try:
            sandbox.assign_account(account)
            report = sandbox.run(code, arguments, limits, should_stop=should_stop)
        except SandboxError as exc:
            raise ProviderError(f"the sandbox failed: {exc}") from exc
        finally:
            pool.release(sandbox)
        result = classify(report, limits, language)
        result.sandbox_id = sandbox.id
        return result

    def health_check(self) -> Health:
        """Each language is served by a live worker that can make sandboxes (read from heartbeats: the pools
        live in the workers). A pool drained by load is healthy; one whose creations fail is not."""
        from providers.heartbeats import live_workers, unserved  # models: loaded before the registry is ready

        beats = list(live_workers())
        if not beats:
            return Health(False, "no live worker: start one (make run starts one)")
        problems = unserved(beats, self.languages)
        if problems:
            return Health(False, "; ".join(problems.values()))
        warm: dict[str, int] = {}
        for beat in beats:
            for kind, count in beat.pool_depth.items():
                warm[kind] = warm.get(kind, 0) + count
        versions = sorted({f"runsc {beat.runtime['version']}" for beat in beats if beat.runtime.get("version")})
        pools = ", ".join(f"{kind} {count}" for kind, count in sorted(warm.items()))
        return Health(True, f"{len(beats)} live worker{'s' if len(beats) != 1 else ''}; warm: {pools}"
                            + (f"; {', '.join(versions)}" if versions else ""))


def classify(report: RunReport, limits: Limits, language: str) -> ExecutionResult:
    """Decide the status from what the worker observed; exit codes alone never decide it."""
    result = ExecutionResult(
        status=Status.SUCCEEDED,
        stdout=report.stdout.decode("utf-8", "replace"),
        stderr=report.stderr.decode("utf-8", "replace"),
        exit_code=report.exit_code,
        execution_time=round(report.duration, 6),
        memory_used_kb=report.memory_used_kb,
        artifacts=report.artifacts,
        rejected_artifacts=report.rejected_artifacts,
        stdout_truncated=report.stdout_truncated,
        stderr_truncated=report.stderr_truncated,
    )
    if report.cancelled:
        set_status(result, Status.CANCELLED, "cancelled", "cancelled while running")
    elif report.timed_out:
        mark_timeout(result, limits)
    elif report.oom_killed or _node_heap_exhausted(report, language):
        mark_memory_limit(result, limits)
    elif report.protocol_violation:
        set_status(result, Status.SANDBOX_ERROR, "protocol_violation",
                   f"the sandbox sent a frame that failed verification: {report.protocol_violation}")
    elif report.sandbox_failure:
        set_status(result, Status.SANDBOX_ERROR, "sandbox_error", report.sandbox_failure)
    apply_outcome(result, report.result, limits)
    if report.too_many_artifacts and result.status == Status.SUCCEEDED:
        set_status(result, Status.FAILED, "too_many_artifacts", "the artifacts folder holds more than 1000 entries")
    return result


def _node_heap_exhausted(report: RunReport, language: str) -> bool:
    return language == "nodejs" and not report.result and b"heap out of memory" in report.stderr[-4096:]

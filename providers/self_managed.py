"""The self-managed provider: this worker host's warm pool of single-use gVisor sandboxes."""

import logging
import threading
from collections.abc import Iterator
from contextlib import contextmanager

from django.conf import settings

from executor.config import LANGUAGES, sandbox_queue
from executor.deadlines import SANDBOX_DRAIN, SANDBOX_KILL_GRACE
from executor.pool import PoolExhausted, SandboxPool
from executor.sandbox import InputRefused, RunReport, Sandbox, SandboxEnded, SandboxError
from providers import egress
from providers.base import (
    ExecutionResult,
    FileLimits,
    Health,
    Limits,
    ProviderError,
    ProviderSession,
    SandboxProvider,
    SessionGone,
    SessionTimes,
    Status,
    apply_outcome,
    mark_memory_limit,
    mark_timeout,
    set_status,
)
from providers.schema import ConfigField

log = logging.getLogger(__name__)

# This worker host's pool, made and attached by the worker (sandboxctl/worker/pool.py); None in the web.
_pool: SandboxPool | None = None


def attach_pool(pool: SandboxPool | None) -> None:
    """The worker hands its host's pool to the provider (sandboxctl/worker/pool.py makes it from settings)."""
    global _pool
    _pool = pool


def current_pool() -> SandboxPool | None:
    return _pool


class SelfManagedProvider(SandboxProvider):
    name = "self_managed"
    run_overhead = SANDBOX_KILL_GRACE + SANDBOX_DRAIN
    label = "Self-managed gVisor pool"
    description = "Warm single-use gVisor (runsc) containers on the worker hosts; no network, no secrets."
    takes_files = True
    session_languages = LANGUAGES

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

    def egress_problem(self, entries: tuple[str, ...]) -> str | None:
        if settings.SANDBOX_BACKEND != "runsc":  # the docker backend gives sandboxes no egress channel
            return super().egress_problem(entries) + " on the docker backend (SANDBOX_BACKEND=runsc can)"
        return None

    def acquire_wait(self, limits: Limits) -> float:
        # A busy host only slows a refill down, so a run may wait for its sandbox as long as its own limit.
        return max(settings.SANDBOX_POOL_ACQUIRE_TIMEOUT, limits.timeout)

    def run(self, code: str, language: str, limits: Limits, arguments: dict, should_stop=None, run_id: str = "",
            ledger=None, account: str = "", files: list[dict] | None = None, on_output=None) -> ExecutionResult:
        """One run in a fresh sandbox of this worker's pool (the kind chosen from the code), removed afterwards.
        A busy host only slows a refill down (the sandbox made for a waiting run starts at full CPU weight), so
        the run waits for its sandbox as long as its own time limit, never less than the pool's minimum wait."""
        pool = _pool_here()
        sandbox = _acquire(pool, language, self.acquire_wait(limits), code, account)
        try:
            sandbox.assign_account(account)
            with egress.channel_for(sandbox, limits, run_id or sandbox.id) as channel:  # None: no allowlist
                report = sandbox.run(code, arguments, limits, should_stop=should_stop, files=files,
                                     on_output=on_output)
        except SandboxError as exc:
            raise ProviderError(f"the sandbox failed: {exc}") from exc
        finally:
            pool.release(sandbox)
        result = classify(report, limits, language)
        result.sandbox_id = sandbox.id
        return egress.record(result, channel)

    def open_session(self, language: str, limits: Limits, files: list[dict], file_limits: FileLimits,
                     account: str = "", session_id: str = "", times: SessionTimes | None = None
                     ) -> "SelfManagedSession":
        """A sandbox of this worker's pool, opened to keep its state: it stays on this worker until it ends. It
        is taken from the pool as a run takes one (first come, first served, fair between accounts)."""
        pool = _pool_here()
        sandbox = _acquire(pool, language, self.acquire_wait(limits), "", account)
        try:
            sandbox.assign_account(account)
            sandbox.open(limits, files, file_limits, keep=True)
        except InputRefused as exc:
            pool.release(sandbox)
            raise ProviderError(f"the session did not open: {exc}", code="input_file_refused") from exc
        except SandboxError as exc:
            sandbox.end("the session did not open")
            pool.release(sandbox)
            raise ProviderError(f"the session did not open: {exc}") from exc
        return SelfManagedSession(pool, sandbox, language, file_limits)

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


def _pool_here() -> SandboxPool:
    pool = current_pool()
    if pool is None:
        raise ProviderError("this worker has no sandbox pool")
    return pool


def _acquire(pool: SandboxPool, language: str, wait: float, code: str, account: str):
    try:
        return pool.acquire(language, timeout=wait, code=code, account=account)
    except PoolExhausted as exc:
        raise ProviderError(str(exc), code="pool_exhausted") from exc
    except SandboxError as exc:
        raise ProviderError(str(exc)) from exc


class SelfManagedSession(ProviderSession):
    """A session on a sandbox of this worker's pool, released to the pool (which removes it) at its end."""

    def __init__(self, pool: SandboxPool, sandbox: Sandbox, language: str, file_limits: FileLimits) -> None:
        self.pool = pool
        self.sandbox = sandbox
        self.language = language
        self.file_limits = file_limits
        self.sandbox_id = sandbox.id
        self._released = False
        self._release_lock = threading.Lock()

    def run(self, code: str, arguments: dict, limits: Limits, should_stop=None, on_output=None) -> ExecutionResult:
        # Each cell with an allowlist gets a channel of its own: nothing gets out between cells.
        with self.ending_when_over(), egress.channel_for(self.sandbox, limits, self.sandbox_id) as channel:
            report = self.sandbox.run_cell(code, arguments, limits, should_stop=should_stop, on_output=on_output)
        result = classify(report, limits, self.language)
        result.sandbox_id = self.sandbox_id
        result.session_ended = report.sandbox_over or ""
        if report.sandbox_over:
            self.close(report.sandbox_over)
        return egress.record(result, channel)

    def close(self, reason: str) -> None:
        """Stop the sandbox now (a request in progress on another thread then fails) and hand it back once."""
        self.sandbox.end(reason)
        with self._release_lock:
            if self._released:
                return
            self._released = True
        self.pool.release(self.sandbox)

    def ask_keeper(self, request: dict) -> dict:
        with self.ending_when_over():
            return self.sandbox.ask(request)

    @contextmanager
    def ending_when_over(self) -> Iterator[None]:
        """A sandbox that cannot go on ends the session: released to the pool, SessionGone to the caller."""
        try:
            yield
        except SandboxEnded as exc:
            self.close(exc.reason)
            raise SessionGone(exc.reason) from exc
        except SandboxError as exc:
            self.close(str(exc))
            raise SessionGone(f"the sandbox failed: {exc}") from exc


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

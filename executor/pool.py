"""A worker's warm pool of single-use sandboxes, kept full in the background.

Every sandbox runs exactly one job and is then destroyed; creator threads replace it so a run never
waits for a container start while the pool is healthy. Creation is rate-limited and backs off after
failures, so a storm of crashing sandboxes cannot overwhelm dockerd. Every container carries the
deployment's site label and the owning worker instance's pool label: shutdown removes the instance's own;
a periodic sweep removes what a dead instance left (its owner has no fresh heartbeat) and what this one
lost track of (a removal that failed while dockerd was away), never anything young or of another site.
"""

import logging
import queue
import threading
import time
from collections import deque
from collections.abc import Callable

import docker
from docker.errors import DockerException

from executor.config import PoolConfig, SandboxConfig
from executor.runtime import describe_runtime
from executor.sandbox import Sandbox, SandboxError

log = logging.getLogger(__name__)

POOL_LABEL = "sandboxctl.pool"
SITE_LABEL = "sandboxctl.site"
MAX_BACKOFF = 10.0


class PoolExhausted(SandboxError):
    """No warm sandbox became free within the wait allowed."""

    def __init__(self, language: str, waited: float) -> None:
        super().__init__(f"pool exhausted: no {language} sandbox free after {waited:.1f}s", retryable=True)


class SandboxPool:
    def __init__(
        self,
        client: docker.DockerClient,
        sandbox_config: SandboxConfig,
        config: PoolConfig,
        live_owners: Callable[[], set[str]] | None = None,
    ) -> None:
        """`live_owners` names the worker instances that are alive (fresh heartbeats); without it, only this
        pool's own containers are ever reaped."""
        self.client = client
        self.config = config
        self._live_owners = live_owners
        labels = {**sandbox_config.labels, POOL_LABEL: config.name, SITE_LABEL: config.site}
        self.sandbox_config = SandboxConfig(**{**sandbox_config.__dict__, "labels": labels})
        self._ready: dict[str, deque[Sandbox]] = {language: deque() for language in config.size}
        self._creating: dict[str, int] = {language: 0 for language in config.size}
        # Slots of sandboxes in use: refilled only once the run is over (plus a quiet moment), so that
        # container start-up never competes for the CPU with the run and the reporting of its result.
        self._held: dict[str, dict[str, float]] = {language: {} for language in config.size}
        self._failures = 0
        self._failing: dict[str, str] = {}  # language → why its last creation failed, until one succeeds
        self._next_creation = 0.0
        self._lock = threading.Condition()
        self._stopping = threading.Event()
        self._removals: queue.Queue[tuple[float, Sandbox] | None] = queue.Queue()
        self._threads: list[threading.Thread] = []
        self._owned: set[str] = set()  # ids of the containers this pool made and has not removed yet
        self.warm_up_seconds: float | None = None
        self.runtime: dict[str, str] = {}
        self._started_at = 0.0

    # Lifecycle

    def start(self) -> None:
        self._started_at = time.monotonic()
        self.runtime = describe_runtime(self.client, self.sandbox_config.runtime)
        log.info("pool %s: sandboxes run on %s", self.config.name, self.runtime)
        self.reap_orphans()
        for index in range(self.config.creators):
            self._spawn(self._creator_loop, f"sandbox-creator-{index}")
        self._spawn(self._removal_loop, "sandbox-remover")
        self._spawn(self._health_loop, "sandbox-health")

    def _spawn(self, target, name: str) -> None:
        thread = threading.Thread(target=target, name=name, daemon=True)
        thread.start()
        self._threads.append(thread)

    def shutdown(self, timeout: float = 30.0) -> None:
        """Stop refilling and remove every sandbox of this pool, warm or in use."""
        self._stopping.set()
        with self._lock:
            self._lock.notify_all()
            idle = [sandbox for ready in self._ready.values() for sandbox in ready]
            for ready in self._ready.values():
                ready.clear()
        for sandbox in idle:
            self._discard(sandbox)
        self._removals.put(None)
        deadline = time.monotonic() + timeout
        for thread in self._threads:
            thread.join(max(0.0, deadline - time.monotonic()))
        self._remove_all(self._containers(f"{POOL_LABEL}={self.config.name}"))

    def reap_orphans(self) -> int:
        """Remove this site's containers that nobody alive owns, and old ones of this pool it lost track of."""
        containers = self._containers(f"{SITE_LABEL}={self.config.site}")
        # Owners write a heartbeat before they create anything, so an owner missing from `live` is gone.
        live = self._live_owners() if self._live_owners is not None else None
        oldest = time.time() - self.config.lost_min_age
        orphans = []
        for container in containers:
            owner = (container.attrs.get("Labels") or {}).get(POOL_LABEL)
            if owner == self.config.name:
                with self._lock:
                    lost = container.id not in self._owned
                if lost and (container.attrs.get("Created") or 0) < oldest:
                    orphans.append(container)
            elif live is not None and owner not in live:
                orphans.append(container)
        if orphans:
            log.info("pool %s: removing %d orphan sandboxes", self.config.name, len(orphans))
        return self._remove_all(orphans)

    def _containers(self, label: str) -> list:
        try:
            return self.client.containers.list(all=True, sparse=True, filters={"label": label})
        except DockerException as exc:
            log.warning("pool %s: cannot list containers: %s", self.config.name, exc)
            return []

    def _remove_all(self, containers: list) -> int:
        for container in containers:
            try:
                container.remove(force=True)
            except DockerException as exc:
                log.warning("pool %s: cannot remove %s: %s", self.config.name, container.short_id, exc)
        return len(containers)

    # Handing out

    def acquire(self, language: str, timeout: float | None = None) -> Sandbox:
        """A warm sandbox for one run; the caller must `release` it. Raises PoolExhausted after `timeout`."""
        if language not in self._ready:
            raise SandboxError(f"this worker has no {language} pool")
        wait = self.config.acquire_timeout if timeout is None else timeout
        deadline = time.monotonic() + wait
        with self._lock:
            while True:
                while self._ready[language]:
                    sandbox = self._ready[language].popleft()
                    if sandbox.is_alive():
                        self._held[language][sandbox.id] = time.monotonic() + self.config.max_refill_delay
                        self._lock.notify_all()
                        return sandbox
                    self._discard(sandbox)
                remaining = deadline - time.monotonic()
                if remaining <= 0 or self._stopping.is_set():
                    raise PoolExhausted(language, wait)
                self._lock.wait(remaining)

    def release(self, sandbox: Sandbox) -> None:
        """A used sandbox is never reused: it is removed, and its slot refilled, after a quiet moment."""
        later = time.monotonic() + self.config.refill_delay
        with self._lock:
            held = self._held[sandbox.language]
            if sandbox.id in held:
                held[sandbox.id] = min(held[sandbox.id], later)
            self._lock.notify_all()
        self._removals.put((later, sandbox))

    def _discard(self, sandbox: Sandbox) -> None:
        self._removals.put((0.0, sandbox))

    def depth(self) -> dict[str, int]:
        with self._lock:
            return {language: len(ready) for language, ready in self._ready.items()}

    def failing(self) -> dict[str, str]:
        """Languages that cannot get a sandbox now (none warm, the last creation failed), with the reason."""
        with self._lock:
            return {language: reason for language, reason in self._failing.items() if not self._ready[language]}

    # Background work

    def _deficit(self) -> tuple[str | None, float]:
        """The language furthest below its target, and how long until a held slot frees up."""
        now = time.monotonic()
        best, best_gap, next_release = None, 0, 1.0
        for language, target in self.config.size.items():
            held = self._held[language]
            for sandbox_id in [key for key, until in held.items() if until <= now]:
                del held[sandbox_id]
            if held:
                next_release = min(next_release, min(held.values()) - now)
            gap = target - len(self._ready[language]) - self._creating[language] - len(held)
            if gap > best_gap:
                best, best_gap = language, gap
        return best, max(next_release, 0.005)

    def _creator_loop(self) -> None:
        while not self._stopping.is_set():
            with self._lock:
                language, next_release = self._deficit()
                wait = self._next_creation - time.monotonic()
                if language is None or wait > 0:
                    self._lock.wait(max(wait, 0.05) if language else next_release)
                    continue
                self._creating[language] += 1
                self._next_creation = time.monotonic() + 1.0 / self.config.max_creations_per_second
            sandbox = self._create(language)
            with self._lock:
                self._creating[language] -= 1
                if sandbox is not None and not self._stopping.is_set():
                    self._ready[language].append(sandbox)
                    self._note_warm()
                elif sandbox is not None:
                    self._discard(sandbox)
                self._lock.notify_all()

    def _create(self, language: str) -> Sandbox | None:
        sandbox = Sandbox(self.client, language, self.sandbox_config, on_created=self._own)
        try:
            sandbox.start()
        except (SandboxError, DockerException, OSError) as exc:
            self._discard(sandbox)
            with self._lock:
                self._failures += 1
                self._failing[language] = str(exc)[:300] or exc.__class__.__name__
                backoff = min(MAX_BACKOFF, 0.5 * 2 ** min(self._failures, 6))
                self._next_creation = time.monotonic() + backoff
            log.warning("pool %s: creating a %s sandbox failed (retry in %.1fs): %s",
                        self.config.name, language, backoff, exc)
            return None
        with self._lock:
            self._failures = 0
            self._failing.pop(language, None)
        return sandbox

    def _own(self, container_id: str) -> None:
        with self._lock:
            self._owned.add(container_id)

    def _note_warm(self) -> None:
        if self.warm_up_seconds is None and all(
            len(self._ready[language]) >= target for language, target in self.config.size.items()
        ):
            self.warm_up_seconds = time.monotonic() - self._started_at
            log.info("pool %s: warm in %.2fs", self.config.name, self.warm_up_seconds)

    def _removal_loop(self) -> None:
        while True:
            item = self._removals.get()
            if item is None:
                return
            not_before, sandbox = item
            delay = not_before - time.monotonic()
            if delay > 0 and not self._stopping.is_set():
                time.sleep(delay)
            if sandbox.destroy() and sandbox.container is not None:
                with self._lock:
                    self._owned.discard(sandbox.container.id)

    def _health_loop(self) -> None:
        """Replace sandboxes that died while waiting (killed from outside, crashed); sweep orphans now and then."""
        next_sweep = time.monotonic() + self.config.sweep_interval
        while not self._stopping.wait(self.config.health_interval):
            if time.monotonic() >= next_sweep:
                next_sweep = time.monotonic() + self.config.sweep_interval
                self.reap_orphans()
            with self._lock:
                for language, ready in self._ready.items():
                    dead = [sandbox for sandbox in ready if not sandbox.is_alive()]
                    for sandbox in dead:
                        ready.remove(sandbox)
                        self._discard(sandbox)
                        log.warning("pool %s: %s sandbox %s died while idle", self.config.name, language, sandbox.id)
                    if dead:
                        self._lock.notify_all()

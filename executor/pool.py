"""A worker's warm pool of single-use sandboxes, kept full in the background and sized from demand.

Every sandbox runs exactly one job and is then destroyed; creator threads replace it so a run rarely waits
for a sandbox start. Each kind of sandbox (a language, or Python restored from a snapshot with the
data-science modules imported) keeps at least its minimum warm and, as runs arrive faster, more: enough to
cover the recent arrival rate over the time a refill takes, never above its maximum. Creation is
rate-limited and backs off after failures, so a storm of crashing sandboxes cannot swamp the host.

Every sandbox is marked with the deployment's site and its owner, this worker instance: shutdown removes
the instance's own; a periodic sweep removes what a dead instance left (its owner has no fresh heartbeat)
and what this one lost track of (a removal that failed), never anything of a live instance or another site.
"""

import logging
import math
import queue
import re
import threading
import time
from collections import deque
from collections.abc import Callable

from executor.config import PRELOADED, PoolConfig
from executor.sandbox import Sandbox, SandboxBackend, SandboxError

log = logging.getLogger(__name__)

MAX_BACKOFF = 10.0
BOOST_RECHECK = 0.5  # a waiting run re-raises the weight of sandboxes started since it began waiting
IMPORTS = re.compile(r"^[ \t]*(?:from[ \t]+([\w.]+)|import[ \t]+([\w., \t]+))", re.MULTILINE)


class PoolExhausted(SandboxError):
    """No warm sandbox became free within the wait allowed."""

    def __init__(self, kind: str, waited: float) -> None:
        super().__init__(f"pool exhausted: no {kind} sandbox free after {waited:.1f}s")


def imported_packages(code: str) -> set[str]:
    """Top-level packages named in the code's import statements."""
    names = set()
    for from_name, import_list in IMPORTS.findall(code):
        for name in [from_name] if from_name else import_list.split(","):
            name = name.strip().split(" ")[0]
            if name:
                names.add(name.split(".")[0])
    return names


class SandboxPool:
    def __init__(self, backend: SandboxBackend, config: PoolConfig,
                 live_owners: Callable[[], set[str]] | None = None) -> None:
        """`backend` makes, finds and removes sandboxes (runsc_sandbox.RunscBackend, docker_sandbox.DockerBackend);
        `live_owners` names the worker instances alive now (fresh heartbeats); without it, only this pool's own
        sandboxes are ever reaped."""
        self.backend = backend
        self.config = config
        self._live_owners = live_owners
        self._own_key = backend.owner_key(config.name)
        kinds = config.size
        self._ready: dict[str, deque[Sandbox]] = {kind: deque() for kind in kinds}
        self._creating: dict[str, int] = dict.fromkeys(kinds, 0)
        # Slots of sandboxes in use: refilled only once the run is over (plus a quiet moment), so that
        # sandbox start-up never competes for the CPU with the run and the reporting of its result.
        self._held: dict[str, dict[str, float]] = {kind: {} for kind in kinds}
        self._acquired: dict[str, deque[float]] = {kind: deque() for kind in kinds}
        self._refill_seconds: dict[str, float] = dict.fromkeys(kinds, 0.5)
        # Sandboxes being made, and runs waiting for one, per kind: a waiting run raises what is being made
        # for it to full CPU weight, and counts as demand, so a busy host cannot starve its refill.
        self._starting: dict[str, set[Sandbox]] = {kind: set() for kind in kinds}
        self._waiting: dict[str, int] = dict.fromkeys(kinds, 0)
        self._failures = 0
        self._failing: dict[str, str] = {}  # kind → why its last creation failed, until one succeeds
        self._next_creation = 0.0
        self._lock = threading.Condition()
        self._stopping = threading.Event()
        self._removals: queue.Queue[tuple[float, Sandbox] | None] = queue.Queue()
        self._threads: list[threading.Thread] = []
        self._remover: threading.Thread | None = None
        self._owned: set[str] = set()  # ids of the sandboxes this pool made and has not removed yet
        self.warm_up_seconds: float | None = None
        self.runtime: dict[str, str] = {}
        self._started_at = 0.0

    # Lifecycle

    def start(self) -> None:
        self._started_at = time.monotonic()
        self.backend.prepare()
        self.runtime = self.backend.describe()
        log.info("pool %s: sandboxes run on %s", self.config.name, self.runtime)
        self.reap_orphans()
        for index in range(self.config.creators):
            self._threads.append(self._spawn(self._creator_loop, f"sandbox-creator-{index}"))
        self._threads.append(self._spawn(self._health_loop, "sandbox-health"))
        self._remover = self._spawn(self._removal_loop, "sandbox-remover")

    @staticmethod
    def _spawn(target, name: str) -> threading.Thread:
        thread = threading.Thread(target=target, name=name, daemon=True)
        thread.start()
        return thread

    def shutdown(self, timeout: float = 30.0) -> None:
        """Stop refilling and remove every sandbox of this pool, warm or in use."""
        self._stopping.set()
        with self._lock:
            self._lock.notify_all()
        deadline = time.monotonic() + timeout
        # Creators finish the sandbox they are making (and remove it themselves) before the rest goes.
        for thread in self._threads:
            thread.join(max(0.0, deadline - time.monotonic()))
        with self._lock:
            idle = [sandbox for ready in self._ready.values() for sandbox in ready]
            for ready in self._ready.values():
                ready.clear()
        for sandbox in idle:
            self._discard(sandbox)
        self._removals.put(None)
        self._remover.join(max(0.0, deadline - time.monotonic()))
        for found in self.backend.find():
            if found.owner == self._own_key:
                self.backend.remove(found.id)

    def reap_orphans(self) -> int:
        """Remove this site's sandboxes that nobody alive owns, and old ones of this pool it lost track of."""
        # Owners write a heartbeat before they make anything, so an owner missing from `live` is gone.
        live = None
        if self._live_owners is not None:
            live = {self.backend.owner_key(name) for name in self._live_owners()} | {self._own_key}
        oldest = time.time() - self.config.lost_min_age
        orphans = []
        for found in self.backend.find():
            if found.owner == self._own_key:
                with self._lock:
                    lost = found.id not in self._owned
                if lost and found.created < oldest:
                    orphans.append(found.id)
            elif live is not None and found.owner not in live:
                orphans.append(found.id)
        if orphans:
            log.info("pool %s: removing %d orphan sandboxes", self.config.name, len(orphans))
        for sandbox_id in orphans:
            self.backend.remove(sandbox_id)
        return len(orphans)

    # Handing out

    def kind_for(self, language: str, code: str = "") -> str:
        """The kind of sandbox a run gets: Python code importing the preloaded modules gets one restored from
        the snapshot (when there is one), everything else a fresh sandbox of its language."""
        if (language == "python" and PRELOADED in self._ready and PRELOADED in self.backend.kinds_available()
                and imported_packages(code) & {name.split(".")[0] for name in self.backend.config.preload_modules}):
            return PRELOADED
        return language

    def acquire(self, language: str, timeout: float | None = None, code: str = "") -> Sandbox:
        """A warm sandbox for one run; the caller must `release` it. Raises PoolExhausted after `timeout`."""
        kind = self.kind_for(language, code)
        if kind not in self._ready:
            raise SandboxError(f"this worker has no {language} pool")
        wait = self.config.acquire_timeout if timeout is None else timeout
        deadline = time.monotonic() + wait
        with self._lock:
            self._note_demand(kind)
            self._waiting[kind] += 1
            try:
                while True:
                    while self._ready[kind]:
                        sandbox = self._ready[kind].popleft()
                        if sandbox.is_alive():
                            self._held[kind][sandbox.id] = time.monotonic() + self.config.max_refill_delay
                            self._lock.notify_all()
                            return sandbox
                        self._discard(sandbox)
                    remaining = deadline - time.monotonic()
                    if remaining <= 0 or self._stopping.is_set():
                        raise PoolExhausted(kind, wait)
                    for starting in self._starting[kind]:
                        starting.boost()
                    self._lock.notify_all()  # creators: a run is waiting (see _target)
                    self._lock.wait(min(remaining, BOOST_RECHECK))
            finally:
                self._waiting[kind] -= 1

    def release(self, sandbox: Sandbox) -> None:
        """A used sandbox is never reused: it is removed, and its slot refilled, after a quiet moment."""
        later = time.monotonic() + self.config.refill_delay
        with self._lock:
            held = self._held[sandbox.kind]
            if sandbox.id in held:
                held[sandbox.id] = min(held[sandbox.id], later)
            self._lock.notify_all()
        self._removals.put((later, sandbox))

    def _discard(self, sandbox: Sandbox) -> None:
        self._removals.put((0.0, sandbox))

    def depth(self) -> dict[str, int]:
        with self._lock:
            return {kind: len(ready) for kind, ready in self._ready.items()}

    def failing(self) -> dict[str, str]:
        """Kinds that cannot get a sandbox now (none warm, the last creation failed), with the reason."""
        with self._lock:
            return {kind: reason for kind, reason in self._failing.items() if not self._ready[kind]}

    def targets(self) -> dict[str, int]:
        with self._lock:
            return {kind: self._target(kind) for kind in self._ready}

    # Sizing

    def _note_demand(self, kind: str) -> None:
        now = time.monotonic()
        acquired = self._acquired[kind]
        acquired.append(now)
        while acquired and acquired[0] < now - self.config.demand_window:
            acquired.popleft()

    def _target(self, kind: str) -> int:
        """Warm sandboxes wanted now: the minimum, plus the runs expected while one refill takes place."""
        if kind not in self.backend.kinds_available():
            return 0
        size = self.config.size[kind]
        now = time.monotonic()
        recent = sum(1 for moment in self._acquired[kind] if moment >= now - self.config.demand_window)
        rate = recent / self.config.demand_window
        wanted = max(size.minimum + math.ceil(rate * self._refill_seconds[kind] * 1.5), self._waiting[kind])
        return max(size.minimum, min(size.maximum, wanted))

    # Background work

    def _deficit(self) -> tuple[str | None, float]:
        """The kind furthest below its target, and how long until a held slot frees up."""
        now = time.monotonic()
        best, best_gap, next_release = None, 0, 1.0
        for kind in self._ready:
            held = self._held[kind]
            for sandbox_id in [key for key, until in held.items() if until <= now]:
                del held[sandbox_id]
            if held:
                next_release = min(next_release, min(held.values()) - now)
            gap = self._target(kind) - len(self._ready[kind]) - self._creating[kind] - len(held)
            if gap > best_gap:
                best, best_gap = kind, gap
        return best, max(next_release, 0.005)

    def _creator_loop(self) -> None:
        while not self._stopping.is_set():
            with self._lock:
                kind, next_release = self._deficit()
                wait = self._next_creation - time.monotonic()
                if kind is None or wait > 0:
                    self._lock.wait(max(wait, 0.05) if kind else min(next_release, 0.5))
                    continue
                self._creating[kind] += 1
                self._next_creation = time.monotonic() + 1.0 / self.config.max_creations_per_second
            sandbox = self._create(kind)
            with self._lock:
                self._creating[kind] -= 1
                keep = sandbox is not None and not self._stopping.is_set()
                if keep:
                    self._ready[kind].append(sandbox)
                    self._note_warm()
                self._lock.notify_all()
            if sandbox is not None and not keep:
                sandbox.destroy()  # made while the pool was stopping

    def _create(self, kind: str) -> Sandbox | None:
        started = time.monotonic()
        sandbox = None
        try:
            sandbox = self.backend.make(kind, on_created=self._own)
            with self._lock:
                self._starting[kind].add(sandbox)
                if self._waiting[kind]:
                    sandbox.boost()
            sandbox.start()
        except (SandboxError, OSError) as exc:
            if sandbox is not None:
                sandbox.destroy()
            with self._lock:
                self._failures += 1
                self._failing[kind] = str(exc)[:300] or exc.__class__.__name__
                backoff = min(MAX_BACKOFF, 0.5 * 2 ** min(self._failures, 6))
                self._next_creation = time.monotonic() + backoff
            log.warning("pool %s: creating a %s sandbox failed (retry in %.1fs): %s",
                        self.config.name, kind, backoff, exc)
            return None
        finally:
            with self._lock:
                self._starting[kind].discard(sandbox)
        with self._lock:
            self._failures = 0
            self._failing.pop(kind, None)
            self._refill_seconds[kind] = 0.8 * self._refill_seconds[kind] + 0.2 * (time.monotonic() - started)
        return sandbox

    def _own(self, sandbox_id: str) -> None:
        with self._lock:
            self._owned.add(sandbox_id)

    def _note_warm(self) -> None:
        if self.warm_up_seconds is None and all(
            len(self._ready[kind]) >= self.config.size[kind].minimum
            for kind in self._ready if kind in self.backend.kinds_available()
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
            try:
                removed = sandbox.destroy()
            except Exception:  # noqa: BLE001 - this thread must outlive any one failed removal
                log.exception("pool %s: removing %s failed", self.config.name, sandbox.id)
                removed = False
            if removed:
                with self._lock:
                    self._owned.discard(sandbox.host_id)

    def _share_cpu(self) -> None:
        """Share the host's CPU between the accounts running now (backends that can: runsc)."""
        try:
            self.backend.share_cpu()
        except Exception:  # noqa: BLE001 - retried at the next health check
            log.exception("pool %s: sharing the CPU between accounts failed", self.config.name)

    def _health_loop(self) -> None:
        """Replace sandboxes that died while waiting (killed from outside, crashed); sweep orphans now and then."""
        next_sweep = time.monotonic() + self.config.sweep_interval
        while not self._stopping.wait(self.config.health_interval):
            if time.monotonic() >= next_sweep:
                next_sweep = time.monotonic() + self.config.sweep_interval
                try:
                    self.reap_orphans()
                except Exception:  # noqa: BLE001 - a failed sweep is retried at the next one
                    log.exception("pool %s: sweep failed", self.config.name)
            self._share_cpu()
            with self._lock:
                for kind, ready in self._ready.items():
                    dead = [sandbox for sandbox in ready if not sandbox.is_alive()]
                    for sandbox in dead:
                        ready.remove(sandbox)
                        self._discard(sandbox)
                        log.warning("pool %s: %s sandbox %s died while idle", self.config.name, kind, sandbox.id)
                    if dead:
                        self._lock.notify_all()

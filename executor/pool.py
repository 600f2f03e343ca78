"""A worker's warm pool of single-use sandboxes, kept full in the background and sized from demand.

Every sandbox runs exactly one job (a one-shot run, or a session's whole life) and is then destroyed;
creator threads replace it so a run rarely waits for a sandbox start. Each kind of sandbox (a language, or
Python restored from a snapshot with the data-science modules imported) keeps at least its minimum warm
and, as runs arrive faster, more: enough to cover the recent arrival rate over the time a refill takes,
never above its maximum. Creation is rate-limited and backs off after failures, so a storm of crashing
sandboxes cannot swamp the host.

Capacity is one queue. A caller that finds no warm sandbox of its kind (a run, or a session opening)
becomes a *waiter*; waiters are served first come, first served across kinds:

- the creators make a sandbox for the oldest waiter not yet covered by a creation in progress, whatever
  its kind, before any pre-warming; a sandbox made for a waiter starts at full CPU weight, once;
- a sandbox that becomes ready goes straight to a waiter of its kind — the one whose account holds the
  fewest sandboxes now, the earliest of those — so one account's churn cannot take sandboxes ahead of
  another account's runs;
- a waiter sleeps on its own event: it wakes when it is handed a sandbox, at its deadline, when its kind
  cannot be made (creations keep failing: `PoolExhausted` names why), or when the pool stops. Nothing
  polls, so runs that wait cost the worker no CPU.

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
from collections import Counter, deque
from collections.abc import Callable
from dataclasses import dataclass, field

from executor.config import PRELOADED, PoolConfig
from executor.sandbox import Sandbox, SandboxBackend, SandboxError

log = logging.getLogger(__name__)

MAX_BACKOFF = 10.0
# A kind whose creations failed this many times in a row while callers wait for it cannot be made now: its
# waiters are told so instead of waiting out their deadlines for a runtime that is broken.
FAILURES_BEFORE_GIVING_UP = 3
IDLE_RECHECK = 5.0  # creators with nothing to do look again this often (demand decays with time only)
IMPORTS = re.compile(r"^[ \t]*(?:from[ \t]+([\w.]+)|import[ \t]+([\w., \t]+))", re.MULTILINE)


class PoolExhausted(SandboxError):
    """No sandbox could be had: none became free within the wait allowed, or the kind cannot be made."""

    def __init__(self, kind: str, waited: float, reason: str = "") -> None:
        detail = f"{kind} sandboxes cannot be made now: {reason}" if reason else (
            f"no {kind} sandbox free after {waited:.1f}s")
        super().__init__(f"pool exhausted: {detail}")


def imported_packages(code: str) -> set[str]:
    """Top-level packages named in the code's import statements."""
    names = set()
    for from_name, import_list in IMPORTS.findall(code):
        for name in [from_name] if from_name else import_list.split(","):
            name = name.strip().split(" ")[0]
            if name:
                names.add(name.split(".")[0])
    return names


@dataclass(eq=False)
class Waiter:
    """One caller waiting for a sandbox of `kind`; the pool hands it one (or a refusal) and sets `done`."""

    kind: str
    account: str
    arrived: float
    done: threading.Event = field(default_factory=threading.Event)
    sandbox: Sandbox | None = None
    refusal: str = ""


@dataclass
class PoolStats:
    """Counters for tests and operators: how often waiters and creators woke, and what they did."""

    waiter_wakeups: int = 0
    creator_wakeups: int = 0
    boosts: int = 0
    made_for_waiters: int = 0
    prewarmed: int = 0
    handed_to_waiters: int = 0


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
        # Sandboxes being made, per kind, to boost the one a new waiter will get (once each).
        self._starting: dict[str, list[Sandbox]] = {kind: [] for kind in kinds}
        self._waiters: list[Waiter] = []  # in order of arrival
        self._holders: Counter[str] = Counter()  # sandboxes handed out and not yet released, per account
        self._account_of: dict[str, str] = {}  # sandbox id → the account it was handed to
        # Slots of sandboxes just used: pre-warming refills them only once the run is over (plus a quiet
        # moment), so that sandbox start-up never competes for the CPU with the run and its result. A waiter's
        # sandbox is made at once whatever is held.
        self._held: dict[str, dict[str, float]] = {kind: {} for kind in kinds}
        self._acquired: dict[str, deque[float]] = {kind: deque() for kind in kinds}
        self._refill_seconds: dict[str, float] = dict.fromkeys(kinds, 0.5)
        self._failures = 0
        self._failures_of: Counter[str] = Counter()  # consecutive failed creations per kind
        self._failing: dict[str, str] = {}  # kind → why its last creation failed, until one succeeds
        self._next_creation = 0.0
        self._lock = threading.Lock()
        self._work = threading.Condition(self._lock)  # creators sleep here until there is something to make
        self._stopping = threading.Event()
        self._removals: queue.Queue[tuple[float, Sandbox] | None] = queue.Queue()
        self._threads: list[threading.Thread] = []
        self._remover: threading.Thread | None = None
        self._owned: set[str] = set()  # ids of the sandboxes this pool made and has not removed yet
        self.stats = PoolStats()
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
            for waiter in self._waiters:
                waiter.refusal = "the pool is stopping"
                waiter.done.set()
            self._waiters.clear()
            self._work.notify_all()
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

    def acquire(self, language: str, timeout: float | None = None, code: str = "", account: str = "") -> Sandbox:
        """A warm sandbox for one run or session; the caller must `release` it. `account` (an opaque label)
        decides who goes first among callers waiting for the same kind. Raises PoolExhausted when none comes
        within `timeout`, or when the kind cannot be made."""
        kind = self.kind_for(language, code)
        if kind not in self._ready:
            raise SandboxError(f"this worker has no {language} pool")
        wait = self.config.acquire_timeout if timeout is None else timeout
        deadline = time.monotonic() + wait
        with self._lock:
            if self._stopping.is_set():
                raise PoolExhausted(kind, 0.0, "the pool is stopping")
            self._note_demand(kind)
            if not any(waiter.kind == kind for waiter in self._waiters):
                sandbox = self._take_ready(kind)
                if sandbox is not None:
                    self._hand(sandbox, account)
                    return sandbox
            waiter = Waiter(kind, account, time.monotonic())
            self._waiters.append(waiter)
            self._boost_one_starting(kind)
            self._work.notify()
        waiter.done.wait(max(0.0, deadline - time.monotonic()))
        with self._lock:
            self.stats.waiter_wakeups += 1
            if waiter.sandbox is not None:
                return waiter.sandbox
            if waiter in self._waiters:
                self._waiters.remove(waiter)
            reason = waiter.refusal
        raise PoolExhausted(kind, wait, reason)

    def release(self, sandbox: Sandbox) -> None:
        """A used sandbox is never reused: it is removed, and its slot refilled, after a quiet moment."""
        later = time.monotonic() + self.config.refill_delay
        with self._lock:
            account = self._account_of.pop(sandbox.id, None)
            if account is not None:
                self._holders[account] -= 1
                if self._holders[account] <= 0:
                    del self._holders[account]
            held = self._held[sandbox.kind]
            if sandbox.id in held:
                held[sandbox.id] = min(held[sandbox.id], later)
            self._work.notify()
        self._removals.put((later, sandbox))

    def _take_ready(self, kind: str) -> Sandbox | None:
        """A live warm sandbox of `kind`, or None (dead ones found on the way are discarded)."""
        ready = self._ready[kind]
        while ready:
            sandbox = ready.popleft()
            if sandbox.is_alive():
                return sandbox
            self._discard(sandbox)
        return None

    def _hand(self, sandbox: Sandbox, account: str) -> None:
        """Record that `sandbox` goes to `account` now (under the lock)."""
        self._held[sandbox.kind][sandbox.id] = time.monotonic() + self.config.max_refill_delay
        self._account_of[sandbox.id] = account
        self._holders[account] += 1
        self._work.notify()  # a ready slot is free: pre-warming may refill it

    def _next_waiter(self, kind: str) -> Waiter | None:
        """The waiter of `kind` to serve next: its account holds the fewest sandboxes; the earliest of those."""
        candidates = [waiter for waiter in self._waiters if waiter.kind == kind]
        if not candidates:
            return None
        return min(candidates, key=lambda waiter: (self._holders[waiter.account], waiter.arrived))

    def _give_or_keep(self, sandbox: Sandbox) -> None:
        """A sandbox is ready: straight to a waiter of its kind, or warm in the pool (under the lock)."""
        waiter = self._next_waiter(sandbox.kind)
        if waiter is None:
            self._ready[sandbox.kind].append(sandbox)
            self._note_warm()
            return
        self._waiters.remove(waiter)
        self._hand(sandbox, waiter.account)
        waiter.sandbox = sandbox
        self.stats.handed_to_waiters += 1
        waiter.done.set()

    def _boost_one_starting(self, kind: str) -> None:
        """A new waiter will get the next sandbox of its kind: if one is being made at the lowest CPU weight,
        raise it to full weight now (once; its creator does it from the start for a waiter's own)."""
        for sandbox in self._starting[kind]:
            if not sandbox.boosted:
                sandbox.boosted = True
                self.stats.boosts += 1
                sandbox.boost()  # one cgroup write
                return

    def depth(self) -> dict[str, int]:
        with self._lock:
            return {kind: len(ready) for kind, ready in self._ready.items()}

    def waiting(self) -> dict[str, int]:
        with self._lock:
            return dict(Counter(waiter.kind for waiter in self._waiters))

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
        wanted = size.minimum + math.ceil(rate * self._refill_seconds[kind] * 1.5)
        return max(size.minimum, min(size.maximum, wanted))

    # Background work

    def _uncovered_waiter(self) -> Waiter | None:
        """The oldest waiter that no creation in progress will serve: per kind, the first `creating` waiters
        (in order of arrival) are covered by the sandboxes being made."""
        covered = dict(self._creating)
        for waiter in self._waiters:
            if covered.get(waiter.kind, 0) > 0:
                covered[waiter.kind] -= 1
                continue
            if waiter.kind in self.backend.kinds_available():
                return waiter
        return None

    def _prewarm_kind(self, now: float) -> tuple[str | None, float]:
        """The kind furthest below its target, and when the next held slot frees up (pre-warming only)."""
        best, best_gap, next_release = None, 0, now + IDLE_RECHECK
        for kind in self._ready:
            held = self._held[kind]
            for sandbox_id in [key for key, until in held.items() if until <= now]:
                del held[sandbox_id]
            if held:
                next_release = min(next_release, min(held.values()))
            gap = self._target(kind) - len(self._ready[kind]) - self._creating[kind] - len(held)
            if gap > best_gap:
                best, best_gap = kind, gap
        return best, next_release

    def _next_job(self) -> tuple[str | None, bool, float]:
        """What a creator makes next (under the lock): (kind, for a waiter, when to look again if nothing)."""
        now = time.monotonic()
        if now < self._next_creation:
            return None, False, self._next_creation
        waiter = self._uncovered_waiter()
        if waiter is not None:
            return waiter.kind, True, now
        kind, next_release = self._prewarm_kind(now)
        return kind, False, next_release

    def _creator_loop(self) -> None:
        while not self._stopping.is_set():
            with self._lock:
                kind, for_waiter, recheck = self._next_job()
                if kind is None:
                    self._work.wait(max(0.005, recheck - time.monotonic()))
                    self.stats.creator_wakeups += 1
                    continue
                self._creating[kind] += 1
                self._next_creation = time.monotonic() + 1.0 / self.config.max_creations_per_second
                if for_waiter:
                    self.stats.made_for_waiters += 1
                else:
                    self.stats.prewarmed += 1
            sandbox = self._create(kind, for_waiter)
            with self._lock:
                self._creating[kind] -= 1
                keep = sandbox is not None and not self._stopping.is_set()
                if keep:
                    self._give_or_keep(sandbox)
                self._work.notify()
            if sandbox is not None and not keep:
                sandbox.destroy()  # made while the pool was stopping

    def _create(self, kind: str, for_waiter: bool) -> Sandbox | None:
        started = time.monotonic()
        sandbox = None
        try:
            sandbox = self.backend.make(kind, on_created=self._own)
            sandbox.boosted = for_waiter
            if for_waiter:
                sandbox.boost()  # before it starts: it warms at full CPU weight from the first instruction
            with self._lock:
                self._starting[kind].append(sandbox)
            sandbox.start()
        except (SandboxError, OSError) as exc:
            if sandbox is not None:
                sandbox.destroy()
            self._creation_failed(kind, exc)
            return None
        finally:
            if sandbox is not None:
                with self._lock:
                    if sandbox in self._starting[kind]:
                        self._starting[kind].remove(sandbox)
        with self._lock:
            self._failures = 0
            self._failures_of[kind] = 0
            self._failing.pop(kind, None)
            self._refill_seconds[kind] = 0.8 * self._refill_seconds[kind] + 0.2 * (time.monotonic() - started)
        return sandbox

    def _creation_failed(self, kind: str, exc: Exception) -> None:
        with self._lock:
            self._failures += 1
            self._failures_of[kind] += 1
            reason = str(exc)[:300] or exc.__class__.__name__
            self._failing[kind] = reason
            backoff = min(MAX_BACKOFF, 0.5 * 2 ** min(self._failures, 6))
            self._next_creation = time.monotonic() + backoff
            if self._failures_of[kind] >= FAILURES_BEFORE_GIVING_UP:
                for waiter in [waiter for waiter in self._waiters if waiter.kind == kind]:
                    self._waiters.remove(waiter)
                    waiter.refusal = reason
                    waiter.done.set()
        log.warning("pool %s: creating a %s sandbox failed (retry in %.1fs): %s",
                    self.config.name, kind, backoff, exc)

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

    def _discard(self, sandbox: Sandbox) -> None:
        self._removals.put((0.0, sandbox))

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
                        self._work.notify_all()

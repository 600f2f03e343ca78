"""The warm pool on its own (no Django), on the runsc backend: single use, refill, demand, health,
exhaustion, orphans, shutdown, and the lockdown of every sandbox."""

import json
import time
import uuid
from pathlib import Path

import pytest

from executor.config import PRELOADED, KindSize, Limits, PoolConfig, SandboxConfig
from executor.pool import PoolExhausted, SandboxPool, imported_packages
from executor.runsc_sandbox import CGROUP_ROOT, RunscBackend, owner_key


def make_pool(size=None, config: SandboxConfig | None = None, live_owners=None, **overrides) -> SandboxPool:
    name = f"test-{uuid.uuid4().hex[:8]}#1"
    site = overrides.pop("site", f"site{uuid.uuid4().hex[:8]}")
    backend = RunscBackend(config or SandboxConfig(python_preload=""), site, name)
    pool_config = PoolConfig(name=name, site=site, size=size or {"python": KindSize(2, 4)}, **overrides)
    return SandboxPool(backend, pool_config, live_owners=live_owners)


def sandboxes_of(pool: SandboxPool) -> set[str]:
    return {found.id for found in pool.backend.find()}


def wait_until(predicate, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "condition not reached in time"
        time.sleep(0.05)


@pytest.fixture
def pool():
    pool = make_pool()
    pool.start()
    yield pool
    pool.shutdown()


def test_pool_warms_up_to_its_minimum(pool):
    wait_until(lambda: pool.depth() == {"python": 2})
    assert pool.warm_up_seconds is not None


def test_each_sandbox_runs_once_and_is_replaced(pool):
    wait_until(lambda: pool.depth()["python"] == 2)
    used = set()
    for _ in range(3):
        sandbox = pool.acquire("python")
        assert sandbox.id not in used
        used.add(sandbox.id)
        report = sandbox.run("def main():\n    return 1", {}, Limits())
        assert report.result["ok"]
        pool.release(sandbox)
    wait_until(lambda: pool.depth()["python"] >= 2 and not used & sandboxes_of(pool))


def test_sandbox_killed_from_outside_is_replaced(pool):
    wait_until(lambda: pool.depth()["python"] == 2)
    victim = next(iter(sandboxes_of(pool)))
    pool.backend.cli("kill", victim, "KILL")
    wait_until(lambda: victim not in sandboxes_of(pool), timeout=15)
    wait_until(lambda: pool.depth()["python"] == 2)
    sandbox = pool.acquire("python")
    assert sandbox.run("def main():\n    return 2", {}, Limits()).result["ok"]
    pool.release(sandbox)


def test_demand_grows_the_pool_within_its_maximum():
    # Any run in the demand window asks for at least one sandbox more than the minimum (the target adds the
    # ceiling of the runs expected during a refill), and the maximum caps it: with a maximum of 2 the target is
    # exactly 2 however fast or slow refills are on a loaded host (a cap of 3 made the outcome depend on it).
    pool = make_pool(size={"python": KindSize(1, 2)}, demand_window=60.0)
    pool.start()
    try:
        wait_until(lambda: pool.depth()["python"] == 1)
        assert pool.targets() == {"python": 1}
        for _ in range(12):
            sandbox = pool.acquire("python")
            pool.release(sandbox)
        assert pool.targets()["python"] == 2, "12 runs ask for more than the minimum, capped at the maximum"
        wait_until(lambda: pool.depth()["python"] == 2)
        assert max(pool.targets().values()) == 2
    finally:
        pool.shutdown()


def test_empty_pool_waits_a_bounded_time_then_reports_exhaustion():
    pool = make_pool(size={"python": KindSize(1, 1)}, max_creations_per_second=0.05, acquire_timeout=0.5)
    pool.start()
    try:
        wait_until(lambda: pool.depth()["python"] == 1)
        first = pool.acquire("python")
        started = time.monotonic()
        with pytest.raises(PoolExhausted, match="pool exhausted"):
            pool.acquire("python")
        assert 0.4 < time.monotonic() - started < 2
        pool.release(first)
    finally:
        pool.shutdown()


def stray(owner: str, site: str) -> str:
    """A waiting sandbox started on its own by another (dead or live) worker instance."""
    backend = RunscBackend(SandboxConfig(python_preload=""), site, owner)
    sandbox = backend.make("python")
    sandbox.start()
    return sandbox.id


def test_only_sandboxes_of_dead_owners_of_the_same_site_are_reaped():
    site = f"site{uuid.uuid4().hex[:8]}"
    pool = make_pool(size={"python": KindSize(1, 1)}, site=site, live_owners=lambda: {"alive#2"})
    dead, alive, elsewhere = stray("dead#3", site), stray("alive#2", site), stray("dead#3", "elsewhere")
    other_site = RunscBackend(SandboxConfig(), "elsewhere", "x")
    try:
        pool.start()
        assert dead not in sandboxes_of(pool), "a dead instance's sandbox is an orphan"
        assert alive in sandboxes_of(pool), "a live instance's sandboxes are its own business"
        assert elsewhere in {found.id for found in other_site.find()}, "another site's are never touched"
    finally:
        pool.shutdown()
        pool.backend.remove(alive)
        other_site.remove(elsewhere)


def test_a_sandbox_the_pool_lost_track_of_is_swept_once_old():
    pool = make_pool(size={"python": KindSize(1, 1)}, lost_min_age=0.0)
    lost = stray(pool.config.name, pool.config.site)
    pool.start()
    try:
        assert lost not in sandboxes_of(pool)
    finally:
        pool.shutdown()


def test_shutdown_removes_every_sandbox_warm_or_in_use():
    pool = make_pool()
    pool.start()
    wait_until(lambda: pool.depth()["python"] == 2)
    in_use = pool.acquire("python")  # in use, never released
    pool.shutdown()
    assert sandboxes_of(pool) == set()
    assert not (pool.backend.config.bundle_dir / in_use.id).exists()
    assert not Path(CGROUP_ROOT, "memory", "sandboxctl", in_use.id).exists()


def test_sandboxes_are_locked_down(pool):
    wait_until(lambda: pool.depth()["python"] >= 1)
    sandbox_id = next(iter(sandboxes_of(pool)))
    spec = json.loads((pool.backend.config.bundle_dir / sandbox_id / "config.json").read_text())
    process = spec["process"]
    assert spec["root"]["readonly"] is True
    assert {"type": "network"} in spec["linux"]["namespaces"] and {"type": "pid"} in spec["linux"]["namespaces"]
    assert process["noNewPrivileges"] is True
    # The supervisor is the sandbox's root with three capabilities; user code runs as 65534 (tests/security).
    assert process["user"] == {"uid": 0, "gid": 0}
    assert set(process["capabilities"]["bounding"]) == {"CAP_SETUID", "CAP_SETGID", "CAP_KILL"}
    assert {"type": "RLIMIT_NPROC", "hard": 64, "soft": 64} in process["rlimits"]
    # One bind mount only: the sandbox's own egress channel folder, read-only (tests/security/test_egress_attacks).
    binds = [mount for mount in spec["mounts"] if mount["type"] == "bind"]
    assert [(mount["destination"], mount["source"]) for mount in binds] == [
        ("/run/sandboxctl", str(pool.backend.config.bundle_dir / sandbox_id / "egress"))]
    assert {"ro", "nosuid", "nodev", "noexec"} <= set(binds[0]["options"])
    assert all(not entry.startswith(("DATABASE", "CELERY", "SECRET", "SANDBOXCTL")) for entry in process["env"])
    assert "--network=none" in pool.backend.runsc("run")
    memory = Path(CGROUP_ROOT, "memory", "sandboxctl", sandbox_id)
    assert int((memory / "memory.limit_in_bytes").read_text()) == 512 * 1024 * 1024
    assert int(Path(CGROUP_ROOT, "pids", "sandboxctl", sandbox_id, "pids.max").read_text()) >= 512
    assert owner_key(pool.config.name) in sandbox_id


def test_insecure_runtime_needs_the_explicit_flag():
    with pytest.raises(ValueError, match="not a gVisor runtime"):
        SandboxConfig(backend="docker", runtime="runc")
    assert SandboxConfig(backend="docker", runtime="runc", allow_insecure_runtime=True).insecure


def test_pids_limit_below_512_is_refused():
    with pytest.raises(ValueError, match="512"):
        SandboxConfig(pids_limit=64)


def test_a_cancelled_run_is_killed_at_the_next_check(pool):
    wait_until(lambda: pool.depth()["python"] >= 1)
    sandbox = pool.acquire("python")
    asked_at = time.monotonic() + 0.5
    started = time.monotonic()
    report = sandbox.run("import time\ndef main():\n    time.sleep(30)", {}, Limits(timeout=30),
                         should_stop=lambda: time.monotonic() >= asked_at)
    pool.release(sandbox)
    assert report.cancelled is True
    assert time.monotonic() - started < 2


def test_code_importing_the_preloaded_modules_gets_a_restored_sandbox():
    config = SandboxConfig(python_preload="numpy,pandas,matplotlib.pyplot")
    pool = make_pool(size={"python": KindSize(1, 2), PRELOADED: KindSize(1, 2)}, config=config)
    pool.start()
    try:
        assert pool.backend.snapshots.wait(60), pool.backend.snapshots.failure()
        wait_until(lambda: pool.depth()[PRELOADED] >= 1)
        assert pool.kind_for("python", "import pandas as pd\ndef main():\n    return 1") == PRELOADED
        assert pool.kind_for("python", "from matplotlib import pyplot") == PRELOADED
        assert pool.kind_for("python", "def main():\n    return 'numpy'") == "python"
        assert pool.kind_for("nodejs", "import numpy") == "nodejs"
        sandbox = pool.acquire("python", code="import numpy\ndef main():\n    return 1")
        started = time.monotonic()
        report = sandbox.run("import sys\ndef main():\n    return 'pandas' in sys.modules", {}, Limits())
        pool.release(sandbox)
        assert json.loads(report.result["value_json"]) is True, "the snapshot's interpreter has them imported"
        assert time.monotonic() - started < 1.0
    finally:
        pool.shutdown()


def test_imported_packages_reads_import_statements():
    code = "import os, numpy as np\nfrom pandas.io import json\n  import matplotlib.pyplot\nx = 'import scipy'"
    assert imported_packages(code) == {"os", "numpy", "pandas", "matplotlib"}


def test_a_cgroup_whose_owner_died_before_runsc_started_is_removed_too():
    # A worker killed between making a sandbox's cgroup and starting runsc leaves only the cgroup (and
    # perhaps the bundle): the sweep finds those as well.
    from executor.runsc_sandbox import Cgroup

    site = f"site{uuid.uuid4().hex[:8]}"
    backend = RunscBackend(SandboxConfig(), site, "dead#9")
    half_made = backend.new_id()
    Cgroup(half_made).create(64, 1.0, 4096)
    (backend.config.bundle_dir / half_made).mkdir(parents=True)
    pool = make_pool(size={"python": KindSize(1, 1)}, site=site, live_owners=lambda: set())
    try:
        pool.start()
        assert half_made not in sandboxes_of(pool)
        assert not any((parent / half_made).exists() for parent in Cgroup.parents())
        assert not (backend.config.bundle_dir / half_made).exists()
    finally:
        pool.shutdown()
        backend.clean_up(half_made)


def cpu_weight(sandbox) -> str:
    """The CPU weight of the sandbox's own cgroup (cgroup v2 `cpu.weight`, v1 `cpu.shares`)."""
    if (CGROUP_ROOT / "cgroup.controllers").exists():
        return (CGROUP_ROOT / "sandboxctl" / sandbox.id / "cpu.weight").read_text().strip()
    return (CGROUP_ROOT / "cpu" / "sandboxctl" / sandbox.id / "cpu.shares").read_text().strip()


def test_a_sandbox_made_for_a_waiting_run_starts_at_full_cpu_weight():
    """Warming sandboxes take only idle CPU, so on a busy host a run waiting for one would wait for ever;
    the one being made while a run waits competes as an equal instead."""
    pool = make_pool(size={"python": KindSize(1, 1)})
    pool.start()
    try:
        wait_until(lambda: pool.depth()["python"] == 1)
        first = pool.acquire("python")
        assert cpu_weight(first) in ("1", "2"), "made with nobody waiting: the lowest weight"
        pool.release(first)
        second = pool.acquire("python", timeout=30)  # nothing warm: it waits for the refill
        assert cpu_weight(second) in ("100", "1024"), "made while a run waited: full weight"
        pool.release(second)
    finally:
        pool.shutdown()


def account_quota(group: Path) -> int:
    """The CPU quota of an account's cgroup in microseconds per 100 ms, -1 for none."""
    if (CGROUP_ROOT / "cgroup.controllers").exists():
        quota = (group / "cpu.max").read_text().split()[0]
        return -1 if quota == "max" else int(quota)
    return int((group / "cpu.cfs_quota_us").read_text())


def test_running_sandboxes_move_under_their_accounts_cgroups_which_share_the_host(pool):
    import os

    from executor.runsc_sandbox import account_group

    wait_until(lambda: pool.depth()["python"] >= 2)
    mine, theirs = pool.acquire("python"), pool.acquire("python")
    mine.assign_account("tenant-7")
    hierarchy = "" if (CGROUP_ROOT / "cgroup.controllers").exists() else "cpu"
    groups = CGROUP_ROOT / hierarchy / "sandboxctl"
    group = groups / account_group(pool.backend.site, "tenant-7")
    assert (group / mine.id).is_dir()
    assert account_quota(group) == -1, "an account alone may use the whole host"
    theirs.assign_account("tenant-8")
    other = groups / account_group(pool.backend.site, "tenant-8")
    half = os.cpu_count() * 100000 // 2
    assert account_quota(group) == account_quota(other) == half, "two accounts: half the host each"
    report = mine.run("def main():\n    return 1", {}, Limits())
    assert report.result["ok"], report
    assert (group / mine.id / "cgroup.procs").read_text().split(), "the sandbox's processes run there"
    pool.release(mine)
    wait_until(lambda: not group.exists(), timeout=10)  # the account's cgroup goes with its last sandbox
    assert account_quota(other) == -1, "alone again: no cap"
    pool.release(theirs)


def test_accounts_are_capped_only_while_several_use_cpu(pool):
    """An account whose runs sleep does not hold a busy one to half the host; once both burn, both are."""
    import os
    import threading

    from executor.runsc_sandbox import account_group

    wait_until(lambda: pool.depth()["python"] >= 2)
    busy, sleepy = pool.acquire("python"), pool.acquire("python")
    hierarchy = "" if (CGROUP_ROOT / "cgroup.controllers").exists() else "cpu"
    groups = CGROUP_ROOT / hierarchy / "sandboxctl"
    burn = "import time\ndef main():\n    end = time.time() + 8\n    while time.time() < end:\n        pass"
    for sandbox, account in ((busy, "busy-tenant"), (sleepy, "sleepy-tenant")):
        sandbox.assign_account(account)
    busy_group = groups / account_group(pool.backend.site, "busy-tenant")
    threading.Thread(target=busy.run, args=(burn, {}, Limits(timeout=20)), daemon=True).start()
    wait_until(lambda: account_quota(busy_group) == -1, timeout=5)  # the other one only waits
    threading.Thread(target=sleepy.run, args=(burn, {}, Limits(timeout=20)), daemon=True).start()
    half = os.cpu_count() * 100000 // 2
    wait_until(lambda: account_quota(busy_group) == half, timeout=5)
    for sandbox in (busy, sleepy):
        sandbox.kill()
        pool.release(sandbox)


def test_a_refill_a_run_waits_for_is_not_starved_by_busy_accounts():
    """Issue 18: with the host busy, refills at the lowest weight never finished and runs got
    `pool_exhausted`. A run waiting for a sandbox now gets it, however busy the accounts' runs keep the CPU."""
    import threading

    pool = make_pool(size={"python": KindSize(2, 2)})
    pool.start()
    burn = "import time\ndef main():\n    end = time.time() + 14\n    while time.time() < end:\n        pass"
    try:
        wait_until(lambda: pool.depth()["python"] == 2)
        burners = [pool.acquire("python") for _ in range(2)]  # their refills start now, at the lowest weight
        for index, sandbox in enumerate(burners):
            sandbox.assign_account(f"busy-{index}")
            threading.Thread(target=sandbox.run, args=(burn, {}, Limits(timeout=20)), daemon=True).start()
        time.sleep(1.0)  # both accounts burn a CPU each: the host is full
        started = time.monotonic()
        waited_for = pool.acquire("python", timeout=10)  # PoolExhausted here is the starvation
        assert time.monotonic() - started < 10
        pool.release(waited_for)
        for sandbox in burners:
            sandbox.kill()
            pool.release(sandbox)
    finally:
        pool.shutdown()


def acquire_in_thread(pool: SandboxPool, language: str, account: str, got: dict, timeout: float = 60):
    import threading

    def take() -> None:
        try:
            got[account] = pool.acquire(language, timeout=timeout, account=account)
        except PoolExhausted as exc:
            got[account] = exc

    thread = threading.Thread(target=take, daemon=True)
    thread.start()
    return thread


def test_waiting_runs_sleep_until_a_sandbox_is_theirs():
    """Issue 28: waiters used to wake each other (notify_all, then a re-check every 0.5 s) without pause, so
    three waiting runs kept a core busy. Each waiter now wakes once: when it is handed its sandbox."""
    pool = make_pool(size={"python": KindSize(0, 3)}, creators=1, max_creations_per_second=0.5)
    pool.start()
    try:
        got: dict = {}
        threads = [acquire_in_thread(pool, "python", f"tenant-{index}", got) for index in range(3)]
        for thread in threads:
            thread.join(90)
        assert all(not isinstance(sandbox, Exception) for sandbox in got.values()), got
        assert len({sandbox.id for sandbox in got.values()}) == 3
        assert pool.stats.waiter_wakeups == 3, pool.stats
        assert pool.stats.made_for_waiters >= 3, pool.stats
        # The creator slept between creations (rate-limited to one per 2 s): a few wake-ups each, no spin.
        assert pool.stats.creator_wakeups < 40, pool.stats
        for sandbox in got.values():
            pool.release(sandbox)
    finally:
        pool.shutdown()


def test_a_waiting_run_of_any_kind_gets_the_next_creation_before_prewarming():
    """Issue 28: one creator picked the kind furthest below its pre-warm target, so Python (merely below its
    minimum) kept winning over a Node.js run waiting right now, which then failed `pool_exhausted`."""
    pool = make_pool(size={"python": KindSize(4, 4), "nodejs": KindSize(0, 1)}, creators=1,
                     max_creations_per_second=1.0)
    pool.start()
    try:
        got: dict = {}
        acquire_in_thread(pool, "nodejs", "tenant", got).join(60)
        assert not isinstance(got["tenant"], Exception), got
        # At most the one Python sandbox whose creation had begun before the Node.js run arrived is warm.
        assert pool.depth()["python"] <= 1, pool.depth()
        pool.release(got["tenant"])
    finally:
        pool.shutdown()


def test_among_waiters_the_account_holding_fewest_sandboxes_goes_first():
    """Session churn by one account must not take sandboxes ahead of another account's runs: a sandbox that
    becomes ready goes to the waiter whose account holds the fewest, even if it came later."""
    pool = make_pool(size={"python": KindSize(2, 2)}, creators=1, max_creations_per_second=0.3)
    pool.start()
    try:
        wait_until(lambda: pool.depth()["python"] == 2)
        churner = [pool.acquire("python", account="churner") for _ in range(2)]
        got: dict = {}
        first = acquire_in_thread(pool, "python", "churner", got)
        time.sleep(0.2)  # the churner's third request arrives first
        second = acquire_in_thread(pool, "python", "bystander", got)
        second.join(30)
        assert not isinstance(got.get("bystander"), Exception), got
        assert "churner" not in got, "the bystander's run was served before the churner's third sandbox"
        first.join(30)
        assert not isinstance(got.get("churner"), Exception), got
        for sandbox in [*churner, *got.values()]:
            pool.release(sandbox)
    finally:
        pool.shutdown()


def test_a_kind_that_cannot_be_made_refuses_its_waiters_early_with_the_reason():
    """pool_exhausted is for a pool that cannot make sandboxes, not a busy one: a run waiting for a kind whose
    creations keep failing hears why after a few tries instead of waiting out its whole deadline."""
    broken = SandboxConfig(python_preload="", runsc_path="/bin/false")
    pool = make_pool(size={"python": KindSize(0, 1)}, config=broken)  # every sandbox start fails at once
    pool.start()
    try:
        started = time.monotonic()
        with pytest.raises(PoolExhausted, match="cannot be made now"):
            pool.acquire("python", timeout=120)
        assert time.monotonic() - started < 60, "refused after a few failed creations, not at the deadline"
        assert "python" in pool.failing()
    finally:
        pool.shutdown()

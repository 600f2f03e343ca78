"""The warm pool on its own (no Django): single use, refill, health, exhaustion, orphans, shutdown."""

import time
import uuid

import docker
import pytest

from executor.config import JobLimits, PoolConfig, SandboxConfig
from executor.pool import POOL_LABEL, SITE_LABEL, PoolExhausted, SandboxPool


@pytest.fixture
def client():
    return docker.from_env()


def containers_of(client, name: str) -> list:
    return client.containers.list(all=True, sparse=True, filters={"label": f"{POOL_LABEL}={name}"})


def make_pool(client, **overrides) -> SandboxPool:
    config = PoolConfig(name=f"test-{uuid.uuid4().hex[:8]}", **{"size": {"python": 2}, **overrides})
    return SandboxPool(client, SandboxConfig(), config)


def wait_until(predicate, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "condition not reached in time"
        time.sleep(0.1)


@pytest.fixture
def pool(client):
    pool = make_pool(client)
    pool.start()
    yield pool
    pool.shutdown()


def test_pool_warms_up_to_its_size(pool):
    wait_until(lambda: pool.depth() == {"python": 2})
    assert pool.warm_up_seconds is not None


def test_each_sandbox_runs_once_and_is_replaced(pool, client):
    wait_until(lambda: pool.depth()["python"] == 2)
    used = set()
    for _ in range(3):
        sandbox = pool.acquire("python")
        assert sandbox.id not in used
        used.add(sandbox.id)
        report = sandbox.run("def main():\n    return 1", {}, JobLimits())
        assert report.result["ok"]
        pool.release(sandbox)
    wait_until(lambda: pool.depth()["python"] == 2)
    live = {container.id[:12] for container in containers_of(client, pool.config.name)}
    assert not used & live, "used sandboxes are removed"


def test_sandbox_killed_from_outside_is_replaced(pool, client):
    wait_until(lambda: pool.depth()["python"] == 2)
    victim = containers_of(client, pool.config.name)[0]
    victim.kill()
    wait_until(lambda: victim.id not in {c.id for c in containers_of(client, pool.config.name)}, timeout=15)
    wait_until(lambda: pool.depth()["python"] == 2)
    sandbox = pool.acquire("python")
    assert sandbox.run("def main():\n    return 2", {}, JobLimits()).result["ok"]
    pool.release(sandbox)


def test_empty_pool_waits_a_bounded_time_then_reports_exhaustion(client):
    pool = make_pool(client, size={"python": 1}, max_creations_per_second=0.05, acquire_timeout=0.5)
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


def stray(client, owner: str, site: str):
    return client.containers.run(
        "sandboxctl-python", ["sleep", "300"], runtime="runsc", network_mode="none", detach=True,
        labels={POOL_LABEL: owner, SITE_LABEL: site},
    )


def test_only_sandboxes_of_dead_owners_of_the_same_site_are_reaped(client):
    site = f"site-{uuid.uuid4().hex[:8]}"
    pool = SandboxPool(client, SandboxConfig(), PoolConfig(name="me#1", site=site, size={"python": 1}),
                       live_owners=lambda: {"me#1", "alive#2"})
    dead, alive, elsewhere = stray(client, "dead#3", site), stray(client, "alive#2", site), stray(client, "dead#3", "x")
    try:
        pool.start()
        left = {container.id for container in client.containers.list(all=True, sparse=True)}
        assert dead.id not in left, "a dead instance's sandbox is an orphan"
        assert alive.id in left, "a live instance's sandboxes are its own business"
        assert elsewhere.id in left, "another deployment's sandboxes are never touched"
    finally:
        pool.shutdown()
        for container in (alive, elsewhere):
            container.remove(force=True)


def test_a_sandbox_the_pool_lost_track_of_is_swept_once_old(client):
    pool = make_pool(client, size={"python": 1}, lost_min_age=0.0)
    lost = stray(client, pool.config.name, pool.config.site)
    pool.start()
    try:
        assert lost.id not in {container.id for container in containers_of(client, pool.config.name)}
    finally:
        pool.shutdown()


def test_shutdown_removes_every_sandbox_warm_or_in_use(client):
    pool = make_pool(client)
    pool.start()
    wait_until(lambda: pool.depth()["python"] == 2)
    pool.acquire("python")  # in use, never released
    pool.shutdown()
    assert containers_of(client, pool.config.name) == []


def test_sandbox_containers_are_locked_down(pool, client):
    wait_until(lambda: pool.depth()["python"] >= 1)
    attrs = client.containers.get(containers_of(client, pool.config.name)[0].id).attrs
    host = attrs["HostConfig"]
    assert host["Runtime"] == "runsc"
    assert host["NetworkMode"] == "none"
    assert host["ReadonlyRootfs"] is True
    assert host["CapDrop"] == ["ALL"]
    assert "no-new-privileges" in host["SecurityOpt"]
    assert host["Memory"] == host["MemorySwap"] > 0
    assert host["PidsLimit"] >= 512
    assert {"Name": "nproc", "Soft": 64, "Hard": 64} in host["Ulimits"]
    assert host["Binds"] in (None, [])
    assert host["LogConfig"]["Type"] == "none"
    # The supervisor is the sandbox's root with three capabilities; user code runs as 65534 (tests/security).
    assert attrs["Config"]["User"] == "0:0"
    assert sorted(host["CapAdd"]) == ["KILL", "SETGID", "SETUID"]
    assert attrs["Config"]["Labels"]["sandboxctl.language"] == "python"


def test_insecure_runtime_needs_the_explicit_flag():
    with pytest.raises(ValueError, match="not a gVisor runtime"):
        SandboxConfig(runtime="runc")
    assert SandboxConfig(runtime="runc", allow_insecure_runtime=True).insecure


def test_pids_limit_below_512_is_refused():
    with pytest.raises(ValueError, match="512"):
        SandboxConfig(pids_limit=64)


def test_a_cancelled_run_is_killed_at_the_next_check(pool):
    wait_until(lambda: pool.depth()["python"] >= 1)
    sandbox = pool.acquire("python")
    asked_at = time.monotonic() + 0.5
    started = time.monotonic()
    report = sandbox.run("import time\ndef main():\n    time.sleep(30)", {}, JobLimits(timeout=30),
                         should_stop=lambda: time.monotonic() >= asked_at)
    pool.release(sandbox)
    assert report.cancelled is True
    assert time.monotonic() - started < 2

"""The docker backend (dockerd's runsc runtime, for workers that can reach dockerd but not run runsc): the same
session, the same walls, its own lockdown, and nothing left behind."""

import json
import time

import docker
import pytest

from executor.config import SandboxConfig
from executor.docker_sandbox import POOL_LABEL, SITE_LABEL, DockerBackend
from tests.sandbox_pools import run, warm_pool


@pytest.fixture
def pool():
    pool = warm_pool(lambda site, name: DockerBackend(SandboxConfig(backend="docker"), site, name), "docker-test",
                     nodejs_max=1, timeout=60)
    yield pool
    pool.shutdown()


def test_runs_python_and_node(pool):
    assert json.loads(run(pool, "python", "def main():\n    return [1, 'a']").result["value_json"]) == [1, "a"]
    assert json.loads(run(pool, "nodejs", "function main() { return {b: 2}; }").result["value_json"]) == {"b": 2}


def test_the_supervisors_stdout_is_closed_to_user_code(pool):
    report = run(pool, "python", "import os\ndef main():\n    os.open('/proc/1/fd/1', os.O_WRONLY)")
    assert report.result["error"]["type"] == "PermissionError"


def test_timeouts_are_enforced(pool):
    started = time.monotonic()
    report = run(pool, "python", "def main():\n    while True:\n        pass", timeout=1)
    assert report.timed_out is True and time.monotonic() - started < 3


def test_containers_are_locked_down(pool):
    client = docker.from_env()
    [container] = client.containers.list(filters={"label": [f"{SITE_LABEL}={pool.config.site}",
                                                            "sandboxctl.language=python"]})
    host = container.attrs["HostConfig"]
    assert host["Runtime"] == "runsc" and host["NetworkMode"] == "none" and host["ReadonlyRootfs"] is True
    assert host["CapDrop"] == ["ALL"] and sorted(host["CapAdd"]) == ["KILL", "SETGID", "SETUID"]
    assert "no-new-privileges" in host["SecurityOpt"]
    assert host["Memory"] == host["MemorySwap"] > 0 and host["PidsLimit"] >= 512
    assert {"Name": "nproc", "Soft": 64, "Hard": 64} in host["Ulimits"]
    assert host["Binds"] in (None, []) and host["LogConfig"]["Type"] == "none"
    assert container.attrs["Config"]["User"] == "0:0"
    assert container.labels[POOL_LABEL] == pool.config.name


def test_shutdown_removes_everything(pool):
    pool.shutdown()
    client = docker.from_env()
    assert client.containers.list(all=True, filters={"label": f"{SITE_LABEL}={pool.config.site}"}) == []

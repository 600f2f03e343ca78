"""Scale-out on Celery, proven on one machine: worker hosts started with `make worker`, each in a network
namespace of its own with its own runsc state folder and host name, sharing one PostgreSQL and one Redis.

The shared services live in a namespace of their own (`svc`); each host reaches them over a veth pair whose
two ends have loopback-range addresses (127.77.N.1 in `svc`, 127.77.N.2 in the host), so no test traffic ever
carries an address outside 127.0.0.0/8. (The root namespace's local table claims all of 127/8, which is why the
services are not there: only the namespaces the test makes have their local tables narrowed to 127.0.0.1.) The
web, the io worker and beat run in the root namespace and reach the same servers by their unix sockets.

Asserted: runs spread over the hosts; /readyz and the dashboard list every host; a host killed (`kill -9` of its
whole process group) under load loses no run — its runs are requeued once and finished by the others within
SANDBOX_WORKER_STALE_AFTER plus one reconcile period (plus the run itself); a host started later joins with no
restart of anything else.
"""

import os
import re
import shutil
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import psycopg
import pytest
import requests

from executor.config import IO_QUEUES

from .conftest import ROOT, PrivatePostgres, PrivateRedis, free_port

STALE_AFTER, RECONCILE = 5, 2
SLEEPY = "import time\ndef main(seconds):\n    time.sleep(seconds)\n    return 'done'"
TOKEN = f"mh-{uuid.uuid4().hex}"
METRICS_TOKEN = f"mh-metrics-{uuid.uuid4().hex}"
ADMIN_PASSWORD = f"mh-{uuid.uuid4().hex}"


def ip(*arguments: str) -> None:
    subprocess.run(["ip", *arguments], check=True, capture_output=True, timeout=30)


class Network:
    """The services' namespace and one namespace per worker host, joined by veth pairs in 127.77.0.0/16."""

    def __init__(self) -> None:
        self.tag = uuid.uuid4().hex[:5]
        self.services = f"sbx{self.tag}svc"
        self.namespaces = [self.services]

    def loopback_only(self, namespace: str) -> None:
        ip("netns", "add", namespace)
        ip("-n", namespace, "link", "set", "lo", "up")
        ip("netns", "exec", namespace, "sysctl", "-qw", "net.ipv4.conf.all.route_localnet=1")
        ip("-n", namespace, "route", "del", "127.0.0.0/8", "dev", "lo", "table", "local")

    def create(self) -> None:
        self.loopback_only(self.services)

    def add_host(self, number: int) -> tuple[str, str]:
        """A host's namespace, and the address it reaches the services on."""
        host = f"sbx{self.tag}h{number}"
        outside, inside = f"sbx{self.tag}a{number}", f"sbx{self.tag}b{number}"
        self.loopback_only(host)
        self.namespaces.append(host)
        ip("link", "add", outside, "type", "veth", "peer", "name", inside)
        for namespace, device, address in ((self.services, outside, f"127.77.{number}.1"),
                                           (host, inside, f"127.77.{number}.2")):
            ip("link", "set", device, "netns", namespace)
            ip("netns", "exec", namespace, "sysctl", "-qw", f"net.ipv4.conf.{device}.route_localnet=1")
            ip("-n", namespace, "addr", "add", f"{address}/30", "dev", device)
            ip("-n", namespace, "link", "set", device, "up")
        return host, f"127.77.{number}.1"

    def remove(self) -> None:
        for namespace in self.namespaces:
            subprocess.run(["ip", "netns", "del", namespace], capture_output=True)


class Deployment:
    def __init__(self, tmp: Path) -> None:
        self.tmp = tmp
        self.network = Network()
        self.postgres = PrivatePostgres(netns=self.network.services)
        self.redis = PrivateRedis(self.postgres.folder, netns=self.network.services)
        self.site = f"mh{self.network.tag}"
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.processes: dict[str, subprocess.Popen] = {}
        self.session = requests.Session()
        self.session.headers["Authorization"] = f"Bearer {TOKEN}"

    def common_environment(self) -> dict:
        # Where the machine keeps its images is the machine's, not the deployment's: inherited.
        machine = ("SANDBOX_ROOTFS_DIR", "SANDBOX_IMAGE_CACHE_DIR", "SANDBOX_SNAPSHOT_DIR")
        env = {key: value for key, value in os.environ.items() if key in machine
               or not key.startswith(("SANDBOX_", "SANDBOXCTL_", "DATABASE_", "CELERY_"))}
        env.update(SECRET_KEY="multi-host-" + "x" * 40, SANDBOX_SITE=self.site, PYTHONUNBUFFERED="1",
                   SANDBOX_WORKER_STALE_AFTER=str(STALE_AFTER), SANDBOX_RECONCILE_INTERVAL=str(RECONCILE),
                   SANDBOX_POOL_SWEEP_INTERVAL="2", SANDBOX_QUEUE_REDISPATCH_AFTER="8",
                   SANDBOX_TENANT_MAX_CONCURRENT="20", SANDBOX_TENANT_MAX_QUEUED="500",
                   SANDBOX_TENANT_RATE="100000/min", SANDBOXCTL_METRICS_TOKEN=METRICS_TOKEN)
        return env

    def control_environment(self) -> dict:
        return {**self.common_environment(), "DATABASE_URL": f"{self.postgres.socket_url}/sandboxctl",
                "CELERY_BROKER_URL": f"socket://{self.redis.socket}", "SANDBOXCTL_DATA_DIR": str(self.tmp / "web"),
                "SANDBOXCTL_BOOTSTRAP_TOKEN": TOKEN, "SANDBOXCTL_ADMIN_PASSWORD": ADMIN_PASSWORD}

    def start(self) -> None:
        self.network.create()
        self.postgres.create()
        self.redis.start()
        with psycopg.connect(f"{self.postgres.socket_url}/postgres", autocommit=True) as conn:
            conn.execute("CREATE DATABASE sandboxctl")
        env = self.control_environment()
        (self.tmp / "web").mkdir()
        for command in (["migrate", "--noinput", "-v0"], ["bootstrap"]):
            subprocess.run([sys.executable, "manage.py", *command], cwd=ROOT, env=env, check=True, timeout=300,
                           capture_output=True)
        self.spawn("web", [sys.executable, "-m", "gunicorn", "sandboxctl.wsgi", "--bind", f"127.0.0.1:{self.port}",
                           "--worker-class", "gthread", "--threads", "8"], env)
        self.spawn("io", [sys.executable, "-m", "celery", "-A", "sandboxctl", "worker", "-P", "threads", "-c", "4",
                          "-n", f"io@{self.site}", "-Q", ",".join(IO_QUEUES), "--without-gossip", "--without-mingle"],
                   env)
        self.spawn("beat", [sys.executable, "-m", "celery", "-A", "sandboxctl", "beat", "-s",
                            str(self.tmp / "web" / "beat-schedule"), "--pidfile="], env)

    def start_host(self, number: int) -> None:
        namespace, services = self.network.add_host(number)
        data = self.tmp / f"host-{number}"
        data.mkdir()
        env = {**self.common_environment(),
               "DATABASE_URL": f"postgres://postgres@{services}:{self.postgres.port}/sandboxctl",
               "CELERY_BROKER_URL": f"redis://{services}:{self.redis.port}/0", "SANDBOXCTL_DATA_DIR": str(data),
               "SANDBOX_WORKER_HOST": f"host-{number}", "SANDBOX_RUNSC_STATE_DIR": str(self.state_dir(number)),
               "SANDBOX_POOL_SIZE_PYTHON": "1", "SANDBOX_POOL_SIZE_NODEJS": "1", "SANDBOX_PYTHON_PRELOAD": "",
               "SANDBOX_POOL_ACQUIRE_TIMEOUT": "20", "WORKER_CONCURRENCY": "2"}
        # nsenter switches the network namespace only: `ip netns exec` would also remount /sys, hiding the
        # cgroup file system the sandboxes are made in.
        self.spawn(f"host-{number}", ["nsenter", f"--net=/run/netns/{namespace}", "make", "worker"], env)

    def state_dir(self, number: int) -> Path:
        return Path(f"/run/sandboxctl-{self.site}-{number}")

    def sandbox_processes(self, number: int) -> list[int]:
        """Processes of the host's sandboxes: runsc names the host's state folder in their command lines."""
        marker = str(self.state_dir(number)).encode()
        found = []
        for entry in Path("/proc").iterdir():
            try:
                if entry.name.isdigit() and marker in (entry / "cmdline").read_bytes():
                    found.append(int(entry.name))
            except OSError:
                continue
        return found

    def spawn(self, name: str, command: list[str], env: dict) -> None:
        log = open(self.tmp / f"{name}.log", "ab")
        self.processes[name] = subprocess.Popen(command, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT,
                                                start_new_session=True)

    def kill(self, name: str) -> None:
        os.killpg(self.processes[name].pid, signal.SIGKILL)
        self.processes[name].wait(30)

    def stop(self) -> None:
        for process in reversed(self.processes.values()):
            if process.poll() is None:
                os.killpg(process.pid, signal.SIGTERM)
        for process in self.processes.values():
            try:
                process.wait(90)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
        for number in range(1, 4):
            for pid in self.sandbox_processes(number):
                os.kill(pid, signal.SIGKILL)
            if self.state_dir(number).is_mount():  # the worker keeps runsc's state on a tmpfs of its own
                subprocess.run(["umount", "--lazy", str(self.state_dir(number))], capture_output=True)
            shutil.rmtree(self.state_dir(number), ignore_errors=True)
        self.redis.remove()
        self.postgres.remove()
        self.network.remove()

    def log(self, name: str) -> str:
        return (self.tmp / f"{name}.log").read_text(errors="replace")[-3000:]

    # Observations

    def readiness(self) -> requests.Response:
        return requests.get(f"{self.url}/readyz", headers={"Authorization": f"Bearer {METRICS_TOKEN}"}, timeout=10)

    def wait_for_hosts(self, *hosts: str, timeout: float = 240) -> None:
        deadline = time.monotonic() + timeout
        while True:
            try:
                answer = self.readiness()
                if answer.status_code == 200 and all(f"@{host}#" in answer.text for host in hosts):
                    return
            except requests.RequestException:
                pass
            assert time.monotonic() < deadline, f"{hosts} not ready:\n" + "\n".join(
                f"--- {name}\n{self.log(name)}" for name in self.processes)
            time.sleep(1)

    def submit(self, seconds: float, count: int) -> list[str]:
        ids = []
        for _ in range(count):
            response = self.session.post(f"{self.url}/api/v1/executions", timeout=60, json={
                "language": "python", "code": SLEEPY, "arguments": {"seconds": seconds}, "wait": False})
            assert response.status_code == 202, response.text
            ids.append(response.json()["id"])
        return ids

    def rows(self, ids: list[str]) -> list[tuple]:
        with psycopg.connect(f"{self.postgres.socket_url}/sandboxctl") as conn:
            return conn.execute("SELECT id::text, status, worker, attempts, finished_at FROM executions_execution "
                                "WHERE id::text = ANY(%s)", [ids]).fetchall()

    def wait_finished(self, ids: list[str], timeout: float = 180) -> list[tuple]:
        deadline = time.monotonic() + timeout
        while True:
            rows = self.rows(ids)
            if all(row[1] not in ("queued", "running") for row in rows):
                return rows
            pending = [row for row in rows if row[1] in ("queued", "running")]
            assert time.monotonic() < deadline, f"runs never ended: {pending}"
            time.sleep(0.5)

    def dashboard(self) -> str:
        admin = requests.Session()
        admin.get(f"{self.url}/admin/login/", timeout=30)
        admin.post(f"{self.url}/admin/login/?next=/admin/dashboard/", timeout=30, data={
            "username": "admin", "password": ADMIN_PASSWORD, "csrfmiddlewaretoken": admin.cookies["csrftoken"],
            "next": "/admin/dashboard/"}, headers={"Referer": f"{self.url}/admin/login/"})
        page = admin.get(f"{self.url}/admin/dashboard/", timeout=30)
        assert page.status_code == 200 and "login" not in page.url, page.url
        return page.text


def host_of(worker: str) -> str:
    return re.match(r"sandboxctl@(host-\d+)#", worker).group(1)


@pytest.fixture
def deployment(tmp_path):
    deployment = Deployment(tmp_path)
    try:
        deployment.start()
        yield deployment
    finally:
        deployment.stop()


def test_worker_hosts_share_the_runs_survive_a_lost_host_and_join_later(deployment):
    deployment.start_host(1)
    deployment.start_host(2)
    deployment.wait_for_hosts("host-1", "host-2")

    spread = deployment.wait_finished(deployment.submit(1.0, 8))
    assert {row[1] for row in spread} == {"succeeded"}
    assert {host_of(row[2]) for row in spread} == {"host-1", "host-2"}, "runs spread over the hosts"
    page = deployment.dashboard()
    assert "host-1" in page and "host-2" in page, "the dashboard lists every host"

    under_load = deployment.submit(4.0, 6)
    deadline = time.monotonic() + 60
    while not any(row[1] == "running" and "@host-1#" in row[2] for row in deployment.rows(under_load)):
        assert time.monotonic() < deadline, "host-1 never took a run"
        time.sleep(0.2)
    deployment.kill("host-1")
    killed_at = time.time()
    rows = deployment.wait_finished(under_load)
    assert {row[1] for row in rows} == {"succeeded"}, rows
    rescued = [row for row in rows if row[3] == 2]
    assert rescued, "host-1's runs were requeued"
    assert all(host_of(row[2]) == "host-2" and row[3] <= 2 for row in rows), "finished by the survivor, once"
    recovery = max(row[4].timestamp() for row in rescued) - killed_at
    assert recovery <= STALE_AFTER + RECONCILE + 4.0 + 15, f"recovered in {recovery:.1f}s"
    print(f"host lost: its runs finished elsewhere {recovery:.1f}s after the kill")
    deadline = time.monotonic() + 30
    while deployment.sandbox_processes(1):
        assert time.monotonic() < deadline, "the lost host's sandboxes are reaped (by the survivors' sweeps)"
        time.sleep(0.5)

    deployment.start_host(3)
    deployment.wait_for_hosts("host-2", "host-3")
    later = deployment.wait_finished(deployment.submit(1.0, 10))
    assert {row[1] for row in later} == {"succeeded"}
    assert "host-3" in {host_of(row[2]) for row in later}, "a host started later takes runs"

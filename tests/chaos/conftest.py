"""The real stack as `make run` starts it (scripts/run.sh: supervisord, gunicorn, a sandbox worker, the io
worker, beat and the embedded Redis broker), on its own PostgreSQL database, data folder, port and site
label, so faults injected here touch nothing of the rest of the suite.

Each chaos test asserts the same promises: every execution reaches a terminal status, none executes twice
(a callback receiver outside the sandbox counts one callback per terminal transition, and attempts stay
≤ 2), /readyz is 200 again within 30 s, and when the stack stops no process and no container of it is left.
"""

import glob
import json
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time
import uuid
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import psycopg
import pytest
import requests

from executor.config import SandboxConfig
from executor.runsc_sandbox import RunscBackend

ROOT = Path(__file__).resolve().parents[2]
TERMINAL = {"succeeded", "failed", "timeout", "memory_limit", "output_limit", "cancelled", "sandbox_error"}


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


class CallbackCounter:
    """Records the terminal states each execution reports in its callbacks. One distinct state per run is the
    proof of one terminal transition; a delivery retried over HTTP (same Idempotency-Key, same body) may
    arrive twice, which is what the key is for, and is counted apart."""

    def __init__(self) -> None:
        self.states: dict[str, set] = {}
        self.deliveries: Counter[str] = Counter()
        self.lock = threading.Lock()
        counter = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                assert self.headers["Idempotency-Key"] == body["id"]
                with counter.lock:
                    counter.deliveries[body["id"]] += 1
                    counter.states.setdefault(body["id"], set()).add((body["status"], body["finished_at"]))
                self.send_response(204)
                self.end_headers()

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.2", 0), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        self.url = f"http://127.0.0.2:{self.server.server_address[1]}/hook"


class Stack:
    """`make run`'s stack. With `database_base` (a PostgreSQL server URL without the database) and `broker_url`
    it runs on servers a test owns and may stop; otherwise on the suite's PostgreSQL and the embedded broker."""

    def __init__(self, tmp: Path, receiver: CallbackCounter, database_base: str | None = None,
                 broker_url: str | None = None) -> None:
        self.database_base = database_base or os.environ["DATABASE_URL"].rsplit("/", 1)[0]
        self.broker_url = broker_url
        self.data = tmp / "data"
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.site = f"chaos{uuid.uuid4().hex[:8]}"
        self.database = "sandboxctl_chaos"
        self.token = f"chaos-{uuid.uuid4().hex}"
        self.receiver = receiver
        self.log_path = tmp / "stack.log"
        self.process: subprocess.Popen | None = None
        self.session = requests.Session()
        self.session.headers["Authorization"] = f"Bearer {self.token}"

    # Lifecycle

    def environment(self) -> dict:
        env = {key: value for key, value in os.environ.items() if key != "CELERY_BROKER_URL"}
        if self.broker_url:
            env["CELERY_BROKER_URL"] = self.broker_url
        env.update(
            DATABASE_URL=f"{self.database_base}/{self.database}", SANDBOXCTL_DATA_DIR=str(self.data),
            PORT=str(self.port), RAGFLOW_PORT=str(free_port()),
            SANDBOXCTL_BOOTSTRAP_TOKEN=self.token, SANDBOX_SITE=self.site, SECRET_KEY="chaos-" + "x" * 40,
            SANDBOX_WORKER_STALE_AFTER="5", SANDBOX_RECONCILE_INTERVAL="2", SANDBOX_POOL_SWEEP_INTERVAL="2",
            SANDBOX_QUEUE_REDISPATCH_AFTER="8", SANDBOX_CALLBACK_ALLOWED_NETWORKS="127.0.0.2/32",
            SANDBOX_POOL_SIZE_PYTHON="2", SANDBOX_POOL_SIZE_NODEJS="1", SANDBOX_POOL_ACQUIRE_TIMEOUT="20",
            WORKER_CONCURRENCY="4", PYTHONUNBUFFERED="1",
            # One account submits everything here: let it fill the worker, queue hundreds and poll freely.
            SANDBOX_TENANT_MAX_CONCURRENT="8", SANDBOX_TENANT_MAX_QUEUED="1000", SANDBOX_TENANT_RATE="100000/min",
        )
        return env

    def start(self) -> None:
        recreate_database(self.database, self.database_base)
        self.data.mkdir(parents=True, exist_ok=True)
        log = open(self.log_path, "ab")
        self.process = subprocess.Popen(["bash", "scripts/run.sh"], cwd=ROOT, env=self.environment(),
                                        stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        self.wait_ready(timeout=180)

    def stop(self) -> None:
        """Ctrl-C, as a user would: supervisord stops every program, the worker removes its sandboxes."""
        if self.process is None or self.process.poll() is not None:
            return
        self.process.send_signal(signal.SIGINT)
        try:
            self.process.wait(150)
        except subprocess.TimeoutExpired:
            os.killpg(self.process.pid, signal.SIGKILL)
            raise AssertionError(f"the stack did not stop on Ctrl-C:\n{self.log()[-3000:]}") from None

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def supervisorctl(self, *args: str) -> str:
        command = [str(ROOT / ".venv/bin/supervisorctl"), "-s", f"unix://{self.data}/supervisor.sock", *args]
        return subprocess.run(command, capture_output=True, text=True, timeout=120).stdout

    def pid_of(self, program: str) -> int:
        return int(self.supervisorctl("pid", program).strip())

    # Observations

    def ready(self) -> bool:
        try:
            return requests.get(f"{self.url}/readyz", timeout=5).status_code == 200
        except requests.RequestException:
            return False

    def wait_ready(self, timeout: float = 30) -> float:
        started = time.monotonic()
        while not self.ready():
            if self.process is not None and self.process.poll() is not None:
                raise AssertionError(f"the stack exited:\n{self.log()[-4000:]}")
            if time.monotonic() - started > timeout:
                raise AssertionError(f"/readyz not 200 within {timeout}s:\n{self.log()[-4000:]}")
            time.sleep(0.5)
        return time.monotonic() - started

    def submit(self, code: str, wait: bool = False, language: str = "python", **fields) -> dict:
        body = {"language": language, "code": code, "wait": wait, "callback_url": self.receiver.url, **fields}
        response = self.session.post(f"{self.url}/api/v1/executions", json=body, timeout=120)
        assert response.status_code in (200, 202), response.text
        return response.json()

    def execution(self, execution_id: str) -> dict:
        return self.session.get(f"{self.url}/api/v1/executions/{execution_id}", timeout=30).json()

    def wait_terminal(self, ids: list[str], timeout: float = 120) -> dict[str, dict]:
        deadline = time.monotonic() + timeout
        pending, done = set(ids), {}
        while pending:
            for execution_id in list(pending):
                try:
                    body = self.execution(execution_id)
                except (requests.RequestException, ValueError):
                    continue
                if body.get("status") in TERMINAL:
                    done[execution_id] = body
                    pending.discard(execution_id)
            if pending and time.monotonic() > deadline:
                raise AssertionError(f"{len(pending)} runs never ended, e.g. {self.execution(next(iter(pending)))}")
            time.sleep(0.5)
        return done

    def attempts(self, ids: list[str]) -> dict[str, int]:
        with psycopg.connect(f"{self.database_base}/{self.database}") as conn:
            rows = conn.execute("SELECT id::text, attempts FROM executions_execution WHERE id::text = ANY(%s)",
                                [ids]).fetchall()
        return dict(rows)

    def callback_rows(self, ids: list[str]) -> list[tuple]:
        with psycopg.connect(f"{self.database_base}/{self.database}") as conn:
            return conn.execute(
                "SELECT id::text, status, attempts, callback_status, callback_attempts, callback_error "
                "FROM executions_execution WHERE id::text = ANY(%s)", [ids[:5]]).fetchall()

    def sandboxes(self) -> RunscBackend:
        return RunscBackend(SandboxConfig(), self.site, "chaos-observer")

    def containers(self) -> list:
        return self.sandboxes().find()

    def processes(self) -> list[int]:
        """Every process whose environment names this stack's data folder: what must not outlive it."""
        marker = f"SANDBOXCTL_DATA_DIR={self.data}".encode()
        found = []
        for entry in Path("/proc").iterdir():
            if entry.name.isdigit():
                try:
                    if marker in (entry / "environ").read_bytes().split(b"\0"):
                        found.append(int(entry.name))
                except OSError:
                    continue
        return found

    # The common promises

    def assert_every_run_ended_once(self, ids: list[str], timeout: float = 120) -> dict[str, dict]:
        done = self.wait_terminal(ids, timeout)
        deadline = time.monotonic() + 60
        while any(execution_id not in self.receiver.states for execution_id in ids) and time.monotonic() < deadline:
            time.sleep(0.5)
        time.sleep(1)
        wrong = [execution_id for execution_id in ids if len(self.receiver.states.get(execution_id, ())) != 1]
        assert not wrong, f"one terminal transition per run, seen from outside: {self.callback_rows(wrong)}"
        assert max(self.attempts(ids).values()) <= 2, "a run is requeued at most once"
        return done

    def assert_leaves_nothing_behind(self) -> None:
        self.stop()
        assert self.processes() == [], "no process of the stack outlives it"
        assert self.containers() == [], "no sandbox of the stack outlives it"


def recreate_database(name: str, base: str) -> None:
    with psycopg.connect(f"{base}/postgres", autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        conn.execute(f'CREATE DATABASE "{name}"')


@pytest.fixture
def stack(tmp_path):
    receiver = CallbackCounter()
    stack = Stack(tmp_path, receiver)
    try:
        stack.start()
        yield stack
    finally:
        try:
            stack.stop()
        finally:
            for found in stack.containers():
                stack.sandboxes().remove(found.id)
            receiver.server.shutdown()


class PrivatePostgres:
    """A PostgreSQL server of the test's own (initdb in a scratch folder, a free loopback port), so an outage of a
    minute hurts nothing else on the machine. It runs as the `postgres` user, which PostgreSQL requires."""

    def __init__(self, netns: str | None = None) -> None:
        self.netns = netns  # in a network namespace of the test's: it listens on every address there
        self.bin = Path(sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))[-1]).parent
        self.folder = Path(tempfile.mkdtemp(prefix="sandboxctl-chaos-pg-", dir="/var/tmp"))
        shutil.chown(self.folder, "postgres", "postgres")
        self.data = self.folder / "data"
        self.port = free_port()
        self.base = f"postgres://postgres@127.0.0.1:{self.port}"

    @property
    def socket_url(self) -> str:
        """The server by its unix socket, reachable from any network namespace."""
        return f"postgres://postgres@{str(self.folder).replace('/', '%2F')}:{self.port}"

    def as_postgres(self, *command: str) -> None:
        enter = ["ip", "netns", "exec", self.netns] if self.netns else []
        subprocess.run([*enter, "runuser", "-u", "postgres", "--", *command], check=True, capture_output=True,
                       timeout=120)

    def create(self) -> None:
        self.as_postgres(str(self.bin / "initdb"), "-D", str(self.data), "-U", "postgres", "--auth=trust")
        if self.netns:  # the test hosts reach it from their 127.77.N.2 ends of the veth pairs
            with open(self.data / "pg_hba.conf", "a") as hba:
                hba.write("host all all 127.77.0.0/16 trust\n")
        self.start()

    def start(self) -> None:
        listen = "*" if self.netns else "127.0.0.1"
        options = f"-p {self.port} -k {self.folder} -c listen_addresses={listen} -c fsync=off"
        self.as_postgres(str(self.bin / "pg_ctl"), "-D", str(self.data), "-o", options, "-w", "-l",
                         str(self.folder / "server.log"), "start")

    def stop(self) -> None:
        self.as_postgres(str(self.bin / "pg_ctl"), "-D", str(self.data), "-m", "fast", "-w", "stop")

    def remove(self) -> None:
        try:
            self.stop()
        except subprocess.CalledProcessError:
            pass  # already stopped
        shutil.rmtree(self.folder, ignore_errors=True)


class PrivateRedis:
    """An external Redis broker of the test's own, as production has one: no persistence, so a `kill -9` loses
    every message it held, and the stack must recover them from the database."""

    def __init__(self, folder: Path, netns: str | None = None) -> None:
        self.folder = folder
        self.netns = netns
        self.port = free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.socket = folder / "redis.sock"
        self.process: subprocess.Popen | None = None

    def start(self) -> None:
        enter = ["ip", "netns", "exec", self.netns] if self.netns else []
        command = [*enter, "redis-server", "--port", str(self.port), "--bind", "*" if self.netns else "127.0.0.1",
                   "--unixsocket", str(self.socket), "--unixsocketperm", "700", "--save", "", "--appendonly", "no",
                   "--protected-mode", "no", "--dir", str(self.folder)]
        self.process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 20
        while subprocess.run(["redis-cli", "-s", str(self.socket), "ping"], capture_output=True).stdout != b"PONG\n":
            assert time.monotonic() < deadline, "the test's Redis did not start"
            time.sleep(0.1)

    def kill(self) -> None:
        self.process.kill()
        self.process.wait()

    def remove(self) -> None:
        if self.process and self.process.poll() is None:
            self.kill()


@pytest.fixture
def production_stack(tmp_path):
    """The stack on a PostgreSQL server and a Redis broker the test owns, stops and kills."""
    postgres, broker = PrivatePostgres(), PrivateRedis(tmp_path)
    receiver = CallbackCounter()
    stack = None
    try:
        postgres.create()
        broker.start()
        stack = Stack(tmp_path, receiver, database_base=postgres.base, broker_url=broker.url)
        stack.postgres, stack.broker = postgres, broker
        stack.start()
        yield stack
    finally:
        try:
            if stack is not None:
                stack.stop()
        finally:
            if stack is not None:
                for found in stack.containers():
                    stack.sandboxes().remove(found.id)
            receiver.server.shutdown()
            broker.remove()
            postgres.remove()

"""The asynchronous web tier against a real server: gunicorn with sandboxctl.api.server.Worker (uvicorn, ASGI) on
loopback, the main and RAGFlow's port, one worker process (the limits are per process), on the test
database and broker with the session's sandbox worker.

A flood of waiting requests and slow-header clients must not take the service from anyone else: /healthz
answers within 1 s and another account's trivial run within 3 s; the waiters cost the process no thread
each; slow clients are dropped after the header timeout; the connection caps hold on both ports.
"""

import json
import re
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import pytest
import requests
from django.db import connection

from conftest import ROOT, worker_env
from sandboxctl.executions.models import ApiToken

HEADER_TIMEOUT = 5.0
PER_ADDRESS = 250
TOTAL = 600
FLOOD = 200
SLOW = 80


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@dataclass
class Server:
    main: int
    ragflow: int
    process: subprocess.Popen
    log: Path

    def url(self, path: str = "", ragflow: bool = False) -> str:
        return f"http://127.0.0.1:{self.ragflow if ragflow else self.main}{path}"

    def metric(self, name: str) -> tuple[int, int]:
        """(pid, value) of a per-process gauge from /metrics."""
        text = requests.get(self.url("/metrics"), headers={"Authorization": f"Bearer {METRICS_TOKEN}"}, timeout=10).text
        found = re.search(rf'^{name}{{pid="(\d+)"}} (\d+)$', text, re.MULTILINE)
        assert found, text[-2000:]
        return int(found.group(1)), int(found.group(2))


METRICS_TOKEN = f"web-tier-metrics-{uuid.uuid4().hex}"  # /metrics needs a token (tests/security)


def start_server(tmp_path: Path, **env: str) -> Server:
    main, ragflow = free_port(), free_port()
    log = tmp_path / f"web-{main}.log"
    environment = worker_env(connection.settings_dict["NAME"], RAGFLOW_PORT=str(ragflow),
                             SANDBOX_TENANT_RATE="100000/min", SECRET_KEY="web-tier-" + "k" * 40,
                             SANDBOXCTL_METRICS_TOKEN=METRICS_TOKEN, **env)
    process = subprocess.Popen(
        [sys.executable, "-m", "gunicorn", "sandboxctl.asgi", "-k", "sandboxctl.api.server.Worker", "--workers", "1",
         "--bind", f"127.0.0.1:{main}", "--bind", f"127.0.0.1:{ragflow}", "--no-control-socket"],
        cwd=ROOT, env=environment, stdout=open(log, "w"), stderr=subprocess.STDOUT,
    )
    server = Server(main, ragflow, process, log)
    deadline = time.monotonic() + 60
    while True:
        try:
            if requests.get(server.url("/healthz"), timeout=2).status_code == 200:
                return server
        except requests.RequestException:
            pass
        assert process.poll() is None and time.monotonic() < deadline, f"the server did not start:\n{log.read_text()}"
        time.sleep(0.3)


def stop_server(server: Server) -> None:
    server.process.terminate()
    try:
        server.process.wait(30)
    except subprocess.TimeoutExpired:
        server.process.kill()
        server.process.wait()


@pytest.fixture(scope="module")
def web(sandbox_worker, django_db_setup, tmp_path_factory):
    server = start_server(
        tmp_path_factory.mktemp("web"), SANDBOX_WEB_HEADER_TIMEOUT=str(HEADER_TIMEOUT),
        SANDBOX_WEB_BODY_TIMEOUT=str(HEADER_TIMEOUT), SANDBOX_WEB_MAX_CONNECTIONS_PER_ADDRESS=str(PER_ADDRESS),
        SANDBOX_WEB_MAX_CONNECTIONS=str(TOTAL), SANDBOX_RAGFLOW_TRUSTED_NETWORKS="127.0.0.2/32",
    )
    yield server
    stop_server(server)


def account(django_user_model, name: str) -> dict:
    user = django_user_model.objects.create_user(name)
    return {"Authorization": f"Bearer {ApiToken.issue(user, name='web')[1]}"}


def open_from(source: str, port: int) -> socket.socket:
    conn = socket.create_connection(("127.0.0.1", port), timeout=10, source_address=(source, 0))
    return conn


def raw_request(headers: dict, body: bytes, path: str = "/api/v1/executions") -> bytes:
    lines = [f"POST {path} HTTP/1.1", "Host: 127.0.0.1", "Content-Type: application/json",
             f"Content-Length: {len(body)}", "Connection: close",
             *(f"{name}: {value}" for name, value in headers.items())]
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


def read_all(conn: socket.socket, timeout: float) -> bytes:
    """Everything the server sends until it closes, within `timeout` (b"" past it with nothing read)."""
    conn.settimeout(timeout)
    chunks = []
    try:
        while chunk := conn.recv(65536):
            chunks.append(chunk)
    except (TimeoutError, ConnectionResetError):
        pass
    return b"".join(chunks)


def trickle(connections: list[socket.socket], until: float) -> None:
    """A slow-header client: one more header line every second, never the blank line that ends them."""
    number = 0
    while time.monotonic() < until:
        number += 1
        for conn in connections:
            try:
                conn.sendall(f"X-Slow-{number}: 1\r\n".encode())
            except OSError:
                pass
        time.sleep(1)


def timed(call) -> tuple[float, object]:
    started = time.monotonic()
    result = call()
    return time.monotonic() - started, result


def process_threads(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("Threads:"):
            return int(line.split()[1])
    raise AssertionError("no thread count")


def test_a_wait_flood_and_slow_clients_leave_health_and_other_accounts_fast(web, transactional_db, django_user_model):
    flooder, bystander = account(django_user_model, "flooder"), account(django_user_model, "bystander")
    key = f"flood-{uuid.uuid4().hex}"
    sleeper = {"language": "python", "code": "import time\ndef main():\n    time.sleep(20)\n    return 'slept'",
               "timeout": 40, "wait": False}
    first = requests.post(web.url("/api/v1/executions"), json=sleeper, headers={**flooder, "Idempotency-Key": key},
                          timeout=30)
    assert first.status_code == 202, first.text
    # 200 `wait=true` replays of that run: one run, 200 requests that each wait for its end.
    replay = raw_request({**flooder, "Idempotency-Key": key}, json.dumps({**sleeper, "wait": True}).encode())
    flood = [open_from("127.0.0.3", web.main) for _ in range(FLOOD)]
    for conn in flood:
        conn.sendall(replay)
    slow_started = time.monotonic()
    slow = [open_from("127.0.0.4", web.ragflow if number % 2 else web.main) for number in range(SLOW)]
    for conn in slow:
        conn.sendall(b"POST /run HTTP/1.1\r\nHost: 127.0.0.1\r\n")
    threading.Thread(target=trickle, args=(slow, slow_started + 30), daemon=True).start()
    try:
        deadline = time.monotonic() + 60
        while (waiting := web.metric("sandboxctl_web_waiting_requests"))[1] < FLOOD:
            assert time.monotonic() < deadline, f"only {waiting[1]} of {FLOOD} requests are waiting"
            time.sleep(0.5)
        pid = waiting[0]

        for port_is_ragflow in (False, True, False):
            took, health = timed(lambda r=port_is_ragflow: requests.get(web.url("/healthz", r), timeout=10))
            assert health.status_code == 200 and took < 1.0, f"/healthz took {took:.2f}s under the flood"
        trivial = {"language": "python", "code": "def main():\n    return 'quick'", "wait": True}
        took, run = timed(lambda: requests.post(web.url("/api/v1/executions"), json=trivial, headers=bystander,
                                                timeout=30))
        assert run.status_code == 200 and run.json()["result"]["value"] == "quick", run.text
        assert took < 3.0, f"another account's trivial run took {took:.2f}s under the flood"
        threads = process_threads(pid)
        assert threads < 40, f"{FLOOD} waiting requests should cost coroutines, not threads: {threads} threads"

        # Slow clients are dropped once the header timeout passes, though they keep sending header lines.
        for conn in slow:
            answer = read_all(conn, max(0.1, slow_started + HEADER_TIMEOUT + 5 - time.monotonic()))
            assert answer.startswith(b"HTTP/1.1 408"), answer[:200]
        assert time.monotonic() - slow_started < HEADER_TIMEOUT + 5

        # Every waiting request gets the run's result once it ends.
        for conn in flood:
            answer = read_all(conn, 60)
            assert answer.startswith(b"HTTP/1.1 200") and b'"value":"slept"' in answer, answer[:300]
    finally:
        for conn in flood + slow:
            conn.close()


def test_connections_past_the_per_address_cap_are_refused_on_both_ports(web):
    held = [open_from("127.0.0.5", web.main if number % 2 else web.ragflow) for number in range(PER_ADDRESS)]
    try:
        for port in (web.main, web.ragflow):
            refused = read_all(open_from("127.0.0.5", port), 5)
            assert refused.startswith(b"HTTP/1.1 503"), refused[:200]
            assert b"SANDBOX_WEB_MAX_CONNECTIONS_PER_ADDRESS" in refused
        other = socket.create_connection(("127.0.0.1", web.main), timeout=10, source_address=("127.0.0.6", 0))
        other.sendall(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
        assert read_all(other, 5).startswith(b"HTTP/1.1 200")
    finally:
        for conn in held:
            conn.close()


def test_connections_past_the_total_cap_are_refused(web):
    sources = ["127.0.0.7"] * PER_ADDRESS + ["127.0.0.8"] * PER_ADDRESS + ["127.0.0.9"] * (TOTAL - 2 * PER_ADDRESS)
    time.sleep(1)  # the previous test's connections are closed by the server
    held = [open_from(source, web.main) for source in sources]
    try:
        # A port accepts its connections in order: this one comes after all the others.
        refused = read_all(open_from("127.0.0.10", web.main), 5)
        assert refused.startswith(b"HTTP/1.1 503") and b"SANDBOX_WEB_MAX_CONNECTIONS)" in refused, refused[:200]
    finally:
        for conn in held:
            conn.close()


def test_a_body_that_stops_arriving_is_dropped(web):
    conn = open_from("127.0.0.11", web.main)
    started = time.monotonic()
    conn.sendall(b"POST /api/v1/executions HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 100\r\n\r\n{\"lang")
    answer = read_all(conn, HEADER_TIMEOUT + 5)
    assert answer.startswith(b"HTTP/1.1 408") and b"SANDBOX_WEB_BODY_TIMEOUT" in answer, answer[:200]
    assert time.monotonic() - started < HEADER_TIMEOUT + 5


def test_oversized_headers_and_bodies_are_refused_before_django_reads_them(web):
    conn = open_from("127.0.0.12", web.main)
    conn.sendall(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n" + b"X-Big: " + b"a" * 70_000 + b"\r\n\r\n")
    assert read_all(conn, 10).startswith(b"HTTP/1.1 431")
    # A chunked body has no length to check up front: it is counted as it arrives.
    conn = open_from("127.0.0.12", web.main)
    conn.sendall(b"POST /api/v1/executions HTTP/1.1\r\nHost: 127.0.0.1\r\nTransfer-Encoding: chunked\r\n\r\n")
    chunk = b"a" * 1024 * 1024
    try:
        for _ in range(6):
            conn.sendall(b"%x\r\n" % len(chunk) + chunk + b"\r\n")
    except OSError:
        pass  # the server closed it before all was sent
    answer = read_all(conn, 10)
    assert answer.startswith(b"HTTP/1.1 413") and b"SANDBOX_REQUEST_MAX_BYTES" in answer, answer[:200]


@pytest.mark.parametrize("request_line", [b"GET /healthz\r\n\r\n", b"GET /healthz HTTP/0.9\r\n\r\n"])
def test_an_http_0_9_request_line_is_refused(web, request_line):
    conn = open_from("127.0.0.13", web.main)
    conn.sendall(request_line)
    answer = read_all(conn, 10)
    assert answer.startswith(b"HTTP/1.1 400") and b"http_version" in answer, answer[:200]


def test_a_forwarded_for_header_does_not_change_who_the_caller_is(web, transactional_db):
    """RAGFlow's port trusts networks by the TCP peer; a header naming a trusted address must not pass."""
    run = json.dumps({"language": "python", "code_b64": b64("def main():\n    return 7")}).encode()
    spoofed = open_from("127.0.0.1", web.ragflow)
    spoofed.sendall(raw_request({"X-Forwarded-For": "127.0.0.2", "X-Real-IP": "127.0.0.2"}, run, path="/run"))
    answer = read_all(spoofed, 30)
    assert answer.startswith(b"HTTP/1.1 401") and b"SANDBOX_RAGFLOW_TRUSTED_NETWORKS" in answer, answer[:300]
    trusted = open_from("127.0.0.2", web.ragflow)
    trusted.sendall(raw_request({}, run, path="/run"))
    answer = read_all(trusted, 60)
    assert answer.startswith(b"HTTP/1.1 200") and b'"value":7' in answer, answer[:300]


@pytest.fixture
def patient_web(sandbox_worker, django_db_setup, tmp_path):
    """A server whose API waits at most 3 s (SANDBOX_WAIT_CAP) and whose /run waits at most 15 s."""
    server = start_server(tmp_path, SANDBOX_WAIT_CAP="3", SANDBOX_RAGFLOW_WAIT="15", SANDBOX_TIMEOUT_DEFAULT="40",
                          SANDBOX_TIMEOUT_MAX="40")
    yield server
    stop_server(server)


def b64(code: str) -> str:
    import base64

    return base64.b64encode(code.encode()).decode()


def test_run_waits_for_the_end_as_ragflow_does_bounded_by_its_setting(patient_web, transactional_db):
    sleeping = "import time\ndef main():\n    time.sleep({})\n    return 'done'"
    took, answer = timed(lambda: requests.post(patient_web.url("/run", ragflow=True), timeout=60, json={
        "language": "python", "code_b64": b64(sleeping.format(6))}))
    body = answer.json()
    assert body["status"] == "success" and body["result"]["value"] == "done", body
    assert took > 5, "the run slept 6 s"  # past SANDBOX_WAIT_CAP, which bounds only the API's `wait=true`

    took, answer = timed(lambda: requests.post(patient_web.url("/run", ragflow=True), timeout=60, json={
        "language": "python", "code_b64": b64(sleeping.format(30))}))
    body = answer.json()
    assert body["status"] == "program_runner_error" and "did not finish in time" in body["stderr"], body
    assert 14 < took < 25, f"/run gave up after {took:.1f}s; SANDBOX_RAGFLOW_WAIT is 15"


def test_the_api_wait_stays_bounded_by_its_cap(patient_web, transactional_db, django_user_model):
    headers = account(django_user_model, "capped")
    code = "import time\ndef main():\n    time.sleep(8)"
    took, answer = timed(lambda: requests.post(patient_web.url("/api/v1/executions"), headers=headers, timeout=60,
                                               json={"language": "python", "code": code, "wait": True}))
    assert answer.status_code == 202 and answer.headers["Location"].endswith(answer.json()["id"])
    assert 2.5 < took < 6, took


def test_the_ragflow_account_has_its_own_concurrency(transactional_db, django_user_model, settings):
    from providers.base import Status
    from sandboxctl.executions import admission
    from sandboxctl.executions.accounts import service_account
    from sandboxctl.executions.models import Execution

    settings.SANDBOX_TENANT_MAX_CONCURRENT, settings.SANDBOX_RAGFLOW_MAX_CONCURRENT = 1, 3
    ragflow, other = service_account("ragflow"), django_user_model.objects.create_user("tenant")
    for caller in (ragflow, other):
        for _ in range(4):
            Execution.objects.create(provider="self_managed", language="python", code="x", caller=caller,
                                     limits={"timeout": 1}, queue="sandbox.python")
    try:
        admitted = Counter(run.caller_id for run in admission.admit())
        assert admitted == {ragflow.pk: 3, other.pk: 1}, "ragflow's own cap, the other account's cap of 1"
    finally:
        Execution.objects.update(status=Status.CANCELLED)

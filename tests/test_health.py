"""/healthz says the process is alive; /readyz also needs the database, the broker and warm sandboxes."""

import re
import time

from conftest import WORKER_NAME, latest_beat
from providers.models import WorkerHeartbeat


def wait_for_heartbeat(timeout: float = 10) -> None:
    deadline = time.monotonic() + timeout
    while not WorkerHeartbeat.objects.exists() and time.monotonic() < deadline:
        time.sleep(0.2)


def test_healthz(anonymous):
    response = anonymous.get("/healthz")
    assert response.status_code == 200
    assert response.json() == {"status": "ok"}


METRICS = {"Authorization": "Bearer metrics-secret"}


def test_readyz_reports_warm_sandboxes_per_language(anonymous, sandbox_worker, transactional_db, settings):
    # The detail (workers, runtimes, counts) is for the metrics token or staff; anyone sees only the status.
    settings.SANDBOXCTL_METRICS_TOKEN = "metrics-secret"
    wait_for_heartbeat()
    response = anonymous.get("/readyz", headers=METRICS)
    body = response.json()
    assert response.status_code == 200, body
    assert body["database"] == "ok" and body["broker"] == "ok"
    assert body["warm_sandboxes"]["python"] > 0 and body["warm_sandboxes"]["nodejs"] > 0
    runtime = body["runtimes"][latest_beat(WORKER_NAME).worker]
    assert runtime["runtime"] == "runsc"
    assert runtime["version"].startswith("0.0~2024") and runtime["platform"] in ("systrap", "ptrace")


def test_readyz_is_503_with_the_reason_when_no_worker_is_live(anonymous, sandbox_worker, transactional_db, settings):
    wait_for_heartbeat()
    settings.SANDBOX_WORKER_STALE_AFTER = -60  # every heartbeat counts as stale
    settings.SANDBOXCTL_METRICS_TOKEN = "metrics-secret"
    assert anonymous.get("/readyz").json()["status"] == "unavailable"
    response = anonymous.get("/readyz", headers=METRICS)
    assert response.status_code == 503
    assert "no live worker serves python" in response.json()["problems"]


def test_readyz_is_503_when_the_broker_is_unreachable(anonymous, transactional_db, settings):
    settings.CELERY_BROKER_URL = "redis://127.0.0.1:1/0"
    settings.SANDBOXCTL_METRICS_TOKEN = "metrics-secret"
    response = anonymous.get("/readyz", headers=METRICS)
    assert response.status_code == 503
    assert any(problem.startswith("broker") for problem in response.json()["problems"])


def test_metrics_report_warm_sandboxes_and_executions(api, anonymous, settings):
    settings.SANDBOXCTL_METRICS_TOKEN = "metrics-secret"
    wait_for_heartbeat()
    api.run("def main():\n    return 1")
    text = anonymous.get("/metrics", headers=METRICS).text
    worker = r'worker="pytest-worker@localhost#[0-9a-f]{8}"'
    assert re.search(r"sandboxctl_warm_sandboxes\{" + worker + r',language="python"\}', text)
    assert 'sandboxctl_executions{status="succeeded",provider="self_managed"} 1' in text
    assert re.search(r"sandboxctl_runtime_info\{" + worker + r',runtime="runsc",version="0\.0~2024', text)


def test_metrics_need_the_metrics_token_when_it_is_set(anonymous, transactional_db, settings):
    settings.SANDBOXCTL_METRICS_TOKEN = "metrics-secret"
    assert anonymous.get("/metrics").status_code == 401
    assert anonymous.get("/metrics", headers={"Authorization": "Bearer wrong"}).status_code == 401
    response = anonymous.get("/metrics", headers={"Authorization": "Bearer metrics-secret"})
    assert response.status_code == 200 and "sandboxctl_executions" in response.text

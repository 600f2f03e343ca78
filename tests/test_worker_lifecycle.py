"""A real Celery worker process: an instance per start, orphans of dead instances reaped, survives being
killed mid-run (the run is requeued once), and removes its sandboxes at a clean shutdown."""

import os
import signal
import time
import uuid

import pytest
from django.core.management import call_command
from django.db import connection
from kombu import Connection

from conftest import latest_beat, start_worker, stop_worker, worker_env
from executor.config import SandboxConfig
from executor.runsc_sandbox import RunscBackend, owner_key
from sandboxctl.executions.models import Execution
from sandboxctl.worker.tasks import run_execution

NAME = "lifecycle@localhost"
SITE = "lifecycletestsite"
FIRST_DELIVERY = f"lifecycle-{uuid.uuid4().hex[:8]}"  # the redelivery goes to the run's own queue, sandbox.python


@pytest.fixture
def broker_url():
    # Its own Redis database, so tasks sent here reach only the worker under test.
    return os.environ["CELERY_BROKER_URL"].rsplit("/", 1)[0] + "/14"


def containers(owner: str | None = None) -> set[str]:
    found = RunscBackend(SandboxConfig(), SITE, "observer").find()
    return {item.id for item in found if owner is None or item.owner == owner_key(owner)}


def stray(site: str, owner: str):
    """A waiting sandbox of another worker instance, started here on its own."""
    backend = RunscBackend(SandboxConfig(python_preload=""), site, owner)
    sandbox = backend.make("python")
    sandbox.start()
    return backend, sandbox.id


def wait_until(predicate, timeout: float = 60, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, f"{what} not reached in time"
        time.sleep(0.2)


def warm(process) -> bool:
    assert process.poll() is None, "worker exited"
    beat = latest_beat(NAME)
    return bool(beat and beat.pool_depth.get("python"))


@pytest.fixture
def workers():
    started = []
    yield started
    for process in started:
        if process.poll() is None:
            stop_worker(process)


def test_worker_lifecycle(api, user, broker_url, tmp_path, settings, workers):
    import redis

    redis.Redis.from_url(broker_url).flushdb()
    env = worker_env(connection.settings_dict["NAME"], CELERY_BROKER_URL=broker_url, SANDBOX_POOL_SIZE_PYTHON="1",
                     SANDBOX_SITE=SITE, SANDBOX_WORKER_STALE_AFTER="3")
    _, orphan = stray(SITE, f"{NAME}#deadbeef")
    elsewhere, bystander = stray("anotherdeployment", f"{NAME}#deadbeef")
    try:
        # Its own queue too, for the run below: the suite's worker also takes sandbox.python from this broker,
        # and the first delivery must reach the worker this test kills.
        worker = start_worker(NAME, env, tmp_path / "first.log", f"sandbox.python,{FIRST_DELIVERY}")
        workers.append(worker)
        wait_until(lambda: warm(worker), what="warm pool")
        first_instance = latest_beat(NAME).worker
        assert orphan not in containers(), "sandboxes of a dead instance are reaped at start"
        assert bystander in {item.id for item in elsewhere.find()}, "another deployment's are never touched"
    finally:
        elsewhere.remove(bystander)

    execution = Execution.objects.create(
        provider="self_managed", language="python",
        # Long enough that the kill below lands while it runs, even when this test's polling is slow on a busy host.
        code="import time\ndef main():\n    time.sleep(8)\n    return 'done'", queue="sandbox.python",
        code_sha256="0" * 64, limits={"timeout": 20, "memory_mb": 128, "output_limit": 1024}, caller=user,
    )
    with Connection(broker_url) as conn:
        run_execution.apply_async(args=[str(execution.pk)], queue=FIRST_DELIVERY, connection=conn)
    wait_until(lambda: Execution.objects.get(pk=execution.pk).status == "running", what="run start")
    worker.send_signal(signal.SIGKILL)
    worker.wait()
    left_behind = containers(first_instance)
    assert left_behind, "a killed worker cannot clean up"

    settings.SANDBOX_WORKER_STALE_AFTER = 1
    time.sleep(3.5)
    call_command("reconcile_executions")
    wait_until(lambda: Execution.objects.get(pk=execution.pk).is_terminal, what="redelivered run")
    execution.refresh_from_db()
    assert (execution.status, execution.result, execution.attempts) == ("succeeded", "done", 2)

    # Restarted under the same node name, it is a new instance: the old one's sandboxes are orphans.
    worker = start_worker(NAME, env, tmp_path / "second.log", "sandbox.python")
    workers.append(worker)
    wait_until(lambda: warm(worker) and latest_beat(NAME).worker != first_instance, what="warm pool after restart")
    assert not left_behind & containers(), "the restarted worker reaped what the killed instance left"
    assert stop_worker(worker) == 0
    assert containers() == set(), "a clean shutdown removes every sandbox"

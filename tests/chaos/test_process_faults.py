"""Chaos: processes of the stack killed or restarted under load — the worker, the sandbox, many queued runs."""

import os
import signal
import threading
import time

import requests

SLEEPY = "import time\ndef main():\n    time.sleep(2)\n    return 'done'"


def wait_running(stack, ids: list[str], timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while not any(stack.execution(execution_id)["status"] == "running" for execution_id in ids):
        assert time.monotonic() < deadline, "no run started"
        time.sleep(0.1)


def wait_only_live_instance_containers(stack, timeout: float = 30) -> None:
    """Orphans of a dead instance are swept once its heartbeat is stale."""
    deadline = time.monotonic() + timeout
    while True:
        owners = {found.owner for found in stack.containers()}
        if len(owners) <= 1:
            return
        assert time.monotonic() < deadline, f"sandboxes of more than one instance remain: {owners}"
        time.sleep(0.5)


def test_worker_killed_mid_run(stack):
    waiting: dict = {}

    def caller() -> None:
        try:
            response = stack.session.post(f"{stack.url}/api/v1/executions", timeout=150, json={
                "language": "python", "code": SLEEPY, "callback_url": stack.receiver.url})
            waiting["answer"] = (response.status_code, response.json())
        except requests.RequestException as exc:
            waiting["answer"] = ("dropped", str(exc))

    ids = [stack.submit(SLEEPY)["id"] for _ in range(4)]
    waiter = threading.Thread(target=caller)
    waiter.start()
    wait_running(stack, ids)
    os.kill(stack.pid_of("worker"), signal.SIGKILL)
    waiter.join(160)
    status_code, body = waiting["answer"]
    assert status_code in (200, 202), "a caller waiting with wait=true always gets an answer"
    ids.append(body["id"])
    done = stack.assert_every_run_ended_once(ids, timeout=150)
    assert {body["status"] for body in done.values()} <= {"succeeded", "sandbox_error"}
    assert "succeeded" in {body["status"] for body in done.values()}, "requeued runs complete on the new instance"
    assert stack.wait_ready(30) <= 30
    wait_only_live_instance_containers(stack)
    stack.assert_leaves_nothing_behind()


def test_sandbox_killed_from_outside_mid_run(stack):
    [execution_id] = [stack.submit("import time\ndef main():\n    time.sleep(6)")["id"]]
    wait_running(stack, [execution_id])
    time.sleep(0.5)
    sandboxes = stack.sandboxes()
    for found in stack.containers():
        sandboxes.cli("kill", found.id, "KILL")
    done = stack.assert_every_run_ended_once([execution_id])
    assert done[execution_id]["status"] == "sandbox_error"
    assert done[execution_id]["error"]["message"].startswith("sandbox exited unexpectedly")
    assert stack.wait_ready(30) <= 30
    assert stack.submit("def main():\n    return 'after'", wait=True)["result"]["value"] == "after"
    stack.assert_leaves_nothing_behind()


BACKLOG = 200  # far more than the worker's threads and its pool: most are queued when the worker restarts


def test_a_backlog_of_queued_runs_survives_a_worker_restart(stack):
    ids = [stack.submit("def main(i):\n    return i", arguments={"i": index})["id"] for index in range(BACKLOG)]
    deadline = time.monotonic() + 60
    while sum(stack.execution(execution_id)["status"] != "queued" for execution_id in ids[:20]) < 5:
        assert time.monotonic() < deadline
        time.sleep(0.5)
    stack.supervisorctl("restart", "worker")
    done = stack.assert_every_run_ended_once(ids, timeout=900)
    assert all(body["status"] == "succeeded" for body in done.values()), \
        {body["status"] for body in done.values()}
    assert [done[execution_id]["result"]["value"] for execution_id in ids] == list(range(BACKLOG))
    assert stack.wait_ready(30) <= 30
    stack.assert_leaves_nothing_behind()

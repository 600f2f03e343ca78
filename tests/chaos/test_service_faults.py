"""Chaos: the services the stack depends on fail under it — dockerd, the broker, PostgreSQL — and a corrupt
message lands on the broker."""

import json
import os
import signal
import subprocess
import time
from pathlib import Path

import pytest

SLEEPY = "import time\ndef main():\n    time.sleep(2)\n    return 'done'"


def wait_for(predicate, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, f"{what} not reached in {timeout}s"
        time.sleep(0.3)


def docker_answers() -> bool:
    return subprocess.run(["docker", "info"], capture_output=True).returncode == 0


def restart_dockerd() -> None:
    pid = int(subprocess.check_output(["pidof", "dockerd"]).split()[0])
    os.kill(pid, signal.SIGTERM)
    wait_for(lambda: not Path(f"/proc/{pid}").exists(), 60, "dockerd exit")
    log = open("/var/log/sandboxctl-dockerd.log", "ab")
    subprocess.Popen(["dockerd"], stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    wait_for(docker_answers, 60, "dockerd start")


def redis_cli(stack, *args: str) -> str:
    return subprocess.run(["redis-cli", "-s", f"{stack.data}/broker/redis.sock", *args],
                          capture_output=True, text=True, check=True).stdout.strip()


def test_dockerd_restarted_mid_run(stack):
    ids = [stack.submit(SLEEPY)["id"] for _ in range(3)]
    time.sleep(1)
    restart_dockerd()
    done = stack.assert_every_run_ended_once(ids)
    assert {body["status"] for body in done.values()} == {"succeeded"}, "sandboxes do not go through dockerd"
    assert stack.wait_ready(30) <= 30
    assert stack.submit("def main():\n    return 'after'", wait=True)["result"]["value"] == "after"
    stack.assert_leaves_nothing_behind()


@pytest.mark.parametrize("how", ["restart", "kill"])
def test_broker_restarted_with_runs_queued(stack, how):
    ids = [stack.submit(SLEEPY)["id"] for _ in range(8)]
    if how == "restart":
        stack.supervisorctl("restart", "broker")
    else:
        os.kill(stack.pid_of("broker"), signal.SIGKILL)  # supervisord starts it again from its append-only file
    ids += [stack.submit(SLEEPY)["id"] for _ in range(2)]
    done = stack.assert_every_run_ended_once(ids, timeout=180)
    assert {body["status"] for body in done.values()} <= {"succeeded", "sandbox_error"}
    assert stack.wait_ready(30) <= 30
    stack.assert_leaves_nothing_behind()


def test_postgres_restarted_mid_run(production_stack):
    stack = production_stack  # its own PostgreSQL server: a restart here touches nothing else on the machine
    ids = [stack.submit(SLEEPY)["id"] for _ in range(4)]
    time.sleep(1)
    stack.postgres.stop()
    stack.postgres.start()
    done = stack.assert_every_run_ended_once(ids)
    assert {body["status"] for body in done.values()} == {"succeeded"}, "finishing waits out the restart"
    assert stack.wait_ready(30) <= 30
    stack.assert_leaves_nothing_behind()


def test_corrupt_messages_are_dead_lettered_and_the_worker_lives(stack):
    stack.supervisorctl("stop", "worker")
    execution_id = stack.submit("def main():\n    return 1")["id"]
    [raw] = redis_cli(stack, "LRANGE", "sandbox.python", "0", "-1").splitlines()
    envelope = json.loads(raw)
    envelope["body"] = "%%% not base64 %%%"  # its headers still name the run
    redis_cli(stack, "LSET", "sandbox.python", "0", json.dumps(envelope))
    redis_cli(stack, "LPUSH", "sandbox.python", "\xffnot json at all")
    redis_cli(stack, "LPUSH", "sandbox.python", "[1, 2, 3]")
    stack.supervisorctl("start", "worker")
    worker = stack.pid_of("worker")
    done = stack.assert_every_run_ended_once([execution_id])
    assert (done[execution_id]["status"], done[execution_id]["error"]["code"]) == ("sandbox_error", "bad_message")
    wait_for(lambda: int(redis_cli(stack, "LLEN", "sandboxctl.dead_letter")) >= 3, 30, "three dead letters")
    assert stack.submit("def main():\n    return 'alive'", wait=True)["result"]["value"] == "alive"
    assert stack.pid_of("worker") == worker, "the worker never died"
    assert "Unrecoverable error" not in stack.log()
    stack.assert_leaves_nothing_behind()

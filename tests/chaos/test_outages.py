"""Chaos on the production configuration (PostgreSQL and an external Redis, both owned by the test): nothing
accepted is ever lost. A broker killed with runs in flight and runs submitted while it is away: every run
succeeds and the worker rides through without a restart. PostgreSQL stopped for a minute across a run's end:
the worker spools the result and writes it when the database returns."""

import time

import requests

SLEEPY = "import time\ndef main():\n    time.sleep(2)\n    return 'done'"
ENDS_DURING_OUTAGE = "import time\ndef main():\n    time.sleep(4)\n    return 5"


def wait_for_status(stack, execution_id: str, wanted: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while stack.execution(execution_id)["status"] != wanted:
        assert time.monotonic() < deadline, f"{execution_id} never {wanted}"
        time.sleep(0.2)


def spooled(stack) -> list:
    return sorted((stack.data / "spool").rglob("*.json"))


def test_redis_killed_under_the_worker_loses_no_accepted_run(production_stack):
    stack = production_stack
    worker = stack.pid_of("worker")
    in_flight = [stack.submit(SLEEPY)["id"] for _ in range(3)]
    wait_for_status(stack, in_flight[0], "running")
    stack.broker.kill()

    during = [stack.submit(SLEEPY) for _ in range(3)]
    assert {body["status"] for body in during} == {"queued"}, "accepted while the broker is away, and kept queued"
    time.sleep(5)
    stack.broker.start()

    ids = in_flight + [body["id"] for body in during]
    done = stack.assert_every_run_ended_once(ids, timeout=180)
    assert {body["status"] for body in done.values()} == {"succeeded"}, {k: v["error"] for k, v in done.items()}
    assert stack.pid_of("worker") == worker, "the worker rode through the outage without a restart"
    assert "Unrecoverable error" not in stack.log()
    assert stack.submit("def main():\n    return 'after'", wait=True)["result"]["value"] == "after"
    stack.assert_leaves_nothing_behind()


def test_a_result_outlives_a_minute_without_postgres(production_stack):
    stack = production_stack
    worker = stack.pid_of("worker")
    execution_id = stack.submit(ENDS_DURING_OUTAGE)["id"]
    wait_for_status(stack, execution_id, "running")
    stack.postgres.stop()
    stopped_at = time.monotonic()

    refused = requests.post(f"{stack.url}/api/v1/executions", headers=stack.session.headers, timeout=60,
                            json={"language": "python", "code": "def main():\n    return 1"})
    assert refused.status_code == 503 and refused.headers.get("Retry-After"), refused.text
    deadline = time.monotonic() + 30
    while not spooled(stack):
        assert time.monotonic() < deadline, f"the finished run was not spooled:\n{stack.log()[-3000:]}"
        time.sleep(0.5)
    time.sleep(max(0.0, 60 - (time.monotonic() - stopped_at)))  # a minute without the database in all
    stack.postgres.start()

    done = stack.assert_every_run_ended_once([execution_id], timeout=120)
    body = done[execution_id]
    assert (body["status"], body["result"]) == ("succeeded", {"present": True, "value": 5}), body
    assert spooled(stack) == [], "the spool is empty once its ends are written"
    assert stack.pid_of("worker") == worker, "the worker was not restarted"
    stack.wait_ready(60)
    assert stack.submit("def main():\n    return 'after'", wait=True)["result"]["value"] == "after"
    stack.assert_leaves_nothing_behind()

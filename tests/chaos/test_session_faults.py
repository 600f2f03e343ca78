"""Chaos: the worker holding a session is killed. The session ends `lost` with a clear reason, its running cell
ends, nothing of it is left behind (its sandbox is swept), and a new session works on the new instance."""

import os
import signal
import time

import psycopg


def session_row(stack, session_id: str) -> dict:
    with psycopg.connect(f"{stack.database_base}/{stack.database}") as conn:
        status, reason, sandbox_id, worker = conn.execute(
            "SELECT status, end_reason, sandbox_id, worker FROM executions_session WHERE id::text = %s",
            [session_id]).fetchone()
    return {"status": status, "end_reason": reason, "sandbox_id": sandbox_id, "worker": worker}


def open_session(stack) -> dict:
    response = stack.session.post(f"{stack.url}/api/v1/sessions", json={"language": "python"}, timeout=120)
    assert response.status_code == 201, response.text
    return response.json()


def run_cell(stack, session_id: str, code: str, **fields):
    return stack.session.post(f"{stack.url}/api/v1/sessions/{session_id}/executions",
                              json={"code": code, **fields}, timeout=120)


def wait_for(condition, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, what
        time.sleep(0.5)


def test_worker_killed_under_a_session(stack):
    session = open_session(stack)
    assert run_cell(stack, session["id"], "state = 'kept'").json()["status"] == "succeeded"
    before = session_row(stack, session["id"])
    running = run_cell(stack, session["id"], "import time\ntime.sleep(30)", wait=False).json()
    wait_for(lambda: stack.execution(running["id"])["status"] == "running", 30, "the cell never started")

    os.kill(stack.pid_of("worker"), signal.SIGKILL)

    wait_for(lambda: session_row(stack, session["id"])["status"] == "lost", 90, "the session was never ended lost")
    lost = session_row(stack, session["id"])
    assert before["worker"] in lost["end_reason"] and "lost" in lost["end_reason"], lost
    ended_cell = stack.wait_terminal([running["id"]], timeout=60)[running["id"]]
    assert ended_cell["status"] == "sandbox_error"
    assert ended_cell["error"]["code"] == "session_lost", ended_cell["error"]
    refused = run_cell(stack, session["id"], "print(state)")
    assert refused.status_code == 409 and refused.json()["code"] == "session_ended"
    body = stack.session.get(f"{stack.url}/api/v1/sessions/{session['id']}", timeout=30).json()
    assert body["status"] == "lost" and body["expires_at"] is None

    wait_for(lambda: before["sandbox_id"] not in {found.id for found in stack.containers()}, 60,
             "the lost session's sandbox was not swept")
    assert stack.wait_ready(60) <= 60
    fresh = open_session(stack)
    answer = run_cell(stack, fresh["id"], "def main():\n    return globals().get('state', 'fresh')").json()
    assert answer["result"]["value"] == "fresh"
    assert session_row(stack, fresh["id"])["worker"] != before["worker"]
    stack.assert_leaves_nothing_behind()

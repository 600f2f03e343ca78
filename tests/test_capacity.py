"""Issue 28: what occupies a worker is one resource that no account can take from the others, and nothing waits on a
stuck sandbox. Each test reproduces a finding against the real worker: a bystander's run must still succeed
(the time limits here are hang guards, not timings)."""

import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from conftest import Api
from sandboxctl.executions.models import ApiToken, Execution, Session
from tests.session_client import cell, close, open_session, sandbox_alive, wait_until

pytestmark = pytest.mark.django_db(transaction=True)

# Stops the session's file keeper: the keeper is the sandbox process (other than PID 1 and the interpreter
# itself) that runs the supervisor's program.
STOP_KEEPER = (
    "import os, signal\n"
    "def main():\n"
    "    for name in os.listdir('/proc'):\n"
    "        if name.isdigit() and int(name) not in (1, os.getpid()):\n"
    "            try:\n"
    "                if b'supervisor' in open(f'/proc/{name}/cmdline', 'rb').read():\n"
    "                    os.kill(int(name), signal.SIGSTOP)\n"
    "                    return int(name)\n"
    "            except OSError:\n"
    "                pass\n"
)
TRIVIAL = "def main():\n    return 'served'"


@pytest.fixture
def account(live_server, sandbox_worker, django_user_model):
    """Another account's API client: account('name')."""

    def make(name: str) -> Api:
        user = django_user_model.objects.create_user(name)
        return Api(live_server.url, ApiToken.issue(user, name="test")[1])

    return make


def served(api: Api) -> dict:
    body = api.run(TRIVIAL, timeout=10)
    assert (body["status"], body["result"]["value"]) == ("succeeded", "served"), body
    return body


def test_a_stopped_keeper_under_many_file_requests_leaves_another_accounts_run_alone(api, account):
    session = open_session(api)
    try:
        assert cell(api, session, STOP_KEEPER)["result"]["present"], "the keeper was found and stopped"
        with ThreadPoolExecutor(20) as requests_pool:
            gets = [requests_pool.submit(api.get, f"/api/v1/sessions/{session['id']}/files/none.txt", timeout=200)
                    for _ in range(20)]
            time.sleep(1.0)  # they are in flight (or already refused)
            bystander = served(account("bystander"))
            answers = [get.result().status_code for get in gets]
        assert bystander["queue_wait"] is not None
        # None of them held a worker thread: each was answered, refused for the stuck keeper or as one too many.
        assert set(answers) <= {409, 504}, answers
        assert answers.count(409) >= 16, "at most the few in flight waited for the keeper to be given up on"
        later = api.get(f"/api/v1/sessions/{session['id']}/files/none.txt")
        assert (later.status_code, later.json()["code"]) == (409, "file_service_gone"), "given up on at once"
        assert cell(api, session, "def main():\n    return 'cells go on'")["result"]["value"] == "cells go on"
    finally:
        close(api, session)


def test_delete_ends_a_session_whose_keeper_is_stopped_at_once(api):
    session = open_session(api)
    cell(api, session, STOP_KEEPER)
    waiting = threading.Thread(target=api.get, args=(f"/api/v1/sessions/{session['id']}/files/none.txt",),
                               kwargs={"timeout": 200}, daemon=True)
    waiting.start()
    time.sleep(0.5)  # a request waits on the stopped keeper
    sandbox_id = Session.objects.get(pk=session["id"]).sandbox_id
    assert api.request("DELETE", f"/api/v1/sessions/{session['id']}").status_code == 204
    assert wait_until(lambda: not sandbox_alive(sandbox_id), timeout=15), "the sandbox is removed at once"
    waiting.join(30)
    assert not waiting.is_alive(), "the waiting request failed with the session"


def test_max_lifetime_ends_a_session_whose_keeper_is_stopped(api):
    session = open_session(api, max_lifetime=6)
    cell(api, session, STOP_KEEPER)
    threading.Thread(target=api.get, args=(f"/api/v1/sessions/{session['id']}/files/none.txt",),
                     kwargs={"timeout": 200}, daemon=True).start()
    sandbox_id = Session.objects.get(pk=session["id"]).sandbox_id
    assert wait_until(lambda: Session.objects.get(pk=session["id"]).status == "ended", timeout=30)
    assert "max_lifetime" in Session.objects.get(pk=session["id"]).end_reason
    assert wait_until(lambda: not sandbox_alive(sandbox_id), timeout=15)


def test_sleeping_cells_of_three_accounts_leave_a_fourth_accounts_run_admitted(api, account):
    tenants = [api, account("tenant-b"), account("tenant-c")]
    sessions = []
    try:
        for tenant in tenants:
            for _ in range(4):  # SANDBOX_TENANT_MAX_SESSIONS
                sessions.append((tenant, open_session(tenant)))
        cells = [cell(tenant, session, "import time\ntime.sleep(40)", wait=False, expected=202)["id"]
                 for tenant, session in sessions]
        assert wait_until(lambda: Execution.objects.filter(pk__in=cells, status="running").count() == 12, 60)
        served(account("newcomer"))
        assert Execution.objects.filter(pk__in=cells, status="running").count() == 12, (
            "the newcomer's run was served while every sleeping cell still held its session")
    finally:
        for tenant, session in sessions:
            close(tenant, session)


def test_session_churn_does_not_take_sandboxes_from_another_accounts_runs(api, account):
    stop = threading.Event()
    churned = []

    def churn() -> None:
        while not stop.is_set():
            response = api.post("/api/v1/sessions", json={"language": "python"})
            if response.status_code == 201:
                churned.append(response.json()["id"])
                api.request("DELETE", f"/api/v1/sessions/{response.json()['id']}")

    churners = [threading.Thread(target=churn, daemon=True) for _ in range(4)]
    for thread in churners:
        thread.start()
    try:
        bystander = account("bystander")
        time.sleep(2)
        results = [bystander.run(TRIVIAL, timeout=10) for _ in range(10)]
    finally:
        stop.set()
        for thread in churners:
            thread.join(60)
    assert churned, "the churn ran"
    assert [body["status"] for body in results] == ["succeeded"] * 10, [
        (body["status"], body.get("error")) for body in results]

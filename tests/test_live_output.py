"""Live output: GET /api/v1/executions/{id}/events against the real ASGI server (gunicorn + uvicorn), the session's
sandbox worker and Redis. A run's first chunk reaches the client while the run still runs; events resume after
Last-Event-ID; a run already over ends its stream cleanly; a session's cell streams as a one-shot run does; the
live output stays within the output cap; the Python client's stream() reads it all.
"""

import os
import subprocess
import sys
import threading

import pytest
import requests
from test_web_tier import start_server, stop_server

from conftest import CHROMIUM, CHROMIUM_ARGS, ROOT
from sandboxctl.client import stream

PRINT_THEN_SLEEP = """
import time
def main():
    print("first chunk", flush=True)
    time.sleep(4)
    print("second chunk", flush=True)
    return 7
"""


@pytest.fixture(scope="module")
def web(sandbox_worker, django_db_setup, tmp_path_factory):
    server = start_server(tmp_path_factory.mktemp("live"))
    yield server
    stop_server(server)


@pytest.fixture
def headers(token) -> dict:
    return {"Authorization": f"Bearer {token}"}


def submit(web, headers, code: str, **fields) -> dict:
    answer = requests.post(web.url("/api/v1/executions"), headers=headers, timeout=60,
                           json={"language": "python", "code": code, "wait": False, **fields})
    assert answer.status_code == 202, answer.text
    return answer.json()


def status_of(web, headers, execution_id: str) -> str:
    return requests.get(web.url(f"/api/v1/executions/{execution_id}"), headers=headers, timeout=30).json()["status"]


def test_the_first_chunk_arrives_while_the_run_still_runs(web, headers, token):
    run = submit(web, headers, PRINT_THEN_SLEEP)
    seen = []
    for event, data in stream(run["id"], base_url=web.url(), token=token):
        if event == "stdout" and "first chunk" in data["text"] and not seen:
            seen.append(status_of(web, headers, run["id"]))  # the run's state when its first output arrived
        if event == "execution":
            final = data
    assert seen == ["running"]
    assert final["status"] == "succeeded" and final["result"]["value"] == 7
    assert final["stdout"] == "first chunk\nsecond chunk\n"


def test_events_resume_after_last_event_id(web, headers, token):
    run = submit(web, headers, PRINT_THEN_SLEEP.replace("time.sleep(4)", "time.sleep(0.5)"))
    first = [(event, data) for event, data in stream(run["id"], base_url=web.url(), token=token)]
    assert first[0] == ("status", {"status": first[0][1]["status"]})
    texts = "".join(data["text"] for event, data in first if event == "stdout")
    assert texts == "first chunk\nsecond chunk\n"
    # Resume after the first chunk's id: only what came after it, then the end.
    response = requests.get(web.url(f"/api/v1/executions/{run['id']}/events"), timeout=30, stream=True,
                            headers={**headers, "Last-Event-ID": first_chunk_id(web, headers, run["id"])})
    blocks = response.content.decode().split("\n\n")
    chunks = "".join(block for block in blocks if "event: stdout" in block)
    assert "first chunk" not in chunks and "second chunk" in chunks
    assert "event: execution" in blocks[-2] and "event: status" not in blocks[1]  # a resume repeats no status


def first_chunk_id(web, headers, execution_id: str) -> str:
    response = requests.get(web.url(f"/api/v1/executions/{execution_id}/events"), headers=headers, timeout=30)
    blocks = response.text.split("\n\n")
    [block] = [block for block in blocks if "event: stdout" in block and "first chunk" in block]
    return next(line[4:] for line in block.splitlines() if line.startswith("id: "))


def test_a_run_already_over_gets_its_status_and_final_execution(web, headers):
    answer = requests.post(web.url("/api/v1/executions"), headers=headers, timeout=120,
                           json={"language": "python", "code": "print('done')"})
    assert answer.status_code == 200
    response = requests.get(web.url(f"/api/v1/executions/{answer.json()['id']}/events"), headers=headers, timeout=30)
    assert response.status_code == 200 and response.headers["content-type"].startswith("text/event-stream")
    events = [line[7:] for line in response.text.splitlines() if line.startswith("event: ")]
    assert events[0] == "status" and events[-2:] == ["status", "execution"]


def test_a_session_cell_streams_its_output(web, headers, token):
    opened = requests.post(web.url("/api/v1/sessions"), headers=headers, json={"language": "python"}, timeout=120)
    assert opened.status_code == 201, opened.text
    session = opened.json()["id"]
    try:
        cell = requests.post(web.url(f"/api/v1/sessions/{session}/executions"), headers=headers, timeout=60,
                             json={"code": PRINT_THEN_SLEEP, "wait": False})
        assert cell.status_code == 202, cell.text
        seen = []
        for event, data in stream(cell.json()["id"], base_url=web.url(), token=token):
            if event == "stdout" and "first chunk" in data["text"] and not seen:
                seen.append(status_of(web, headers, cell.json()["id"]))
        assert seen == ["running"]
    finally:
        requests.delete(web.url(f"/api/v1/sessions/{session}"), headers=headers, timeout=60)


def test_live_output_stays_within_the_output_cap(web, headers, token):
    run = submit(web, headers, "import sys\nsys.stdout.write('x' * (3 * 1024 * 1024))\n")
    live = 0
    for event, data in stream(run["id"], base_url=web.url(), token=token):
        if event == "stdout":
            live += len(data["text"])
        if event == "execution":
            final = data
    assert final["status"] == "output_limit"
    assert live == len(final["stdout"]) == final["limits"]["output_limit"]


def test_a_client_that_goes_away_frees_the_stream(web, headers, token):
    """Many clients following one run, half of them leaving early, still leave the others their events."""
    run = submit(web, headers, PRINT_THEN_SLEEP.replace("time.sleep(4)", "time.sleep(2)"))
    finals = []

    def follow(leave_early: bool) -> None:
        for event, data in stream(run["id"], base_url=web.url(), token=token):
            if leave_early and event == "stdout":
                return
            if event == "execution":
                finals.append(data["status"])

    threads = [threading.Thread(target=follow, args=(index % 2 == 0,)) for index in range(10)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert finals == ["succeeded"] * 5


@pytest.fixture(scope="module")
def console(sandbox_worker, django_db_setup, tmp_path_factory):
    """The real ASGI server with its own data folder and static files collected (the console's pages)."""
    data = tmp_path_factory.mktemp("console-data")
    environment = {**os.environ, "SANDBOXCTL_DATA_DIR": str(data), "SECRET_KEY": "console-" + "k" * 40}
    subprocess.run([sys.executable, "manage.py", "collectstatic", "--noinput", "-v0"], cwd=ROOT, env=environment,
                   check=True, timeout=120)
    server = start_server(tmp_path_factory.mktemp("console"), SANDBOXCTL_DATA_DIR=str(data))
    yield server
    stop_server(server)


def test_the_console_shows_a_running_runs_output_live(console, headers, django_user_model, monkeypatch, tmp_path):
    from playwright.sync_api import sync_playwright

    monkeypatch.setenv("DJANGO_ALLOW_ASYNC_UNSAFE", "true")
    django_user_model.objects.create_superuser("live-admin", "admin@example.com", "admin-password-1")
    # Long enough that the page (signing in included) is up while it runs, on a loaded machine too.
    run = submit(console, headers, PRINT_THEN_SLEEP.replace("time.sleep(4)", "time.sleep(20)"), timeout=40)
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        page = browser.new_page()
        page.set_default_timeout(30_000)
        page.goto(console.url(f"/admin/login/?next=/admin/executions/execution/{run['id']}/change/"))
        page.fill("#id_username", "live-admin")
        page.fill("#id_password", "admin-password-1")
        page.click("input[type=submit]")
        page.wait_for_function("document.querySelector('[data-live-stream=stdout]')?.textContent"
                               ".includes('first chunk')")
        seen_while = status_of(console, headers, run["id"])
        page.screenshot(path=str(tmp_path / "live.png"))
        # When the run ends the page reloads with the whole record (no live pane any more).
        page.wait_for_selector(".run-banner.ok", timeout=60_000)
        final = page.inner_text("body")
        browser.close()
    assert seen_while == "running"
    assert "second chunk" in final

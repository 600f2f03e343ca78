"""The third attack campaign's findings on sessions (issue 30, items 1, 2, 4, 5, 6, 10, 11, 12): storage that no quota
counted, per-cell truth, what one cell can decide for later ones, and small edges — each held against the real
stack. (The web-tier test starts the real ASGI server, which sees a client go away; Django's test server does not.)"""

import base64
import socket
import time
from pathlib import Path

import pytest

from sandboxctl.executions.artifact_store import store
from sandboxctl.executions.models import SessionRequest
from tests.session_client import cell, close, open_session, wait_until
from tests.test_web_tier import start_server, stop_server

pytestmark = pytest.mark.django_db(transaction=True)


def transfers_of(session: dict) -> list[Path]:
    return [path for path in Path(store().location, "transfers").glob(f"*/{session['id']}/*") if path.is_file()]


@pytest.fixture
def asgi(sandbox_worker, django_db_setup, tmp_path):
    server = start_server(tmp_path)
    yield server
    stop_server(server)


def test_downloads_abandoned_right_after_the_request_line_leave_no_copy(api, asgi):
    """Item 1: a GET whose client went away before its first byte left its copy in the file store for 10 minutes,
    outside every quota; 8 of a 32 MiB file were 256 MB."""
    session = open_session(api)
    try:
        big = 4 * 1024 * 1024
        cell(api, session, f"open('big.bin', 'wb').write(b'x' * {big})")
        token = api.session.headers["Authorization"]
        for _ in range(8):
            client = socket.create_connection(("127.0.0.1", asgi.main))
            client.sendall(f"GET /api/v1/sessions/{session['id']}/files/big.bin HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                           f"Authorization: {token}\r\n\r\n".encode())
            client.close()
        assert wait_until(lambda: not transfers_of(session) and not SessionRequest.objects.filter(
            session_id=session["id"]).exclude(kind="open").exists(), timeout=60), (
            transfers_of(session), list(SessionRequest.objects.filter(session_id=session["id"]).values_list(
                "kind", "status", "error_code", "blob")))
        # A download that is read to its end leaves nothing either.
        fetched = api.get(f"/api/v1/sessions/{session['id']}/files/big.bin")
        assert fetched.status_code == 200 and len(fetched.content) == big
        assert wait_until(lambda: not transfers_of(session), timeout=10)
    finally:
        close(api, session)


def test_listings_come_in_pages_and_no_answer_stays_in_a_row(api):
    """Item 2: a listing of 10,000 long names was one 2.96 MB row kept 10 minutes."""
    session = open_session(api)
    try:
        cell(api, session, "import os\nos.makedirs('many', exist_ok=True)\n"
                           "for i in range(2500):\n    open(f'many/{i:05d}-' + 'n' * 200, 'w').write('x')")
        paths, after, pages = [], "", 0
        while True:
            page = api.get(f"/api/v1/sessions/{session['id']}/files", params={"after": after}).json()
            assert len(page["files"]) <= 1000
            paths += [entry["path"] for entry in page["files"]]
            pages += 1
            if not page["next"]:
                break
            after = page["next"]
        assert pages == 3 and len(paths) == 2500 and paths == sorted(paths)
        assert not SessionRequest.objects.filter(session_id=session["id"]).exclude(kind="open").exists()
    finally:
        close(api, session)


def test_a_cells_memory_is_its_own_peak_not_the_sessions(api):
    """Item 4: after a 300 MB cell, every later cell reported 348,896 KB."""
    session = open_session(api, memory_mb=512)
    try:
        heavy = cell(api, session, "block = bytearray(300 * 1024 * 1024)\nfor i in range(0, len(block), 4096):\n"
                                   "    block[i] = 1\ndel block")
        trivial = cell(api, session, "def main():\n    return 1")
        assert heavy["memory_used_kb"] > 300 * 1024, heavy["memory_used_kb"]
        assert trivial["memory_used_kb"] < 200 * 1024, trivial["memory_used_kb"]
    finally:
        close(api, session)


def test_a_cell_that_ends_the_session_has_ended_it_when_it_answers(api):
    """Item 6: the next cell was accepted (200) and then failed session_lost; the session still read active."""
    session = open_session(api)
    ending = cell(api, session, "import os\nos._exit(3)")
    assert ending["status"] == "failed", ending
    assert api.get(f"/api/v1/sessions/{session['id']}").json()["status"] == "ended"
    refused = api.post(f"/api/v1/sessions/{session['id']}/executions", json={"code": "print(1)"})
    assert (refused.status_code, refused.json()["code"]) == (409, "session_ended")


def test_what_a_timer_writes_between_cells_is_no_later_cells_output(api):
    """Item 10: output a Node setInterval wrote between cells came back in the next cell's stdout."""
    session = open_session(api, language="nodejs")
    try:
        cell(api, session, "let ticks = 0;\n"
                           "const ticker = setInterval(() => { console.log('tick'); if (++ticks === 10) "
                           "clearInterval(ticker); }, 20);")
        time.sleep(1.5)  # every tick was written while no cell ran
        later = cell(api, session, "console.log('mine');")
        assert later["stdout"] == "mine\n", later["stdout"]
    finally:
        close(api, session)


def test_an_input_file_under_artifacts_is_not_an_artifact_the_run_made(api):
    """Item 11: an input file placed under artifacts/ came back as an artifact the run produced."""
    files = [{"path": "artifacts/input.txt", "content_b64": base64.b64encode(b"given").decode()},
             {"path": "artifacts/changed.txt", "content_b64": base64.b64encode(b"given").decode()}]
    body = api.run("def main():\n    open('artifacts/changed.txt', 'w').write('made')\n    return 1", files=files)
    assert body["status"] == "succeeded", body
    assert [artifact["name"] for artifact in body["artifacts"]] == ["changed.txt"]


@pytest.mark.parametrize("name", ["back\\slash.txt", "C:drive.txt", "dir\\..\\up.txt"])
def test_a_file_the_code_named_with_a_backslash_or_colon_can_be_read_and_deleted(api, name):
    """Item 12: a name with a backslash was listed but could be neither downloaded nor deleted."""
    session = open_session(api)
    try:
        cell(api, session, f"open({name!r}, 'w').write('odd')")
        listed = api.get(f"/api/v1/sessions/{session['id']}/files").json()
        assert name in [entry["path"] for entry in listed["files"]], listed
        quoted = name.replace("\\", "%5C")
        fetched = api.get(f"/api/v1/sessions/{session['id']}/files/{quoted}")
        assert fetched.status_code == 200 and fetched.content == b"odd", fetched.text
        assert api.request("DELETE", f"/api/v1/sessions/{session['id']}/files/{quoted}").status_code == 204
        gone = cell(api, session, f"import os\ndef main():\n    return os.path.exists({name!r})")
        assert gone["result"] == {"present": True, "value": False}, gone
    finally:
        close(api, session)


FORGE = (
    "import sys, time\n"
    "def forged(job, namespace=None, filename=''):\n"
    "    if 'sleep_forever' in job['code']:\n"
    "        time.sleep(3600)\n"
    "    if 'hog' in job['code']:\n"
    "        hog = bytearray(700 * 1024 * 1024)\n"
    "        for i in range(0, len(hog), 4096):\n"
    "            hog[i] = 1\n"
    "    return {'ok': True, 'value_json': '666'}\n"
    "frame = sys._getframe()\n"
    "while frame is not None:\n"
    "    if 'run' in frame.f_globals and frame.f_globals.get('__name__') == 'sandbox_child':\n"
    "        frame.f_globals['run'] = forged\n"
    "    frame = frame.f_back\n"
)


def test_what_a_forging_cell_decides_for_later_cells_and_what_it_cannot(api):
    """Item 5: a cell can replace the runner's code that runs later cells in the same interpreter, so it decides
    what they answer (the README says so). What it cannot decide, because the supervisor and the worker judge it
    from outside the interpreter: their time limit, their memory limit, and anything of another session."""
    session, other = open_session(api), open_session(api)
    try:
        cell(api, session, FORGE)
        assert cell(api, session, "def main():\n    return 1")["result"]["value"] == 666, "in reach, as documented"
        # The deadline is the supervisor's and the worker's: a later cell the forger makes hang still ends.
        hung = cell(api, session, "sleep_forever = 1", timeout=2)
        assert hung["status"] == "timeout", hung
        assert api.get(f"/api/v1/sessions/{session['id']}").json()["status"] == "ended"
        # Another session of the same account runs its own interpreter: untouched.
        assert cell(api, other, "def main():\n    return 1")["result"]["value"] == 1
    finally:
        close(api, other)
    forged_memory = open_session(api, memory_mb=128)
    try:
        cell(api, forged_memory, FORGE)
        hog = cell(api, forged_memory, "hog = 1", timeout=20)
        assert hog["status"] != "succeeded", "700 MB were never had under a 128 MB limit"
        assert (hog["memory_used_kb"] or 0) < 400 * 1024, hog["memory_used_kb"]
    finally:
        close(api, forged_memory)

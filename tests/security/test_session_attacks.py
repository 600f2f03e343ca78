"""Attacks on sessions: state persists between cells, so the walls must hold for a session's whole life.

A cell cannot answer for a later cell (a background process is killed when its cell ends; an answer meant
for another cell is dropped by its nonce), cannot inject requests or frames into the supervisor, cannot fake
what a cell is measured by, cannot see another session, and a new session finds nothing of an earlier one.
"""

import pytest

from tests.session_client import cell, close, open_session

pytestmark = pytest.mark.django_db(transaction=True)

# A length-prefixed answer the way the runner writes one, claiming a result for whatever cell runs next.
FORGED_ANSWER = (
    "import json, os\n"
    "def forged(nonce=None):\n"
    "    body = json.dumps({'ok': True, 'value_json': json.dumps('forged'), 'nonce': nonce}).encode()\n"
    "    return len(body).to_bytes(4, 'big') + body\n"
)


def test_a_background_process_cannot_answer_for_the_next_cell(api):
    session = open_session(api)
    try:
        planted = cell(api, session, FORGED_ANSWER + (
            "import subprocess, sys, textwrap\n"
            "writer = textwrap.dedent('''\n"
            "    import os, time\n"
            "    time.sleep(0.3)\n"
            "    for _ in range(100):\n"
            "        try:\n"
            "            os.write(3, FORGED)\n"
            "        except OSError:\n"
            "            pass\n"
            "        time.sleep(0.02)\n"
            "''')\n"
            "subprocess.Popen([sys.executable, '-c', 'FORGED=' + repr(forged()) + '\\n' + writer],\n"
            "                 pass_fds=(3,), start_new_session=True)\n"))
        assert planted["status"] == "succeeded", planted
        honest = cell(api, session, "import time\ntime.sleep(1.5)\ndef main():\n    return 'real'")
        assert honest["result"] == {"present": True, "value": "real"}
        survivors = cell(api, session, "import os\ndef main():\n    return [p for p in os.listdir('/proc')\n"
                                       "     if p.isdigit() and b'FORGED' in open(f'/proc/{p}/cmdline', 'rb').read()]")
        assert survivors["result"]["value"] == [], "the writer of the first cell outlived it"
    finally:
        close(api, session)


def test_an_early_answer_cannot_become_the_next_cells_answer(api):
    """A cell that hands in an answer and runs on: its real answer comes during the next cell, which must not
    take it (the nonce differs), nor take the early one for itself."""
    session = open_session(api)
    try:
        early = cell(api, session, FORGED_ANSWER + (
            "import sys\n"
            "frame = sys._getframe()  # the runner's frames hold the cell's request, nonce included\n"
            "while frame is not None and 'request' not in frame.f_locals:\n"
            "    frame = frame.f_back\n"
            "os.write(3, forged(frame.f_locals['request']['nonce']))\n"
            "import time\ntime.sleep(1)\n"
            "def main():\n    return 'late answer of the first cell'"))
        # The cell answered for itself early: its own result is what it chose; that is the cell's own business.
        assert early["result"]["value"] == "forged"
        second = cell(api, session, "def main():\n    return 'second'")
        assert second["result"]["value"] == "second", second
        third = cell(api, session, "def main():\n    return 'third'")
        assert third["result"]["value"] == "third", third
    finally:
        close(api, session)


def test_a_cell_cannot_write_requests_into_the_supervisor(api):
    """The supervisor's input stays open for the whole session: the cell cannot reach it (uid split)."""
    session = open_session(api)
    try:
        attempts = cell(api, session, (
            "import os\n"
            "def main():\n"
            "    results = {}\n"
            "    for path in ('/proc/1/fd/0', '/proc/1/fd/1', '/proc/1/mem'):\n"
            "        try:\n"
            "            os.open(path, os.O_WRONLY)\n"
            "            results[path] = 'opened'\n"
            "        except OSError as exc:\n"
            "            results[path] = exc.errno\n"
            "    return results"))
        values = attempts["result"]["value"]
        assert "opened" not in values.values(), values
        assert cell(api, session, "def main():\n    return 'still answering'")["result"]["value"] == "still answering"
    finally:
        close(api, session)


def test_printed_frames_are_output_and_measurements_are_the_workers(api):
    """A cell that prints what looks like a report, or claims a short duration, is measured all the same."""
    session = open_session(api)
    try:
        body = cell(api, session, (
            "import json, sys, time\n"
            "sys.stdout.write('D' + json.dumps({'timed_out': False, 'memory_used_kb': 1, 'exit_code': 0,\n"
            "                 'result': {'ok': True, 'value_json': '\"printed\"'}}))\n"
            "time.sleep(1.2)\n"
            "def main():\n    return 'honest'"))
        assert body["result"]["value"] == "honest"
        assert body["execution_time"] >= 1.2
        assert body["stdout"].startswith("D{")
        hog = cell(api, session, "block = bytearray(120 * 1024 * 1024)\ndef main():\n    return len(block)")
        assert hog["memory_used_kb"] >= 100 * 1024, hog["memory_used_kb"]
    finally:
        close(api, session)


def test_killing_the_file_keeper_only_breaks_the_sessions_own_files(api):
    session = open_session(api)
    try:
        killed = cell(api, session, (
            "import os, signal\n"
            "def main():\n"
            "    mine = os.getpid()\n"
            "    others = [int(p) for p in os.listdir('/proc') if p.isdigit() and int(p) not in (1, mine)]\n"
            "    for pid in others:\n"
            "        os.kill(pid, signal.SIGKILL)\n"
            "    return len(others)"))
        assert killed["status"] == "succeeded" and killed["result"]["value"] >= 1
        refused = api.request("PUT", f"/api/v1/sessions/{session['id']}/files/x.txt", data=b"x")
        assert refused.status_code == 409 and refused.json()["code"] == "file_service_gone", refused.text
        assert cell(api, session, "def main():\n    return 1 + 1")["result"]["value"] == 2
    finally:
        close(api, session)


def test_one_session_cannot_see_another(api, live_server, django_user_model):
    from conftest import Api
    from sandboxctl.executions.models import ApiToken

    mine = open_session(api)
    other = django_user_model.objects.create_user("neighbour", password="neighbour-password-1")
    neighbour_api = Api(live_server.url, ApiToken.issue(other)[1])
    theirs = open_session(neighbour_api)
    try:
        cell(neighbour_api, theirs, "secret = 'theirs'\nopen('/work/their-secret.txt', 'w').write('theirs')\n"
                                    "open('/tmp/their-tmp.txt', 'w').write('theirs')")
        looked = cell(api, mine, (
            "import os\n"
            "def main():\n"
            "    found = []\n"
            "    for root in ('/work', '/tmp', '/dev/shm'):\n"
            "        for folder, _, names in os.walk(root):\n"
            "            found += [os.path.join(folder, name) for name in names if 'their' in name]\n"
            "    processes = [p for p in os.listdir('/proc') if p.isdigit()]\n"
            "    return {'found': found, 'secret': globals().get('secret'), 'processes': len(processes)}"))
        assert looked["result"]["value"]["found"] == []
        assert looked["result"]["value"]["secret"] is None
        assert looked["result"]["value"]["processes"] <= 3  # the supervisor, the interpreter, the file keeper
    finally:
        close(api, mine)
        close(neighbour_api, theirs)


def test_a_new_session_finds_nothing_of_an_earlier_one(api):
    first = open_session(api)
    cell(api, first, "import subprocess\nsecret = 'left behind'\nopen('/work/left.txt', 'w').write('x')\n"
                     "open('/tmp/left.txt', 'w').write('x')\n"
                     "import os\nos.environ['LEFT_BEHIND'] = '1'")
    assert api.request("PUT", f"/api/v1/sessions/{first['id']}/files/uploaded.txt", data=b"x").status_code == 201
    close(api, first)
    second = open_session(api)
    try:
        looked = cell(api, second, (
            "import os\n"
            "def main():\n"
            "    return {'work': sorted(os.listdir('/work')), 'tmp': os.path.exists('/tmp/left.txt'),\n"
            "            'secret': globals().get('secret'), 'env': 'LEFT_BEHIND' in os.environ}"))
        assert looked["result"]["value"] == {"work": ["artifacts"], "tmp": False, "secret": None, "env": False}
        listing = api.get(f"/api/v1/sessions/{second['id']}/files").json()
        assert listing["files"] == []
    finally:
        close(api, second)


def test_frames_of_one_cell_cannot_be_replayed_in_another(api):
    """Every frame carries a tag over a sequence number that runs on across the session: a cell cannot make the
    supervisor's earlier frames (or its own printed copies of them) count again. A cell's output is relayed
    as data; the next cell's answer is still its own."""
    session = open_session(api)
    try:
        first = cell(api, session, "print('R' * 10)\ndef main():\n    return 1")
        second = cell(api, session, "import sys\nsys.stdout.buffer.write(bytes(range(256)))\ndef main():\n"
                                    "    return 2")
        assert (first["result"]["value"], second["result"]["value"]) == (1, 2)
        assert second["status"] == "succeeded"
    finally:
        close(api, session)

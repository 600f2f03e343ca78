"""Sessions: state across cells (Python and Node), files both ways, ownership, busy cells, idle expiry and
lifetime, and input files on one-shot runs — against a real worker with real gVisor sandboxes."""

import base64
import hashlib
import http.client
import re
import time

import pytest
from django.conf import settings as django_settings

from sandboxctl.executions.models import Session
from tests.session_client import cell, close, open_session, sandbox_alive, wait_until

pytestmark = pytest.mark.django_db(transaction=True)


def test_python_state_persists_from_cell_to_cell(api):
    session = open_session(api)
    try:
        first = cell(api, session, "import json\ncounter = 41\nrows = [1, 2, 3]\nprint('first')")
        assert first["status"] == "succeeded", first
        assert first["session"] == session["id"]
        assert first["stdout"] == "first\n"
        second = cell(api, session, "def main(step):\n    global counter\n    counter += step\n"
                                    "    return {'counter': counter, 'rows': sum(rows), 'json': json.dumps(rows)}",
                      arguments={"step": 1})
        assert second["status"] == "succeeded", second
        assert second["result"] == {"present": True, "value": {"counter": 42, "rows": 6, "json": "[1, 2, 3]"}}
        # A cell without main() does not call the main() an earlier cell defined.
        third = cell(api, session, "counter += 100")
        assert third["result"] == {"present": False, "value": None}
        fourth = cell(api, session, "def main():\n    return counter")
        assert fourth["result"]["value"] == 142
    finally:
        close(api, session)


def test_a_failing_cell_leaves_the_session_usable(api):
    session = open_session(api)
    try:
        cell(api, session, "kept = 'still here'")
        failed = cell(api, session, "raise ValueError('bad step')")
        assert failed["status"] == "failed"
        assert failed["error"]["code"] == "value_error"
        assert "ValueError: bad step" in failed["stderr"]
        after = cell(api, session, "def main():\n    return kept")
        assert after["status"] == "succeeded" and after["result"]["value"] == "still here"
    finally:
        close(api, session)


def test_a_cell_past_its_timeout_is_interrupted_and_the_session_goes_on(api):
    session = open_session(api)
    try:
        cell(api, session, "value = 7")
        slow = cell(api, session, "import time\nwhile True:\n    time.sleep(0.05)", timeout=1)
        assert slow["status"] == "timeout", slow
        after = cell(api, session, "def main():\n    return value * 6")
        assert after["result"]["value"] == 42
        assert api.get(f"/api/v1/sessions/{session['id']}").json()["status"] == "active"
    finally:
        close(api, session)


def test_a_cell_that_will_not_stop_ends_the_session_with_a_reason(api):
    session = open_session(api)
    code = ("import signal, time\nsignal.signal(signal.SIGINT, signal.SIG_IGN)\n"
            "while True:\n    time.sleep(0.05)")
    stuck = cell(api, session, code, timeout=1)
    assert stuck["status"] == "timeout", stuck
    ended = api.get(f"/api/v1/sessions/{session['id']}").json()
    assert ended["status"] == "ended"
    assert "timeout" in ended["end_reason"]
    refused = cell(api, session, "print(1)", expected=409)
    assert refused["code"] == "session_ended"


def test_nodejs_state_persists_and_main_is_the_cells_own(api):
    session = open_session(api, "nodejs")
    try:
        first = cell(api, session, "var total = 40;\nglobalThis.seen = ['a'];\nconsole.log('first');")
        assert first["status"] == "succeeded", first
        assert first["stdout"] == "first\n"
        second = cell(api, session, "function main(args) { total += args.step; seen.push('b'); "
                                    "return {total, seen}; }", arguments={"step": 2})
        assert second["result"]["value"] == {"total": 42, "seen": ["a", "b"]}, second
        third = cell(api, session, "total += 1;")
        assert third["result"] == {"present": False, "value": None}
        async_main = cell(api, session, "async function main() { await new Promise(r => setTimeout(r, 10)); "
                                        "return total; }")
        assert async_main["result"]["value"] == 43
    finally:
        close(api, session)


def test_nodejs_cell_past_its_timeout_is_interrupted(api):
    session = open_session(api, "nodejs")
    try:
        cell(api, session, "var kept = 5;")
        slow = cell(api, session, "while (true) {}", timeout=1)
        assert slow["status"] == "timeout", slow
        after = cell(api, session, "function main() { return kept; }")
        assert after["result"]["value"] == 5
    finally:
        close(api, session)


def test_files_both_ways_with_pandas_reading_an_uploaded_csv(api):
    session = open_session(api)
    try:
        csv = b"city,temperature\nOslo,4\nLima,19\nCairo,27\n"
        put = api.request("PUT", f"/api/v1/sessions/{session['id']}/files/data/weather.csv", data=csv)
        assert put.status_code == 201, put.text
        assert put.json() == {"path": "data/weather.csv", "size": len(csv)}
        analysis = cell(api, session, "import pandas as pd\ndf = pd.read_csv('data/weather.csv')\n"
                                      "df['fahrenheit'] = df.temperature * 9 / 5 + 32\n"
                                      "df.to_csv('out/converted.csv', index=False) if False else None\n"
                                      "import os\nos.makedirs('out', exist_ok=True)\n"
                                      "df.to_csv('out/converted.csv', index=False)\n"
                                      "def main():\n    return float(df.temperature.mean())")
        assert analysis["status"] == "succeeded", analysis
        assert analysis["result"]["value"] == pytest.approx(50 / 3)
        listing = api.get(f"/api/v1/sessions/{session['id']}/files").json()
        paths = {entry["path"]: entry["size"] for entry in listing["files"]}
        assert paths["data/weather.csv"] == len(csv)
        assert "out/converted.csv" in paths
        download = api.get(f"/api/v1/sessions/{session['id']}/files/out/converted.csv")
        assert download.status_code == 200
        assert download.headers["Content-Type"] == "application/octet-stream"
        assert download.content.splitlines()[0] == b"city,temperature,fahrenheit"
        assert b"Cairo,27,80.6" in download.content
        removed = api.request("DELETE", f"/api/v1/sessions/{session['id']}/files/out/converted.csv")
        assert removed.status_code == 204
        gone = api.get(f"/api/v1/sessions/{session['id']}/files/out/converted.csv")
        assert gone.status_code == 404 and gone.json()["code"] == "not_found"
    finally:
        close(api, session)


def test_a_binary_file_comes_back_byte_for_byte(api):
    session = open_session(api)
    try:
        blob = bytes(range(256)) * 4096  # 1 MiB, every byte value
        assert api.request("PUT", f"/api/v1/sessions/{session['id']}/files/blob.bin", data=blob).status_code == 201
        checked = cell(api, session, "import hashlib\ndef main():\n"
                                     "    return hashlib.sha256(open('blob.bin','rb').read()).hexdigest()")
        assert checked["result"]["value"] == hashlib.sha256(blob).hexdigest()
        assert api.get(f"/api/v1/sessions/{session['id']}/files/blob.bin").content == blob
    finally:
        close(api, session)


# A backslash is an ordinary character of a file name (a%5cb is one file in the folder, tests/security), not a way out.
ESCAPES = ["../escape.txt", "a/../../b", "%2e%2e/escape.txt", "a/%2E%2E/%2e%2e/b", "..%2fescape.txt", "/etc/passwd",
           "%2fetc%2fpasswd", "a//b", "./x", "a/./b", "x%00y"]


@pytest.mark.parametrize("path", ESCAPES)
def test_paths_that_leave_the_working_folder_are_refused(api, live_server, token, path):
    """Sent as raw bytes (an HTTP client would remove the dot segments itself): 400 naming the path, or no
    route at all (404) for what the URL router already refuses; never a file written."""
    session = open_session(api)
    try:
        for method in ("PUT", "GET", "DELETE"):
            status, body = raw_request(live_server.url, method, f"/api/v1/sessions/{session['id']}/files/{path}",
                                       token, b"x" if method == "PUT" else None)
            assert status in (400, 404), (method, path, status, body)
            if status == 400:
                assert b"path" in body
        listing = api.get(f"/api/v1/sessions/{session['id']}/files").json()
        assert listing["files"] == [], listing
    finally:
        close(api, session)


def raw_request(base_url: str, method: str, path: str, token: str, body: bytes | None) -> tuple[int, bytes]:
    host, port = base_url.removeprefix("http://").split(":")
    connection = http.client.HTTPConnection(host, int(port), timeout=60)
    try:
        connection.putrequest(method, path, skip_accept_encoding=True)
        connection.putheader("Authorization", f"Bearer {token}")
        connection.putheader("Content-Length", str(len(body or b"")))
        connection.endheaders(body)
        response = connection.getresponse()
        return response.status, response.read()
    finally:
        connection.close()


def test_a_link_planted_by_the_code_is_not_followed(api):
    session = open_session(api)
    try:
        cell(api, session, "import os\nos.symlink('/etc', 'etc-link')\nos.symlink('/etc/passwd', 'passwd')")
        through_folder = api.get(f"/api/v1/sessions/{session['id']}/files/etc-link/passwd")
        assert through_folder.status_code == 400 and through_folder.json()["code"] == "link"
        the_link = api.get(f"/api/v1/sessions/{session['id']}/files/passwd")
        assert the_link.status_code == 400 and the_link.json()["code"] == "link"
        written = api.request("PUT", f"/api/v1/sessions/{session['id']}/files/etc-link/evil", data=b"x")
        assert written.status_code == 400 and written.json()["code"] == "link"
    finally:
        close(api, session)


def test_file_size_caps_answer_413_naming_them(api, settings):
    session = open_session(api)
    try:
        limit = django_settings.SANDBOX_SESSION_FILE_MAX_BYTES
        response = api.request("PUT", f"/api/v1/sessions/{session['id']}/files/big.bin", data=b"\0" * (limit + 1))
        assert response.status_code == 413
        assert "SANDBOX_SESSION_FILE_MAX_BYTES" in response.text
    finally:
        close(api, session)


def test_another_account_gets_404_for_the_session_its_cells_and_files(api, live_server, django_user_model):
    from conftest import Api
    from sandboxctl.executions.models import ApiToken

    session = open_session(api)
    try:
        other = django_user_model.objects.create_user("other", password="other-password-1")
        intruder = Api(live_server.url, ApiToken.issue(other)[1])
        base = f"/api/v1/sessions/{session['id']}"
        assert intruder.get(base).status_code == 404
        assert intruder.post(f"{base}/executions", json={"code": "print(1)"}).status_code == 404
        assert intruder.get(f"{base}/files").status_code == 404
        assert intruder.request("PUT", f"{base}/files/x.txt", data=b"x").status_code == 404
        assert intruder.request("DELETE", base).status_code == 404
        assert intruder.get("/api/v1/sessions").json()["results"] == []
        assert api.get(base).json()["status"] == "active"
    finally:
        close(api, session)


def test_cells_run_one_at_a_time(api):
    session = open_session(api)
    try:
        slow = api.post(f"/api/v1/sessions/{session['id']}/executions",
                        json={"code": "import time\ntime.sleep(2)", "wait": False})
        assert slow.status_code == 202
        busy = cell(api, session, "print('too soon')", expected=409)
        assert busy["code"] == "session_busy"
    finally:
        close(api, session)


def test_the_account_session_quota_is_a_429_naming_it(api, settings):
    settings.SANDBOX_TENANT_MAX_SESSIONS = 1
    session = open_session(api)
    try:
        response = api.post("/api/v1/sessions", json={"language": "python"})
        assert response.status_code == 429
        assert "SANDBOX_TENANT_MAX_SESSIONS" in response.text
    finally:
        close(api, session)


def test_deleting_a_session_removes_its_sandbox(api):
    session = open_session(api)
    sandbox_id = Session.objects.get(pk=session["id"]).sandbox_id
    assert sandbox_alive(sandbox_id)
    close(api, session)
    assert wait_until(lambda: not sandbox_alive(sandbox_id), 20), "the sandbox outlived its session"
    assert api.get(f"/api/v1/sessions/{session['id']}").json()["status"] == "ended"


def test_an_idle_session_expires_and_leaves_no_sandbox(api):
    session = open_session(api, idle_timeout=2)
    sandbox_id = Session.objects.get(pk=session["id"]).sandbox_id
    cell(api, session, "x = 1")
    assert wait_until(lambda: Session.objects.get(pk=session["id"]).status == "ended", 20)
    ended = Session.objects.get(pk=session["id"])
    assert "idle" in ended.end_reason
    assert wait_until(lambda: not sandbox_alive(sandbox_id), 20), "the idle session's sandbox remained"
    assert cell(api, session, "print(x)", expected=409)["code"] == "session_ended"


def test_a_session_ends_at_its_max_lifetime_even_while_used(api):
    session = open_session(api, max_lifetime=3)
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline and Session.objects.get(pk=session["id"]).status == "active":
        api.post(f"/api/v1/sessions/{session['id']}/executions", json={"code": "pass"})
        time.sleep(0.3)
    ended = Session.objects.get(pk=session["id"])
    assert ended.status == "ended" and "max_lifetime" in ended.end_reason


def test_opening_files_are_in_place_for_the_first_cell(api):
    files = [{"path": "input/numbers.txt", "content_b64": base64.b64encode(b"1\n2\n3\n").decode()}]
    session = open_session(api, files=files)
    try:
        total = cell(api, session, "def main():\n    return sum(int(n) for n in open('input/numbers.txt'))")
        assert total["result"]["value"] == 6
    finally:
        close(api, session)


def test_one_shot_runs_take_input_files(api):
    files = [{"path": "data.csv", "content_b64": base64.b64encode(b"a,b\n1,2\n3,4\n").decode()},
             {"path": "nested/dir/note.txt", "content_b64": base64.b64encode("héllo".encode()).decode()}]
    body = api.run("import pandas as pd\ndef main():\n    df = pd.read_csv('data.csv')\n"
                   "    return {'sum': int(df.a.sum() + df.b.sum()), 'note': open('nested/dir/note.txt').read()}",
                   files=files)
    assert body["status"] == "succeeded", body
    assert body["result"]["value"] == {"sum": 10, "note": "héllo"}
    assert body["input_files"] == [{"path": "data.csv", "size": 12}, {"path": "nested/dir/note.txt", "size": 6}]
    node = api.run("const fs = require('fs');\nfunction main() { return fs.readFileSync('data.csv', 'utf8'); }",
                   language="nodejs", files=files[:1])
    assert node["result"]["value"] == "a,b\n1,2\n3,4\n"


@pytest.mark.parametrize("files, field_message", [
    ([{"path": "../x", "content_b64": ""}], "'..'"),
    ([{"path": "/abs", "content_b64": ""}], "absolute"),
    ([{"path": "ok.txt", "content_b64": "not base64!"}], "base64"),
    ([{"path": "a.txt", "content_b64": ""}, {"path": "a.txt", "content_b64": ""}], "twice"),
])
def test_bad_input_files_are_a_400_naming_the_field(api, files, field_message):
    response = api.post("/api/v1/executions", json={"language": "python", "code": "print(1)", "files": files})
    assert response.status_code == 400, response.text
    assert "files" in response.json()
    assert field_message in response.text


def test_input_files_over_their_cap_are_a_413_naming_it(api, settings):
    settings.SANDBOX_INPUT_FILES_MAX_BYTES = 1000
    files = [{"path": "big.bin", "content_b64": base64.b64encode(b"x" * 1001).decode()}]
    response = api.post("/api/v1/executions", json={"language": "python", "code": "print(1)", "files": files})
    assert response.status_code == 413
    assert "SANDBOX_INPUT_FILES_MAX_BYTES" in response.text


def test_sessions_and_cells_are_in_the_admin(api, client, staff_user):
    session = open_session(api)
    try:
        cell(api, session, "x = 1")
        client.force_login(staff_user)
        page = client.get("/admin/executions/session/")
        assert page.status_code == 200
        assert session["id"][:8] in page.content.decode()
        detail = client.get(f"/admin/executions/session/{session['id']}/change/")
        assert detail.status_code == 200 and 'id="cell-1"' in detail.content.decode()
        assert "x = 1" in re.sub(r"<[^>]+>", "", detail.content.decode()), "the cell's code, highlighted"
        dashboard = client.get("/admin/dashboard/").content.decode()
        assert 'id="session-table"' in dashboard and session["id"][:8] in dashboard
    finally:
        close(api, session)


def test_ended_sessions_go_with_the_retention_period(user, settings):
    from datetime import timedelta

    from django.utils import timezone

    from sandboxctl.executions import retention

    now = timezone.now()
    old = Session.objects.create(caller=user, provider="self_managed", language="python", idle_timeout=60,
                                 max_lifetime=60, status="ended", ended_at=now - timedelta(days=31))
    recent = Session.objects.create(caller=user, provider="self_managed", language="python", idle_timeout=60,
                                    max_lifetime=60, status="ended", ended_at=now - timedelta(days=1))
    settings.SANDBOX_RETENTION_DAYS = 30
    retention.delete_expired(now)
    assert list(Session.objects.values_list("pk", flat=True)) == [recent.pk]
    assert not Session.objects.filter(pk=old.pk).exists()

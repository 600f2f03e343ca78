"""Sessions on the SaaS providers, through their real SDKs against the local fakes: the fakes run each
execution as a fresh process (as a stateless service would), so what persists between cells is the session
host the opener left running in the sandbox, never the fake's interpreter."""

import base64
import json
import os
import shutil
import signal
import time
from datetime import timedelta

import pytest
from django.utils import timezone

from conftest import e2b_settings
from executor.config import FileLimits
from providers import config_store
from providers.base import FileRefused, Limits, SessionGone, SessionsUnsupported, SessionTimes, Status
from sandboxctl.executions.models import Session
from sandboxctl.worker.sessions import reconcile
from tests.session_client import cell, close, open_session, wait_until
from tests.test_provider_switch import activate

LIMITS = Limits(timeout=5, memory_mb=256, output_limit=64 * 1024)
FILES = FileLimits(max_file_bytes=64 * 1024, max_total_bytes=96 * 1024)
TIMES = SessionTimes(max_lifetime=120, idle_timeout=60)


@pytest.fixture
def opened(saas):
    sessions = []

    def open_one(files=(), **overrides):
        session = saas.provider(**overrides).open_session("python", LIMITS, list(files), FILES, session_id="t",
                                                          times=TIMES)
        sessions.append(session)
        return session

    yield open_one
    for session in sessions:
        host = host_pid(session)
        session.close("test over")
        if host:
            wait_gone(host)


def host_pid(session) -> int | None:
    """The host process of a session the fake runs on this machine (found by its socket's folder)."""
    folder = os.path.dirname(session.socket_path).encode()
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as cmdline:
                argv = cmdline.read()
        except OSError:
            continue
        if b"host.py" in argv and folder in argv:
            return int(pid)
    return None


def wait_gone(pid: int, timeout: float = 10) -> None:
    until = time.monotonic() + timeout
    while time.monotonic() < until:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return
        time.sleep(0.05)
    raise AssertionError(f"process {pid} still runs")


def test_state_persists_across_cells_and_main_gets_its_arguments(opened, saas):
    session = opened()
    first = session.run("import json\nrows = [1, 2, 3]\nprint('loaded')", {}, LIMITS)
    assert (first.status, first.stdout) == (Status.SUCCEEDED, "loaded\n"), first.stderr
    second = session.run("def main(factor):\n    return [r * factor for r in rows]", {"factor": 2}, LIMITS)
    assert (second.status, second.result_value) == (Status.SUCCEEDED, [2, 4, 6]), second.stderr
    assert session.sandbox_id in saas.alive()


def test_a_raising_cell_leaves_the_session_usable(opened):
    session = opened()
    session.run("count = 41", {}, LIMITS)
    failed = session.run("def main():\n    raise ValueError('bad step')", {}, LIMITS)
    assert (failed.status, failed.error_code, failed.session_ended) == (Status.FAILED, "value_error", "")
    assert session.run("def main():\n    return count + 1", {}, LIMITS).result_value == 42


def test_a_cell_past_its_timeout_is_interrupted_and_the_session_goes_on(opened):
    session = opened()
    session.run("kept = 'still here'", {}, LIMITS)
    slow = session.run("while True:\n    pass", {}, Limits(timeout=1, memory_mb=256, output_limit=1024))
    assert (slow.status, slow.session_ended) == (Status.TIMEOUT, ""), slow
    assert session.run("def main():\n    return kept", {}, LIMITS).result_value == "still here"


def test_a_cell_that_ignores_the_interrupt_ends_the_session(opened, saas):
    session = opened()
    host = host_pid(session)
    stubborn = "import signal, time\nsignal.signal(signal.SIGINT, signal.SIG_IGN)\nwhile True:\n    time.sleep(0.1)"
    result = session.run(stubborn, {}, Limits(timeout=1, memory_mb=256, output_limit=1024))
    assert (result.status, result.session_ended) == (Status.TIMEOUT, "timeout"), result
    assert saas.alive() == []  # the session's sandbox is deleted with it
    if host:
        wait_gone(host)
    with pytest.raises(SessionGone):
        session.run("1", {}, LIMITS)


def test_files_go_in_and_out_and_cells_see_them(opened):
    session = opened(files=[{"path": "data/in.csv", "content_b64": base64.b64encode(b"a,b\n1,2\n").decode()}])
    assert session.put_file("notes.txt", "héllo".encode()) == {"path": "notes.txt", "size": 6}
    made = session.run("def main():\n    open('out.bin', 'wb').write(bytes(range(256)))\n"
                       "    return open('data/in.csv').read()", {}, LIMITS)
    assert made.result_value == "a,b\n1,2\n", made.stderr
    assert session.get_file("out.bin") == bytes(range(256))
    assert [(f["path"], f["size"]) for f in session.list_files()["files"]] == [
        ("data/in.csv", 8), ("notes.txt", 6), ("out.bin", 256)]
    session.delete_file("notes.txt")
    with pytest.raises(FileRefused) as refused:
        session.get_file("notes.txt")
    assert refused.value.code == "not_found"


def test_paths_that_leave_the_folder_or_follow_a_link_are_refused(opened):
    session = opened()
    session.run("import os\nos.symlink('/etc', 'link')", {}, LIMITS)
    for path, code in (("../escape", "bad_path"), ("/etc/passwd", "bad_path"), ("link/x", "link"), ("link", "link")):
        with pytest.raises(FileRefused) as refused:
            session.get_file(path)
        assert refused.value.code == code, path
        with pytest.raises(FileRefused):
            session.put_file(path, b"planted")
    assert not any(entry["path"].startswith("link") for entry in session.list_files()["files"])


def test_file_caps_are_kept(opened):
    session = opened()
    with pytest.raises(FileRefused) as one:
        session.put_file("big", b"x" * (FILES.max_file_bytes + 1))
    session.put_file("a", b"x" * 60_000)
    with pytest.raises(FileRefused) as total:
        session.put_file("b", b"x" * 60_000)
    assert (one.value.code, total.value.code) == ("too_large", "too_large")


def test_node_sessions_are_refused_naming_the_provider(saas):
    provider = saas.provider()
    with pytest.raises(SessionsUnsupported) as refused:
        provider.open_session("nodejs", LIMITS, [], FILES, times=TIMES)
    assert provider.name in str(refused.value) and "nodejs" in str(refused.value)
    assert saas.alive() == []


def test_a_sandbox_the_service_lost_ends_the_session(opened, saas):
    session = opened()
    host = host_pid(session)
    saas.fake.sandboxes.clear()  # the service lost it
    with pytest.raises(SessionGone):
        session.run("1", {}, LIMITS)
    if host:
        os.kill(host, signal.SIGTERM)  # the fake keeps no process of its own to end
        wait_gone(host)


def test_closing_ends_the_host_and_deletes_the_sandbox(opened, saas):
    session = opened()
    host = host_pid(session)
    assert host is not None
    session.close("done")
    wait_gone(host)
    assert saas.alive() == [] and not os.path.exists(os.path.dirname(session.socket_path))


def test_a_session_on_e2b_through_the_api(api, staff_api, e2b_fake):
    activate(staff_api, "e2b", e2b_settings(e2b_fake.url))
    refused = api.post("/api/v1/sessions", json={"language": "nodejs"})
    assert refused.status_code == 400 and "e2b" in refused.text and "nodejs" in refused.text, refused.text
    session = open_session(api, idle_timeout=60)
    sandbox_id = Session.objects.get(pk=session["id"]).sandbox_id
    assert (session["provider"], sandbox_id in e2b_fake.sandboxes) == ("e2b", True)
    put = api.request("PUT", f"/api/v1/sessions/{session['id']}/files/in/data.txt", data=b"41")
    assert put.status_code == 201, put.text
    first = cell(api, session, "value = int(open('in/data.txt').read())")
    assert first["status"] == "succeeded" and first["session"] == session["id"], first
    second = cell(api, session, "def main(step):\n    open('out.txt', 'w').write(str(value + step))\n"
                                "    return value + step", arguments={"step": 1})
    assert second["result"]["value"] == 42, second
    assert api.get(f"/api/v1/sessions/{session['id']}/files/out.txt").content == b"42"
    close(api, session)
    assert wait_until(lambda: sandbox_id in e2b_fake.killed, 20)
    assert Session.objects.get(pk=session["id"]).status == "ended"


def test_a_cell_cannot_forge_its_report_through_its_output(opened):
    """The call's marker is only in the short execution that asks the host; a cell's output travels inside
    the host's answer, so a line that looks like a report is just output."""
    report = {"ok": True, "outcome": {"ok": True, "value_json": '"forged"'}}
    forged = base64.b64encode(json.dumps(report).encode()).decode()
    session = opened()
    code = ("import re, sys\n"
            "def main():\n"
            f"    line = '__sandboxctl_' + '0' * 32 + '__' + {forged!r} + '__sandboxctl_' + '0' * 32 + '__'\n"
            "    print(line)\n"
            "    sys.stdout.write('\\n' + line + '\\n')\n"
            "    return 'honest'")
    result = session.run(code, {}, LIMITS)
    assert (result.status, result.result_value) == (Status.SUCCEEDED, "honest"), result
    assert forged in result.stdout


def test_a_cell_that_kills_its_host_ends_the_session_cleanly(opened, saas):
    """On a SaaS sandbox the code runs as the host's user: it can kill the host, and then only its own session
    ends, with a reason, its sandbox deleted, never a hung call."""
    session = opened()
    host = host_pid(session)
    with pytest.raises(SessionGone) as gone:
        session.run("import os, signal\ndef main():\n    os.kill(os.getppid(), signal.SIGKILL)", {}, LIMITS)
    assert "session host is gone" in gone.value.reason, gone.value.reason
    if host:
        wait_gone(host)
    with pytest.raises(SessionGone):
        session.run("1", {}, LIMITS)
    assert saas.alive() == []
    shutil.rmtree(os.path.dirname(session.socket_path), ignore_errors=True)  # SIGKILL left the host no time


def test_the_reconciler_deletes_the_remote_sandbox_of_a_session_whose_worker_was_lost(saas, transactional_db):
    config_store.save(saas.name, saas.settings(), activate=False)
    sandbox_id = saas.provider().create_instance("python", "session-lost", session=TIMES)
    long_ago = timezone.now() - timedelta(hours=1)
    session = Session.objects.create(provider=saas.name, language="python", status="active", idle_timeout=60,
                                     max_lifetime=120, worker="celery@gone-host", sandbox_id=sandbox_id,
                                     created_at=long_ago, started_at=long_ago)
    counts = reconcile(timezone.now(), judging=True)
    session.refresh_from_db()
    assert (counts["sessions_lost"], session.status) == (1, "lost")
    assert sandbox_id not in saas.alive()

"""What a newcomer does first, guarded by CI: a fresh clone, `make run` with its defaults (SQLite, the embedded
broker; only the ports differ), the README's first request sent as the README writes it, a RAGFlow `/run`, then
Ctrl-C — after which no process of the stack and no sandbox of it may remain.

A fresh clone has no `.venv`, no `data/` and no secret key, so this walks the whole set-up path a new user
walks; it once hid a `make run` that failed on every fresh clone (no `data/`)."""

import base64
import os
import re
import signal
import socket
import subprocess
import time
from pathlib import Path

import pytest
import requests

from executor.config import SandboxConfig
from executor.runsc_sandbox import RunscBackend

ROOT = Path(__file__).resolve().parent.parent
TOKEN = "my-token"  # the README's example token
# What the newcomer's shell would not have: everything the suite itself set up.
SUITE_ONLY = ("DATABASE_URL", "CELERY_BROKER_URL", "DJANGO_SETTINGS_MODULE", "SECRET_KEY", "VIRTUAL_ENV")


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def newcomer_environment(port: int, ragflow_port: int) -> dict:
    env = {key: value for key, value in os.environ.items()
           if key not in SUITE_ONLY and not key.startswith(("SANDBOX_", "SANDBOXCTL_", "PYTEST", "TEST_"))}
    env.update(PORT=str(port), RAGFLOW_PORT=str(ragflow_port), SANDBOXCTL_ADMIN_PASSWORD="change-me",
               SANDBOXCTL_BOOTSTRAP_TOKEN=TOKEN)
    return env


def readme_first_request(readme: str, port: int) -> str:
    """The README's first `curl` command, pointed at this port."""
    command = re.search(r"^curl -s localhost:8000/api/v1/executions.*?'\n", readme, re.S | re.M)
    assert command, "the README shows a first request"
    return command.group(0).replace("localhost:8000", f"localhost:{port}")


def stack_processes(clone: Path) -> list[str]:
    marker = f"SANDBOXCTL_ROOT={clone}".encode()
    found = []
    for entry in Path("/proc").iterdir():
        try:
            if entry.name.isdigit() and marker in (entry / "environ").read_bytes().split(b"\0"):
                found.append(f"{entry.name} {(entry / 'cmdline').read_bytes()[:120]!r}")
        except OSError:
            continue
    return found


def site_of(clone: Path, env: dict) -> str:
    command = [str(clone / ".venv/bin/python"), "-c",
               "import django, os; os.environ['DJANGO_SETTINGS_MODULE'] = 'sandboxctl.settings'; django.setup(); "
               "from django.conf import settings; print(settings.SANDBOX_SITE)"]
    return subprocess.run(command, cwd=clone, env=env, capture_output=True, text=True, check=True).stdout.strip()


def wait_ready(url: str, process: subprocess.Popen, log: Path, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            if requests.get(f"{url}/readyz", timeout=5).status_code == 200:
                return
        except requests.RequestException:
            pass
        tail = log.read_text(errors="replace")[-4000:]
        assert process.poll() is None, f"make run exited with {process.returncode}:\n{tail}"
        assert time.monotonic() < deadline, f"/readyz not 200 within {timeout}s:\n{tail}"
        time.sleep(1)


@pytest.fixture(scope="module")
def clone(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("newcomer") / "sandboxctl"
    subprocess.run(["git", "clone", "-q", str(ROOT), str(folder)], check=True, timeout=120)
    return folder


def make_run(clone: Path, env: dict, log: Path) -> subprocess.Popen:
    with open(log, "ab") as output:
        # Its own process group, as a terminal gives a foreground job: Ctrl-C goes to the whole group.
        return subprocess.Popen(["make", "run"], cwd=clone, env=env, stdout=output, stderr=subprocess.STDOUT,
                                start_new_session=True)


def test_a_fresh_clone_comes_up_with_make_run_and_stops_clean_on_ctrl_c(clone, tmp_path):
    port, ragflow_port = free_port(), free_port()
    env = newcomer_environment(port, ragflow_port)
    log = tmp_path / "make-run.log"
    process = make_run(clone, env, log)
    site = None
    try:
        wait_ready(f"http://127.0.0.1:{port}", process, log, timeout=900)
        site = site_of(clone, env)

        answer = subprocess.run(["bash", "-c", readme_first_request((clone / "README.md").read_text(), port)],
                                capture_output=True, text=True, timeout=120)
        assert '"status":"succeeded"' in answer.stdout.replace(" ", ""), answer.stdout + answer.stderr
        assert '"value":{"name":"x","flag":true}' in answer.stdout.replace(" ", ""), answer.stdout

        code = base64.b64encode(b"def main():\n    print('hello from RAGFlow')\n    return 42\n").decode()
        ragflow = requests.post(f"http://127.0.0.1:{ragflow_port}/run", timeout=120,
                                json={"code_b64": code, "language": "python", "arguments": {}}).json()
        assert (ragflow["status"], ragflow["stdout"]) == ("success", "hello from RAGFlow\n"), ragflow
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGINT)
        try:
            process.wait(150)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            raise AssertionError(f"make run did not stop on Ctrl-C:\n{log.read_text()[-3000:]}") from None
    assert stack_processes(clone) == [], "no process of the stack outlives Ctrl-C"
    sandboxes = RunscBackend(SandboxConfig(), site, "newcomer-observer").find()
    assert sandboxes == [], "no sandbox of the stack outlives Ctrl-C"
    dockerd = subprocess.run(["pidof", "dockerd"], capture_output=True, text=True).stdout.split()
    # setup.sh (run by `make test` before this suite, and by `make run`) starts dockerd in a session of its own:
    # a Ctrl-C or a kill of the shell's job never reaches it.
    assert all(os.getsid(int(pid)) != os.getsid(0) for pid in dockerd), "dockerd is detached from its starter"


def test_a_hard_kill_of_make_run_leaves_nothing_and_the_next_start_comes_up(clone, tmp_path):
    """Issue 30, item 8: SIGKILL on `make run`'s process group (a closed terminal, the OOM killer) left 19
    processes of the stack running — its broker, workers, web server and sandboxes — and their ports taken."""
    port, ragflow_port = free_port(), free_port()
    env = newcomer_environment(port, ragflow_port)
    log = tmp_path / "make-run.log"
    process = make_run(clone, env, log)
    try:
        wait_ready(f"http://127.0.0.1:{port}", process, log, timeout=600)
        site = site_of(clone, env)
        sleeper = requests.post(f"http://127.0.0.1:{port}/api/v1/executions", timeout=30, headers={
            "Authorization": f"Bearer {TOKEN}"}, json={"language": "python", "wait": False,
                                                      "code": "import time\ndef main():\n    time.sleep(60)"})
        assert sleeper.status_code == 202, sleeper.text
        deadline = time.monotonic() + 30
        while requests.get(f"http://127.0.0.1:{port}/api/v1/executions/{sleeper.json()['id']}", timeout=10,
                           headers={"Authorization": f"Bearer {TOKEN}"}).json()["status"] != "running":
            assert time.monotonic() < deadline, "the run did not start"
            time.sleep(0.5)
    finally:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait(30)
    deadline = time.monotonic() + 120
    while stack_processes(clone):
        assert time.monotonic() < deadline, f"left running after a hard kill: {stack_processes(clone)}"
        time.sleep(1)
    assert RunscBackend(SandboxConfig(), site, "newcomer-observer").find() == [], "no sandbox outlives it"
    # The same ports, the same data folder: the next start comes up.
    again = make_run(clone, env, log)
    try:
        wait_ready(f"http://127.0.0.1:{port}", again, log, timeout=300)
    finally:
        os.killpg(again.pid, signal.SIGINT)
        again.wait(150)
    assert stack_processes(clone) == []

"""Shared fixtures: a real Celery worker (threads pool, real runsc sandboxes) on the test database and Redis.

Two tiers: tests/unit/ is the fast tier (`make test-fast`: SQLite, no root, Docker or network); every other
test is marked `stack` here and needs the real things that `make test` starts.
"""

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import requests
from django.core.management.base import CommandError
from django.db import connection
from django.test import TransactionTestCase

from executor.config import IO_QUEUES, SANDBOX_QUEUES
from sandboxctl.executions.models import ApiToken

ROOT = Path(__file__).resolve().parent.parent
WORKER_NAME = "pytest-worker@localhost"
# Test receivers listen on 127.0.0.2, the one private address callbacks may reach in tests; 127.0.0.1
# stays forbidden, so the SSRF tests see what a deployment sees.
CALLBACK_TEST_NETWORK = "127.0.0.2/32"


def _flush_with_retries(original):
    """Between tests the database is emptied with TRUNCATE while the live worker keeps working (heartbeats,
    admissions); PostgreSQL may pick the TRUNCATE as a deadlock's victim. Try again, as the worker would."""

    def flush(self):
        for attempt in range(5):
            try:
                return original(self)
            except CommandError:
                if attempt == 4:
                    raise
                connection.close()
                time.sleep(0.2)

    return flush


@pytest.fixture(scope="session", autouse=True)
def flush_retries_on_postgres(django_db_setup):
    """Only the stack tier (PostgreSQL, a live worker) needs the retry; the fast tier keeps Django's own."""
    if connection.vendor != "postgresql":
        yield
        return
    original = TransactionTestCase._fixture_teardown
    TransactionTestCase._fixture_teardown = _flush_with_retries(original)
    yield
    TransactionTestCase._fixture_teardown = original

UNIT_TESTS = Path(__file__).resolve().parent / "unit"


def pytest_collection_modifyitems(config, items) -> None:
    for item in items:
        if UNIT_TESTS not in Path(item.fspath).parents:
            item.add_marker(pytest.mark.stack)


def worker_env(database_name: str, **extra: str) -> dict:
    env = dict(os.environ)
    url = os.environ.get("DATABASE_URL", "")
    if url.startswith("postgres"):
        env["DATABASE_URL"] = url.rsplit("/", 1)[0] + "/" + database_name
    env.update(
        SANDBOX_POOL_SIZE_PYTHON="2",
        SANDBOX_POOL_SIZE_NODEJS="1",
        SANDBOX_POOL_ACQUIRE_TIMEOUT="20",
        DATABASE_CONN_MAX_AGE="0",
        SANDBOX_CALLBACK_ALLOWED_NETWORKS=CALLBACK_TEST_NETWORK,
        PYTHONUNBUFFERED="1",
    )
    env.update(extra)
    return env


def start_worker(name: str, env: dict, log_path: Path, queues: str) -> subprocess.Popen:
    command = [
        # Threads: SANDBOX_WORKER_CONCURRENCY, as the web side's admission counts them (admission.capacity).
        sys.executable, "-m", "celery", "-A", "sandboxctl", "worker", "-P", "threads",
        "-n", name, "-Q", queues, "--loglevel", "INFO", "--without-gossip", "--without-mingle",
    ]
    log = open(log_path, "w")
    return subprocess.Popen(command, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)


def stop_worker(process: subprocess.Popen, timeout: float = 60) -> int:
    process.send_signal(signal.SIGTERM)
    try:
        return process.wait(timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        return process.wait()


@pytest.fixture(scope="session")
def egress_ca(tmp_path_factory):
    """The private CA of the egress tests' HTTPS upstreams, which the session's worker trusts as an operator's
    extra bundle (tests/egress_servers.py)."""
    from tests.egress_servers import TestCA

    return TestCA(tmp_path_factory.mktemp("egress-ca"))


def egress_test_env(ca) -> dict:
    """The egress proxy may reach the test upstreams' 127.0.0.3 (127.0.0.1 stays refused, as in a deployment)
    and resolves the test names without DNS (tests/egress_servers.py)."""
    from tests.egress_servers import TEST_NETWORK, resolve_setting

    return {"SANDBOX_EGRESS_ALLOWED_NETWORKS": TEST_NETWORK, "SANDBOX_EGRESS_RESOLVE": resolve_setting(),
            "SANDBOX_EGRESS_CA_BUNDLE": str(ca.ca_file)}


@pytest.fixture(scope="session")
def sandbox_worker(django_db_setup, django_db_blocker, tmp_path_factory, egress_ca):
    """One worker for the whole session, consuming every queue, with a warm pool per language."""
    if not os.environ.get("CELERY_BROKER_URL", "").startswith("redis"):
        pytest.fail("the suite needs CELERY_BROKER_URL=redis://… (make test sets it)")
    import redis

    redis.Redis.from_url(os.environ["CELERY_BROKER_URL"]).flushdb()
    log_path = tmp_path_factory.mktemp("worker") / "worker.log"
    env = worker_env(connection.settings_dict["NAME"], **egress_test_env(egress_ca))
    process = start_worker(WORKER_NAME, env, log_path, ",".join((*SANDBOX_QUEUES, *IO_QUEUES)))
    try:
        with django_db_blocker.unblock():
            wait_for_warm_pool(process, log_path)
        yield process
    finally:
        stop_worker(process)


@pytest.fixture(scope="session", autouse=True)
def close_stray_connections(django_db_setup, django_db_blocker):
    """The web side's LISTEN connection lives in a daemon thread; close it so the test database can go."""
    yield
    if connection.vendor != "postgresql":
        return
    with django_db_blocker.unblock(), connection.cursor() as cursor:
        cursor.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
            "WHERE datname = current_database() AND pid <> pg_backend_pid()"
        )


def latest_beat(node_name: str):
    """The heartbeat of the newest instance of the worker started as `node_name` (instances add a boot id)."""
    from providers.models import WorkerHeartbeat

    return WorkerHeartbeat.objects.filter(worker__startswith=f"{node_name}#").order_by("-seen_at").first()


def wait_for_warm_pool(process: subprocess.Popen, log_path: Path, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            pytest.fail(f"worker exited early:\n{log_path.read_text()[-3000:]}")
        beat = latest_beat(WORKER_NAME)
        if beat and beat.pool_depth.get("python", 0) >= 1 and beat.pool_depth.get("nodejs", 0) >= 1:
            return
        time.sleep(0.3)
    pytest.fail(f"worker pool did not warm up:\n{log_path.read_text()[-3000:]}")


@pytest.fixture
def user(transactional_db, django_user_model):
    return django_user_model.objects.create_user("agent", password="agent-password-1")


@pytest.fixture
def token(user) -> str:
    return ApiToken.issue(user, name="test")[1]


class Api:
    """A real HTTP client for the live server, authenticated with a token."""

    def __init__(self, base_url: str, token: str | None) -> None:
        self.base_url = base_url
        self.session = requests.Session()
        if token:
            self.session.headers["Authorization"] = f"Bearer {token}"

    def request(self, method: str, path: str, **kwargs) -> requests.Response:
        kwargs.setdefault("timeout", 120)
        return self.session.request(method, self.base_url + path, **kwargs)

    def get(self, path: str, **kwargs) -> requests.Response:
        return self.request("GET", path, **kwargs)

    def post(self, path: str, **kwargs) -> requests.Response:
        return self.request("POST", path, **kwargs)

    def run(self, code: str, language: str = "python", arguments: dict | None = None, **fields) -> dict:
        body = {"language": language, "code": code, "arguments": arguments or {}, **fields}
        response = self.post("/api/v1/executions", json=body)
        assert response.status_code == 200, response.text
        return response.json()


@pytest.fixture
def api(live_server, token, sandbox_worker) -> Api:
    return Api(live_server.url, token)


@pytest.fixture
def anonymous(live_server) -> Api:
    return Api(live_server.url, None)


@pytest.fixture
def staff_user(transactional_db, django_user_model):
    return django_user_model.objects.create_user(
        "operator", password="operator-password-1", is_staff=True, is_superuser=True
    )


@pytest.fixture
def staff_api(live_server, staff_user) -> Api:
    return Api(live_server.url, ApiToken.issue(staff_user, name="staff")[1])


@pytest.fixture
def agentrun_fake():
    from tests.fakes.agentrun import FakeAgentRun

    server = FakeAgentRun("LTAI-test-key")
    yield server
    server.stop()


@pytest.fixture
def e2b_fake():
    from tests.fakes.e2b import FakeE2B

    server = FakeE2B("e2b_test_key_0001")
    yield server
    server.stop()


def aliyun_settings(endpoint: str, **overrides) -> dict:
    return {
        "access_key_id": "LTAI-test-key", "access_key_secret": "aliyun-secret-9876", "account_id": "1234567890",
        "region": "cn-hangzhou", "template_name": "sandboxctl-python", "timeout": 20, "data_endpoint": endpoint,
        "control_endpoint": endpoint, **overrides,
    }


def e2b_settings(url: str, **overrides) -> dict:
    return {"api_key": "e2b_test_key_0001", "domain": "e2b.test", "template": "code-interpreter-v1", "timeout": 30,
            "api_url": url, "sandbox_url": url, **overrides}


class SaaS:
    """One SaaS provider wired to its local fake, for tests that hold for every SaaS provider."""

    def __init__(self, name: str, fake) -> None:
        self.name, self.fake = name, fake

    def settings(self, **overrides) -> dict:
        builder = e2b_settings if self.name == "e2b" else aliyun_settings
        return builder(self.fake.url, **overrides)

    def provider(self, **overrides):
        from providers.registry import provider_class

        instance = provider_class(self.name)()
        instance.initialize(self.settings(**overrides))
        return instance

    def alive(self) -> list[str]:
        return list(self.fake.sandboxes)

    def bad_credentials(self) -> dict:
        return {"api_key": "e2b_wrong_key"} if self.name == "e2b" else {"access_key_id": "LTAI-wrong"}


@pytest.fixture(params=["e2b", "aliyun_codeinterpreter"])
def saas(request) -> SaaS:
    fixture = "e2b_fake" if request.param == "e2b" else "agentrun_fake"
    return SaaS(request.param, request.getfixturevalue(fixture))


CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
    "--disable-component-update", "--disable-sync",
]


@pytest.fixture
def signed_in_browser(live_server, transactional_db, django_user_model, request, tmp_path, monkeypatch):
    """open(path, width=1280) → a page of a signed-in superuser in headless Chromium. Each page's screenshot
    is kept at the end (copied to SANDBOXCTL_SCREENSHOT_DIR when set)."""
    from playwright.sync_api import sync_playwright

    # Playwright's sync API runs an event loop in this thread; the ORM calls in tests are still synchronous.
    monkeypatch.setenv("DJANGO_ALLOW_ASYNC_UNSAFE", "true")
    django_user_model.objects.create_superuser("admin", "admin@example.com", "admin-password-1")
    pages = []
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)

        def open_page(path: str, width: int = 1280):
            page = browser.new_page(viewport={"width": width, "height": 1000})
            page.set_default_timeout(30_000)
            page.goto(f"{live_server.url}/admin/login/?next={path}")
            page.fill("#id_username", "admin")
            page.fill("#id_password", "admin-password-1")
            page.click("input[type=submit]")
            page.wait_for_load_state()
            pages.append(page)
            return page

        yield open_page
        target = os.environ.get("SANDBOXCTL_SCREENSHOT_DIR")
        for number, page in enumerate(pages):
            name = f"{request.node.name}-{number}.png".replace("/", "_").replace("[", "_").replace("]", "")
            page.screenshot(path=str(tmp_path / name), full_page=True)
            if target:
                shutil.copy(tmp_path / name, Path(target) / name)
        browser.close()


@pytest.fixture
def browser_page(signed_in_browser):
    page = signed_in_browser("/admin/sandbox-settings/")
    page.wait_for_selector(".card[data-provider=self_managed]")
    return page

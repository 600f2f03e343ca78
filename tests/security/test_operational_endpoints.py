"""Operational endpoints answer anyone only what anyone may know: /readyz's status (its detail needs the
metrics token or a staff session), /metrics only with its token unless made public, the schema and docs only
with a token; none of them on RAGFlow's port. The admin sign-in is throttled; big code is shown plain."""

import time

import pytest
import requests

from sandboxctl.executions.models import Execution

DETAIL = ("warm_sandboxes", "runtimes", "database", "broker", "problems")


def test_readyz_tells_anyone_only_its_status(anonymous, transactional_db, settings):
    settings.SANDBOXCTL_METRICS_TOKEN = "metrics-secret"
    response = anonymous.get("/readyz")
    assert response.status_code in (200, 503)
    assert set(response.json()) == {"status", "checked_at"}


def test_readyz_detail_needs_the_metrics_token(anonymous, transactional_db, settings):
    settings.SANDBOXCTL_METRICS_TOKEN = "metrics-secret"
    assert "runtimes" not in anonymous.get("/readyz", headers={"Authorization": "Bearer wrong"}).json()
    body = anonymous.get("/readyz", headers={"Authorization": "Bearer metrics-secret"}).json()
    assert all(key in body for key in DETAIL), body


def test_readyz_detail_for_a_staff_session_but_not_a_service_account(live_server, staff_user, user, settings,
                                                                      clear_login_counts):
    settings.SANDBOXCTL_METRICS_TOKEN = ""
    staff, status = signed_in(live_server, "operator", "operator-password-1")
    assert status == 302
    assert "warm_sandboxes" in staff.get(f"{live_server.url}/readyz", timeout=30).json()
    agent, _ = signed_in(live_server, "agent", "agent-password-1")  # not staff: the admin refuses it anyway
    assert set(agent.get(f"{live_server.url}/readyz", timeout=30).json()) == {"status", "checked_at"}


def test_metrics_are_closed_without_a_token_configured(anonymous, transactional_db, settings):
    settings.SANDBOXCTL_METRICS_TOKEN = ""
    response = anonymous.get("/metrics")
    assert response.status_code == 401
    assert "SANDBOXCTL_METRICS_TOKEN" in response.json()["detail"]


def test_metrics_can_be_made_public_explicitly(anonymous, transactional_db, settings):
    settings.SANDBOXCTL_METRICS_TOKEN = "public"
    response = anonymous.get("/metrics")
    assert response.status_code == 200 and "sandboxctl_executions" in response.text


@pytest.mark.parametrize("path", ["/api/schema/", "/api/docs/"])
def test_schema_and_docs_need_a_token(anonymous, live_server, token, path):
    assert anonymous.get(path).status_code == 401
    from conftest import Api

    assert Api(live_server.url, token).get(path).status_code == 200


@pytest.mark.parametrize("path", ["/readyz", "/metrics", "/api/schema/", "/api/docs/"])
def test_nothing_operational_is_served_on_ragflows_port(live_server, transactional_db, settings, path):
    # The live server's port plays RAGFlow's: the middleware answers by the port a request came in on.
    settings.RAGFLOW_PORT = int(live_server.url.rsplit(":", 1)[1])
    settings.SANDBOXCTL_METRICS_TOKEN = "public"
    assert requests.get(live_server.url + path, timeout=30).status_code == 404


def signed_in(live_server, username: str, password: str) -> tuple[requests.Session, int]:
    session = requests.Session()
    session.get(f"{live_server.url}/admin/login/", timeout=30)
    response = session.post(f"{live_server.url}/admin/login/", allow_redirects=False, timeout=30, data={
        "username": username, "password": password, "csrfmiddlewaretoken": session.cookies.get("csrftoken")})
    return session, response.status_code


def sign_in(live_server, username: str, password: str) -> int:
    return signed_in(live_server, username, password)[1]


@pytest.fixture
def clear_login_counts():
    from django.core.cache import cache

    from sandboxctl.console.login_throttle import failure_keys

    def clear() -> None:
        for name in ("operator", "agent", *(f"someone-{number}" for number in range(6))):
            for source in ("127.0.0.1", *ELSEWHERE):
                cache.delete_many(failure_keys(name, source))

    clear()
    yield
    clear()


def test_admin_sign_in_is_throttled_per_user(live_server, staff_user, settings, clear_login_counts):
    settings.SANDBOXCTL_LOGIN_FAILURES_PER_USER = 5
    for _ in range(5):
        assert sign_in(live_server, "operator", "wrong-guess") == 200  # the form again, with an error
    assert sign_in(live_server, "operator", "wrong-guess") == 429
    assert sign_in(live_server, "operator", "operator-password-1") == 429, "the right password waits too"


def test_admin_sign_in_is_throttled_per_source(live_server, staff_user, settings, clear_login_counts):
    settings.SANDBOXCTL_LOGIN_FAILURES_PER_USER = 100
    settings.SANDBOXCTL_LOGIN_FAILURES_PER_SOURCE = 6
    for number in range(6):
        assert sign_in(live_server, f"someone-{number}", "guess") == 200
    assert sign_in(live_server, "operator", "operator-password-1") == 429


ELSEWHERE = [f"198.51.100.{number}" for number in range(1, 8)]  # sources other than the operator's


def sign_in_from(client, source: str, password: str) -> int:
    return client.post("/admin/login/", {"username": "operator", "password": password}, REMOTE_ADDR=source).status_code


def test_failures_from_elsewhere_do_not_lock_the_operator_out(client, staff_user, settings, clear_login_counts):
    settings.SANDBOXCTL_LOGIN_FAILURES_PER_USER = 5
    for _ in range(5):
        assert sign_in_from(client, ELSEWHERE[0], "wrong-guess") == 200
    for _ in range(3):
        assert sign_in_from(client, ELSEWHERE[0], "operator-password-1") == 429, "the guesser stays refused"
    assert sign_in_from(client, ELSEWHERE[1], "operator-password-1") == 302, "the operator still signs in"


def test_a_guesser_spread_over_addresses_gets_one_guess_per_address(client, staff_user, settings,
                                                                    clear_login_counts):
    settings.SANDBOXCTL_LOGIN_FAILURES_PER_USER_ANYWHERE = 3
    for source in ELSEWHERE[:3]:
        assert sign_in_from(client, source, "wrong-guess") == 200
    for source in ELSEWHERE[:3]:
        assert sign_in_from(client, source, "operator-password-1") == 429, "no second guess past the user's limit"
    assert sign_in_from(client, ELSEWHERE[4], "operator-password-1") == 302, "an address that never failed signs in"


def test_a_correct_sign_in_below_the_limit_works(live_server, staff_user, clear_login_counts):
    assert sign_in(live_server, "operator", "wrong") == 200
    assert sign_in(live_server, "operator", "operator-password-1") == 302


def test_huge_code_is_shown_without_highlighting(live_server, staff_user, user, clear_login_counts):
    code = ("(" * 1000 + "\n") * 1000
    execution = Execution.objects.create(caller=user, language="python", code=code, status="succeeded")
    session, _ = signed_in(live_server, "operator", "operator-password-1")
    started = time.monotonic()
    response = session.get(f"{live_server.url}/admin/executions/execution/{execution.pk}/change/", timeout=60)
    assert response.status_code == 200
    assert time.monotonic() - started < 5, "a 1 MB code is not fed to the highlighter"
    assert '<pre class="run-code" tabindex="0">((((' in response.text

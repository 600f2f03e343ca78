"""SaaS service failures: one taxonomy for every provider, mapped from HTTP status and SDK exception types,
bounded retries for what may pass, deadlines kept by us, and health checks that mean something."""

import inspect
import json
import time

import pytest

from providers import saas as saas_module
from providers.base import Limits, ProviderError, Status
from tests.fakes.base import HTML_ERROR

LIMITS = Limits(timeout=3, memory_mb=256, output_limit=1024 * 1024)
HELLO = "def main():\n    return 'hello'"


def failure_of(provider, code: str = HELLO) -> ProviderError:
    with pytest.raises(ProviderError) as caught:
        provider.run(code, "python", LIMITS, {})
    assert str(caught.value) and "\n" not in str(caught.value), "a one-line reason"
    return caught.value


@pytest.fixture(autouse=True)
def quick_backoff(monkeypatch):
    monkeypatch.setattr(saas_module, "BACKOFF", (0.05, 0.1))


@pytest.mark.parametrize(
    ("fault", "code"),
    [
        ({"status": 401}, "credentials_rejected"),
        ({"status": 403}, "credentials_rejected"),
        ({"status": 429, "headers": {"Retry-After": "0"}}, "rate_limited"),
        ({"status": 500}, "service_unavailable"),
        ({"status": 503}, "service_unavailable"),
        ({"status": 503, "body": HTML_ERROR, "content_type": "text/html"}, "service_unavailable"),
        ({"status": 401, "body": HTML_ERROR, "content_type": "text/html"}, "credentials_rejected"),
        ({"status": 200, "body": b"{\"truncated\": ", "content_type": "application/json"}, "bad_response"),
        ({"status": 200, "body": ["a", "list"]}, "bad_response"),
        ({"status": 200, "body": b"<html>ok</html>", "content_type": "text/html"}, "bad_response"),
    ],
)
def test_create_failures_map_to_one_taxonomy(saas, fault, code):
    saas.fake.fail("create", **fault)
    assert failure_of(saas.provider()).code == code
    assert saas.alive() == []


def test_rejected_credentials_say_so_and_are_not_retried(saas):
    error = failure_of(saas.provider(**saas.bad_credentials()))
    assert error.code == "credentials_rejected" and "credentials" not in saas.fake.faults
    creates = [path for verb, path, _, _ in saas.fake.requests if verb == "POST" and "execute" not in path]
    assert len(creates) == 1


def test_rate_limits_and_unavailability_are_retried_then_succeed(saas):
    saas.fake.fail("create", status=429, headers={"Retry-After": "0"}, times=1)
    assert saas.provider().run(HELLO, "python", LIMITS, {}).status == Status.SUCCEEDED
    saas.fake.fail("create", status=503, times=2)
    assert saas.provider().run(HELLO, "python", LIMITS, {}).status == Status.SUCCEEDED


def test_retries_are_bounded(saas):
    saas.fake.fail("create", status=503)
    failure_of(saas.provider())
    creates = [path for verb, path, _, _ in saas.fake.requests if verb == "POST" and "execute" not in path]
    assert len(creates) == saas_module.ATTEMPTS


@pytest.mark.parametrize(
    ("fault", "code"),
    [
        ({"status": 401}, "credentials_rejected"),
        ({"status": 429}, "rate_limited"),
        ({"status": 500}, "service_unavailable"),
        ({"status": 503, "body": HTML_ERROR, "content_type": "text/html"}, "service_unavailable"),
        ({"status": 404}, "sandbox_lost"),
        ({"status": 200, "body": b"not json at all", "content_type": "text/plain"}, "bad_response"),
    ],
)
def test_execute_failures_are_service_faults_never_the_users_outcome(saas, fault, code):
    saas.fake.fail("execute", **fault)
    assert failure_of(saas.provider()).code == code
    assert saas.alive() == [], "the sandbox is deleted whatever happened"


def test_a_sandbox_gone_mid_run_is_sandbox_lost(saas):
    if saas.name == "e2b":
        saas.fake.fail("execute", status=502, body=b"sandbox timeout", content_type="text/plain")
    else:
        saas.fake.fail("execute", status=404, body={"code": "SandboxNotFound", "message": "gone"})
    assert failure_of(saas.provider()).code == "sandbox_lost"


def test_an_interpreter_stopped_by_the_service_at_its_limit_is_a_timeout(saas):
    saas.fake.execute_mode = "interrupt" if saas.name == "e2b" else "timeout"
    result = saas.provider().run("while True:\n    pass", "python", LIMITS, {})
    assert (result.status, result.error_code) == (Status.TIMEOUT, "timeout")


def test_a_service_that_stops_answering_ends_the_run_on_time(saas):
    if saas.name == "e2b":
        saas.fake.execute_mode = "stall"
    else:
        saas.fake.fail("execute", status=None, delay=40)
    started = time.monotonic()
    result = saas.provider().run(HELLO, "python", Limits(timeout=2, memory_mb=256, output_limit=1024), {})
    elapsed = time.monotonic() - started
    assert result.status == Status.TIMEOUT
    assert elapsed < 2 + saas_module.EXECUTE_GRACE + 3, elapsed


def test_a_create_answer_without_an_id_is_a_bad_response(saas):
    body = ({"templateID": "x", "clientID": "fake", "envdVersion": "0.2.4"} if saas.name == "e2b"
            else {"code": "SUCCESS", "data": {"status": "READY"}})
    saas.fake.fail("create", status=201 if saas.name == "e2b" else 200, body=body)
    assert failure_of(saas.provider()).code == "bad_response"


def test_no_raw_exception_escapes_on_an_unreachable_service(saas):
    provider = saas.provider(**({"api_url": "http://127.0.0.1:9", "sandbox_url": "http://127.0.0.1:9"}
                                if saas.name == "e2b" else {"data_endpoint": "http://127.0.0.1:9"}))
    assert failure_of(provider).code == "service_unavailable"


# Health: an authenticated, cheap call against the host runs use; never a sandbox.


def test_health_is_an_authenticated_call_that_creates_nothing(saas):
    health = saas.provider().health_check()
    assert health.healthy and health.latency_ms is not None
    assert saas.alive() == [] and saas.fake.requests, "it asked the service"


def test_health_names_rejected_credentials(saas):
    health = saas.provider(**saas.bad_credentials()).health_check()
    assert not health.healthy and health.reason.startswith("credentials rejected")


@pytest.mark.parametrize("status", [500, 503])
def test_health_names_an_unavailable_service(saas, status):
    saas.fake.fail("list" if saas.name == "e2b" else "get", status=status)
    health = saas.provider().health_check()
    assert not health.healthy and health.reason.startswith("service unavailable")


def test_health_of_an_unconfigured_provider(saas):
    from providers.registry import provider_class

    health = provider_class(saas.name)().health_check()
    assert (health.healthy, health.reason) == (False, "not configured")


# AgentRun specifics.


def test_agentrun_waits_for_the_sandbox_to_be_healthy_before_executing(agentrun_fake):
    from tests.conftest import SaaS

    agentrun_fake.not_ready_polls = 3
    result = SaaS("aliyun_codeinterpreter", agentrun_fake).provider().run(HELLO, "python", LIMITS, {})
    assert result.status == Status.SUCCEEDED and not agentrun_fake.executed_before_ready
    assert len([path for path in agentrun_fake.paths("GET") if path.endswith("/health")]) == 4


def test_agentrun_reads_the_flat_reply_shape_too(agentrun_fake):
    from tests.conftest import SaaS

    agentrun_fake.execute_mode = "flat"
    result = SaaS("aliyun_codeinterpreter", agentrun_fake).provider().run(HELLO, "python", LIMITS, {})
    assert (result.status, result.result_value) == (Status.SUCCEEDED, "hello")


def test_agentrun_timeout_is_sent_in_seconds_as_the_sdk_documents(agentrun_fake):
    import json

    from agentrun.sandbox.api import CodeInterpreterDataAPI

    from providers.aliyun_codeinterpreter import SERVICE_TIMEOUT_CAP
    from tests.conftest import SaaS

    # The SDK's default execute timeout is the service's per-run limit, 30: seconds, not milliseconds.
    assert inspect.signature(CodeInterpreterDataAPI.execute_code).parameters["timeout"].default == SERVICE_TIMEOUT_CAP
    SaaS("aliyun_codeinterpreter", agentrun_fake).provider().run(
        HELLO, "python", Limits(timeout=7.5, memory_mb=256, output_limit=1024), {})
    body = next(json.loads(body) for _, path, _, body in agentrun_fake.requests if path.endswith("/execute"))
    assert body["timeout"] == 10  # ceil(7.5) + 2 s for the driver to report its own timeout first


def test_agentrun_without_a_template_finds_or_creates_the_default_per_language(agentrun_fake):
    from tests.conftest import SaaS

    agentrun_fake.template_creating_polls = 2  # a new template takes a moment to become ready
    provider = SaaS("aliyun_codeinterpreter", agentrun_fake).provider(template_name="")
    assert provider.run(HELLO, "python", LIMITS, {}).status == Status.SUCCEEDED
    assert provider.run("function main() { return 1; }", "nodejs", LIMITS, {}).status == Status.SUCCEEDED
    assert set(agentrun_fake.templates) == {"sandboxctl-python-default", "sandboxctl-nodejs-default"}
    assert all(template["templateType"] == "CodeInterpreter" for template in agentrun_fake.templates.values())
    used = {sandbox["templateName"] for sandbox in agentrun_fake.sandboxes.values()} | {
        json.loads(body)["templateName"] for verb, path, _, body in agentrun_fake.requests
        if verb == "POST" and path.rstrip("/") == "/sandboxes"}
    assert used == {"sandboxctl-python-default", "sandboxctl-nodejs-default"}

    def template_creates() -> int:
        return len([path for verb, path, _, _ in agentrun_fake.requests if verb == "POST" and "templates" in path])

    again = SaaS("aliyun_codeinterpreter", agentrun_fake).provider(template_name="")
    before = template_creates()
    assert again.run(HELLO, "python", LIMITS, {}).status == Status.SUCCEEDED
    assert template_creates() == before, "an existing default template is found, not created again"


def test_agentrun_template_lookups_fail_clearly(agentrun_fake):
    from tests.conftest import SaaS

    agentrun_fake.fail("template", status=503)
    with pytest.raises(ProviderError) as caught:
        SaaS("aliyun_codeinterpreter", agentrun_fake).provider(template_name="").run(HELLO, "python", LIMITS, {})
    assert caught.value.code == "service_unavailable" and not agentrun_fake.sandboxes

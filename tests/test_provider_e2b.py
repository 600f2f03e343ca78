"""The E2B provider through the real e2b-code-interpreter SDK against a local fake of its API."""

import pytest

from providers.base import Limits, ProviderError, Status
from providers.e2b import E2BProvider
from tests.fakes.e2b import FakeE2B

API_KEY = "e2b_test_key_0001"
LIMITS = Limits(timeout=2, memory_mb=128, output_limit=1024 * 1024)
ARGUMENTS = {"flag": True, "nothing": None, "text": "héllo 日本", "nested": {"list": [1, {"deep": False}]}}


@pytest.fixture
def fake():
    server = FakeE2B(API_KEY)
    yield server
    server.stop()


def provider_for(url: str, **overrides) -> E2BProvider:
    provider = E2BProvider()
    provider.initialize({"api_key": API_KEY, "domain": "e2b.test", "template": "code-interpreter-v1",
                         "api_url": url, "sandbox_url": url, **overrides})
    return provider


def test_success_round_trips_arguments_and_kills_the_sandbox(fake):
    result = provider_for(fake.url).run("function main(args) { return args; }", "nodejs", LIMITS, ARGUMENTS)
    assert result.status == Status.SUCCEEDED
    assert result.result_value == ARGUMENTS
    assert result.stdout == "hello from the fake\n"
    assert len(fake.killed) == 1 and not fake.sandboxes


def test_arguments_are_never_pasted_into_the_program(fake):
    provider_for(fake.url).run("def main(**kwargs):\n    return kwargs", "python", LIMITS, ARGUMENTS)
    program = next(body for verb, path, _, body in fake.requests if path == "/execute")
    assert b"true" not in program and "日本".encode() not in program


def test_user_error_is_failed(fake):
    fake.mode = "user_error"
    result = provider_for(fake.url).run("def main():\n    raise ValueError('bad input')", "python", LIMITS, {})
    assert result.status == Status.FAILED
    assert result.error_code == "value_error"
    assert "ValueError: bad input" in result.stderr


def test_timeout_keeps_partial_output_and_kills_the_sandbox(fake):
    fake.mode = "timeout"
    result = provider_for(fake.url).run("while True:\n    pass", "python", LIMITS, {})
    assert result.status == Status.TIMEOUT
    assert result.stdout == "started\n"
    assert len(fake.killed) == 1


def test_rejected_api_key_is_reported_clearly(fake):
    with pytest.raises(ProviderError, match="credentials rejected") as error:
        provider_for(fake.url, api_key="e2b_wrong").run("def main():\n    return 1", "python", LIMITS, {})
    assert error.value.retryable is False


def test_server_errors_are_retryable(fake):
    fake.mode = "server_error"
    with pytest.raises(ProviderError, match="service error 502") as error:
        provider_for(fake.url).run("def main():\n    return 1", "python", LIMITS, {})
    assert error.value.retryable is True


def test_network_failure_is_retryable():
    with pytest.raises(ProviderError, match="cannot reach the service") as error:
        provider_for("http://127.0.0.1:9").run("def main():\n    return 1", "python", LIMITS, {})
    assert error.value.retryable is True


def test_environment_key_is_never_used(fake, monkeypatch):
    monkeypatch.setenv("E2B_API_KEY", "e2b_from_env")
    monkeypatch.setenv("E2B_API_URL", "http://127.0.0.1:9")
    assert provider_for(fake.url).run("def main():\n    return 1", "python", LIMITS, {}).status == Status.SUCCEEDED

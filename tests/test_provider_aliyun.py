"""The Aliyun AgentRun provider through the real agentrun-sdk against a local fake of its data plane."""

import json

import pytest

from providers.aliyun_codeinterpreter import AliyunCodeInterpreterProvider
from providers.base import Limits, ProviderError, Status
from tests.fakes.agentrun import FakeAgentRun

ACCESS_KEY_ID = "LTAI-test-key"
LIMITS = Limits(timeout=10, memory_mb=128, output_limit=1024 * 1024)
ARGUMENTS = {"flag": True, "nothing": None, "text": "héllo 日本", "nested": {"list": [1, {"deep": False}]}}


@pytest.fixture
def fake():
    server = FakeAgentRun(ACCESS_KEY_ID)
    yield server
    server.stop()


def provider_for(endpoint: str, **overrides) -> AliyunCodeInterpreterProvider:
    provider = AliyunCodeInterpreterProvider()
    provider.initialize({
        "access_key_id": ACCESS_KEY_ID, "access_key_secret": "secret-value-1234", "account_id": "1234567890",
        "region": "cn-shanghai", "template_name": "sandboxctl-python", "data_endpoint": endpoint, **overrides,
    })
    return provider


def test_success_round_trips_arguments_as_json_and_strips_the_marker(fake):
    result = provider_for(fake.url).run("def main(**kwargs):\n    return kwargs", "python", LIMITS, ARGUMENTS)
    assert result.status == Status.SUCCEEDED
    assert result.result_present and result.result_value == ARGUMENTS
    assert result.stdout == "hello from the fake\n"
    assert "__sandboxctl_" not in result.stdout
    assert result.exit_code == 0


def test_arguments_are_never_pasted_into_the_program(fake):
    provider_for(fake.url).run("def main(**kwargs):\n    return kwargs", "python", LIMITS, ARGUMENTS)
    program = next(body for verb, path, _, body in fake.requests if path.endswith("/contexts/execute"))
    assert b"true" not in program and "日本".encode() not in program and b"null" not in program


def test_each_run_gets_its_own_sandbox_which_is_deleted(fake):
    provider = provider_for(fake.url)
    provider.run("def main():\n    return 1", "python", LIMITS, {})
    provider.run("function main() { return 1; }", "nodejs", LIMITS, {})
    assert len(fake.deleted) == 2 and not fake.sandboxes
    bodies = [json.loads(body) for _, path, _, body in fake.requests if path.endswith("/contexts/execute")]
    assert [body["language"] for body in bodies] == ["python", "javascript"]


def test_user_error_is_failed_with_the_traceback(fake):
    fake.mode = "user_error"
    result = provider_for(fake.url).run("def main():\n    raise ValueError('bad input')", "python", LIMITS, {})
    assert result.status == Status.FAILED
    assert (result.error_code, result.error_message) == ("value_error", "ValueError: bad input")
    assert "ValueError: bad input" in result.stderr


def test_timeout_is_timeout_with_partial_output(fake):
    fake.mode = "timeout"
    result = provider_for(fake.url).run("while True:\n    pass", "python", LIMITS, {})
    assert result.status == Status.TIMEOUT
    assert result.stdout == "started\n"


def test_rejected_credentials_are_reported_clearly(fake):
    with pytest.raises(ProviderError, match="credentials rejected") as error:
        provider_for(fake.url, access_key_id="LTAI-wrong").run("def main():\n    return 1", "python", LIMITS, {})
    assert error.value.retryable is False
    assert not fake.sandboxes


def test_server_errors_are_retryable_sandbox_errors(fake):
    fake.mode = "server_error"
    with pytest.raises(ProviderError, match="service error 503") as error:
        provider_for(fake.url).run("def main():\n    return 1", "python", LIMITS, {})
    assert error.value.retryable is True


def test_network_failure_is_a_retryable_sandbox_error():
    with pytest.raises(ProviderError, match="cannot reach the service") as error:
        provider_for("http://127.0.0.1:9").run("def main():\n    return 1", "python", LIMITS, {})
    assert error.value.retryable is True


def test_environment_credentials_are_never_used(fake, monkeypatch):
    monkeypatch.setenv("AGENTRUN_ACCESS_KEY_ID", "LTAI-from-env")
    monkeypatch.setenv("AGENTRUN_DATA_ENDPOINT", "http://127.0.0.1:9")
    result = provider_for(fake.url).run("def main():\n    return 1", "python", LIMITS, {})
    assert result.status == Status.SUCCEEDED


def test_timeout_is_capped_at_the_service_limit(db):
    provider = provider_for("http://127.0.0.1:9", timeout=30)
    assert provider.limits_for(600, None).timeout == 30


def test_schema_validation_names_fields():
    errors = AliyunCodeInterpreterProvider.validate_config({"timeout": 31, "region": "mars-1"})
    assert errors["timeout"] == ["must be ≤ 30"]
    assert errors["region"][0].startswith("must be one of")
    assert errors["access_key_secret"] == ["is required"]


def test_health_check_creates_nothing(fake):
    assert provider_for(fake.url).health_check() is True
    assert not fake.sandboxes
    assert provider_for("http://127.0.0.1:9").health_check() is False

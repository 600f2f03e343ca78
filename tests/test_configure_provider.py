"""`manage.py configure_provider … --from-env`: the only reader of AGENTRUN_* / E2B_* variables."""

import pytest
from django.core.management import CommandError, call_command

from providers import config_store


def test_aliyun_from_env_is_validated_tested_saved_and_activated(agentrun_fake, monkeypatch, transactional_db):
    for name, value in {
        "AGENTRUN_ACCESS_KEY_ID": "LTAI-test-key", "AGENTRUN_ACCESS_KEY_SECRET": "aliyun-secret-9876",
        "AGENTRUN_ACCOUNT_ID": "1234567890", "AGENTRUN_REGION": "cn-beijing", "AGENTRUN_TEMPLATE_NAME": "tpl",
        "AGENTRUN_DATA_ENDPOINT": agentrun_fake.url,
    }.items():
        monkeypatch.setenv(name, value)
    call_command("configure_provider", "aliyun_codeinterpreter", "--from-env", "--activate")
    assert config_store.active_name() == "aliyun_codeinterpreter"
    assert config_store.load("aliyun_codeinterpreter")["region"] == "cn-beijing"
    assert agentrun_fake.deleted, "the test run happened"


def test_missing_variables_name_the_fields(monkeypatch, transactional_db):
    monkeypatch.delenv("E2B_API_KEY", raising=False)
    with pytest.raises(CommandError, match="api_key: is required"):
        call_command("configure_provider", "e2b", "--from-env")


def test_failed_test_run_saves_nothing(e2b_fake, monkeypatch, transactional_db):
    monkeypatch.setenv("E2B_API_KEY", "e2b_wrong_key")
    monkeypatch.setenv("E2B_API_URL", e2b_fake.url)
    monkeypatch.setenv("E2B_SANDBOX_URL", e2b_fake.url)
    with pytest.raises(CommandError, match="rejected the credentials"):
        call_command("configure_provider", "e2b", "--from-env")
    assert not config_store.load("e2b")

"""Settings from the environment: a bad value stops start-up naming the variable and the value."""

import pytest
from django.core.exceptions import ImproperlyConfigured

from sandboxctl import env


@pytest.mark.parametrize(("raw", "expected"), [("1", True), ("TRUE", True), ("yes", True), (" on ", True),
                                                ("0", False), ("false", False), ("No", False), ("off", False)])
def test_booleans(monkeypatch, raw, expected):
    monkeypatch.setenv("SANDBOX_TEST_FLAG", raw)
    assert env.env_bool("SANDBOX_TEST_FLAG") is expected


def test_unset_and_blank_take_the_default(monkeypatch):
    monkeypatch.delenv("SANDBOX_TEST_FLAG", raising=False)
    assert env.env_bool("SANDBOX_TEST_FLAG", True) is True
    monkeypatch.setenv("SANDBOX_TEST_FLAG", "  ")
    assert env.env_int("SANDBOX_TEST_FLAG", 7) == 7


@pytest.mark.parametrize(
    ("reader", "raw", "args"),
    [
        (env.env_bool, "ture", (False,)),
        (env.env_int, "ten", (1,)),
        (env.env_int, "1.5", (1,)),
        (env.env_float, "fast", (1.0,)),
        (env.env_rate, "100/fortnight", ("1/min",)),
        (env.env_choice, "kvmm", ("ptrace", ("ptrace", "kvm"))),
        (env.env_networks, "10.0.0.300/8", ("",)),
    ],
)
def test_a_bad_value_names_the_variable_and_the_value(monkeypatch, reader, raw, args):
    monkeypatch.setenv("SANDBOX_TEST_SETTING", raw)
    with pytest.raises(ImproperlyConfigured) as caught:
        reader("SANDBOX_TEST_SETTING", *args)
    assert "SANDBOX_TEST_SETTING" in str(caught.value) and repr(raw.strip().split(",")[0]) in str(caught.value)


def test_lists_and_networks(monkeypatch):
    monkeypatch.setenv("SANDBOX_TEST_SETTING", " a, ,b ")
    assert env.env_list("SANDBOX_TEST_SETTING") == ["a", "b"]
    monkeypatch.setenv("SANDBOX_TEST_SETTING", "10.0.0.0/8,::1")
    assert [str(net) for net in env.env_networks("SANDBOX_TEST_SETTING")] == ["10.0.0.0/8", "::1/128"]


def test_a_json_object_setting(monkeypatch):
    monkeypatch.setenv("SANDBOX_TEST_OPTIONS", '{"bucket_name": "runs"}')
    assert env.env_json_object("SANDBOX_TEST_OPTIONS", {}) == {"bucket_name": "runs"}
    monkeypatch.setenv("SANDBOX_TEST_OPTIONS", '["runs"]')
    with pytest.raises(ImproperlyConfigured, match="SANDBOX_TEST_OPTIONS"):
        env.env_json_object("SANDBOX_TEST_OPTIONS", {})

"""Switching the active provider changes where the next execution runs, without restarting anything."""

from conftest import aliyun_settings, e2b_settings
from sandboxctl.executions.models import Execution


def activate(staff_api, provider: str, config: dict) -> None:
    body = {"provider_type": provider, "config": config, "set_active": True}
    response = staff_api.request("PUT", "/api/v1/sandbox/config", json=body)
    assert response.status_code == 200, response.text


def test_next_execution_follows_the_switch(api, staff_api, e2b_fake, agentrun_fake):
    first = api.run("def main(x):\n    return x", arguments={"x": 1})
    assert first["provider"] == "self_managed" and first["result"]["value"] == 1

    activate(staff_api, "e2b", e2b_settings(e2b_fake.url))
    on_e2b = api.run("function main(args) { console.log('on e2b'); return args; }", language="nodejs",
                     arguments={"x": [True, None]})
    assert (on_e2b["provider"], on_e2b["status"]) == ("e2b", "succeeded")
    assert on_e2b["result"]["value"] == {"x": [True, None]}
    assert on_e2b["stdout"] == "on e2b\n"
    assert e2b_fake.killed and not e2b_fake.sandboxes
    row = Execution.objects.get(pk=on_e2b["id"])
    assert row.sandbox_id in e2b_fake.killed and row.sandbox_released, "the execution records its sandbox"

    activate(staff_api, "aliyun_codeinterpreter", aliyun_settings(agentrun_fake.url))
    on_aliyun = api.run("def main(**kwargs):\n    return kwargs", arguments={"y": "日本"})
    assert (on_aliyun["provider"], on_aliyun["result"]["value"]) == ("aliyun_codeinterpreter", {"y": "日本"})
    assert on_aliyun["limits"]["timeout"] <= 20, "the provider's own timeout cap applies"

    activate(staff_api, "self_managed", {})
    back = api.run("import os\ndef main():\n    return os.getuid()")
    assert (back["provider"], back["result"]["value"]) == ("self_managed", 65534)
    assert Execution.objects.filter(provider="e2b").count() == 1


def test_saas_failures_end_as_sandbox_error_with_the_reason(api, staff_api, e2b_fake):
    activate(staff_api, "e2b", e2b_settings(e2b_fake.url))
    e2b_fake.fail("create", status=401)
    body = api.run("def main():\n    return 1")
    assert body["status"] == "sandbox_error"
    assert body["error"]["code"] == "credentials_rejected"
    assert "credentials rejected" in body["error"]["message"]

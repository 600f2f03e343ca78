"""Egress on the SaaS providers, through their real SDKs against the local fakes: E2B is told the run's
allowlist as its network options (and a session's new one as an update before its next cell); AgentRun, which
has no per-host network rules, refuses a run with an allowlist with a 400 naming it."""

from conftest import aliyun_settings, e2b_settings
from providers import config_store
from sandboxctl.egress import policy
from sandboxctl.executions.models import Execution
from tests.session_client import cell, close, open_session
from tests.test_provider_switch import activate


def test_an_e2b_run_is_created_with_its_allowlist_and_everything_else_denied(api, user, staff_api, e2b_fake):
    activate(staff_api, "e2b", e2b_settings(e2b_fake.url))
    policy.set_ceiling(user, ["pypi", "*.github.com", "203.0.113.0/24:*"])
    body = api.run("def main():\n    return 1", network={"allow": ["pypi", "*.github.com", "203.0.113.0/24:443"]})
    assert (body["provider"], body["status"]) == ("e2b", "succeeded"), body
    created = e2b_fake.created[-1]
    assert created["allow_internet_access"] is False
    assert created["network"] == {"allowOut": ["pypi.org", "files.pythonhosted.org", "*.github.com", "203.0.113.0/24"],
                                  "denyOut": ["0.0.0.0/0"]}
    assert body["egress"] == [], "the service keeps its own record of connections"


def test_an_e2b_run_without_an_allowlist_gets_no_internet(api, user, staff_api, e2b_fake):
    activate(staff_api, "e2b", e2b_settings(e2b_fake.url))
    policy.set_ceiling(user, ["*:*"])
    api.run("def main():\n    return 1")
    created = e2b_fake.created[-1]
    assert created["allow_internet_access"] is False and "network" not in created


def test_an_e2b_session_changes_its_sandboxs_network_before_its_next_cell(api, user, staff_api, e2b_fake):
    activate(staff_api, "e2b", e2b_settings(e2b_fake.url))
    policy.set_ceiling(user, ["pypi", "*.github.com"])
    session = open_session(api, network={"allow": ["pypi"]})
    try:
        sandbox_id = e2b_fake.created[-1]["id"]
        assert e2b_fake.created[-1]["network"]["allowOut"] == ["pypi.org", "files.pythonhosted.org"]
        assert cell(api, session, "x = 1")["status"] == "succeeded"
        assert sandbox_id not in e2b_fake.networks, "an unchanged allowlist is not sent again"
        patched = api.request("PATCH", f"/api/v1/sessions/{session['id']}",
                              json={"network": {"allow": ["*.github.com"]}})
        assert patched.status_code == 200, patched.text
        assert cell(api, session, "y = 2")["status"] == "succeeded"
        assert e2b_fake.networks[sandbox_id] == [{"allowOut": ["*.github.com"], "denyOut": ["0.0.0.0/0"],
                                                  "allow_internet_access": False}]
    finally:
        close(api, session)


def test_agentrun_cannot_hold_a_sandbox_to_an_allowlist_and_says_so(api, user, agentrun_fake):
    config_store.save("aliyun_codeinterpreter", aliyun_settings(agentrun_fake.url), activate=True)
    policy.set_ceiling(user, ["pypi"])
    response = api.post("/api/v1/executions", json={"language": "python", "code": "x = 1",
                                                    "network": {"allow": ["pypi"]}})
    assert response.status_code == 400, response.text
    message = response.json()["network"][0]
    assert "(aliyun_codeinterpreter) cannot hold its sandboxes to an egress allowlist" in message
    assert not Execution.objects.exists()
    session = api.post("/api/v1/sessions", json={"language": "python", "network": {"allow": ["pypi"]}})
    assert session.status_code == 400 and "aliyun_codeinterpreter" in session.json()["network"][0]

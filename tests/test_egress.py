"""Controlled egress through the API: a run or session reaches what it asked for within its account's ceiling,
through the worker's proxy, and its answer records every connection. Upstreams are on 127.0.0.3 only
(tests/egress_servers.py); the session's worker trusts their private CA as an operator's extra bundle."""

import base64
import json

import pytest

from sandboxctl.egress import policy
from sandboxctl.executions.models import Execution
from tests.egress_servers import Upstream
from tests.session_client import cell, close, open_session


@pytest.fixture
def https_upstream(egress_ca):
    server = Upstream(egress_ca)
    yield server
    server.stop()


@pytest.fixture
def http_upstream():
    server = Upstream()
    yield server
    server.stop()


def fetch_json(url: str) -> str:
    return ("import requests\n"
            "def main():\n"
            f"    return requests.get({url!r}, timeout=10).json()\n")


def test_a_run_reaches_an_allowed_https_host_and_its_answer_records_it(api, user, https_upstream):
    policy.set_ceiling(user, ["upstream.test:*"])
    port = https_upstream.port
    body = api.run(fetch_json(https_upstream.url(path="/hello")), network={"allow": [f"upstream.test:{port}"]})
    assert body["status"] == "succeeded", body
    assert body["result"]["value"] == {"host": f"upstream.test:{port}", "path": "/hello", "body": "",
                                       "sni": "upstream.test"}
    [record] = body["egress"]
    assert {key: record[key] for key in ("host", "port", "allowed", "reason")} == {
        "host": "upstream.test", "port": port, "allowed": True, "reason": ""}
    assert record["bytes_out"] > 200 and record["bytes_in"] > 200  # a TLS handshake both ways, then the answer
    assert body["limits"]["egress"] == [f"upstream.test:{port}"]
    assert Execution.objects.get(pk=body["id"]).egress == body["egress"]


def test_a_refused_connection_writes_one_line_to_stderr(api, user, https_upstream):
    policy.set_ceiling(user, ["upstream.test:*", "other.test:*"])
    port = https_upstream.port
    code = ("import requests\n"
            "def main():\n"
            f"    requests.get({https_upstream.url(path='/ok')!r}, timeout=10)\n"
            "    try:\n"
            f"        requests.get({https_upstream.url('other.test')!r}, timeout=10)\n"
            "    except requests.exceptions.ProxyError as exc:\n"
            "        return 'refused' if '403' in str(exc) else str(exc)\n")
    body = api.run(code, network={"allow": [f"upstream.test:{port}"]})
    assert body["result"]["value"] == "refused", body
    assert body["stderr"].splitlines()[-1] == (
        f"sandboxctl: connection to other.test:{port} refused: not in this run's allowlist")
    assert [(record["host"], record["allowed"]) for record in body["egress"]] == [("upstream.test", True),
                                                                                  ("other.test", False)]


def test_a_request_beyond_its_ceiling_is_403_naming_the_entries(api, user):
    policy.set_ceiling(user, ["pypi"])
    response = api.post("/api/v1/executions", json={
        "language": "python", "code": "x = 1",
        "network": {"allow": ["pypi", "evil.example", "*.github.com", "files.pythonhosted.org:8443"]}})
    assert response.status_code == 403, response.text
    body = response.json()
    assert body["code"] == "egress_beyond_ceiling"
    assert body["refused"] == ["evil.example", "*.github.com", "files.pythonhosted.org:8443"]
    assert "evil.example" in body["detail"]
    assert not Execution.objects.exists()


def test_an_account_without_a_ceiling_may_ask_for_nothing(api):
    response = api.post("/api/v1/executions", json={"language": "python", "code": "x = 1",
                                                    "network": {"allow": ["pypi"]}})
    assert response.status_code == 403
    assert response.json()["refused"] == ["pypi.org:443", "files.pythonhosted.org:443"]


@pytest.mark.parametrize("network, message", [
    ({"allow": ["localhost"]}, "neither a preset nor a host name"),
    ({"allow": ["10.0.0.1/8"]}, "not a network"),
    ({"allow": ["example.com:0"]}, "not a port"),
    ({"allow": "example.com"}, "must be an object"),
    ({"allow": [1]}, "must be an object"),
    ({"deny": []}, "must be an object"),
    (["example.com"], "must be an object"),
])
def test_an_unreadable_network_is_400_naming_it(api, network, message):
    response = api.post("/api/v1/executions", json={"language": "python", "code": "x = 1", "network": network})
    assert response.status_code == 400, response.text
    assert message in response.json()["network"][0]
    assert not Execution.objects.exists()


def test_a_run_that_asks_for_nothing_has_no_network_even_with_a_ceiling(api, user, https_upstream):
    policy.set_ceiling(user, ["*:*"])
    code = ("import os, requests\n"
            "def main():\n"
            "    try:\n"
            f"        requests.get({https_upstream.url()!r}, timeout=5)\n"
            "    except requests.exceptions.ConnectionError as exc:\n"
            "        return [os.environ.get('HTTPS_PROXY'), 'Failed to resolve' in str(exc)]\n")
    body = api.run(code)
    assert body["result"]["value"] == [None, True], body
    assert body["egress"] == [] and body["limits"]["egress"] == []
    assert https_upstream.requests == []


def test_node_fetch_axios_and_https_go_through_the_proxy(api, user, https_upstream):
    policy.set_ceiling(user, ["*.test:*"])
    url = https_upstream.url(path="/node")
    code = ("const axios = require('axios');\nconst https = require('https');\n"
            "async function main() {\n"
            f"  const a = (await axios.get('{url}')).data;\n"
            f"  const f = await (await fetch('{url}')).json();\n"
            "  const h = await new Promise((resolve, reject) => https.get("
            f"'{url}', (r) => {{ let d = ''; r.on('data', (c) => d += c); "
            "r.on('end', () => resolve(JSON.parse(d))); }).on('error', reject));\n"
            "  return [a.sni, f.sni, h.sni];\n"
            "}")
    body = api.run(code, language="nodejs", network={"allow": ["*.test:*"]})
    assert body["status"] == "succeeded", body
    assert body["result"]["value"] == ["upstream.test"] * 3
    assert all(record["allowed"] for record in body["egress"]) and body["egress"]


def test_the_proxy_follows_no_redirect_for_the_code(api, user, http_upstream):
    policy.set_ceiling(user, ["upstream.test:*"])
    code = ("import requests\n"
            "def main():\n"
            f"    first = requests.get({http_upstream.url(path='/redirect')!r}, allow_redirects=False, timeout=10)\n"
            f"    followed = requests.get({http_upstream.url(path='/redirect')!r}, timeout=10)\n"
            "    return [first.status_code, first.headers['Location'], followed.status_code]\n")
    body = api.run(code, network={"allow": [f"upstream.test:{http_upstream.port}"]})
    # The 302 comes back as it is; the client's own follow-up to other.test is judged again, and refused.
    assert body["result"]["value"] == [302, "http://other.test/landed", 403], body
    assert [(record["host"], record["port"], record["allowed"]) for record in body["egress"]][-1] == (
        "other.test", 80, False)
    assert [request["path"] for request in http_upstream.requests] == ["/redirect", "/redirect"]


def test_a_session_changes_its_allowlist_between_cells(api, user, https_upstream):
    policy.set_ceiling(user, ["upstream.test:*"])
    port = https_upstream.port
    session = open_session(api)
    try:
        assert session["network"] == {"allow": []}
        fetch = ("import requests\n"
                 "try:\n"
                 f"    answer = requests.get({https_upstream.url(path='/cell')!r}, timeout=10).json()['sni']\n"
                 "except requests.exceptions.RequestException as exc:\n"
                 "    answer = type(exc).__name__\n"
                 "def main():\n"
                 "    return answer\n")
        assert cell(api, session, fetch)["result"]["value"] == "ConnectionError"
        patched = api.request("PATCH", f"/api/v1/sessions/{session['id']}",
                              json={"network": {"allow": [f"upstream.test:{port}"]}})
        assert patched.status_code == 200, patched.text
        assert patched.json()["network"] == {"allow": [f"upstream.test:{port}"]}
        opened = cell(api, session, fetch)
        assert opened["result"]["value"] == "upstream.test", opened
        assert [record["host"] for record in opened["egress"]] == ["upstream.test"]
        beyond = api.request("PATCH", f"/api/v1/sessions/{session['id']}",
                             json={"network": {"allow": ["other.test:443"]}})
        assert beyond.status_code == 403 and beyond.json()["refused"] == ["other.test:443"]
        shut = api.request("PATCH", f"/api/v1/sessions/{session['id']}", json={"network": {"allow": []}})
        assert shut.status_code == 200 and shut.json()["network"] == {"allow": []}
        closed = cell(api, session, fetch)
        assert closed["result"]["value"] != "upstream.test" and closed["egress"] == []
    finally:
        close(api, session)


def test_a_session_pip_installs_a_package_from_the_pypi_preset_and_imports_it(api, user, https_upstream, settings):
    # The pypi preset is pointed at a local package index serving a wheel built here (an operator's mirror).
    settings.SANDBOX_EGRESS_PRESETS = {**settings.SANDBOX_EGRESS_PRESETS,
                                       "pypi": [f"upstream.test:{https_upstream.port}"]}
    https_upstream.add_wheel("egresspkg", "1.0", "VALUE = 'installed through the proxy'\n")
    policy.set_ceiling(user, ["pypi"])
    session = open_session(api, network={"allow": ["pypi"]})
    try:
        install = ("import subprocess, sys\n"
                   "done = subprocess.run([sys.executable, '-m', 'pip', 'install', '--index-url', "
                   f"{https_upstream.url(path='/simple/')!r}, 'egresspkg'], capture_output=True, text=True)\n"
                   "print(done.stdout[-2000:], done.stderr[-2000:])\n"
                   "def main():\n"
                   "    return done.returncode\n")
        installed = cell(api, session, install, timeout=60)
        assert installed["result"]["value"] == 0, installed["stdout"]
        assert any(record["allowed"] for record in installed["egress"])
        imported = cell(api, session, "import egresspkg\ndef main():\n    return egresspkg.VALUE")
        assert imported["result"]["value"] == "installed through the proxy", imported
    finally:
        close(api, session)


def test_ragflows_axios_example_reaches_an_https_upstream_on_its_accounts_ceiling(api, user, https_upstream):
    # RAGFlow's documented example (its README's "Async function with axios"), with this test's URL.
    policy.set_ceiling(user, [f"upstream.test:{https_upstream.port}"])
    code = ("const axios = require('axios');\n"
            "async function main() {\n"
            "  try {\n"
            f"    const response = await axios.get('{https_upstream.url(path='/infiniflow/ragflow')}');\n"
            "    return 'Body:' + JSON.stringify(response.data);\n"
            "  } catch (error) {\n"
            "    return 'Error:' + error.message;\n"
            "  }\n"
            "}")
    response = api.post("/run", json={"code_b64": base64.b64encode(code.encode()).decode(), "language": "nodejs"})
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["status"] == "success", body
    answer = json.loads(body["result"]["value"].removeprefix("Body:"))
    assert answer == {"host": f"upstream.test:{https_upstream.port}", "path": "/infiniflow/ragflow", "body": "",
                      "sni": "upstream.test"}


def test_the_execution_admin_page_lists_the_connections(api, user, https_upstream, staff_user, client):
    policy.set_ceiling(user, ["upstream.test:*"])
    body = api.run(fetch_json(https_upstream.url()), network={"allow": ["upstream.test:*"]})
    client.force_login(staff_user)
    page = client.get(f"/admin/executions/execution/{body['id']}/change/").content.decode()
    assert "may reach: upstream.test:*" in page
    assert f"<td>upstream.test</td><td>{https_upstream.port}</td><td>allowed</td>" in page


def test_metrics_count_connections_by_account_and_outcome(api, user, https_upstream, settings, anonymous):
    settings.SANDBOXCTL_METRICS_TOKEN = "public"
    policy.set_ceiling(user, ["*.test:*"])
    code = ("import requests\n"
            "def main():\n"
            f"    requests.get({https_upstream.url()!r}, timeout=10)\n"
            f"    requests.get({https_upstream.url()!r}, timeout=10)\n"
            "    try:\n"
            "        requests.get('https://loopback.test/', timeout=10)\n"
            "    except requests.exceptions.ProxyError:\n"
            "        pass\n")
    api.run(code, network={"allow": ["*.test:*"]})
    text = anonymous.get("/metrics").text
    assert 'sandboxctl_egress_connections_total{account="agent",outcome="allowed"} 2' in text
    assert 'sandboxctl_egress_connections_total{account="agent",outcome="refused"} 1' in text
    assert 'sandboxctl_egress_bytes_in_total{account="agent",outcome="allowed"}' in text


def test_a_node_session_takes_and_drops_its_allowlist_between_cells(api, user, https_upstream):
    policy.set_ceiling(user, ["upstream.test:*"])
    session = open_session(api, language="nodejs", network={"allow": ["upstream.test:*"]})
    try:
        fetch = ("async function main() {\n"
                 f"  try {{ return (await (await fetch('{https_upstream.url(path='/node')}')).json()).sni; }}\n"
                 "  catch (err) { return 'failed: ' + (err.cause ? err.cause.code : err.message); }\n"
                 "}")
        assert cell(api, session, fetch)["result"]["value"] == "upstream.test"
        shut = api.request("PATCH", f"/api/v1/sessions/{session['id']}", json={"network": {"allow": []}})
        assert shut.status_code == 200
        dropped = cell(api, session, fetch)
        assert dropped["result"]["value"].startswith("failed: "), dropped
        assert dropped["egress"] == []
        assert len(https_upstream.requests) == 1
    finally:
        close(api, session)


def test_the_python_client_asks_for_a_network_for_a_run_and_a_session(api, user, https_upstream):
    from sandboxctl.client import Session, execute_code

    policy.set_ceiling(user, ["upstream.test:*"])
    token = api.session.headers["Authorization"].split()[1]
    allowed = [f"upstream.test:{https_upstream.port}"]
    run = execute_code(fetch_json(https_upstream.url(path="/client")), base_url=api.base_url, token=token,
                       network=allowed)
    assert run.metadata["status"] == "succeeded", run.metadata
    with Session("python", base_url=api.base_url, token=token) as session:
        assert session.run(fetch_json(https_upstream.url(path="/cell"))).metadata["status"] == "failed"
        session.allow(allowed)
        assert session.run(fetch_json(https_upstream.url(path="/cell"))).value["path"] == "/cell"

"""The staff REST API behind the settings page: providers, schemas, validated and encrypted settings, probes."""

import json
import logging

from conftest import Api, aliyun_settings, e2b_settings
from providers import config_store
from providers.models import SystemSetting
from sandboxctl.executions.models import ApiToken, Execution


def test_providers_are_listed_with_their_state(staff_api):
    providers = {item["name"]: item for item in staff_api.get("/api/v1/providers").json()}
    assert set(providers) == {"self_managed", "aliyun_codeinterpreter", "e2b"}
    assert providers["self_managed"]["active"] is True
    assert providers["aliyun_codeinterpreter"]["configured"] is False
    assert providers["e2b"]["languages"] == ["python", "nodejs"]
    assert {"label", "description", "healthy"} <= set(providers["e2b"])


def test_non_staff_get_403_and_anonymous_401(api, anonymous):
    assert api.get("/api/v1/providers").status_code == 403
    assert api.request("PUT", "/api/v1/sandbox/config", json={}).status_code == 403
    assert anonymous.get("/api/v1/sandbox/config").status_code == 401


def test_schema_describes_the_form(staff_api):
    schema = staff_api.get("/api/v1/providers/aliyun_codeinterpreter/schema").json()
    fields = {item["name"]: item for item in schema["fields"]}
    assert fields["access_key_secret"]["secret"] is True
    assert fields["region"]["type"] == "select" and "cn-beijing" in fields["region"]["options"]
    assert (fields["timeout"]["min"], fields["timeout"]["max"]) == (1, 30)
    self_managed = staff_api.get("/api/v1/providers/self_managed/schema").json()["fields"]
    deployment = {item["name"]: item for item in self_managed if item["scope"] == "deployment"}
    assert deployment["runtime"]["value"] == "runsc"
    assert staff_api.get("/api/v1/providers/nope/schema").status_code == 404


def test_invalid_settings_are_400_naming_each_field(staff_api):
    body = {"provider_type": "aliyun_codeinterpreter", "config": {"timeout": 31, "region": "mars-1"}}
    response = staff_api.request("PUT", "/api/v1/sandbox/config", json=body)
    assert response.status_code == 400
    errors = response.json()["config"]
    assert errors["timeout"] == ["must be ≤ 30"]
    assert errors["access_key_id"] == ["is required"]
    assert "region" in errors
    unknown = staff_api.request("PUT", "/api/v1/sandbox/config", json={"provider_type": "nope", "config": {}})
    assert unknown.status_code == 400 and "provider_type" in unknown.json()
    assert not config_store.load("aliyun_codeinterpreter")


def test_secrets_are_encrypted_masked_and_kept_when_left_blank(staff_api, caplog):
    caplog.set_level(logging.DEBUG)
    settings = aliyun_settings("http://127.0.0.1:9")
    response = staff_api.request("PUT", "/api/v1/sandbox/config",
                                 json={"provider_type": "aliyun_codeinterpreter", "config": settings})
    assert response.status_code == 200, response.text
    stored = SystemSetting.objects.get(name="sandbox.aliyun_codeinterpreter").value
    assert "aliyun-secret-9876" not in stored and json.loads(stored)["access_key_secret"].startswith("fernet:")
    shown = staff_api.get("/api/v1/sandbox/config").json()["providers"]["aliyun_codeinterpreter"]
    assert shown["access_key_secret"] == "••••9876"
    assert shown["access_key_id"] == "LTAI-test-key"
    again = {**settings, "access_key_secret": "", "template_name": "other"}
    body = {"provider_type": "aliyun_codeinterpreter", "config": again}
    staff_api.request("PUT", "/api/v1/sandbox/config", json=body)
    assert config_store.load("aliyun_codeinterpreter")["access_key_secret"] == "aliyun-secret-9876"
    assert config_store.load("aliyun_codeinterpreter")["template_name"] == "other"
    assert "aliyun-secret-9876" not in caplog.text


def test_set_active_switches_the_provider(staff_api, e2b_fake):
    body = {"provider_type": "e2b", "config": e2b_settings(e2b_fake.url), "set_active": True}
    assert staff_api.request("PUT", "/api/v1/sandbox/config", json=body).json()["provider_type"] == "e2b"
    assert config_store.active_name() == "e2b"


def test_probe_runs_unsaved_settings_and_saves_nothing(staff_api, agentrun_fake):
    body = {"provider_type": "aliyun_codeinterpreter", "config": aliyun_settings(agentrun_fake.url)}
    result = staff_api.post("/api/v1/sandbox/test", json=body).json()
    assert result["success"] is True, result
    assert result["details"]["exit_code"] == 0
    assert result["details"]["stdout"] == "sandboxctl probe\n"
    assert result["details"]["execution_time"] >= 0
    assert not config_store.load("aliyun_codeinterpreter")


def test_probe_reports_rejected_credentials(staff_api, agentrun_fake):
    body = {"provider_type": "aliyun_codeinterpreter",
            "config": aliyun_settings(agentrun_fake.url, access_key_id="LTAI-wrong")}
    result = staff_api.post("/api/v1/sandbox/test", json=body).json()
    assert result["success"] is False
    assert result["message"] == "The service rejected the credentials: check the key and its permissions."
    assert "credentials rejected" in result["details"]["raw"], "the raw detail stays available"


def test_probe_reports_an_unreachable_service(staff_api):
    body = {"provider_type": "e2b", "config": e2b_settings("http://127.0.0.1:9")}
    result = staff_api.post("/api/v1/sandbox/test", json=body).json()
    assert result["success"] is False
    assert result["message"] == "Nothing answered at the service's address (connection refused): check the endpoint."


def test_probe_of_the_self_managed_pool_runs_for_real(staff_api, sandbox_worker):
    result = staff_api.post("/api/v1/sandbox/test", json={"provider_type": "self_managed", "config": {}}).json()
    assert result["success"] is True, result
    assert result["details"]["stdout"] == "sandboxctl probe\n"
    assert result["details"]["exit_code"] == 0
    assert not Execution.objects.exists(), "the probe leaves no execution behind"


def test_tokens_of_staff_still_need_staff(live_server, transactional_db, django_user_model):
    user = django_user_model.objects.create_user("plain")
    plain = Api(live_server.url, ApiToken.issue(user)[1])
    assert plain.post("/api/v1/sandbox/test", json={"provider_type": "e2b", "config": {}}).status_code == 403


class Listener:
    """A real HTTP listener on loopback that records the API key headers it is sent and answers `status`."""

    def __init__(self, status: int = 401, body: bytes = b"{}") -> None:
        import threading
        from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

        self.keys: list[str] = []
        listener = self

        class Handler(BaseHTTPRequestHandler):
            def _answer(self):
                listener.keys.append(self.headers.get("X-API-Key", "") + self.headers.get("Authorization", ""))
                length = int(self.headers.get("Content-Length") or 0)
                self.rfile.read(length)
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.end_headers()
                self.wfile.write(body)

            do_GET = do_POST = do_DELETE = _answer

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"


def test_a_stored_secret_never_follows_a_changed_endpoint(staff_api, e2b_fake):
    saved = {"provider_type": "e2b", "config": e2b_settings(e2b_fake.url)}
    assert staff_api.request("PUT", "/api/v1/sandbox/config", json=saved).status_code == 200
    thief = Listener()
    try:
        moved = e2b_settings(thief.url, api_key="")
        for method, path in (("POST", "/api/v1/sandbox/test"), ("PUT", "/api/v1/sandbox/config")):
            response = staff_api.request(method, path, json={"provider_type": "e2b", "config": moved})
            assert response.status_code == 400, response.text
            assert response.json()["config"]["api_key"] == ["re-enter api_key when changing api_url, sandbox_url"]
        assert not any("e2b_test_key_0001" in key for key in thief.keys), "the stored key was never sent"
        same_place = e2b_settings(e2b_fake.url, api_key="", template="other")
        assert staff_api.request("PUT", "/api/v1/sandbox/config",
                                 json={"provider_type": "e2b", "config": same_place}).status_code == 200
        assert config_store.load("e2b")["api_key"] == "e2b_test_key_0001", "same endpoint: the blank keeps it"
    finally:
        thief.server.shutdown()


def test_any_answer_from_a_provider_endpoint_is_a_calm_failure(staff_api):
    for status, body in ((401, b"{}"), (500, b"<html>oops</html>"), (200, b"[1, 2]"), (200, b"not json"),
                         (404, b'{"unexpected": true}')):
        listener = Listener(status, body)
        try:
            for provider, config in (("e2b", e2b_settings(listener.url)),
                                     ("aliyun_codeinterpreter", aliyun_settings(listener.url))):
                response = staff_api.post("/api/v1/sandbox/test", json={"provider_type": provider, "config": config})
                assert response.status_code == 200, (status, body, response.text)
                assert response.json()["success"] is False
                assert response.json()["message"]
        finally:
            listener.server.shutdown()

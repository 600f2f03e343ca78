"""The executions API over real HTTP: success and error paths, auth, idempotency, async + poll, cancel."""

import time
import uuid

import pytest

from sandboxctl.executions.models import ApiToken, Execution

HELLO = "def main(name, flag):\n    print('hi', name)\n    return {'name': name, 'flag': flag}"


def test_sync_run_returns_the_finished_execution(api):
    response = api.post("/api/v1/executions", json={"language": "python", "code": HELLO,
                                                    "arguments": {"name": "x", "flag": True}})
    assert response.status_code == 200
    body = response.json()
    assert body["status"] == "succeeded"
    assert body["result"] == {"present": True, "value": {"name": "x", "flag": True}}
    assert body["stdout"] == "hi x\n"
    assert body["exit_code"] == 0
    assert body["error"] is None
    assert body["truncated"] == {"stdout": False, "stderr": False}
    row = Execution.objects.get(pk=body["id"])
    assert row.provider == "self_managed"
    assert row.worker.startswith("pytest-worker@")
    assert row.sandbox_id and row.started_at and row.finished_at
    assert row.queue_wait is not None and row.attempts == 1


def test_async_run_returns_202_with_location_and_can_be_polled(api):
    response = api.post("/api/v1/executions", json={"language": "nodejs", "code": "function main(){return 5}",
                                                    "wait": False})
    assert response.status_code == 202
    assert response.headers["Location"].endswith(f"/api/v1/executions/{response.json()['id']}")
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        body = api.get(response.headers["Location"].split(api.base_url)[1]).json()
        if body["status"] not in ("queued", "running"):
            break
        time.sleep(0.1)
    assert body["status"] == "succeeded"
    assert body["result"]["value"] == 5


@pytest.mark.parametrize(
    ("payload", "field"),
    [
        ({"language": "ruby", "code": "x"}, "language"),
        ({"language": "python", "code": ""}, "code"),
        ({"language": "python", "code": "   \n"}, "code"),
        ({"language": "python", "code": "x", "arguments": [1, 2]}, "arguments"),
        ({"language": "python", "code": "x", "arguments": "a=1"}, "arguments"),
        ({"language": "python", "code": "x", "timeout": 0}, "timeout"),
        ({"language": "python", "code": "x", "timeout": "soon"}, "timeout"),
        ({"language": "python", "code": "x", "memory_mb": 1}, "memory_mb"),
        ({"language": "python", "code": "x", "callback_url": "ftp://example.com/x"}, "callback_url"),
        ({"code": "x"}, "language"),
    ],
)
def test_bad_input_is_400_naming_the_field(api, payload, field):
    count = Execution.objects.count()
    response = api.post("/api/v1/executions", json=payload)
    assert response.status_code == 400
    assert field in response.json()
    assert Execution.objects.count() == count


def test_lone_surrogate_code_is_rejected_as_not_utf8(api):
    response = api.post("/api/v1/executions", data=b'{"language": "python", "code": "\\ud800"}',
                        headers={"Content-Type": "application/json"})
    assert response.status_code == 400
    assert "code" in response.json()


def test_malformed_json_is_400(api):
    response = api.post("/api/v1/executions", data=b"{not json", headers={"Content-Type": "application/json"})
    assert response.status_code == 400
    assert "detail" in response.json()


def test_code_over_the_size_limit_is_413(api, settings):
    code = "#" * (settings.SANDBOX_CODE_MAX_BYTES + 1)
    response = api.post("/api/v1/executions", json={"language": "python", "code": code})
    assert response.status_code == 413
    assert "code" in response.json()


def test_no_token_is_401(anonymous):
    response = anonymous.post("/api/v1/executions", json={"language": "python", "code": "x"})
    assert response.status_code == 401
    assert response.headers["WWW-Authenticate"] == "Bearer"


def test_wrong_token_is_401(anonymous):
    anonymous.session.headers["Authorization"] = "Bearer nope"
    assert anonymous.get("/api/v1/executions").status_code == 401


def test_drf_token_keyword_is_accepted(anonymous, token):
    anonymous.session.headers["Authorization"] = f"Token {token}"
    assert anonymous.get("/api/v1/executions").status_code == 200


def test_tokens_are_stored_hashed(token):
    assert not ApiToken.objects.filter(key_hash=token).exists()
    assert ApiToken.objects.filter(prefix=token[:8]).exists()


def test_same_idempotency_key_and_body_returns_the_same_execution(api):
    body = {"language": "python", "code": "def main():\n    return 1"}
    headers = {"Idempotency-Key": "key-1"}
    first = api.post("/api/v1/executions", json=body, headers=headers).json()
    second = api.post("/api/v1/executions", json=body, headers=headers).json()
    assert first["id"] == second["id"]
    assert Execution.objects.filter(idempotency_key="key-1").count() == 1


def test_same_idempotency_key_with_another_body_is_409(api):
    headers = {"Idempotency-Key": "key-2"}
    api.post("/api/v1/executions", json={"language": "python", "code": "def main():\n    return 1"}, headers=headers)
    response = api.post("/api/v1/executions", json={"language": "python", "code": "def main():\n    return 2"},
                        headers=headers)
    assert response.status_code == 409
    assert response.json()["code"] == "idempotency_conflict"


def test_idempotency_keys_are_per_caller(api, live_server, django_user_model):
    from conftest import Api

    other_user = django_user_model.objects.create_user("other")
    other = Api(live_server.url, ApiToken.issue(other_user)[1])
    body = {"language": "python", "code": "def main():\n    return 1"}
    first = api.post("/api/v1/executions", json=body, headers={"Idempotency-Key": "shared"}).json()
    second = other.post("/api/v1/executions", json=body, headers={"Idempotency-Key": "shared"}).json()
    assert first["id"] != second["id"]


def test_list_filters_and_paginates(api):
    api.run("def main():\n    return 1")
    api.run("function main() { throw new Error('x'); }", language="nodejs")
    listing = api.get("/api/v1/executions").json()
    assert listing["count"] == 2 and len(listing["results"]) == 2
    failed = api.get("/api/v1/executions", params={"status": "failed"}).json()
    assert [row["language"] for row in failed["results"]] == ["nodejs"]
    python = api.get("/api/v1/executions", params={"language": "python", "provider": "self_managed"}).json()
    assert python["count"] == 1
    assert api.get("/api/v1/executions", params={"page": 9}).status_code == 404


def test_callers_see_only_their_own_executions(api, live_server, django_user_model):
    from conftest import Api

    mine = api.run("def main():\n    return 1")
    intruder = Api(live_server.url, ApiToken.issue(django_user_model.objects.create_user("intruder"))[1])
    assert intruder.get(f"/api/v1/executions/{mine['id']}").status_code == 404
    assert intruder.get("/api/v1/executions").json()["count"] == 0


def test_unknown_execution_is_404(api):
    assert api.get(f"/api/v1/executions/{uuid.uuid4()}").status_code == 404


def test_cancel_a_running_execution(api):
    started = api.post("/api/v1/executions", json={"language": "python", "code": "import time\ntime.sleep(5)",
                                                   "wait": False}).json()
    response = api.post(f"/api/v1/executions/{started['id']}/cancel")
    assert response.status_code == 200
    assert response.json()["status"] == "cancelled"
    time.sleep(0.5)
    assert Execution.objects.get(pk=started["id"]).status == "cancelled", "terminal states never change"


def test_cancel_a_finished_execution_is_409(api):
    done = api.run("def main():\n    return 1")
    response = api.post(f"/api/v1/executions/{done['id']}/cancel")
    assert response.status_code == 409
    assert Execution.objects.get(pk=done["id"]).status == "succeeded"


def test_openapi_schema_and_docs_are_served(api):
    schema = api.get("/api/schema/", headers={"Accept": "application/json"})
    assert schema.status_code == 200
    paths = schema.json()["paths"]
    assert "/api/v1/executions" in paths
    for path in ("/api/v1/sessions", "/api/v1/sessions/{id}", "/api/v1/sessions/{id}/executions",
                 "/api/v1/sessions/{id}/files", "/api/v1/sessions/{id}/files/{path}"):
        assert path in paths, sorted(paths)
    assert api.get("/api/docs/").status_code == 200

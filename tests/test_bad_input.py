"""Nothing a caller sends produces a 500: oversized bodies are 413, malformed or hostile values a 400 naming the
field, on the executions API, /run and the sessions API — and a fuzzer finds no 500 anywhere."""

import json
import urllib.parse
import uuid

import pytest
from hypothesis import HealthCheck, given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st

from sandboxctl.executions.models import Execution

ENDPOINTS = ["/api/v1/executions", "/run"]


def nested(depth: int) -> dict:
    value: dict = {}
    for _ in range(depth):
        value = {"a": value}
    return value


def post_raw(api, path: str, text: str):
    return api.post(path, data=text.encode(), headers={"Content-Type": "application/json"})


@pytest.mark.parametrize("path", ENDPOINTS)
def test_a_body_over_the_limit_is_413_json(api, path, settings):
    body = json.dumps({"language": "python", "code": "#" * (5 * 1024 * 1024), "code_b64": "", "arguments": {}})
    response = post_raw(api, path, body)
    assert response.status_code == 413
    assert response.json()["code"] == "too_large"
    assert "SANDBOX_REQUEST_MAX_BYTES" in response.json()["detail"]


@pytest.mark.parametrize("code", [123, 1.5, True, None, ["print(1)"], {"a": 1}])
def test_code_that_is_not_a_string_is_400(api, code):
    response = api.post("/api/v1/executions", json={"language": "python", "code": code})
    assert response.status_code == 400
    assert "code" in response.json()


@pytest.mark.parametrize("depth", [65, 2000, 100_000])
@pytest.mark.parametrize("path", ENDPOINTS)
def test_arguments_nested_too_deep_are_400(api, path, depth):
    text = '{"language": "python", "code": "x = 1", "code_b64": "eCA9IDE=", "arguments": ' + \
        '{"a": ' * depth + "1" + "}" * depth + "}"
    response = post_raw(api, path, text)
    assert response.status_code == 400, response.text[:300]


def test_arguments_at_the_depth_limit_are_accepted(api):
    count = Execution.objects.count()
    response = api.post("/api/v1/executions", json={"language": "python", "code": "x = 1", "wait": False,
                                                    "arguments": nested(63)})
    assert response.status_code == 202, response.text[:300]
    assert Execution.objects.count() == count + 1


@pytest.mark.parametrize("path", ENDPOINTS)
def test_arguments_over_the_size_limit_are_400(api, path, settings):
    arguments = {"blob": "x" * (settings.SANDBOX_ARGUMENTS_MAX_BYTES + 10)}
    response = api.post(path, json={"language": "python", "code": "x = 1", "code_b64": "eCA9IDE=",
                                    "arguments": arguments})
    assert response.status_code == 400
    assert "SANDBOX_ARGUMENTS_MAX_BYTES" in response.json()["arguments"][0]


@pytest.mark.parametrize("path", ENDPOINTS)
@pytest.mark.parametrize("arguments", ['{"x": "\\ud800"}', '{"\\udfff": 1}', '{"x": ["ok", {"y": "a\\udc80"}]}'])
def test_lone_surrogates_in_arguments_are_400(api, path, arguments):
    text = '{"language": "python", "code": "x = 1", "code_b64": "eCA9IDE=", "arguments": ' + arguments + "}"
    response = post_raw(api, path, text)
    assert response.status_code == 400
    assert "arguments" in response.json()


@pytest.mark.parametrize("constant", ["NaN", "Infinity", "-Infinity"])
def test_non_json_numbers_are_400(api, constant):
    body = '{"language": "python", "code": "x = 1", "timeout": ' + constant + "}"
    response = post_raw(api, "/api/v1/executions", body)
    assert response.status_code == 400


def test_huge_numbers_are_400_or_clamped_never_500(api):
    for field, value in (("memory_mb", "9" * 5000), ("timeout", "9" * 5000), ("memory_mb", "-" + "9" * 40),
                         ("timeout", "1e400")):
        response = post_raw(api, "/api/v1/executions",
                            f'{{"language": "python", "code": "x = 1", "wait": false, "{field}": {value}}}')
        assert response.status_code in (202, 400), (field, response.status_code)


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(alphabet=st.characters(codec=None, exclude_categories=())),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4),
    max_leaves=12,
)
networks = st.fixed_dictionaries({}, optional={
    "allow": st.lists(st.sampled_from(["pypi", "example.com", "*.x.org:443", "10.0.0.0/8", "localhost", "[::1", "*",
                                       "a" * 300 + ".com", "x.com:99999"]) | json_values, max_size=4) | json_values,
}) | json_values
fields = st.fixed_dictionaries({}, optional={
    "language": st.sampled_from(["python", "nodejs", "javascript", "ruby", ""]) | json_values,
    "code": st.sampled_from(["x = 1", "def main():\n    return 1", ""]) | json_values,
    "code_b64": st.sampled_from(["eCA9IDE=", "!!"]) | json_values,
    "arguments": json_values,
    "timeout": st.sampled_from([0.5, 0, -1, 1e308]) | json_values,
    "memory_mb": st.sampled_from([64, 1, 10**30]) | json_values,
    "wait": st.just(False) | json_values,
    "callback_url": st.sampled_from(["http://127.0.0.1/", "https://example.com/x", "ftp://x", "http://[::1"])
    | json_values,
    "network": networks,
})


@hypothesis_settings(max_examples=150, deadline=None, suppress_health_check=list(HealthCheck))
@given(path=st.sampled_from(ENDPOINTS), body=fields | json_values)
def test_fuzzed_bodies_never_answer_500(api, path, body):
    response = post_raw(api, path, json.dumps(body))
    assert response.status_code < 500, (response.status_code, response.text[:500])
    assert response.headers["Content-Type"].startswith("application/json")


@hypothesis_settings(max_examples=60, deadline=None, suppress_health_check=list(HealthCheck))
@given(query=st.dictionaries(st.sampled_from(["status", "language", "provider", "page"]), st.text(max_size=20)),
       execution_id=st.uuids() | st.text(max_size=40))
def test_fuzzed_reads_never_answer_500(api, query, execution_id):
    assert api.get("/api/v1/executions", params=query).status_code < 500
    assert api.get(f"/api/v1/executions/{execution_id}").status_code < 500
    assert api.post(f"/api/v1/executions/{execution_id}/cancel").status_code < 500


def test_fuzzed_headers_never_answer_500(api):
    for key in ("x" * 300, "\u00e9\u00e8", str(uuid.uuid4())):
        response = api.post("/api/v1/executions", json={"language": "python", "code": "x = 1", "wait": False},
                            headers={"Idempotency-Key": key.encode("utf-8").decode("latin-1")})
        assert response.status_code in (202, 400)


@pytest.mark.parametrize("name,value", [("status", "\x00"), ("status", "nope"), ("language", "cobol"),
                                        ("provider", "x\u202e")])
def test_unknown_list_filters_are_400_naming_the_filter(api, name, value):
    response = api.get("/api/v1/executions", params={name: value})
    assert response.status_code == 400
    assert name in response.json()


session_fields = st.fixed_dictionaries({}, optional={
    "language": st.sampled_from(["python", "nodejs", "cobol", ""]) | json_values,
    "idle_timeout": st.sampled_from([0.5, 0, -1, 1e308, 30]) | json_values,
    "max_lifetime": st.sampled_from([0, 1e308, 60]) | json_values,
    "memory_mb": st.sampled_from([64, 1, 10**30]) | json_values,
    "files": st.lists(st.fixed_dictionaries({}, optional={
        "path": st.sampled_from(["a.txt", "../x", "/etc/passwd", "a//b", ""]) | json_values,
        "content_b64": st.sampled_from(["eA==", "!!", ""]) | json_values}), max_size=3) | json_values,
    "network": networks,
})


@hypothesis_settings(max_examples=60, deadline=None, suppress_health_check=list(HealthCheck))
@given(body=session_fields | json_values)
def test_fuzzed_session_requests_never_answer_500(api, body):
    response = post_raw(api, "/api/v1/sessions", json.dumps(body))
    assert response.status_code < 500 or response.status_code == 503, (response.status_code, response.text[:500])
    if response.status_code in (201, 202):
        assert api.request("DELETE", f"/api/v1/sessions/{response.json()['id']}").status_code == 204


cell_fields = st.fixed_dictionaries({}, optional={
    "code": st.sampled_from(["x = 1", "def main():\n    return 1", ""]) | json_values,
    "arguments": json_values,
    "timeout": st.sampled_from([0.5, 0, -1, 1e308]) | json_values,
    "wait": st.just(True) | json_values,
})


@pytest.fixture(scope="module")
def fuzzed_session(live_server, django_db_blocker, sandbox_worker):
    from django.contrib.auth import get_user_model

    from conftest import Api
    from sandboxctl.executions.models import ApiToken

    with django_db_blocker.unblock():
        owner = get_user_model().objects.create_user(f"fuzz-{uuid.uuid4().hex[:6]}", password="fuzz-password-1")
        client = Api(live_server.url, ApiToken.issue(owner)[1])
        opened = client.post("/api/v1/sessions", json={"language": "python"})
        assert opened.status_code == 201, opened.text
        yield client, opened.json()["id"]
        client.request("DELETE", f"/api/v1/sessions/{opened.json()['id']}")


@hypothesis_settings(max_examples=60, deadline=None, suppress_health_check=list(HealthCheck))
@given(body=st.fixed_dictionaries({}, optional={"network": networks}) | json_values)
def test_fuzzed_session_updates_never_answer_500(fuzzed_session, body):
    client, session_id = fuzzed_session
    response = client.request("PATCH", f"/api/v1/sessions/{session_id}", data=json.dumps(body),
                              headers={"Content-Type": "application/json"})
    assert response.status_code in (200, 400, 403), (response.status_code, response.text[:500])


@hypothesis_settings(max_examples=60, deadline=None, suppress_health_check=list(HealthCheck))
@given(body=cell_fields | json_values, path=st.text(max_size=30))
def test_fuzzed_cells_and_file_paths_never_answer_500(fuzzed_session, body, path):
    client, session_id = fuzzed_session
    response = post_raw(client, f"/api/v1/sessions/{session_id}/executions", json.dumps(body))
    assert response.status_code < 500, (response.status_code, response.text[:500])
    quoted = urllib.parse.quote(path, safe="")
    for method in ("PUT", "GET", "DELETE"):
        answer = client.request(method, f"/api/v1/sessions/{session_id}/files/{quoted}",
                                data=b"x" if method == "PUT" else None)
        assert answer.status_code < 500, (method, path, answer.status_code, answer.text[:300])

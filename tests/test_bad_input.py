"""Nothing a caller sends produces a 500: oversized bodies are 413, malformed or hostile values a 400 naming the
field, on both the executions API and /run — and a fuzzer finds no 500 anywhere."""

import json
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

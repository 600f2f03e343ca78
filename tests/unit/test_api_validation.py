"""API validation on SQLite, with no worker: bad input answers 4xx naming the field, and nothing is queued."""

import json

import pytest
from django.test import Client

from sandboxctl.executions.models import ApiToken, Execution

pytestmark = pytest.mark.django_db


@pytest.fixture
def client(django_user_model) -> Client:
    user = django_user_model.objects.create_user("caller")
    _, key = ApiToken.issue(user)
    return Client(HTTP_AUTHORIZATION=f"Bearer {key}")


def post(client: Client, body, path: str = "/api/v1/executions"):
    data = body if isinstance(body, (str, bytes)) else json.dumps(body)
    return client.post(path, data=data, content_type="application/json")


VALID = {"language": "python", "code": "def main():\n    return 1"}


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"language": "ruby"}, "language"),
        ({"language": 3}, "language"),
        ({"code": 123}, "code"),
        ({"code": "   "}, "code"),
        ({"arguments": [1, 2]}, "arguments"),
        ({"arguments": "x"}, "arguments"),
        ({"arguments": {"x": "\ud800"}}, "arguments"),
        ({"arguments": {"x": json.loads("[" * 80 + "]" * 80)}}, "arguments"),
        ({"timeout": 0}, "timeout"),
        ({"timeout": "soon"}, "timeout"),
        ({"memory_mb": 1}, "memory_mb"),
        ({"wait": "perhaps"}, "wait"),
        ({"callback_url": "ftp://example.com/x"}, "callback_url"),
        ({"callback_url": "http://127.0.0.1:6379/"}, "callback_url"),
        ({"callback_url": "http://169.254.169.254/latest/meta-data/"}, "callback_url"),
    ],
)
def test_bad_fields_answer_400_naming_the_field(client, change, field):
    response = post(client, {**VALID, **change})
    assert response.status_code == 400, response.content
    assert field in response.json()
    assert not Execution.objects.exists()


@pytest.mark.parametrize("body", ["{", "[]", "null", '"text"', b"\xff\xfe"])
def test_a_body_that_is_not_a_json_object_answers_400(client, body):
    assert post(client, body).status_code == 400


def test_a_body_nested_beyond_reason_answers_400_not_500(client):
    assert post(client, '{"arguments": ' + "[" * 100_000 + "]" * 100_000 + "}").status_code == 400


def test_code_over_the_limit_answers_413(client, settings):
    settings.SANDBOX_CODE_MAX_BYTES = 100
    assert post(client, {**VALID, "code": "x" * 101}).status_code == 413


def test_a_request_over_the_body_limit_answers_413_before_parsing(client, settings):
    settings.SANDBOX_REQUEST_MAX_BYTES = 1000
    assert post(client, {**VALID, "code": "#" * 2000}).status_code == 413


def test_without_a_token_nothing_is_accepted():
    assert post(Client(), VALID).status_code == 401
    assert post(Client(HTTP_AUTHORIZATION="Bearer nope"), VALID).status_code == 401


@pytest.mark.parametrize("query", ["status=exploded", "language=cobol", "provider=nowhere", "status=%00"])
def test_list_filters_are_validated(client, query):
    response = client.get(f"/api/v1/executions?{query}")
    assert response.status_code == 400 and query.split("=")[0] in response.json()


def test_an_unknown_execution_is_404_and_a_malformed_id_too(client):
    assert client.get("/api/v1/executions/00000000-0000-0000-0000-000000000000").status_code == 404
    assert client.get("/api/v1/executions/not-a-uuid").status_code == 404


def test_ragflow_run_validates_its_own_fields(client):
    response = post(client, {"code_b64": "%%%", "language": "python"}, path="/run")
    assert response.status_code == 400 and "code_b64" in response.json()

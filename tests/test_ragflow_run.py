"""`POST /run` speaks RAGFlow executor_manager's protocol, so its self_managed provider can point here."""

import base64

import pytest


def b64(code: str) -> str:
    return base64.b64encode(code.encode()).decode()


@pytest.fixture
def ragflow(anonymous, token, sandbox_worker):
    anonymous.session.headers["X-Sandbox-Token"] = token
    return anonymous


def test_success_carries_the_result(ragflow):
    response = ragflow.post("/run", json={"code_b64": b64("def main(a, b):\n    print('x')\n    return a or b"),
                                          "language": "python", "arguments": {"a": None, "b": True}})
    assert response.status_code == 200
    body = response.json()
    assert body["status"] == "success"
    assert body["stdout"] == "x\n"
    assert body["exit_code"] == 0
    assert body["result"] == {"present": True, "value": True, "type": "json"}
    assert body["time_used_ms"] > 0 and body["memory_used_kb"] > 0
    assert "resource_limit_type" not in body


def test_program_error(ragflow):
    body = ragflow.post("/run", json={"code_b64": b64("function main() { throw new Error('boom'); }"),
                                      "language": "nodejs"}).json()
    assert body["status"] == "program_error"
    assert "boom" in body["stderr"]
    assert body["exit_code"] != 0


def test_timeout_is_resource_limit_time(ragflow, settings):
    settings.SANDBOX_TIMEOUT_DEFAULT = 1.0
    body = ragflow.post("/run", json={"code_b64": b64("while True:\n    pass"), "language": "python"}).json()
    assert body["status"] == "resource_limit_exceeded"
    assert body["resource_limit_type"] == "time"


def test_bearer_auth_also_works(anonymous, token, sandbox_worker):
    anonymous.session.headers["Authorization"] = f"Bearer {token}"
    body = anonymous.post("/run", json={"code_b64": b64("def main():\n    return 1"), "language": "python"}).json()
    assert body["status"] == "success"


def test_bad_base64_is_400_naming_the_field(ragflow):
    response = ragflow.post("/run", json={"code_b64": "***", "language": "python"})
    assert response.status_code == 400
    assert "code_b64" in response.json()


def test_unknown_language_is_400(ragflow):
    response = ragflow.post("/run", json={"code_b64": b64("x"), "language": "go"})
    assert response.status_code == 400
    assert "language" in response.json()


def test_no_token_is_401(anonymous):
    assert anonymous.post("/run", json={"code_b64": b64("x"), "language": "python"}).status_code == 401

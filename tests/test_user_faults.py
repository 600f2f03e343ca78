"""User faults stay user faults: a run that breaks its own report, returns what no database stores, raises a
hostile exception or closes its own streams ends at once as the user's failure, with its slot freed — never
`running` until the reconciler, never an infrastructure error."""

import pytest

from sandboxctl.executions.models import Execution

# The child's outcome descriptor is fd 3: code can write an answer of its own there (framed, with the cell's nonce,
# which it can read from the runner's frame below its own) and leave at once.
FORGED_REPORT = (
    "import json, os, sys\n"
    "def main():\n"
    "    nonce = sys._getframe(1).f_locals['job']['nonce']\n"
    "    body = json.dumps({'ok': True, 'value_json': '%s', 'nonce': nonce}).encode()\n"
    "    os.write(3, len(body).to_bytes(4, 'big') + body)\n"
    "    os._exit(0)"
)


def run(api, code: str) -> dict:
    response = api.post("/api/v1/executions", json={"language": "python", "code": code, "timeout": 10})
    assert response.status_code == 200, response.text
    return response.json()


@pytest.mark.parametrize("value", ["1e999", "-1E400", "9" * 5000], ids=["infinity", "minus-infinity", "5000-digits"])
def test_a_value_no_database_stores_ends_failed_at_once(api, value):
    body = run(api, FORGED_REPORT % value)
    assert (body["status"], body["error"]["code"]) == ("failed", "result_not_serializable"), body
    assert "too large to store" in body["error"]["message"]
    assert Execution.objects.filter(status="running").count() == 0, "the slot is free"


def test_an_exception_whose_str_raises_is_reported(api):
    code = ("class Hostile(Exception):\n    def __str__(self):\n        raise RuntimeError('no message for you')\n"
            "def main():\n    raise Hostile()")
    body = run(api, code)
    assert body["status"] == "failed", body
    assert body["error"]["code"] != "process_exited"
    assert "Hostile" in body["error"]["message"] and "could not be read" in body["error"]["message"], body


def test_a_hostile_repr_in_exit_is_reported(api):
    code = ("import sys\nclass Odd:\n    def __repr__(self):\n        raise RuntimeError('x')\n"
            "def main():\n    sys.exit(Odd())")
    body = run(api, code)
    assert body["status"] == "failed" and "exit(<a Odd>)" in body["error"]["message"], body


def test_closing_stdout_still_returns_the_result(api):
    body = run(api, "import sys\ndef main():\n    print('before')\n    sys.stdout.close()\n    return 7")
    assert (body["status"], body["result"], body["stdout"]) == ("succeeded", {"present": True, "value": 7},
                                                                "before\n"), body


def test_a_value_that_cannot_become_json_is_the_users_fault(api):
    code = "class Bad:\n    def tolist(self):\n        raise KeyError('boom')\ndef main():\n    return Bad()"
    body = run(api, code)
    assert (body["status"], body["error"]["code"]) == ("failed", "result_not_serializable"), body

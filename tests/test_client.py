"""The Python client against the real server."""

import pytest

from sandboxctl.client import SandboxctlError, execute_code


def test_execute_code_returns_result_and_metadata(api, token):
    code = "def main(name, flag):\n    print(name)\n    return flag"
    result = execute_code(code, arguments={"name": "x", "flag": True}, base_url=api.base_url, token=token)
    assert (result.stdout, result.stderr, result.exit_code) == ("x\n", "", 0)
    assert result.execution_time > 0
    assert result.metadata["status"] == "succeeded"
    assert result.metadata["result"] == {"present": True, "value": True}
    assert result.ok


def test_execute_code_raises_on_rejected_input(api, token):
    with pytest.raises(SandboxctlError) as error:
        execute_code("x", language="cobol", base_url=api.base_url, token=token)
    assert error.value.status_code == 400
    assert "language" in error.value.body

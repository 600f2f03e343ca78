"""The Python client against the real server."""

import pytest

from sandboxctl.client import SandboxctlError, Session, execute_code


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


def test_execute_code_takes_input_files(api, token):
    result = execute_code("def main():\n    return open('in/data.txt').read()", files={"in/data.txt": b"hello"},
                          base_url=api.base_url, token=token)
    assert result.value == "hello"


def test_a_session_keeps_state_and_moves_files_both_ways(api, token):
    with Session("python", base_url=api.base_url, token=token, files={"seed.txt": b"3"}) as session:
        session.upload("sales.csv", b"region,amount\nnorth,10\nsouth,32\n")
        loaded = session.run("import pandas as pd\ndf = pd.read_csv('sales.csv')\nseed = int(open('seed.txt').read())")
        assert loaded.ok, loaded.stderr
        total = session.run("def main(extra):\n    df.assign(double=df.amount * 2).to_csv('out.csv', index=False)\n"
                            "    return float(df.amount.sum()) + seed + extra", arguments={"extra": 0.5})
        assert total.value == 45.5
        assert session.download("out.csv").splitlines()[0] == b"region,amount,double"
        assert {entry["path"] for entry in session.files()} == {"seed.txt", "sales.csv", "out.csv"}
        session.delete("out.csv")
        with pytest.raises(SandboxctlError) as missing:
            session.download("out.csv")
        assert missing.value.status_code == 404
        session_id = session.id
    ended = api.get(f"/api/v1/sessions/{session_id}").json()
    assert ended["status"] == "ended" and ended["end_reason"] == "deleted by the caller"

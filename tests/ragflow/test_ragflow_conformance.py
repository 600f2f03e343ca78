"""Stock RAGFlow against sandboxctl, unchanged: the RAGFlow port spoken to exactly as RAGFlow's
`SelfManagedProvider` and `CodeExec` tool do (read from RAGFlow's public source at b1b8cd6:
agent/sandbox/providers/self_managed.py, agent/tools/code_exec.py, agent/sandbox/executor_manager/), with
no token, through a real gunicorn bound to two ports, as `make run` starts it.

For every answer, CodeExec's own rule decides success or error, and the test asserts RAGFlow would judge
the run the way a user expects.
"""

import base64
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import pytest
import requests
from django.db import connection

from conftest import worker_env

ROOT = Path(__file__).resolve().parents[2]


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def lan_address() -> str:
    probe = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        probe.connect(("10.255.255.255", 1))
        return probe.getsockname()[0]
    finally:
        probe.close()


@dataclass
class Ports:
    main: int
    ragflow: int


@pytest.fixture(scope="module")
def gunicorn(sandbox_worker, django_db_setup, tmp_path_factory):
    """gunicorn (ASGI) with the main and the RAGFlow port, on the test database and broker, as `make run` binds it."""
    ports = Ports(free_port(), free_port())
    env = worker_env(connection.settings_dict["NAME"], RAGFLOW_PORT=str(ports.ragflow),
                     ALLOWED_HOSTS=f"localhost,127.0.0.1,{lan_address()}")
    log = open(tmp_path_factory.mktemp("gunicorn") / "gunicorn.log", "w")
    process = subprocess.Popen(
        [sys.executable, "-m", "gunicorn", "sandboxctl.asgi", "--bind", f"0.0.0.0:{ports.main}", "--bind",
         f"0.0.0.0:{ports.ragflow}", "-k", "sandboxctl.api.server.Worker", "--timeout", "120", "--no-control-socket"],
        cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT,
    )
    deadline = time.monotonic() + 60
    while True:
        try:
            if requests.get(f"http://127.0.0.1:{ports.ragflow}/healthz", timeout=2).status_code == 200:
                break
        except requests.RequestException:
            pass
        assert process.poll() is None and time.monotonic() < deadline, "gunicorn did not start"
        time.sleep(0.3)
    yield ports
    process.terminate()
    process.wait(30)


class SelfManagedClient:
    """What RAGFlow's self-managed provider does over HTTP: health is a GET of /healthz answering 200; a run
    is a POST of /run with {code_b64, language, arguments}, any status but 200 an error."""

    def __init__(self, endpoint: str) -> None:
        self.endpoint = endpoint

    def health_check(self) -> bool:
        try:
            return requests.get(f"{self.endpoint}/healthz", timeout=5).status_code == 200
        except requests.RequestException:
            return False

    def execute_code(self, code: str, language: str, arguments: dict | None = None) -> dict:
        language = {"python3": "python", "javascript": "nodejs"}.get(language, language)
        payload = {"code_b64": base64.b64encode(code.encode("utf-8")).decode("utf-8"), "language": language,
                   "arguments": arguments or {}}
        response = requests.post(f"{self.endpoint}/run", json=payload, timeout=600,
                                 headers={"Content-Type": "application/json"})
        if response.status_code != 200:
            raise RuntimeError(f"HTTP {response.status_code}: {response.text}")
        body = response.json()
        structured = body.get("result") or {}
        return {
            "stdout": body.get("stdout", ""), "stderr": body.get("stderr", ""), "exit_code": body.get("exit_code", 0),
            "artifacts": body.get("artifacts", []), "result_present": structured.get("present", False),
            "result_value": structured.get("value"), "status": body.get("status"), "body": body,
        }


def code_exec_judgement(result: dict) -> tuple[str, object]:
    """CodeExec's rule: an error only when there is stderr but no stdout, no structured result and no
    artifact; otherwise a success whose value is the structured result (or stdout)."""
    stdout, stderr = result["stdout"], result["stderr"]
    if stderr and not result["result_present"] and not result["artifacts"] and not str(stdout or "").strip():
        return "error", stderr
    return "success", result["result_value"] if result["result_present"] is True else stdout


@pytest.fixture
def ragflow(gunicorn) -> SelfManagedClient:
    return SelfManagedClient(f"http://127.0.0.1:{gunicorn.ragflow}")


def run(ragflow, code: str, language: str = "python", arguments: dict | None = None) -> tuple[str, object, dict]:
    result = ragflow.execute_code(code, language, arguments)
    verdict, value = code_exec_judgement(result)
    return verdict, value, result


def test_health_check_passes_without_a_token(ragflow):
    assert ragflow.health_check() is True


def test_hello_runs_without_a_token(ragflow):
    verdict, value, result = run(ragflow, "def main():\n    return {'hello': 'ragflow'}")
    assert (verdict, value) == ("success", {"hello": "ragflow"})
    assert result["status"] == "success" and result["exit_code"] == 0


def test_the_main_port_still_needs_a_token(gunicorn):
    payload = {"code_b64": base64.b64encode(b"def main():\n    return 1").decode(), "language": "python"}
    response = requests.post(f"http://127.0.0.1:{gunicorn.main}/run", json=payload, timeout=30)
    assert response.status_code == 401


def test_an_untrusted_network_needs_a_token_and_is_told_which_setting(gunicorn):
    payload = {"code_b64": base64.b64encode(b"def main():\n    return 1").decode(), "language": "python"}
    response = requests.post(f"http://{lan_address()}:{gunicorn.ragflow}/run", json=payload, timeout=30)
    assert response.status_code == 401
    assert "SANDBOX_RAGFLOW_TRUSTED_NETWORKS" in response.json()["detail"]


def test_the_ragflow_port_serves_nothing_else(gunicorn):
    for path in ("/api/v1/executions", "/admin/", "/metrics", "/api/v1/sandbox/config"):
        assert requests.get(f"http://127.0.0.1:{gunicorn.ragflow}{path}", timeout=10).status_code == 404, path


ARGUMENTS = {"text": "héllo 世界 🎉", "number": 3.25, "integer": -7, "flag": True, "off": False, "nothing": None,
             "items": [1, "two", {"three": [3]}], "mapping": {"nested": {"deep": [None, True]}}}


def test_every_json_argument_type_round_trips(ragflow):
    verdict, value, _ = run(ragflow, "def main(**kwargs):\n    return kwargs", arguments=ARGUMENTS)
    assert (verdict, value) == ("success", ARGUMENTS)


def test_node_runs_like_ragflows_runner(ragflow):
    code = "async function main(args) { return { sum: args.a + args.b, axios: typeof require('axios') }; }"
    verdict, value, _ = run(ragflow, code, "javascript", {"a": 2, "b": 40})
    assert (verdict, value) == ("success", {"sum": 42, "axios": "function"})


def test_node_main_without_a_return_value_is_an_error(ragflow):
    verdict, message, result = run(ragflow, "function main(args) { const x = 1; }", "nodejs")
    assert verdict == "error"
    assert "main() must return a value" in message
    assert result["status"] == "program_error"


def test_syntax_error_is_an_error_that_says_so(ragflow):
    verdict, message, _ = run(ragflow, "def main(:\n    return 1")
    assert verdict == "error"
    assert "SyntaxError" in message


def test_exception_after_printing_is_an_error_with_a_clean_traceback(ragflow):
    verdict, message, result = run(ragflow, "def main():\n    print('partial')\n    raise ValueError('boom')")
    assert verdict == "error", "partial stdout must not turn a failure into a success"
    assert "ValueError: boom" in message and 'File "main.py", line 3, in main' in message
    assert "/opt/sandboxctl" not in message and "child.py" not in message, "the runner's frames are cut"
    assert result["stdout"] == ""


def test_timeout_is_an_execution_timeout_error(ragflow):
    verdict, message, result = run(ragflow, "def main():\n    print('working')\n    while True:\n        pass")
    assert (verdict, message) == ("error", "Execution timeout")
    assert result["exit_code"] == -124
    assert result["body"]["resource_limit_type"] == "time"


def test_memory_blow_up_is_a_memory_error(ragflow):
    code = "def main():\n    blocks = []\n    while True:\n        blocks.append(bytearray(64 * 1024 * 1024))"
    verdict, message, result = run(ragflow, code)
    assert (verdict, message) == ("error", "Memory limit exceeded (killed by OOM)")
    assert result["exit_code"] == -137
    assert result["body"]["resource_limit_type"] == "memory"


def test_output_flood_returns_the_output_and_the_result(ragflow):
    # The reference has no output cap: the output (ours truncated at the cap) and the result come back as a
    # success, and the truncation is said in stderr after the output.
    verdict, value, result = run(ragflow, "def main():\n    print('x' * (3 * 1024 * 1024))\n    return 1")
    assert (verdict, value) == ("success", 1)
    assert (result["status"], result["exit_code"]) == ("success", 0)
    assert result["stdout"].startswith("x" * 1000) and len(result["stdout"]) >= 1024 * 1024 - 1
    assert result["stderr"].splitlines()[-1].startswith("Output limit exceeded")


def test_current_libraries_as_in_the_references_image(ragflow):
    code = ("import numpy, pandas, matplotlib, requests\n"
            "def main():\n"
            "    frame = pandas.DataFrame({'a': [1, 2]}).map(lambda x: x * 10)\n"
            "    return {'pandas': pandas.__version__, 'numpy': numpy.__version__,\n"
            "            'matplotlib': matplotlib.__version__, 'mapped': frame['a'].tolist()}")
    verdict, value, _ = run(ragflow, code)
    assert verdict == "success", value
    assert value["mapped"] == [10, 20], "DataFrame.map (pandas 2.1+) works"
    assert int(value["pandas"].split(".")[0]) >= 2 and int(value["numpy"].split(".")[0]) >= 2, value
    verdict, value, _ = run(ragflow, "function main() { return { node: process.version, axios: "
                                     "require('axios').VERSION }; }", "nodejs")
    assert verdict == "success", value
    assert int(value["node"].lstrip("v").split(".")[0]) >= 22, value
    assert int(value["axios"].split(".")[1]) >= 15 or int(value["axios"].split(".")[0]) > 1, value


def test_a_script_without_main_is_an_error_in_the_references_words(ragflow):
    verdict, message, result = run(ragflow, "print('hello from top level, no main')")
    assert verdict == "error" and result["status"] == "program_error"
    assert message.splitlines()[-1] == "ImportError: cannot import name 'main' from 'main' (main.py)"


def test_a_warning_on_stderr_does_not_hide_the_failure(ragflow):
    code = "import warnings\ndef main():\n    warnings.warn('careful')\n    return {1, 2}"
    verdict, message, _ = run(ragflow, code)
    assert verdict == "error"
    assert "UserWarning: careful" in message
    assert "not JSON" in message.splitlines()[-1], "the reason is on the last line"


def test_node_stderr_then_no_return_value_says_why(ragflow):
    code = "function main(args) { console.error('about to finish'); }"
    verdict, message, _ = run(ragflow, code, "nodejs")
    assert verdict == "error"
    assert message.splitlines()[0] == "about to finish"
    assert "main() must return a value" in message.splitlines()[-1]


def test_ragflows_axios_example_without_network_says_both_things(ragflow):
    code = ("const axios = require('axios');\n"
            "async function main(args) {\n"
            "  try { await axios.get('https://example.com', { timeout: 5000 }); }\n"
            "  catch (err) { console.error('request failed:', err.code || err.message); }\n"
            "}")
    verdict, message, _ = run(ragflow, code, "nodejs")
    assert verdict == "error"
    assert message.splitlines()[0].startswith("request failed:")
    assert "main() must return a value" in message.splitlines()[-1]


def test_ragflows_chart_example_works_without_creating_the_folder(ragflow):
    code = (
        "import matplotlib.pyplot as plt\n"
        "def main() -> dict:\n"
        "    fig, ax = plt.subplots()\n"
        "    ax.plot([1, 2, 3], [3, 1, 2])\n"
        "    ax.set_title('销售额 売上 매출')\n"
        "    fig.savefig('artifacts/chart.png', dpi=150, bbox_inches='tight')\n"
        "    return {'summary': 'Chart saved to artifacts/chart.png'}"
    )
    verdict, value, result = run(ragflow, code)
    assert (verdict, value) == ("success", {"summary": "Chart saved to artifacts/chart.png"})
    [chart] = result["artifacts"]
    assert (chart["name"], chart["mime_type"]) == ("chart.png", "image/png")
    assert base64.b64decode(chart["content_b64"]).startswith(b"\x89PNG")
    assert "missing from" not in result["stderr"], "CJK labels draw with the image's fallback font"


def test_only_the_artifacts_folder_is_collected(ragflow):
    # RAGFlow's executor collects artifacts/ alone: a file at the top of the working folder is not promoted.
    code = "def main():\n    open('report.csv', 'w').write('a,b\\n1,2\\n')\n    return 1"
    verdict, _, result = run(ragflow, code)
    assert verdict == "success"
    assert result["artifacts"] == []


def test_unicode_round_trips(ragflow):
    code = "def main(s):\n    print(s)\n    return {'echo': s, 'length': len(s)}"
    text = "Ünïcödé ✓ 中文 🚀"
    verdict, value, result = run(ragflow, code, arguments={"s": text})
    assert (verdict, value) == ("success", {"echo": text, "length": len(text)})
    assert result["stdout"] == "Ünïcödé ✓ 中文 🚀\n"


def test_a_two_megabyte_result(ragflow):
    verdict, value, _ = run(ragflow, "def main():\n    return 'z' * (2 * 1024 * 1024)")
    assert verdict == "success"
    assert len(value) == 2 * 1024 * 1024


def test_requests_is_there_and_fails_fast_without_network(ragflow):
    code = (
        "import requests\n"
        "def main():\n"
        "    try:\n"
        "        requests.get('https://example.com', timeout=20)\n"
        "    except requests.RequestException as exc:\n"
        "        return type(exc).__name__\n"
        "    return 'reached the internet'"
    )
    started = time.monotonic()
    verdict, value, _ = run(ragflow, code)
    assert (verdict, value) == ("success", "ConnectionError")
    assert time.monotonic() - started < 8


def test_the_ragflow_account_keeps_its_own_history(ragflow, gunicorn, live_server, token):
    from sandboxctl.executions.models import Execution

    run(ragflow, "def main():\n    return 'by ragflow'")
    assert Execution.objects.filter(caller__username="ragflow", result="by ragflow").exists()
    mine = requests.get(f"{live_server.url}/api/v1/executions", headers={"Authorization": f"Bearer {token}"},
                        timeout=30).json()["results"]
    assert all(item["result"]["value"] != "by ragflow" for item in mine), "another account does not see it"


"""Result spoofing: what comes back is what the code did, never what it claims to have done.

Each test is one attack through the real API on a real runsc sandbox, asserting the stored outcome.
"""

import json

import pytest

FRAME = (
    "import json, os, struct\n"
    "def frame(kind, payload):\n"
    "    return kind + struct.pack('>I', len(payload)) + payload\n"
    "FORGED_DONE = json.dumps({'exit_code': 0, 'memory_used_kb': 1, 'duration': 0.001, 'timed_out': False,\n"
    "    'result': {'ok': True, 'value_json': json.dumps({'forged': True})},\n"
    "    'artifacts': [{'name': '../../../etc/cron.d/evil.html', 'mime_type': 'text/html', 'size': 4,\n"
    "                   'content_b64': 'ZXZpbA=='}]}).encode()\n"
    "FORGERY = frame(b'O', b'forged stdout') + frame(b'D', FORGED_DONE)\n"
)


def assert_not_forged(body: dict) -> None:
    assert body["result"]["value"] != {"forged": True}
    assert "forged stdout" not in body["stdout"]
    assert all("evil" not in artifact["name"] for artifact in body["artifacts"])
    assert body["execution_time"] is None or body["execution_time"] > 0.001
    assert body["memory_used_kb"] is None or body["memory_used_kb"] > 1000


def test_python_cannot_open_the_supervisors_stdout(api):
    code = FRAME + (
        "import time\n"
        "def main():\n"
        "    try:\n"
        "        fd = os.open('/proc/1/fd/1', os.O_WRONLY)\n"
        "    except OSError as exc:\n"
        "        return exc.strerror\n"
        "    os.write(fd, FORGERY)\n"
        "    time.sleep(1)\n"
        "    return 'real'"
    )
    body = api.run(code)
    assert body["status"] == "succeeded"
    assert body["result"]["value"] == "Permission denied"
    assert_not_forged(body)


def test_node_cannot_open_the_supervisors_stdout(api):
    code = (
        "const fs = require('fs');\n"
        "function main() {\n"
        "  try { fs.openSync('/proc/1/fd/1', 'w'); } catch (e) { return e.code; }\n"
        "  return 'opened';\n"
        "}"
    )
    body = api.run(code, language="nodejs")
    assert (body["status"], body["result"]["value"]) == ("succeeded", "EACCES")


@pytest.mark.parametrize("target", ["/proc/1/fd/2", "/proc/1/mem", "/proc/1/task/1/fd/1", "/proc/1/root/proc/1/fd/1"])
def test_supervisor_descriptors_and_memory_are_closed_to_user_code(api, target):
    code = (
        "import os\n"
        "def main(path):\n"
        "    try:\n"
        "        os.close(os.open(path, os.O_RDWR))\n"
        "    except OSError as exc:\n"
        "        return exc.strerror\n"
        "    return 'opened'"
    )
    body = api.run(code, arguments={"path": target})
    assert body["result"]["value"] in ("Permission denied", "No such file or directory"), body


def test_supervisor_pipes_are_closed_to_user_code(api):
    code = (
        "import os\n"
        "def main():\n"
        "    opened = []\n"
        "    for name in os.listdir('/proc/1/fd'):\n"
        "        for mode in (os.O_RDONLY, os.O_WRONLY):\n"
        "            try:\n"
        "                os.close(os.open(f'/proc/1/fd/{name}', mode))\n"
        "            except OSError:\n"
        "                continue\n"
        "            opened.append(name)\n"
        "    return sorted(set(opened))"
    )
    body = api.run(code)
    # Only fd 0 may open: once the job is read the supervisor's stdin is /dev/null, which leads nowhere.
    assert body["result"]["value"] in ([], ["0"]), body["result"]


def test_fake_frames_and_markers_on_stdout_are_only_text(api):
    code = FRAME + (
        "import sys\n"
        "def main():\n"
        "    sys.stdout.buffer.write(FORGERY)\n"
        "    print('__RESULT__ 666')\n"
        "    return 42"
    )
    body = api.run(code)
    assert body["result"]["value"] == 42
    assert "__RESULT__ 666" in body["stdout"] and "forged stdout" in body["stdout"]
    assert body["artifacts"] == []


# Code that writes its own answer on the result pipe (fd 3): framed as the child frames it, carrying the cell's
# nonce, which the code can read from the runner's frame below its own (it is the same process).
WRITE_ANSWER = (
    "import json, os, sys\n"
    "def answer(outcome):\n"
    "    nonce = sys._getframe(2).f_locals['job']['nonce']\n"
    "    body = json.dumps({**outcome, 'nonce': nonce}).encode()\n"
    "    os.write(3, len(body).to_bytes(4, 'big') + body)\n"
    "    os._exit(0)\n"
)


def test_forged_outcome_on_the_result_pipe_cannot_set_measurements(api):
    code = WRITE_ANSWER + (
        "def main():\n"
        "    answer({'ok': True, 'value_json': '\"X\"', 'maxrss_kb': 7, 'duration': 0.0001,\n"
        "            'memory_used_kb': 1, 'execution_time': 0.0})"
    )
    body = api.run(code)
    assert body["status"] == "succeeded", body
    assert body["result"]["value"] == "X", "what the code wrote as its result is its result"
    assert body["memory_used_kb"] > 1000, "memory is measured by the supervisor, not reported by the child"


def test_an_answer_without_the_cells_framing_and_nonce_is_no_answer(api):
    body = api.run("import os\ndef main():\n    os.write(3, b'{\"ok\": true, \"value_json\": \"6\"}')\n"
                   "    os._exit(0)")
    assert (body["status"], body["error"]["code"]) == ("failed", "protocol_error"), body
    assert body["result"]["present"] is False, "text without the cell's nonce is unreadable, never a result"


def test_nan_written_as_the_result_is_the_users_failure(api):
    body = api.run(WRITE_ANSWER + "def main():\n    answer({'ok': True, 'value_json': 'NaN'})")
    assert body["status"] == "failed"
    assert body["error"]["code"] == "result_not_serializable"


def test_unreadable_result_pipe_contents_are_the_users_failure(api):
    body = api.run("import os\ndef main():\n    os.write(3, b'\\xff\\xfe not json')\n    os._exit(0)")
    assert body["status"] == "failed"
    assert body["result"]["present"] is False


def test_writes_to_descriptors_4_to_20_go_nowhere(api):
    code = (
        "import os\n"
        "def main():\n"
        "    outcome = {}\n"
        "    for fd in range(4, 21):\n"
        "        try:\n"
        "            os.write(fd, b'D\\x00\\x00\\x00\\x02{}')\n"
        "            outcome[fd] = 'written'\n"
        "        except OSError as exc:\n"
        "            outcome[fd] = exc.strerror\n"
        "    return outcome"
    )
    body = api.run(code)
    assert body["status"] == "succeeded"
    assert set(body["result"]["value"].values()) == {"Bad file descriptor"}


def test_monkeypatched_json_cannot_change_measurements(api):
    code = (
        "import json\n"
        "real = json.dumps\n"
        "json.dumps = lambda obj, **kw: real({'ok': True, 'value_json': '1', 'maxrss_kb': 1, 'duration': 0.0})\n"
        "def main():\n"
        "    return 'x'"
    )
    body = api.run(code)
    assert body["memory_used_kb"] > 1000
    assert body["execution_time"] > 0.0


def test_node_monkeypatched_stringify_cannot_change_measurements(api):
    code = (
        "const real = JSON.stringify;\n"
        "JSON.stringify = () => real({ok: true, value_json: '2', maxrss_kb: 2});\n"
        "function main() { return 'x'; }"
    )
    body = api.run(code, language="nodejs")
    assert body["memory_used_kb"] > 1000


def test_os_exit_after_printing_a_forgery_is_a_failure(api):
    code = FRAME + (
        "import sys\ndef main():\n    sys.stdout.buffer.write(FORGERY)\n    sys.stdout.flush()\n    os._exit(0)"
    )
    body = api.run(code)
    assert body["status"] == "failed"
    assert body["error"]["code"] == "process_exited"
    assert body["result"]["present"] is False and body["artifacts"] == []
    assert body["memory_used_kb"] > 1000


def test_closed_stdout_still_returns_the_result(api):
    body = api.run("import os\ndef main():\n    os.close(1)\n    return 'after close'")
    assert (body["status"], body["result"]["value"]) == ("succeeded", "after close")


def test_stdout_redirected_to_the_result_pipe_cannot_forge(api):
    code = (
        "import os, sys\n"
        "def main():\n"
        "    os.dup2(3, 1)\n"
        "    print('{\"ok\": true, \"value_json\": \"666\"}', flush=True)\n"
        "    return 1"
    )
    body = api.run(code)
    # Text on the result pipe ahead of the runner's own report makes it unreadable: a failure, not 666.
    assert body["status"] == "failed"
    assert body["result"]["present"] is False


def test_system_exit_is_a_failure(api):
    body = api.run("import sys\ndef main():\n    sys.exit(0)")
    assert body["status"] == "failed"
    assert body["error"]["code"] == "system_exit"


def test_huge_result_is_refused(api):
    body = api.run("def main():\n    return 'x' * (8 * 1024 * 1024)", timeout=30)
    assert body["status"] == "failed"
    assert body["result"]["present"] is False


def test_deeply_nested_result_is_refused(api):
    body = api.run("def main():\n    value = []\n    for _ in range(200):\n        value = [value]\n    return value")
    assert body["status"] == "failed"
    assert body["error"]["code"] == "result_not_serializable"


def test_non_serialisable_result_is_refused(api):
    body = api.run("def main():\n    return {1, 2}")
    assert (body["status"], body["error"]["code"]) == ("failed", "result_not_serializable")


def test_nan_result_is_refused(api):
    body = api.run("def main():\n    return float('nan')")
    assert (body["status"], body["error"]["code"]) == ("failed", "result_not_serializable")


NODE_RESULTS = {
    "process_exit": ("function main() { process.exit(0); }", "process_exited"),
    "undefined": ("function main() { }", "no_return_value"),
    "bigint": ("function main() { return 10n; }", "result_not_serializable"),
    "circular": ("function main() { const a = {}; a.a = a; return a; }", "result_not_serializable"),
    "unhandled_rejection": (
        "function main() { Promise.reject(new Error('later')); return new Promise(r => setTimeout(() => r(1), 200)); }",
        None,
    ),
}


@pytest.mark.parametrize("case", NODE_RESULTS, ids=NODE_RESULTS.keys())
def test_node_result_edge_cases_fail_as_the_users_own(api, case):
    code, error_code = NODE_RESULTS[case]
    body = api.run(code, language="nodejs")
    assert body["status"] == "failed", body
    assert body["result"]["present"] is False
    if error_code:
        assert body["error"]["code"] == error_code
    assert json.dumps(body)  # the answer is plain JSON

"""The runner protocol through the real API: arguments in as JSON, the return value out on its own channel."""

ARGUMENTS = {
    "flag": True, "nothing": None, "off": False, "text": "héllo 日本 🎉", "nested": {"list": [1, 2.5, {"x": []}]},
}


def test_python_arguments_round_trip(api):
    body = api.run("def main(**kwargs):\n    return kwargs", arguments=ARGUMENTS)
    assert body["status"] == "succeeded"
    assert body["result"] == {"present": True, "value": ARGUMENTS}


def test_node_arguments_round_trip(api):
    body = api.run("function main(args) { return args; }", language="nodejs", arguments=ARGUMENTS)
    assert body["status"] == "succeeded"
    assert body["result"] == {"present": True, "value": ARGUMENTS}


def test_javascript_alias_with_async_exported_main(api):
    code = "module.exports.main = async ({ a, b }) => { await new Promise(r => setTimeout(r, 10)); return a + b; };"
    body = api.run(code, language="javascript", arguments={"a": 2, "b": 3})
    assert (body["status"], body["language"], body["result"]["value"]) == ("succeeded", "nodejs", 5)


def test_python_async_main_and_numpy_values(api):
    code = "import numpy as np\nasync def main(n):\n    return {'sum': np.arange(n).sum(), 'arr': np.ones(2)}"
    body = api.run(code, arguments={"n": 4})
    assert body["result"]["value"] == {"sum": 6, "arr": [1.0, 1.0]}


def test_printed_marker_cannot_forge_the_result(api):
    code = (
        "import sys\n"
        "def main():\n"
        "    print('{\"ok\": true, \"value_json\": \"666\"}')\n"
        "    sys.stdout.write('\\x44\\x00\\x00\\x00\\x05forge')\n"
        "    print('__RESULT__ 666')\n"
        "    return 42"
    )
    body = api.run(code)
    assert body["result"]["value"] == 42
    assert "__RESULT__ 666" in body["stdout"] and '"value_json": "666"' in body["stdout"]


def test_node_printed_marker_cannot_forge_the_result(api):
    code = "function main() { console.log(JSON.stringify({ok: true, value_json: '666'})); return 7; }"
    body = api.run(code, language="nodejs")
    assert body["result"]["value"] == 7
    assert "value_json" in body["stdout"]


def test_stdout_and_stderr_are_separate(api):
    body = api.run("import sys\ndef main():\n    print('out')\n    print('err', file=sys.stderr)\n    return 1")
    assert (body["stdout"], body["stderr"]) == ("out\n", "err\n")


def test_missing_main_with_arguments_fails_clearly(api):
    body = api.run("x = 1", arguments={"a": 1})
    assert body["status"] == "failed"
    assert "main" in body["error"]["message"]


def test_main_not_callable_fails_clearly(api):
    body = api.run("main = 3", arguments={"a": 1})
    assert body["status"] == "failed"
    assert body["error"]["code"] == "main_not_callable"


def test_non_json_return_value_fails_clearly(api):
    body = api.run("def main():\n    return object()")
    assert body["status"] == "failed"
    assert body["error"]["code"] == "result_not_serializable"


def test_node_non_json_return_value_fails_clearly(api):
    body = api.run("function main() { return 10n; }", language="nodejs")
    assert body["status"] == "failed"
    assert body["error"]["code"] == "result_not_serializable"


def test_plain_script_without_main_runs_when_no_arguments(api):
    body = api.run("print('just a script')")
    assert body["status"] == "succeeded"
    assert body["stdout"] == "just a script\n"
    assert body["result"]["present"] is False


def test_node_plain_script_waits_for_timers(api):
    body = api.run("setTimeout(() => console.log('later'), 50); console.log('now');", language="nodejs")
    assert body["stdout"] == "now\nlater\n"


def test_user_exception_is_failed_with_traceback(api):
    body = api.run("def main():\n    raise ValueError('bad input')")
    assert body["status"] == "failed"
    assert body["error"] == {"code": "value_error", "message": "ValueError: bad input"}
    assert "ValueError: bad input" in body["stderr"]
    assert body["exit_code"] == 1


def test_syntax_error_is_failed(api):
    body = api.run("def main(:\n    pass")
    assert body["status"] == "failed"
    assert body["error"]["code"] == "syntax_error"


def test_timing_and_memory_are_measured(api):
    body = api.run("def main():\n    return 1")
    assert 0 < body["execution_time"] < 5
    assert body["memory_used_kb"] > 1000


def test_nul_characters_in_output_and_result_are_stored(api):
    body = api.run("def main():\n    print('a\\x00b')\n    return 'c\\x00d'")
    assert body["status"] == "succeeded"
    assert body["stdout"] == "a\ufffdb\n"
    assert body["result"]["value"] == "c\ufffdd"

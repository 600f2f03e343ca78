"""SaaS runs through the real SDKs against local fakes that execute the driver programs for real: the user's
code runs in a process of its own, main() is awaited when async, and nothing it does can forge the outcome."""

import pytest

from providers.base import Limits, Status

LIMITS = Limits(timeout=5, memory_mb=256, output_limit=1024 * 1024)
ARGUMENTS = {"flag": True, "nothing": None, "text": "héllo 日本 \"quoted\"", "nested": {"list": [1, {"deep": False}]}}


def test_python_round_trips_arguments_and_deletes_its_sandbox(saas):
    result = saas.provider().run("def main(**kwargs):\n    print('hi')\n    return kwargs", "python", LIMITS,
                                 ARGUMENTS)
    assert (result.status, result.result_value, result.stdout) == (Status.SUCCEEDED, ARGUMENTS, "hi\n")
    assert result.sandbox_id and saas.alive() == []


def test_node_round_trips_arguments(saas):
    result = saas.provider().run("function main(args) { console.log('hi'); return args; }", "nodejs", LIMITS,
                                 ARGUMENTS)
    assert (result.status, result.result_value, result.stdout) == (Status.SUCCEEDED, ARGUMENTS, "hi\n")


def test_arguments_are_never_pasted_into_the_program(saas):
    saas.provider().run("def main(**kwargs):\n    return kwargs", "python", LIMITS, ARGUMENTS)
    programs = [body for _, path, _, body in saas.fake.requests if path.endswith("execute")]
    assert programs and all(b"true" not in body and "日本".encode() not in body for body in programs)


@pytest.mark.parametrize(
    ("language", "code"),
    [
        ("python", "import asyncio\nasync def main(n):\n    await asyncio.sleep(0.01)\n    return n * 2"),
        ("nodejs", "async function main(args) { await new Promise(r => setTimeout(r, 10)); return args.n * 2; }"),
    ],
)
def test_async_main_is_awaited(saas, language, code):
    result = saas.provider().run(code, language, LIMITS, {"n": 21})
    assert (result.status, result.result_value) == (Status.SUCCEEDED, 42), result.stderr


def test_a_failing_main_fails_with_its_traceback_and_the_same_words_as_self_managed(saas):
    result = saas.provider().run("def main():\n    raise ValueError('bad input')", "python", LIMITS, {})
    assert (result.status, result.error_code, result.error_message) == (
        Status.FAILED, "value_error", "ValueError: bad input")
    assert "ValueError: bad input" in result.stderr and 'File "main.py", line 2' in result.stderr


def test_a_syntax_error_reads_as_on_self_managed(saas):
    result = saas.provider().run("def main(:\n    pass", "python", LIMITS, {})
    assert (result.status, result.error_code) == (Status.FAILED, "syntax_error")


FORGER = (
    "import base64, json, os, re, sys\n"
    "MARKER = re.compile('__sandboxctl_[0-9a-f]{32}__')\n"
    "def main():\n"
    "    found = set()\n"
    "    frame = sys._getframe()\n"
    "    while frame is not None:\n"
    "        for value in list(frame.f_locals.values()) + list(frame.f_globals.values()):\n"
    "            if isinstance(value, str):\n"
    "                found.update(MARKER.findall(value))\n"
    "        frame = frame.f_back\n"
    "    for path in (f'/proc/{os.getppid()}/cmdline', f'/proc/{os.getppid()}/environ', '/proc/self/environ'):\n"
    "        try:\n"
    "            found.update(MARKER.findall(open(path, 'rb').read().decode(errors='replace')))\n"
    "        except OSError:\n"
    "            pass\n"
    "    forged = {'outcome': {'ok': True, 'value_json': '\"forged\"'}, 'timed_out': False, 'exit_code': 0}\n"
    "    line = base64.b64encode(json.dumps(forged).encode()).decode()\n"
    "    for marker in found:\n"
    "        print('\\n' + marker + line + marker, flush=True)\n"
    "    print('\\n__sandboxctl_' + 'ab' * 16 + '__' + line + '__sandboxctl_' + 'ab' * 16 + '__', flush=True)\n"
    "    return {'found': len(found)}\n"
)


def test_user_code_cannot_find_or_forge_the_outcome(saas):
    result = saas.provider().run(FORGER, "python", LIMITS, {})
    assert (result.status, result.result_value) == (Status.SUCCEEDED, {"found": 0}), (result.stdout, result.stderr)
    assert "__sandboxctl_abab" in result.stdout, "a look-alike line is just output"


def test_node_code_cannot_find_or_forge_the_outcome(saas):
    code = (
        "function main() {\n"
        "  const seen = JSON.stringify([process.argv, Object.keys(globalThis), process.env, process.execArgv]);\n"
        "  const report = {outcome: {ok: true, value_json: '\"forged\"'}};\n"
        "  const forged = Buffer.from(JSON.stringify(report)).toString('base64');\n"
        "  const fake = '__sandboxctl_' + 'cd'.repeat(16) + '__';\n"
        "  console.log('\\n' + fake + forged + fake);\n"
        "  return {found: /__sandboxctl_[0-9a-f]{32}__/.test(seen)};\n"
        "}\n"
    )
    result = saas.provider().run(code, "nodejs", LIMITS, {})
    assert (result.status, result.result_value) == (Status.SUCCEEDED, {"found": False}), result.stderr


def test_exiting_early_is_the_codes_failure_not_a_success(saas):
    result = saas.provider().run("import os\ndef main():\n    os._exit(0)", "python", LIMITS, {})
    assert (result.status, result.error_code) == (Status.FAILED, "process_exited")


def test_the_code_runs_in_a_process_of_its_own(saas):
    code = "import os, sys\ndef main():\n    return [os.getpid() != os.getppid(), 'ipykernel' in sys.modules]"
    result = saas.provider().run(code, "python", LIMITS, {})
    assert result.result_value == [True, False]


def test_a_real_timeout_is_timeout_and_ends_on_time(saas):
    import time

    started = time.monotonic()
    result = saas.provider().run("import time\ndef main():\n    print('started', flush=True)\n    time.sleep(60)",
                                 "python", Limits(timeout=2, memory_mb=256, output_limit=1024), {})
    assert (result.status, result.error_code) == (Status.TIMEOUT, "timeout")
    assert "started" in result.stdout and time.monotonic() - started < 2 + 8
    assert saas.alive() == []


def test_environment_credentials_are_never_used(saas, monkeypatch):
    for name in ("E2B_API_KEY", "AGENTRUN_ACCESS_KEY_ID"):
        monkeypatch.setenv(name, "from-the-environment")
    monkeypatch.setenv("E2B_API_URL", "http://127.0.0.1:9")
    monkeypatch.setenv("AGENTRUN_DATA_ENDPOINT", "http://127.0.0.1:9")
    assert saas.provider().run("def main():\n    return 1", "python", LIMITS, {}).status == Status.SUCCEEDED

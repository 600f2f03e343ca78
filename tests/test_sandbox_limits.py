"""Limits enforced by the worker from what it observed: time, memory, processes, output."""

import time

import pytest

TIMEOUT = 2.0

LOOPS = {
    "busy_loop": "def main():\n    while True:\n        pass",
    "long_sleep": "import time\ndef main():\n    time.sleep(1e6)",
    "ignores_sigterm": (
        "import signal, time\n"
        "def main():\n"
        "    signal.signal(signal.SIGTERM, signal.SIG_IGN)\n"
        "    while True:\n"
        "        time.sleep(0.01)"
    ),
}


@pytest.mark.parametrize("code", LOOPS.values(), ids=LOOPS.keys())
def test_timeout_is_reported_within_deadline_plus_one_second(api, code):
    started = time.monotonic()
    body = api.run("print('partial', flush=True)\n" + code, timeout=TIMEOUT)
    elapsed = time.monotonic() - started
    assert body["status"] == "timeout"
    assert body["error"]["code"] == "timeout"
    assert elapsed < TIMEOUT + 1.0
    assert body["stdout"] == "partial\n", "partial output is kept"


def test_node_busy_loop_times_out(api):
    started = time.monotonic()
    body = api.run("function main() { for (;;) {} }", language="nodejs", timeout=TIMEOUT)
    assert body["status"] == "timeout"
    assert time.monotonic() - started < TIMEOUT + 1.0


def test_timeout_above_server_maximum_is_clamped(api, settings):
    body = api.run("def main():\n    return 1", timeout=10_000, memory_mb=100_000)
    assert body["limits"]["timeout"] == settings.SANDBOX_TIMEOUT_MAX
    assert body["limits"]["memory_mb"] == settings.SANDBOX_MEMORY_MAX_MB


def test_python_memory_bomb_is_memory_limit(api):
    code = "def main():\n    blocks = []\n    while True:\n        blocks.append(bytearray(50 * 1024 * 1024))"
    body = api.run(code, memory_mb=128)
    assert body["status"] == "memory_limit"
    assert body["error"]["code"] == "memory_limit"


def test_node_memory_bomb_is_memory_limit(api):
    code = "function main() { const a = []; for (;;) a.push(new Array(1e6).fill(1.5)); }"
    body = api.run(code, language="nodejs", timeout=20)
    assert body["status"] == "memory_limit"


def test_memory_within_limit_succeeds(api):
    body = api.run("def main():\n    data = bytearray(40 * 1024 * 1024)\n    return len(data)", memory_mb=128)
    assert body["status"] == "succeeded"
    assert body["result"]["value"] == 40 * 1024 * 1024


def test_fork_bomb_is_contained_and_the_next_run_succeeds(api):
    code = (
        "import os, time\n"
        "def main():\n"
        "    errors = 0\n"
        "    for _ in range(500):\n"
        "        try:\n"
        "            if os.fork() == 0:\n"
        "                time.sleep(30)\n"
        "                os._exit(0)\n"
        "        except OSError:\n"
        "            errors += 1\n"
        "    return errors"
    )
    body = api.run(code, timeout=10)
    assert body["status"] in ("succeeded", "memory_limit", "timeout"), body
    if body["status"] == "succeeded":
        assert body["result"]["value"] > 0, "fork must fail with EAGAIN once nproc is reached"
    assert api.run("def main():\n    return 'alive'")["result"]["value"] == "alive"


def test_output_flood_is_truncated_at_the_cap(api, settings):
    code = "import sys\ndef main():\n    sys.stdout.write('x' * (5 * 1024 * 1024))\n    return 'done'"
    body = api.run(code)
    assert body["status"] == "output_limit"
    assert body["truncated"]["stdout"] is True
    assert len(body["stdout"]) == settings.SANDBOX_OUTPUT_LIMIT
    assert body["result"]["value"] == "done", "the return value survives truncated output"


def test_huge_line_without_newline_on_stderr_is_truncated(api, settings):
    code = "import os\ndef main():\n    for _ in range(200):\n        os.write(2, b'y' * 1024 * 1024)\n    return 1"
    body = api.run(code, timeout=30)
    assert body["truncated"]["stderr"] is True
    assert len(body["stderr"]) == settings.SANDBOX_OUTPUT_LIMIT

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


def test_node_output_flood_is_truncated(api, settings):
    body = api.run("function main() { process.stdout.write('z'.repeat(3 * 1024 * 1024)); return 'done'; }",
                   language="nodejs")
    assert body["status"] == "output_limit"
    assert len(body["stdout"]) == settings.SANDBOX_OUTPUT_LIMIT


def test_thread_bomb_is_contained(api):
    code = (
        "import threading, time\n"
        "def main():\n"
        "    started = 0\n"
        "    try:\n"
        "        for _ in range(2000):\n"
        "            threading.Thread(target=time.sleep, args=(30,), daemon=True).start()\n"
        "            started += 1\n"
        "    except RuntimeError:\n"
        "        pass\n"
        "    return started"
    )
    body = api.run(code, timeout=10)
    assert body["status"] in ("succeeded", "memory_limit", "timeout"), body
    if body["status"] == "succeeded":
        assert body["result"]["value"] < 2000, "threads count against nproc"
    assert api.run("def main():\n    return 'alive'")["result"]["value"] == "alive"


def test_node_process_flood_is_the_runs_own_outcome(api):
    code = (
        "const cp = require('child_process');\n"
        "function main() {\n"
        "  let spawned = 0;\n"
        "  for (let i = 0; i < 1000; i++) {\n"
        "    try {\n"
        "      const child = cp.spawn('sleep', ['30'], {detached: true, stdio: 'ignore'});\n"
        "      child.on('error', () => {});\n"
        "      child.unref();\n"
        "      if (child.pid) spawned++;\n"
        "    } catch (e) {}\n"
        "  }\n"
        "  return spawned;\n"
        "}"
    )
    body = api.run(code, language="nodejs", timeout=5)
    assert body["status"] in ("succeeded", "timeout", "memory_limit"), body
    assert api.run("function main() { return 'alive'; }", language="nodejs")["result"]["value"] == "alive"


def test_python_process_flood_with_exec_is_contained(api):
    code = (
        "import subprocess\n"
        "def main():\n"
        "    spawned = failed = 0\n"
        "    for _ in range(300):\n"
        "        try:\n"
        "            subprocess.Popen(['sleep', '30'], start_new_session=True)\n"
        "            spawned += 1\n"
        "        except OSError:\n"
        "            failed += 1\n"
        "    return {'spawned': spawned, 'failed': failed}"
    )
    body = api.run(code, timeout=10)
    assert body["status"] in ("succeeded", "timeout", "memory_limit"), body
    if body["status"] == "succeeded":
        assert body["result"]["value"]["failed"] > 0
    assert api.run("def main():\n    return 'alive'")["result"]["value"] == "alive"


@pytest.mark.parametrize("folder", ["/work", "/tmp"])
def test_disk_fill_ends_in_the_users_own_error(api, folder):
    code = (
        "import os\n"
        "def main(folder):\n"
        "    written = 0\n"
        "    try:\n"
        "        with open(os.path.join(folder, 'fill.bin'), 'wb') as f:\n"
        "            while written < 1024 ** 3:\n"
        "                f.write(b'\\0' * (1024 * 1024))\n"
        "                written += 1024 * 1024\n"
        "    except OSError as exc:\n"
        "        return {'error': exc.strerror, 'mb': written // 1024 // 1024}\n"
        "    return {'mb': written // 1024 // 1024}"
    )
    body = api.run(code, arguments={"folder": folder}, timeout=20)
    assert body["status"] in ("succeeded", "memory_limit"), body
    if body["status"] == "succeeded":
        assert body["result"]["value"]["error"] == "No space left on device"
        assert body["result"]["value"]["mb"] <= 128
    assert api.run("import os\ndef main():\n    return os.listdir('/work')")["result"]["value"] == ["artifacts"]


def test_deep_recursion_is_a_failure(api):
    body = api.run("def f(n):\n    return f(n + 1)\ndef main():\n    f(0)")
    assert (body["status"], body["error"]["code"]) == ("failed", "recursion_error")


def test_unbounded_recursion_with_the_limit_lifted_is_contained(api):
    code = "import sys\nsys.setrecursionlimit(10**7)\ndef f(n):\n    return f(n + 1)\ndef main():\n    f(0)"
    body = api.run(code, timeout=5)
    assert body["status"] in ("failed", "memory_limit", "timeout"), body
    assert api.run("def main():\n    return 'alive'")["result"]["value"] == "alive"


def test_node_deep_recursion_is_a_failure(api):
    body = api.run("function f(n) { return f(n + 1) + 1; }\nfunction main() { return f(0); }", language="nodejs")
    assert body["status"] == "failed"
    assert body["error"]["code"] == "range_error"


def test_memory_bomb_in_a_grandchild_is_contained(api):
    code = (
        "import subprocess, sys\n"
        "def main():\n"
        "    bomb = 'a = []\\nwhile True:\\n    a.append(bytearray(50 * 1024 * 1024))'\n"
        "    return subprocess.run([sys.executable, '-c', bomb], capture_output=True).returncode"
    )
    body = api.run(code, memory_mb=128, timeout=20)
    assert body["status"] in ("succeeded", "memory_limit"), body
    assert api.run("def main():\n    return 'alive'")["result"]["value"] == "alive"

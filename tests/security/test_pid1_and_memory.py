"""Two findings of the second campaign: the child reaching PID 1 through calls runsc 0.0~20240729 does not
check across uids, and memory held in tmpfs escaping the run's memory_mb."""

import pytest

PID1_CALLS = (
    "import ctypes, os\n"
    "libc = ctypes.CDLL(None, use_errno=True)\n"
    "def attempt(call):\n"
    "    ctypes.set_errno(0)\n"
    "    result = call()\n"
    "    return os.strerror(ctypes.get_errno()) if result == -1 else 'allowed'\n"
    "def main():\n"
    "    mask = ctypes.c_ulong(1)\n"
    "    head, size = ctypes.c_void_p(), ctypes.c_size_t()\n"
    "    return {\n"
    "        'setpriority': attempt(lambda: libc.setpriority(0, 1, -5)),\n"
    "        'setpriority_user_root': attempt(lambda: libc.setpriority(2, 0, 5)),\n"
    "        'sched_setaffinity': attempt(lambda: libc.sched_setaffinity(1, 8, ctypes.byref(mask))),\n"
    "        'get_robust_list': attempt(lambda: libc.syscall(274, 1, ctypes.byref(head), ctypes.byref(size))),\n"
    "        'own_nice': attempt(lambda: libc.setpriority(0, 0, 5)),\n"
    "        'own_affinity': attempt(lambda: libc.sched_setaffinity(0, 8, ctypes.byref(mask))),\n"
    "    }"
)


def test_the_child_cannot_reprioritise_pin_or_inspect_pid_1(api):
    body = api.run(PID1_CALLS)
    assert body["status"] == "succeeded", body
    outcome = body["result"]["value"]
    for call in ("setpriority", "setpriority_user_root", "sched_setaffinity", "get_robust_list"):
        assert outcome[call] == "Operation not permitted", (call, outcome)
    assert outcome["own_nice"] == "allowed" and outcome["own_affinity"] == "allowed", outcome


def test_the_supervisor_keeps_no_secret_in_its_environment_or_arguments(api):
    code = (
        "def main():\n"
        "    environ = open('/proc/1/environ', 'rb').read().split(b'\\0')\n"
        "    argv = open('/proc/1/cmdline', 'rb').read().split(b'\\0')\n"
        "    return {'environ': sorted(e.split(b'=')[0].decode() for e in environ if e),\n"
        "            'argv': [a.decode() for a in argv if a]}"
    )
    body = api.run(code)
    value = body["result"]["value"]
    # What PID 1 shows is the fixed sandbox environment and the runner's path: the run's key never travels there.
    assert set(value["environ"]) <= {"PATH", "HOME", "LANG", "MPLBACKEND", "MPLCONFIGDIR", "OPENBLAS_NUM_THREADS",
                                     "PYTHONDONTWRITEBYTECODE", "SANDBOX_CONTAINER_MEMORY_MB", "SANDBOX_PRELOAD",
                                     "MATPLOTLIBRC", "NODE_PATH"}, value
    assert value["argv"] == ["python3", "-I", "/opt/sandboxctl/supervisor.py", "python"]


@pytest.mark.parametrize("folder", ["/dev/shm", "/tmp", "/work"])
def test_files_in_tmpfs_count_against_memory_mb(api, folder):
    code = (
        "import os\ndef main(folder):\n"
        "    block = b'x' * (1024 * 1024)\n"
        "    for i in range(120):\n"
        "        with open(os.path.join(folder, f'fill{i}'), 'wb') as f:\n"
        "            f.write(block)\n"
        "    return 'held 120 MB in tmpfs'"
    )
    body = api.run(code, arguments={"folder": folder}, memory_mb=64, timeout=30)
    assert body["status"] == "memory_limit", (body["status"], body["error"], body["stderr"][-500:])


def test_all_tmpfs_together_count_against_memory_mb(api):
    code = (
        "import os\ndef main():\n"
        "    block = b'x' * (1024 * 1024)\n"
        "    for folder in ('/dev/shm', '/tmp', '/work'):\n"
        "        for i in range(50):\n"
        "            with open(os.path.join(folder, f'fill{i}'), 'wb') as f:\n"
        "                f.write(block)\n"
        "    return 'held 150 MB in tmpfs'"
    )
    body = api.run(code, memory_mb=64, timeout=30)
    assert body["status"] == "memory_limit", (body["status"], body["error"])


def test_memory_used_is_the_sandboxs_peak_for_the_run(api):
    code = "import os\ndef main():\n    open('/tmp/f', 'wb').write(b'x' * (40 * 1024 * 1024))\n    return 1"
    body = api.run(code, memory_mb=128)
    assert body["status"] == "succeeded", body
    assert body["memory_used_kb"] > 40 * 1024, "files in tmpfs are part of what the run used"

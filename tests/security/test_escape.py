"""Escape and host access: the user's process sees a small gVisor machine, owns nothing in it, and
cannot grow its privileges, see the host, or reach Docker."""

import json
import os
import socket

import pytest

PROBE = (
    "import os\n"
    "def main(path, mode):\n"
    "    try:\n"
    "        if mode == 'read':\n"
    "            with open(path, 'rb') as f:\n"
    "                return {'read': f.read(4096).decode('latin-1')}\n"
    "        with open(path, 'w') as f:\n"
    "            f.write('1')\n"
    "        return {'written': True}\n"
    "    except OSError as exc:\n"
    "        return {'error': exc.strerror}\n"
)


def probe(api, path: str, mode: str = "read") -> dict:
    body = api.run(PROBE, arguments={"path": path, "mode": mode})
    assert body["status"] == "succeeded", body
    return body["result"]["value"]


def test_supervisor_environment_holds_no_secret(api):
    # /proc/1/environ stays readable on runsc, so nothing secret may ever be in it.
    value = probe(api, "/proc/1/environ")
    text = value.get("read", "")
    for secret in ("DATABASE_URL", "CELERY", "SECRET", "TOKEN", "postgres", "redis", "sbx_"):
        assert secret not in text
    assert "key" not in text.lower()


def test_own_environment_shows_nothing_of_the_worker(api):
    env = api.run("import os\ndef main():\n    return dict(os.environ)")["result"]["value"]
    assert set(env) <= {
        "PATH", "HOME", "LANG", "MPLBACKEND", "MPLCONFIGDIR", "OPENBLAS_NUM_THREADS", "PYTHONDONTWRITEBYTECODE",
        "SANDBOX_CONTAINER_MEMORY_MB", "SANDBOX_PRELOAD", "HOSTNAME", "MATPLOTLIBRC", "NODE_PATH",
    }
    assert not any(secret in json.dumps(env) for secret in ("postgres", "redis", "SECRET", "CELERY"))


def test_mountinfo_shows_no_host_path(api):
    text = probe(api, "/proc/self/mountinfo").get("read", "")
    assert "/work/main" not in text and "/var/lib/docker" not in text and "/etc/docker" not in text


@pytest.mark.parametrize("path", ["/var/run/docker.sock", "/run/docker.sock", "/run/containerd/containerd.sock",
                                  "/var/run/docker/containerd/containerd.sock", "/work/main/manage.py",
                                  "/etc/docker/daemon.json", "/root/.bash_history", "/root/.ssh/id_rsa"])
def test_host_files_and_sockets_are_not_there(api, path):
    assert probe(api, path)["error"] in ("No such file or directory", "Permission denied")


def test_host_kernel_is_not_visible(api):
    value = api.run("import os\ndef main():\n    return os.uname().release")["result"]["value"]
    assert value != os.uname().release


def test_dmesg_shows_only_gvisor(api):
    value = probe(api, "/dev/kmsg")
    assert "read" not in value or "Linux version " + os.uname().release not in value["read"]


@pytest.mark.parametrize("path", ["/sys/fs/cgroup/memory/memory.limit_in_bytes", "/sys/fs/cgroup/pids/pids.max",
                                  "/sys/fs/cgroup/cgroup.procs", "/proc/sys/kernel/hostname", "/etc/passwd",
                                  "/usr/bin/python3", "/opt/sandboxctl/supervisor.py"])
def test_system_files_cannot_be_written(api, path):
    assert "written" not in probe(api, path, mode="write")


def test_runs_as_nobody_with_no_capabilities(api):
    code = (
        "import os\n"
        "def main():\n"
        "    status = dict(line.split(':\\t', 1) for line in open('/proc/self/status').read().splitlines())\n"
        "    return {'ids': [os.getuid(), os.geteuid(), os.getgid(), os.getegid()], 'groups': os.getgroups(),\n"
        "            'caps': [status['CapPrm'], status['CapEff'], status['CapInh']],\n"
        "            'nnp': status.get('NoNewPrivs'), 'seccomp': status.get('Seccomp')}"
    )
    value = api.run(code)["result"]["value"]
    assert value["ids"] == [65534] * 4
    assert value["groups"] == []
    assert value["caps"] == ["0000000000000000"] * 3
    assert value["seccomp"] == "2"


def test_setuid_to_root_is_refused(api):
    code = (
        "import os\n"
        "def main():\n"
        "    outcome = {}\n"
        "    calls = {'setuid': lambda: os.setuid(0), 'setgid': lambda: os.setgid(0),\n"
        "             'setresuid': lambda: os.setresuid(0, 0, 0), 'seteuid': lambda: os.seteuid(0)}\n"
        "    for name, call in calls.items():\n"
        "        try:\n"
        "            call()\n"
        "            outcome[name] = 'allowed'\n"
        "        except OSError as exc:\n"
        "            outcome[name] = exc.strerror\n"
        "    return outcome"
    )
    value = api.run(code)["result"]["value"]
    assert set(value.values()) == {"Operation not permitted"}


LIBC = (
    "import ctypes, os\n"
    "libc = ctypes.CDLL(None, use_errno=True)\n"
    "def errno_of(result):\n"
    "    return os.strerror(ctypes.get_errno()) if result != 0 else 'allowed'\n"
)
NAMESPACE_CALLS = {
    "unshare_user": "errno_of(libc.unshare(0x10000000))",
    "unshare_user_mount": "errno_of(libc.unshare(0x10000000 | 0x00020000))",
    "unshare_net": "errno_of(libc.unshare(0x40000000))",
    "unshare_pid": "errno_of(libc.unshare(0x20000000))",
    "setns": "errno_of(libc.setns(os.open('/proc/self/ns/net', os.O_RDONLY), 0))",
    "mount_tmpfs": "errno_of(libc.mount(b'none', b'/tmp', b'tmpfs', 0, None))",
    "chroot": "errno_of(libc.chroot(b'/tmp'))",
    "ptrace_pid1": "errno_of(libc.ptrace(16, 1, 0, 0))",
    "ptrace_traceme": "errno_of(libc.ptrace(0, 0, 0, 0))",
}


@pytest.mark.parametrize("call", NAMESPACE_CALLS.values(), ids=NAMESPACE_CALLS.keys())
def test_namespaces_mounts_and_ptrace_are_refused(api, call):
    body = api.run(LIBC + f"def main():\n    return {call}")
    assert body["status"] == "succeeded", body
    assert body["result"]["value"] in ("Operation not permitted", "No such file or directory"), body["result"]


CLONE_CALLS = {
    # x86_64 numbers: clone(CLONE_NEWUSER | SIGCHLD) and clone3; a success would fork this process.
    "clone_new_user": "errno_of(libc.syscall(56, 0x10000000 | 17, 0, 0, 0, 0) if os.uname().machine == 'x86_64' "
                      "else -1)",
    "clone3": "errno_of(libc.syscall(435, 0, 0) if os.uname().machine == 'x86_64' else -1)",
    "mknod_char_device": "errno_of(libc.mknod(b'/work/null', 0o020666, 0x105))",
}


@pytest.mark.parametrize("call", CLONE_CALLS.values(), ids=CLONE_CALLS.keys())
def test_clone_into_namespaces_and_device_nodes_are_refused(api, call):
    body = api.run(LIBC + f"def main():\n    return {call}")
    assert body["result"]["value"] in ("Operation not permitted", "Function not implemented"), body


def test_fifos_stay_allowed(api):
    assert api.run("import os\ndef main():\n    os.mkfifo('/work/f')\n    return 1")["status"] == "succeeded"


def test_kill_of_pid_1_is_refused_and_the_run_completes(api):
    code = (
        "import os, signal\n"
        "def main():\n"
        "    outcome = {}\n"
        "    for sig in (signal.SIGKILL, signal.SIGTERM, signal.SIGSTOP):\n"
        "        try:\n"
        "            os.kill(1, sig)\n"
        "            outcome[sig.name] = 'sent'\n"
        "        except OSError as exc:\n"
        "            outcome[sig.name] = exc.strerror\n"
        "    try:\n"
        "        os.kill(-1, signal.SIGKILL)\n"
        "    except OSError as exc:\n"
        "        outcome['all'] = exc.strerror\n"
        "    return outcome"
    )
    body = api.run(code)
    assert body["status"] in ("succeeded", "failed"), body
    if body["status"] == "succeeded":
        value = body["result"]["value"]
        assert {value["SIGKILL"], value["SIGTERM"], value["SIGSTOP"]} == {"Operation not permitted"}
    else:
        # kill(-1) reaches the child's own processes, itself included: its own death, not the sandbox's.
        assert body["error"]["code"] == "process_exited"


def test_host_docker_api_is_unreachable_by_tcp(api):
    code = (
        "import socket\n"
        "def main(host):\n"
        "    try:\n"
        "        socket.create_connection((host, 2375), timeout=2)\n"
        "    except OSError as exc:\n"
        "        return type(exc).__name__\n"
        "    return 'connected'"
    )
    assert api.run(code, arguments={"host": "172.17.0.1"})["result"]["value"] != "connected"


def test_hostname_is_the_sandboxes_own(api):
    assert api.run("import socket\ndef main():\n    return socket.gethostname()")["result"]["value"] == "sandbox"
    assert socket.gethostname() != "sandbox"

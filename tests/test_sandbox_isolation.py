"""What untrusted code must never see: the network, the worker's environment, the Docker socket, other runs."""

import json
import os
import time


def test_no_network_and_it_fails_fast(api):
    code = (
        "import socket\n"
        "def main():\n"
        "    outcome = {}\n"
        "    for name, target in {'internet': ('1.1.1.1', 80), 'gateway': ('172.17.0.1', 2375)}.items():\n"
        "        try:\n"
        "            socket.create_connection(target, timeout=5)\n"
        "            outcome[name] = 'connected'\n"
        "        except OSError as exc:\n"
        "            outcome[name] = type(exc).__name__\n"
        "    try:\n"
        "        socket.getaddrinfo('example.com', 80)\n"
        "        outcome['dns'] = 'resolved'\n"
        "    except OSError as exc:\n"
        "        outcome['dns'] = type(exc).__name__\n"
        "    return outcome"
    )
    started = time.monotonic()
    body = api.run(code)
    assert body["status"] == "succeeded"
    assert "connected" not in body["result"]["value"].values()
    assert body["result"]["value"]["dns"] == "gaierror"
    assert time.monotonic() - started < 3, "network failures must not hang until the socket timeout"


def test_node_has_no_network(api):
    code = (
        "const net = require('net');\n"
        "function main() { return new Promise((resolve) => {\n"
        "  const s = net.connect(80, '1.1.1.1');\n"
        "  s.on('connect', () => resolve('connected'));\n"
        "  s.on('error', (e) => resolve(e.code));\n"
        "}); }"
    )
    body = api.run(code, language="nodejs")
    assert body["status"] == "succeeded"
    assert body["result"]["value"] != "connected"


def test_environment_shows_nothing_of_the_worker(api):
    os.environ.setdefault("DATABASE_URL", "")
    body = api.run("import os\ndef main():\n    return dict(os.environ)")
    env = body["result"]["value"]
    assert set(env) <= {
        "PATH", "HOME", "LANG", "MPLBACKEND", "MPLCONFIGDIR", "OPENBLAS_NUM_THREADS", "PYTHONDONTWRITEBYTECODE",
        "SANDBOX_MEMORY_MB", "SANDBOX_PRELOAD", "HOSTNAME",
    }
    assert not any(secret in json.dumps(env) for secret in ("postgres", "redis", "SECRET", "CELERY"))


def test_runs_as_nobody_without_docker_socket_or_host_files(api):
    code = (
        "import os\n"
        "def main():\n"
        "    return {'uid': os.getuid(), 'docker_sock': os.path.exists('/var/run/docker.sock'),\n"
        "            'project': os.path.exists('/work/main/manage.py'), 'cwd': os.getcwd()}"
    )
    value = api.run(code)["result"]["value"]
    assert value == {"uid": 65534, "docker_sock": False, "project": False, "cwd": "/work"}


def test_root_filesystem_is_read_only(api):
    code = "def main():\n    open('/usr/evil', 'w')"
    body = api.run(code)
    assert body["status"] == "failed"
    assert body["error"]["code"] in ("o_s_error", "permission_error")


def test_files_and_processes_of_one_run_are_invisible_to_the_next(api):
    first = (
        "import os, subprocess\n"
        "def main():\n"
        "    open('/tmp/secret.txt', 'w').write('run one')\n"
        "    open('/work/left.txt', 'w').write('run one')\n"
        "    subprocess.Popen(['sleep', '300'], start_new_session=True)\n"
        "    return os.getpid()"
    )
    assert api.run(first)["status"] == "succeeded"
    second = (
        "import os\n"
        "def main():\n"
        "    procs = [p for p in os.listdir('/proc') if p.isdigit()]\n"
        "    cmdlines = [open(f'/proc/{p}/cmdline', 'rb').read() for p in procs]\n"
        "    return {'tmp': os.path.exists('/tmp/secret.txt'), 'work': os.path.exists('/work/left.txt'),\n"
        "            'sleepers': sum(b'sleep' in c for c in cmdlines)}"
    )
    assert api.run(second)["result"]["value"] == {"tmp": False, "work": False, "sleepers": 0}

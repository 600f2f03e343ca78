"""Cross-run leakage: every run starts in a sandbox no earlier run has touched — no files, no processes,
no environment, no shared memory left behind."""


def test_files_and_processes_of_one_run_are_invisible_to_the_next(api):
    first = (
        "import os, subprocess\n"
        "def main():\n"
        "    open('/tmp/secret.txt', 'w').write('run one')\n"
        "    open('/work/left.txt', 'w').write('run one')\n"
        "    open('/dev/shm/left', 'w').write('run one') if os.path.isdir('/dev/shm') else None\n"
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
        "            'shm': os.path.exists('/dev/shm/left'), 'sleepers': sum(b'sleep' in c for c in cmdlines)}"
    )
    assert api.run(second)["result"]["value"] == {"tmp": False, "work": False, "shm": False, "sleepers": 0}


def test_environment_changes_do_not_carry_over(api):
    assert api.run("import os\ndef main():\n    os.environ['LEFT_BEHIND'] = '1'\n    return 1")["status"] == "succeeded"
    assert api.run("import os\ndef main():\n    return 'LEFT_BEHIND' in os.environ")["result"]["value"] is False


def test_node_globals_do_not_carry_over(api):
    first = api.run("function main() { globalThis.leftBehind = 1; return 1; }", language="nodejs")
    assert first["status"] == "succeeded"
    body = api.run("function main() { return typeof globalThis.leftBehind; }", language="nodejs")
    assert body["result"]["value"] == "undefined"


def test_a_background_process_cannot_outlive_its_run(api):
    code = (
        "import subprocess\n"
        "def main():\n"
        "    subprocess.Popen(['sh', '-c', 'sleep 0.5; echo late > /work/artifacts/late.txt'],\n"
        "                     start_new_session=True)\n"
        "    return 'left'"
    )
    body = api.run(code)
    assert body["status"] == "succeeded"
    assert body["artifacts"] == [], "the run ended when main() returned; nothing of it ran on"


def test_only_the_runs_own_processes_are_visible(api):
    code = (
        "import os\n"
        "def main():\n"
        "    return sorted(open(f'/proc/{p}/cmdline', 'rb').read().split(b'\\0')[0].decode()\n"
        "                  for p in os.listdir('/proc') if p.isdigit())"
    )
    names = api.run(code)["result"]["value"]
    assert set(names) <= {"python3"}, names


def _twice(api, code: str, language: str = "python") -> tuple:
    first, second = api.run(code, language=language), api.run(code, language=language)
    assert first["status"] == second["status"] == "succeeded", (first, second)
    return first["result"]["value"], second["result"]["value"]


def test_restored_data_science_sandboxes_do_not_share_random_state(api):
    # numpy routes the run to a sandbox restored from a snapshot: a clone of one interpreter, generators included.
    code = (
        "import random, uuid, os\n"
        "import numpy as np\n"
        "def main():\n"
        "    return [random.random(), float(np.random.random()), str(uuid.uuid4()), os.urandom(8).hex()]"
    )
    first, second = _twice(api, code)
    assert all(a != b for a, b in zip(first, second, strict=True)), (first, second)


def test_plain_python_runs_do_not_share_random_state(api):
    first, second = _twice(api, "import random\ndef main():\n    return random.random()")
    assert first != second


def test_node_runs_do_not_share_random_state(api):
    code = "function main() { return [Math.random(), require('crypto').randomUUID()]; }"
    first, second = _twice(api, code, language="nodejs")
    assert first[0] != second[0] and first[1] != second[1], (first, second)

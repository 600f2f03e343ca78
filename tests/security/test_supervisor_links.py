"""The root supervisor collects artifacts without following anything the user planted: the folder and each
entry are opened relative to a descriptor with O_NOFOLLOW, and the folder must be a real one owned by the run."""

import base64

MAKE = "import os, shutil\ndef main():\n    shutil.rmtree('/work/artifacts', ignore_errors=True)\n"


def names(items: list[dict]) -> set[str]:
    return {item["name"] for item in items}


def test_a_link_to_root_home_lists_nothing(api):
    body = api.run(MAKE + "    os.symlink('/root', '/work/artifacts')\n    return 1")
    assert body["status"] == "succeeded", body
    assert body["artifacts"] == []
    assert [item["name"] for item in body["rejected_artifacts"]] == ["artifacts"]
    assert "not a real folder" in body["rejected_artifacts"][0]["reason"]


def test_a_link_to_the_supervisors_descriptors_lists_nothing(api):
    body = api.run(MAKE + "    os.symlink('/proc/1/fd', '/work/artifacts')\n    return 1")
    assert body["artifacts"] == []
    assert names(body["rejected_artifacts"]) == {"artifacts"}


def test_a_folder_the_run_does_not_own_is_refused(api):
    # /tmp/.. is root's; a bind is impossible, but a link to a root-owned folder must not be read either.
    body = api.run(MAKE + "    os.symlink('/etc', '/work/artifacts')\n    return 1")
    assert body["artifacts"] == [] and names(body["rejected_artifacts"]) == {"artifacts"}


def test_a_swap_between_check_and_read_reads_nothing_outside(api):
    # A background process keeps swapping the real folder and a link to /root; whatever state collection
    # finds (every user process is dead by then), nothing of /root comes back.
    code = (
        "import os, subprocess, sys, time\n"
        "def main():\n"
        "    os.makedirs('/work/real', exist_ok=True)\n"
        "    open('/work/real/mine.txt', 'w').write('mine')\n"
        "    flipper = ('import os\\n'\n"
        "               'while True:\\n'\n"
        "               '    try:\\n'\n"
        "               '        os.symlink(\"/root\", \"/work/link\")\\n'\n"
        "               '        os.replace(\"/work/link\", \"/work/artifacts\")\\n'\n"
        "               '        os.remove(\"/work/artifacts\")\\n'\n"
        "               '        os.rename(\"/work/real\", \"/work/artifacts\")\\n'\n"
        "               '        os.rename(\"/work/artifacts\", \"/work/real\")\\n'\n"
        "               '    except OSError:\\n'\n"
        "               '        pass\\n')\n"
        "    import shutil\n"
        "    shutil.rmtree('/work/artifacts', ignore_errors=True)\n"
        "    subprocess.Popen([sys.executable, '-c', flipper], start_new_session=True)\n"
        "    time.sleep(0.3)\n"
        "    return 'raced'"
    )
    for _ in range(3):
        body = api.run(code)
        assert body["status"] == "succeeded", body
        assert names(body["artifacts"]) <= {"mine.txt"}
        for artifact in body["artifacts"]:
            assert base64.b64decode(artifact["content_b64"]) == b"mine"
        assert not names(body["rejected_artifacts"]) & {".bashrc", ".profile"}


def test_only_the_artifacts_folder_is_collected_one_level_deep(api):
    code = (
        "import os\ndef main():\n"
        "    open('/work/top.csv', 'w').write('a\\n')\n"
        "    os.makedirs('artifacts/deep')\n"
        "    open('artifacts/deep/inner.txt', 'w').write('x')\n"
        "    open('artifacts/kept.txt', 'w').write('k')\n"
        "    open('artifacts/empty.txt', 'w').close()\n"
        "    return 1"
    )
    body = api.run(code)
    assert names(body["artifacts"]) == {"kept.txt"}, "no promotion from /work; empty files are skipped"
    assert names(body["rejected_artifacts"]) == {"deep"}


def test_a_flood_of_files_ends_the_run_too_many_artifacts(api):
    code = (
        "import os\ndef main():\n"
        "    for i in range(45000):\n"
        "        os.close(os.open(f'artifacts/f{i}.txt', os.O_CREAT | os.O_WRONLY, 0o644))\n"
        "    return 'flooded'"
    )
    body = api.run(code, timeout=60)
    assert body["status"] == "failed", body["error"]
    assert body["error"]["code"] == "too_many_artifacts"
    assert body["artifacts"] == [] and body["rejected_artifacts"] == []

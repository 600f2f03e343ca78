"""Artifacts: only regular files with a plain, printable name and an allowed type come back, within the
count and size caps; everything else is refused with a reason, and nothing outside artifacts/ is read."""

import base64

import pytest

MAKE = "import os\ndef main():\n    os.makedirs('artifacts', exist_ok=True)\n"


def reasons_of(body: dict) -> dict[str, str]:
    return {item["name"]: item["reason"] for item in body["rejected_artifacts"]}


def test_symlink_directory_and_disallowed_type_are_refused(api):
    code = (
        MAKE + "    os.makedirs('artifacts/sub')\n"
        "    os.symlink('/etc/passwd', 'artifacts/passwd.txt')\n"
        "    open('artifacts/tool.sh', 'w').write('echo')\n"
        "    open('artifacts/ok.txt', 'w').write('fine')\n"
    )
    body = api.run(code)
    assert [artifact["name"] for artifact in body["artifacts"]] == ["ok.txt"]
    reasons = reasons_of(body)
    assert reasons["passwd.txt"] == "symbolic links are not followed"
    assert "not allowed" in reasons["tool.sh"]
    assert reasons["sub"] == "not a regular file"


def test_hardlink_to_a_file_outside_is_refused(api):
    code = MAKE + (
        "    open('/work/private.txt', 'w').write('private')\n"
        "    os.link('/work/private.txt', 'artifacts/copy.txt')\n"
    )
    body = api.run(code)
    assert body["artifacts"] == []
    assert reasons_of(body)["copy.txt"] == "hard links are not accepted"


def test_fifo_is_refused_without_blocking(api):
    body = api.run(MAKE + "    os.mkfifo('artifacts/pipe.txt')\n")
    assert body["status"] == "succeeded"
    assert reasons_of(body)["pipe.txt"] == "not a regular file"


def test_device_nodes_cannot_be_made_and_links_to_devices_are_refused(api):
    code = (
        MAKE + "    outcome = {}\n"
        "    try:\n"
        "        os.mknod('artifacts/zero.txt', 0o600 | 0o020000, os.makedev(1, 5))\n"
        "        outcome['mknod'] = 'made'\n"
        "    except OSError as exc:\n"
        "        outcome['mknod'] = exc.strerror\n"
        "    os.symlink('/dev/zero', 'artifacts/dev.txt')\n"
        "    return outcome"
    )
    body = api.run(code)
    assert body["result"]["value"]["mknod"] == "Operation not permitted"
    assert body["artifacts"] == []
    assert reasons_of(body)["dev.txt"] == "symbolic links are not followed"


def test_oversize_file_is_refused_and_the_rest_kept(api):
    code = MAKE + (
        "    open('artifacts/big.txt', 'wb').write(b'x' * (11 * 1024 * 1024))\n"
        "    open('artifacts/s.txt', 'w').write('s')\n"
    )
    body = api.run(code, timeout=20)
    assert [artifact["name"] for artifact in body["artifacts"]] == ["s.txt"]
    assert reasons_of(body)["big.txt"].startswith("larger than")


def test_total_size_is_capped(api):
    code = MAKE + "    for i in range(3):\n        open(f'artifacts/p{i}.txt', 'wb').write(b'x' * (9 * 1024 * 1024))\n"
    body = api.run(code, timeout=30)
    assert [artifact["name"] for artifact in body["artifacts"]] == ["p0.txt", "p1.txt"]
    assert "together exceed" in reasons_of(body)["p2.txt"]


def test_artifact_count_is_capped(api):
    code = MAKE + "    for i in range(12):\n        open(f'artifacts/f{i:02}.txt', 'w').write(str(i))\n"
    body = api.run(code)
    assert len(body["artifacts"]) == 10
    assert {item["name"] for item in body["rejected_artifacts"]} == {"f10.txt", "f11.txt"}


def test_symlink_swap_race_reads_nothing_outside(api):
    # A background process flips a regular file and a link to /proc/1/environ as fast as it can; it is
    # killed before artifacts are collected, so whatever is there is judged as it stands.
    code = (
        MAKE + "    import subprocess, sys\n"
        "    flipper = ('import os\\n'\n"
        "               'while True:\\n'\n"
        "               '    try:\\n'\n"
        "               '        os.replace(\"/work/real.txt\", \"/work/artifacts/swap.txt\")\\n'\n"
        "               '        open(\"/work/real.txt\", \"w\").write(\"real\")\\n'\n"
        "               '        os.symlink(\"/proc/1/environ\", \"/work/link.txt\")\\n'\n"
        "               '        os.replace(\"/work/link.txt\", \"/work/artifacts/swap.txt\")\\n'\n"
        "               '    except OSError:\\n'\n"
        "               '        pass\\n')\n"
        "    open('/work/real.txt', 'w').write('real')\n"
        "    subprocess.Popen([sys.executable, '-c', flipper], start_new_session=True)\n"
        "    import time\n"
        "    time.sleep(0.3)\n"
        "    return 'raced'"
    )
    for _ in range(3):
        body = api.run(code)
        assert body["status"] == "succeeded", body
        for artifact in body["artifacts"]:
            # real.txt may be caught between its creation and its write; never anything read through the link.
            assert base64.b64decode(artifact["content_b64"]) in (b"real", b"")


def test_unreadable_file_is_refused_with_a_reason(api):
    body = api.run(MAKE + "    open('artifacts/secret.txt', 'w').write('x')\n    os.chmod('artifacts/secret.txt', 0)\n")
    assert body["artifacts"] == []
    assert reasons_of(body)["secret.txt"].startswith("cannot open")


def test_content_must_match_a_binary_type(api):
    body = api.run(MAKE + "    open('artifacts/chart.png', 'w').write('<script>alert(1)</script>')\n")
    assert body["artifacts"] == []
    assert reasons_of(body)["chart.png"] == "content is not a PNG file"


HOSTILE_NAMES = {
    "newline": ("a\nb.txt", "control characters"),
    "right_to_left_override": ("\u202ecod.txt", "bidirectional"),
    "backslashes": ("..\\..\\win.txt", "single path component"),
    "hidden": (".hidden.txt", "dot or a space"),
    "leading_space": (" .txt", "dot or a space"),
    "too_long": ("n" * 250 + ".txt", "longer than 128"),
    "c1_control": ("a\x85b.txt", "control characters"),
    "escape_sequence": ("\x1b[31mred.txt", "control characters"),
}


@pytest.mark.parametrize("case", HOSTILE_NAMES, ids=HOSTILE_NAMES.keys())
def test_hostile_names_are_refused(api, case):
    name, reason = HOSTILE_NAMES[case]
    code = MAKE + "    open(os.path.join('artifacts', name), 'w').write('x')\n"
    body = api.run(code.replace("def main():", "def main(name):"), arguments={"name": name})
    assert body["status"] == "succeeded", body
    assert body["artifacts"] == []
    [refused] = body["rejected_artifacts"]
    assert reason in refused["reason"]
    assert "\n" not in refused["name"] and "\u202e" not in refused["name"] and "\x1b" not in refused["name"]


def test_name_that_is_not_utf8_is_refused_and_stored_safely(api):
    code = (
        "const fs = require('fs');\n"
        "function main() {\n"
        "  const name = Buffer.concat([Buffer.from('artifacts/'), Buffer.from([0xff, 0xfe]), Buffer.from('.txt')]);\n"
        "  fs.writeFileSync(name, 'x');\n"
        "  return 'ok';\n"
        "}"
    )
    body = api.run(code, language="nodejs")
    assert body["status"] == "succeeded"
    [refused] = body["rejected_artifacts"]
    assert refused["reason"] == "name is not valid UTF-8"
    assert refused["name"].endswith(".txt")
    assert api.get(f"/api/v1/executions/{body['id']}").status_code == 200


INVISIBLE_NAMES = {
    "zero_width_space": ("a\u200bb.txt", "invisible format characters"),
    "byte_order_mark": ("\ufeffa.txt", "invisible format characters"),
    "line_separator": ("a\u2028b.txt", "line or paragraph separators"),
    "paragraph_separator": ("a\u2029b.txt", "line or paragraph separators"),
    "ideographic_space": ("a\u3000b.txt", "spaces other than the plain space"),
    "no_break_space": ("a\u00a0b.txt", "spaces other than the plain space"),
    "console_device": ("CON.txt", "Windows device name"),
    "printer_device_lower_case": ("prn.csv", "Windows device name"),
    "serial_port_double_extension": ("COM1.tar.json", "Windows device name"),
    "parallel_port": ("LPT9.txt", "Windows device name"),
    "null_device": ("NUL.png", "Windows device name"),
}


@pytest.mark.parametrize("case", INVISIBLE_NAMES, ids=INVISIBLE_NAMES.keys())
def test_invisible_characters_and_device_names_are_refused(api, case):
    name, reason = INVISIBLE_NAMES[case]
    code = "import os\ndef main(name):\n    open(os.path.join('artifacts', name), 'w').write('x')\n"
    body = api.run(code, arguments={"name": name})
    assert body["artifacts"] == []
    [refused] = body["rejected_artifacts"]
    assert reason in refused["reason"]


def test_plain_spaces_and_names_like_devices_are_fine(api):
    code = ("def main():\n    open('artifacts/my chart.txt', 'w').write('x')\n"
            "    open('artifacts/console.txt', 'w').write('y')\n    return 1")
    body = api.run(code)
    assert {artifact["name"] for artifact in body["artifacts"]} == {"my chart.txt", "console.txt"}

"""Files written under artifacts/ come back inline; links and other file types are refused with a reason."""

import base64


def test_matplotlib_png_comes_back(api):
    code = (
        "import os\n"
        "import matplotlib.pyplot as plt\n"
        "def main():\n"
        "    os.makedirs('artifacts', exist_ok=True)\n"
        "    plt.plot([1, 2, 3], [2, 4, 1])\n"
        "    plt.savefig('artifacts/plot.png')\n"
        "    open('artifacts/data.csv', 'w').write('a,b\\n1,2\\n')\n"
        "    return 'ok'"
    )
    body = api.run(code, timeout=30)
    assert body["status"] == "succeeded", body["stderr"]
    by_name = {artifact["name"]: artifact for artifact in body["artifacts"]}
    assert by_name["plot.png"]["mime_type"] == "image/png"
    assert base64.b64decode(by_name["plot.png"]["content_b64"])[:8] == b"\x89PNG\r\n\x1a\n"
    assert base64.b64decode(by_name["data.csv"]["content_b64"]) == b"a,b\n1,2\n"
    assert by_name["data.csv"]["size"] == 8


def test_symlink_and_disallowed_types_are_rejected_with_reasons(api):
    code = (
        "import os\n"
        "def main():\n"
        "    os.makedirs('artifacts/sub')\n"
        "    os.symlink('/etc/passwd', 'artifacts/passwd.txt')\n"
        "    open('artifacts/tool.sh', 'w').write('echo')\n"
        "    open('artifacts/ok.txt', 'w').write('fine')\n"
    )
    body = api.run(code)
    assert [artifact["name"] for artifact in body["artifacts"]] == ["ok.txt"]
    reasons = {item["name"]: item["reason"] for item in body["rejected_artifacts"]}
    assert reasons["passwd.txt"] == "symbolic links are not followed"
    assert "not allowed" in reasons["tool.sh"]
    assert reasons["sub"] == "not a regular file"


def test_artifact_count_is_capped(api):
    code = (
        "import os\n"
        "def main():\n"
        "    os.makedirs('artifacts')\n"
        "    for i in range(12):\n"
        "        open(f'artifacts/f{i:02}.txt', 'w').write(str(i))\n"
    )
    body = api.run(code)
    assert len(body["artifacts"]) == 10
    assert {item["name"] for item in body["rejected_artifacts"]} == {"f10.txt", "f11.txt"}


def test_node_artifacts(api):
    code = (
        "const fs = require('fs');\n"
        "function main() { fs.mkdirSync('artifacts'); fs.writeFileSync('artifacts/r.json', '{\"a\":1}'); return 1; }"
    )
    body = api.run(code, language="nodejs")
    assert body["artifacts"][0]["mime_type"] == "application/json"

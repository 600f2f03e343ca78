"""Files written under artifacts/ come back inline (attacks on this path: tests/security/test_artifact_attacks.py)."""

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


def test_artifacts_folder_exists_before_the_code_runs(api):
    code = "import matplotlib.pyplot as plt\ndef main():\n    plt.plot([1, 2])\n    plt.savefig('artifacts/c.png')"
    body = api.run(code, timeout=30)
    assert body["status"] == "succeeded", body["stderr"]
    assert [artifact["name"] for artifact in body["artifacts"]] == ["c.png"]


def test_node_artifacts(api):
    code = (
        "const fs = require('fs');\n"
        "function main() { fs.writeFileSync('artifacts/r.json', '{\"a\":1}'); return 1; }"
    )
    body = api.run(code, language="nodejs")
    assert body["artifacts"][0]["mime_type"] == "application/json"

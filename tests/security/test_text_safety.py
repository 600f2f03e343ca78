"""Text safety end to end: whatever text user code produces (lone surrogates, invalid UTF-8, NUL,
control characters) is stored replaced, and no endpoint ever answers 500 because of it."""

import pytest
from django.test import Client

POISON = {
    "node_lone_surrogate_result": (
        "nodejs",
        "function main(){ require('fs').writeFileSync(Buffer.concat([Buffer.from('artifacts/'),"
        "Buffer.from([0xff,0xfe]),Buffer.from('.txt')]),'x'); return '\\uD800'; }",
    ),
    "python_lone_surrogate_result": ("python", "def main():\n    return {'\\ud800key': ['\\udfff', '\\ud83d']}"),
    "surrogate_bytes_on_stdout": (
        "python", "import sys\ndef main():\n    sys.stdout.buffer.write(b'\\xed\\xa0\\x80\\xff\\n')\n    return 1"
    ),
    "surrogate_in_error_message": ("python", "def main():\n    raise ValueError('bad \\ud800 value')"),
    "nul_everywhere": ("python", "def main():\n    print('a\\x00b')\n    raise KeyError('k\\x00')"),
    "node_surrogate_in_error": ("nodejs", "function main() { throw new Error('bad \\uDC00'); }"),
    "node_invalid_utf8_stderr": (
        "nodejs", "function main() { process.stderr.write(Buffer.from([0xc3, 0x28, 0xa0])); return 1; }"
    ),
}


def no_surrogates(text: str) -> bool:
    return not any(0xD800 <= ord(char) <= 0xDFFF for char in text) and "\x00" not in text


@pytest.mark.parametrize("case", POISON, ids=POISON.keys())
def test_poisoned_text_is_stored_and_served_everywhere(api, staff_user, case):
    language, code = POISON[case]
    response = api.post("/api/v1/executions", json={"language": language, "code": code})
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["status"] in ("succeeded", "failed"), body
    for text in (body["stdout"], body["stderr"], str(body["result"]), str(body["error"]),
                 str(body["rejected_artifacts"])):
        assert no_surrogates(text)
    assert api.get(f"/api/v1/executions/{body['id']}").status_code == 200
    assert api.get("/api/v1/executions").status_code == 200
    admin = Client()
    admin.force_login(staff_user)
    assert admin.get("/admin/executions/execution/").status_code == 200
    assert admin.get(f"/admin/executions/execution/{body['id']}/change/").status_code == 200


def test_lone_surrogate_result_reads_back_replaced(api):
    body = api.run("function main() { return 'a\\uD800b'; }", language="nodejs")
    assert body["result"]["value"] == "a\ufffdb"


def test_run_endpoint_answers_poisoned_runs(api):
    import base64

    code = base64.b64encode(b"def main():\n    return '\\ud800'").decode()
    response = api.post("/run", json={"code_b64": code, "language": "python"})
    assert response.status_code == 200
    assert response.json()["result"]["value"] == "\ufffd"

"""What the worker re-checks in a sandbox's report: artifact names and contents, strict JSON, storable text."""

import base64

import pytest

from executor.config import Limits
from executor.verify import NotJSON, check_artifacts, check_outcome, display_name, storable, strict_json


def artifact(name, content: bytes = b"x", **extra) -> dict:
    return {"name": name, "mime_type": "application/x-msdownload", "size": 1,
            "content_b64": base64.b64encode(content).decode(), **extra}


@pytest.mark.parametrize("name,reason", [
    ("a\nb.txt", "control"), ("\u202ecod.txt", "bidirectional"), ("..\\..\\win.txt", "single path"),
    ("../../etc/cron.d/x.txt", "single path"), (".hidden.txt", "dot or a space"), (" .txt", "dot or a space"),
    ("n" * 130 + ".txt", "longer than"), ("a\udcffb.txt", "UTF-8"), ("tool.exe", "not allowed"), ("", "empty"),
])
def test_hostile_names_are_refused(name, reason):
    accepted, refused = check_artifacts([artifact(name)], [], Limits())
    assert accepted == []
    assert reason in refused[0]["reason"]


def test_the_type_comes_from_the_name_not_from_the_sandbox():
    [accepted], _ = check_artifacts([artifact("data.csv")], [], Limits())
    assert accepted["mime_type"] == "text/csv"
    assert accepted["size"] == 1


def test_sizes_and_counts_are_enforced_again():
    limits = Limits(artifact_max_count=2, artifact_max_bytes=4, artifact_max_total_bytes=6)
    items = [artifact("a.txt", b"1234"), artifact("b.txt", b"12345"), artifact("c.txt", b"123"),
             artifact("d.txt", b"1")]
    accepted, refused = check_artifacts(items, [], limits)
    assert [item["name"] for item in accepted] == ["a.txt", "d.txt"]
    assert [item["reason"].split(" ")[0] for item in refused] == ["larger", "artifacts"]


def test_binary_types_must_match_their_content():
    _, refused = check_artifacts([artifact("x.png", b"<svg/>")], [], Limits())
    assert refused[0]["reason"] == "content is not a PNG file"


def test_malformed_entries_are_refused_not_raised():
    accepted, refused = check_artifacts([None, {"name": 3}, artifact("a.txt", content_b64="!!")], "x", Limits())
    assert accepted == [] and len(refused) == 3


def test_refused_names_are_shown_with_invisible_characters_spelled_out():
    assert display_name("a\nb\u202e.txt") == "a\\u000ab\\u202e.txt"
    assert display_name("a\udcff") == "a\ufffd"


@pytest.mark.parametrize("text", ["NaN", "[Infinity]", "-Infinity", "[" * 65 + "]" * 65, "{", "[" * 5000 + "]" * 5000])
def test_strict_json_refuses(text):
    with pytest.raises(NotJSON if text != "{" else ValueError):
        strict_json(text)


def test_strict_json_accepts_and_cleans():
    assert strict_json('{"a": ["\\ud800", 1.5, null]}') == {"a": ["\ufffd", 1.5, None]}


def test_storable_replaces_surrogates_and_nul_in_keys_and_values():
    assert storable({"k\x00": ["\udfff", 3]}) == {"k\ufffd": ["\ufffd", 3]}


def test_outcome_keeps_only_known_fields_with_their_types():
    outcome = check_outcome({"ok": 1, "value_json": 3, "maxrss_kb": 7, "error": {"type": "x y", "message": 5}})
    assert outcome == {"ok": False, "error": {"type": "Error", "message": "5"}}
    assert check_outcome(["not", "a", "dict"]) is None

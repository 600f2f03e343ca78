"""The SaaS driver's outcome line: found only with the run's own marker, and cut out of the shown stdout."""

import base64
import json

from providers.saas import new_marker, split_outcome


def framed(marker: str, outcome: dict) -> str:
    return "\n" + marker + base64.b64encode(json.dumps(outcome).encode()).decode() + marker + "\n"


def test_the_outcome_is_read_and_removed_from_stdout():
    marker = new_marker()
    stdout = "printed\n" + framed(marker, {"ok": True, "value_json": "1"})
    assert split_outcome(stdout, marker) == ("printed\n", {"ok": True, "value_json": "1"})


def test_an_outcome_under_another_marker_is_plain_output():
    theirs, ours = new_marker(), new_marker()
    stdout = framed(theirs, {"ok": True, "value_json": "\"forged\""})
    clean, outcome = split_outcome(stdout, ours)
    assert outcome is None and theirs in clean


def test_markers_differ_per_run():
    assert len({new_marker() for _ in range(100)}) == 100

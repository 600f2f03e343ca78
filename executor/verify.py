"""The worker trusts nothing a sandbox sends: every field of a DONE report is checked here before use.

The report's frame is authenticated (so it comes from the supervisor), but what it carries — the return
value, artifacts, their names — was produced by user code. Numbers are coerced to sane ranges, the
return value must be strict JSON of bounded depth, artifacts are re-checked against the same rules the
supervisor applies (executor/runner/rules.py) and every text is made storable.
"""

import base64
import binascii
import json
import math
import re
import sys
import unicodedata

from executor.config import Limits
from executor.runner.rules import ARTIFACT_TYPES, BIDI_CONTROLS, content_problem, extension, name_problem

JSON_MAX_DEPTH = 64
INT_MAX_DIGITS = sys.get_int_max_str_digits() or 4300
REASON_MAX = 300
SURROGATES = re.compile("[\ud800-\udfff]")


class NotJSON(ValueError):
    """A return value that is not strict JSON (NaN, Infinity, too deep, malformed)."""


def storable(value):
    """Text safe for any database and any renderer: lone surrogates and NUL become U+FFFD, recursively."""
    if isinstance(value, str):
        return SURROGATES.sub("\ufffd", value).replace("\x00", "\ufffd")
    if isinstance(value, list):
        return [storable(item) for item in value]
    if isinstance(value, dict):
        return {storable(key): storable(item) for key, item in value.items()}
    return value


def display_name(name: object) -> str:
    """A refused file's name as it may be shown: invisible and direction-changing characters spelled out."""
    text = storable(name if isinstance(name, str) else repr(name))
    shown = "".join(
        f"\\u{ord(char):04x}" if unicodedata.category(char) == "Cc" or char in BIDI_CONTROLS else char
        for char in text
    )
    return shown[:200]


def _reject_constant(name: str) -> None:
    raise NotJSON(f"{name} is not JSON")


def json_depth(value, limit: int) -> int:
    """Levels of containers in a parsed JSON value (a scalar is 0), counting no further than `limit` + 1."""
    depth, level = 0, [value]
    while depth <= limit:
        containers = [item for item in level if isinstance(item, dict | list)]
        if not containers:
            break
        depth += 1
        level = [child for item in containers for child in (item.values() if isinstance(item, dict) else item)]
    return depth


def _finite_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):  # "1e999" is valid JSON text, but no database stores infinity
        raise NotJSON(f"the number {text[:20]} is too large to store")
    return value


def _storable_int(text: str) -> int:
    # Python refuses to convert integers past its digit limit back to text, so such a value could be read
    # here and then never written; refuse it as the user's value, not as a worker fault.
    if len(text.lstrip("-")) > INT_MAX_DIGITS:
        raise NotJSON(f"an integer of {len(text)} digits is too large to store (at most {INT_MAX_DIGITS})")
    return int(text)


def strict_json(text: str, max_depth: int = JSON_MAX_DEPTH):
    """Parse `text` as strict JSON that any database stores: no NaN or Infinity, no number that overflows to
    infinity, no integer past Python's digit limit, at most `max_depth` levels of nesting."""
    try:
        value = json.loads(text, parse_constant=_reject_constant, parse_float=_finite_float, parse_int=_storable_int)
    except RecursionError:
        raise NotJSON(f"nested deeper than {max_depth} levels") from None
    except json.JSONDecodeError as exc:
        raise NotJSON(f"malformed JSON ({exc.msg})") from None
    if json_depth(value, max_depth) > max_depth:
        raise NotJSON(f"nested deeper than {max_depth} levels")
    return storable(value)


def as_int(value, low: int, high: int) -> int | None:
    if isinstance(value, bool) or not isinstance(value, int):
        return None
    return min(max(value, low), high)


def check_outcome(outcome) -> dict | None:
    """Keep only the fields of the runner's outcome that mean something, with the right types."""
    if not isinstance(outcome, dict):
        return None
    clean: dict = {"ok": outcome.get("ok") is True}
    if isinstance(outcome.get("value_json"), str):
        clean["value_json"] = outcome["value_json"]
    if outcome.get("script") is True:
        clean["script"] = True
    error = outcome.get("error")
    if isinstance(error, dict):
        kind = error.get("type")
        clean["error"] = {
            "type": kind[:100] if isinstance(kind, str) and kind.isidentifier() else "Error",
            "message": storable(str(error.get("message", "")))[:2000],
        }
    return clean


def check_artifacts(accepted, rejected, limits: Limits) -> tuple[list[dict], list[dict]]:
    """Re-apply every artifact rule to what the supervisor sent; return (accepted, refused with reasons)."""
    refused = [
        {"name": display_name(item.get("name")), "reason": storable(str(item.get("reason", "")))[:REASON_MAX]}
        for item in (rejected if isinstance(rejected, list) else [])[:100]
        if isinstance(item, dict)
    ]
    clean: list[dict] = []
    total = 0
    for item in accepted if isinstance(accepted, list) else []:
        name = item.get("name") if isinstance(item, dict) else None
        content, problem = _artifact_content(item, name)
        if problem is None and len(clean) >= limits.artifact_max_count:
            problem = f"more than {limits.artifact_max_count} artifacts"
        if problem is None and len(content) > limits.artifact_max_bytes:
            problem = f"larger than {limits.artifact_max_bytes} bytes"
        if problem is None and total + len(content) > limits.artifact_max_total_bytes:
            problem = f"artifacts together exceed {limits.artifact_max_total_bytes} bytes"
        if problem is not None:
            refused.append({"name": display_name(name), "reason": problem})
            continue
        total += len(content)
        clean.append({"name": name, "mime_type": ARTIFACT_TYPES[extension(name)], "size": len(content),
                      "content_b64": item["content_b64"]})
    return clean, refused


def _artifact_content(item, name) -> tuple[bytes, str | None]:
    if not isinstance(name, str):
        return b"", "malformed artifact entry"
    problem = name_problem(name)
    if problem:
        return b"", problem
    encoded = item.get("content_b64")
    if not isinstance(encoded, str):
        return b"", "malformed artifact entry"
    try:
        content = base64.b64decode(encoded, validate=True)
    except (binascii.Error, ValueError):
        return b"", "malformed artifact content"
    return content, content_problem(name, content)

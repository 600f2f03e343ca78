"""Values a run may return are values every database stores: what strict JSON accepts can be written back."""

import json

import pytest

from executor.verify import INT_MAX_DIGITS, NotJSON, strict_json


@pytest.mark.parametrize("text,reason", [
    ("1e999", "too large to store"), ("-1e999", "too large to store"), ('{"a": [1E400]}', "too large to store"),
    ("9" * (INT_MAX_DIGITS + 1), "digits is too large"), ("-" + "9" * (INT_MAX_DIGITS + 1), "digits is too large"),
    ("NaN", "not JSON"), ("Infinity", "not JSON"),
])
def test_values_no_database_stores_are_refused_as_the_users(text, reason):
    with pytest.raises(NotJSON, match=reason):
        strict_json(text)


@pytest.mark.parametrize("text", ["1.7976931348623157e308", "9" * INT_MAX_DIGITS, "-0.0", "[1, 2.5, {\"x\": null}]"])
def test_large_but_storable_values_round_trip(text):
    value = strict_json(text)
    assert strict_json(json.dumps(value)) == value

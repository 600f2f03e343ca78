"""Provider settings schemas: every field type's validation and the defaults merge."""

import pytest

from providers.registry import PROVIDERS, provider_class
from providers.schema import ConfigField, validate, with_defaults

FIELDS = [
    ConfigField("name", required=True),
    ConfigField("count", type="integer", min=1, max=10, default=3),
    ConfigField("flag", type="boolean"),
    ConfigField("region", type="select", options=("a", "b")),
    ConfigField("from_env", scope="deployment"),
]


def test_a_complete_config_is_valid():
    assert validate(FIELDS, {"name": "x", "count": 10, "flag": False, "region": "b"}) == {}


@pytest.mark.parametrize(
    ("config", "field", "message"),
    [
        ({}, "name", "is required"),
        ({"name": 5}, "name", "must be text"),
        ({"name": "x" * 4097}, "name", "is too long"),
        ({"name": "x", "count": 0}, "count", "must be ≥ 1"),
        ({"name": "x", "count": 11}, "count", "must be ≤ 10"),
        ({"name": "x", "count": True}, "count", "must be a whole number"),
        ({"name": "x", "count": "3"}, "count", "must be a whole number"),
        ({"name": "x", "flag": "true"}, "flag", "must be true or false"),
        ({"name": "x", "region": "c"}, "region", "must be one of: a, b"),
        ({"name": "x", "typo": 1}, "typo", "is not a setting of this provider"),
        ({"name": "x", "from_env": "y"}, "from_env", "is not a setting of this provider"),
    ],
)
def test_each_bad_value_is_named_with_its_field(config, field, message):
    assert validate(FIELDS, config) == {field: [message]}


def test_defaults_fill_only_what_is_missing_or_blank():
    assert with_defaults(FIELDS, {"name": "x", "count": None}) == {"name": "x", "count": 3}
    assert with_defaults(FIELDS, {"count": 7})["count"] == 7


@pytest.mark.parametrize("name", list(PROVIDERS))
def test_every_provider_schema_describes_itself(name):
    described = [item.describe() for item in provider_class(name).get_config_schema()]
    assert described and all(item["name"] and item["type"] in ("string", "integer", "boolean", "select")
                             for item in described)
    secrets = [item for item in described if item["secret"]]
    assert all("value" not in item for item in secrets), "a secret's value is never described"


def test_probe_failures_read_as_one_plain_sentence():

    from providers.saas import Failure, ServiceError
    from sandboxctl.console.probe import plain_language, raw_detail

    def failed(kind: Failure, cause: BaseException | None = None) -> ServiceError:
        error = ServiceError(kind, f"E2B: {kind.value} while creating a sandbox")
        error.__cause__ = cause
        return error

    dns = failed(Failure.SERVICE_UNAVAILABLE, OSError("no records found for Query { name: Name(\"api.e2b.app.\") }"))
    assert plain_language(dns).startswith("The service's host name could not be found (DNS)")
    assert "no records found" in raw_detail(dns), "the raw detail is kept for the disclosure"
    refused = failed(Failure.SERVICE_UNAVAILABLE, ConnectionRefusedError(111, "Connection refused"))
    assert "connection refused" in plain_language(refused)
    assert "did not answer in time" in plain_language(failed(Failure.SERVICE_UNAVAILABLE, TimeoutError()))
    assert plain_language(failed(Failure.CREDENTIALS_REJECTED)).startswith("The service rejected the credentials")
    assert plain_language(failed(Failure.BAD_RESPONSE)).startswith("The service answered something unexpected")

import json

from django.conf import settings
from rest_framework import exceptions, serializers

from executor.runner.rules import path_problem
from executor.verify import JSON_MAX_DEPTH, SURROGATES, json_depth
from providers.base import LANGUAGES, RequestedLimits, Status
from providers.registry import PROVIDERS
from sandboxctl.egress import policy as egress_policy
from sandboxctl.executions.outbound import literal_host_problem

LANGUAGE_ALIASES = {"python": "python", "nodejs": "nodejs", "javascript": "nodejs", "node": "nodejs"}


class PayloadTooLarge(exceptions.APIException):
    status_code = 413
    default_code = "too_large"


class StrictCharField(serializers.CharField):
    """Text only: DRF's CharField would turn 123 into "123" and run it as code."""

    def to_internal_value(self, data):
        if not isinstance(data, str):
            self.fail("invalid")
        if SURROGATES.search(data):
            raise serializers.ValidationError("must be valid Unicode text (it holds a lone surrogate)")
        return super().to_internal_value(data)


def has_lone_surrogate(value) -> bool:
    if isinstance(value, str):
        return bool(SURROGATES.search(value))
    if isinstance(value, list):
        return any(has_lone_surrogate(item) for item in value)
    if isinstance(value, dict):
        return any(has_lone_surrogate(key) or has_lone_surrogate(item) for key, item in value.items())
    return False


class JSONObjectField(serializers.JSONField):
    """A JSON object (a dict); any other JSON value is refused naming the field."""

    default_error_messages = {"not_an_object": "must be a JSON object"}

    def to_internal_value(self, data) -> dict:
        value = super().to_internal_value(data)
        if not isinstance(value, dict):
            self.fail("not_an_object")
        return value


def check_arguments(value: dict) -> dict:
    """`arguments`: a JSON object of bounded depth and size, with valid Unicode text throughout."""
    if json_depth(value, JSON_MAX_DEPTH) > JSON_MAX_DEPTH:
        raise serializers.ValidationError(f"must be nested at most {JSON_MAX_DEPTH} levels deep")
    if has_lone_surrogate(value):
        raise serializers.ValidationError("must be valid Unicode text throughout (it holds a lone surrogate)")
    size = len(json.dumps(value, ensure_ascii=False).encode())
    if size > settings.SANDBOX_ARGUMENTS_MAX_BYTES:
        limit = settings.SANDBOX_ARGUMENTS_MAX_BYTES
        raise serializers.ValidationError(f"is {size} bytes as JSON; the limit is {limit} "
                                          "(SANDBOX_ARGUMENTS_MAX_BYTES)")
    return value


class InputFileSerializer(serializers.Serializer):
    """One file to put into the working folder before the code runs."""

    path = StrictCharField(trim_whitespace=False)
    content_b64 = StrictCharField(trim_whitespace=False, allow_blank=True)

    def validate_path(self, value: str) -> str:
        return check_path(value)

    def validate_content_b64(self, value: str) -> str:
        import base64
        import binascii

        try:
            base64.b64decode(value, validate=True)
        except (binascii.Error, ValueError):
            raise serializers.ValidationError("must be base64") from None
        return value


def check_path(value: str) -> str:
    problem = path_problem(value)
    if problem:
        raise serializers.ValidationError(problem)
    return value


def check_input_files(files: list[dict]) -> list[dict]:
    """At most SANDBOX_INPUT_FILES_MAX_COUNT files of SANDBOX_INPUT_FILES_MAX_BYTES together, no path twice."""
    if len(files) > settings.SANDBOX_INPUT_FILES_MAX_COUNT:
        raise serializers.ValidationError(f"at most {settings.SANDBOX_INPUT_FILES_MAX_COUNT} files "
                                          "(SANDBOX_INPUT_FILES_MAX_COUNT)")
    paths = [entry["path"] for entry in files]
    if len(set(paths)) != len(paths):
        raise serializers.ValidationError("a path is given twice")
    total = sum(len(entry["content_b64"]) * 3 // 4 - entry["content_b64"].count("=") for entry in files)
    if total > settings.SANDBOX_INPUT_FILES_MAX_BYTES:
        raise PayloadTooLarge({"files": [f"hold {total} bytes together; the limit is "
                                         f"{settings.SANDBOX_INPUT_FILES_MAX_BYTES} (SANDBOX_INPUT_FILES_MAX_BYTES)"]})
    return [dict(entry) for entry in files]


class NetworkField(serializers.JSONField):
    """`network: {"allow": [entry, ...]}`: hosts, wildcards, networks (each with an optional :PORT) and presets
    the run may reach, within its account's ceiling (sandboxctl/egress/policy.py). Answers the entries as
    written; an unreadable one is a 400 naming `network`."""

    default_error_messages = {"shape": 'must be an object {{"allow": [entries]}} with a list of strings'}

    def to_internal_value(self, data) -> tuple[str, ...]:
        value = super().to_internal_value(data)
        if value is None:
            return ()
        if not isinstance(value, dict) or set(value) - {"allow"} or not isinstance(value.get("allow", []), list):
            self.fail("shape")
        entries = value.get("allow", [])
        if not all(isinstance(entry, str) for entry in entries):
            self.fail("shape")
        try:
            egress_policy.check(entries)
        except egress_policy.EntryError as exc:
            raise serializers.ValidationError(str(exc)) from None
        return tuple(entries)


class LimitsSerializer(serializers.Serializer):
    """The per-run limits a caller may ask for (providers.base.RequestedLimits). Above the server's maximum each is
    clamped to it by the provider; the upper bounds here only keep numbers sane."""

    timeout = serializers.FloatField(required=False, allow_null=True, min_value=0.001, max_value=1e9)
    memory_mb = serializers.IntegerField(required=False, allow_null=True, max_value=10**9)
    output_limit = serializers.IntegerField(required=False, allow_null=True, min_value=1024, max_value=10**12,
                                            help_text="bytes kept per stream (stdout, stderr)")

    def validate_memory_mb(self, value: int | None) -> int | None:
        return check_memory_mb(value)

    def requested_limits(self) -> RequestedLimits:
        return RequestedLimits.from_data(self.validated_data)


class ExecutionRequestSerializer(LimitsSerializer):
    language = StrictCharField()
    code = StrictCharField(trim_whitespace=False, allow_blank=True)
    arguments = JSONObjectField(required=False, default=dict)
    wait = serializers.BooleanField(required=False, default=True)
    callback_url = serializers.URLField(required=False, allow_blank=True, default="", max_length=2000)
    files = InputFileSerializer(many=True, required=False, default=list)
    network = NetworkField(required=False, default=tuple)

    def validate_language(self, value: str) -> str:
        return check_language(value)

    def validate_code(self, value: str) -> str:
        return check_code(value)

    def validate_arguments(self, value) -> dict:
        return check_arguments(value)

    def validate_files(self, value: list[dict]) -> list[dict]:
        return check_input_files(value)

    def validate_callback_url(self, value: str) -> str:
        if has_lone_surrogate(value):
            raise serializers.ValidationError("must be valid Unicode text")
        if value and not value.lower().startswith(("http://", "https://")):
            raise serializers.ValidationError("must be an http or https URL")
        problem = literal_host_problem(value) if value else None
        if problem:
            raise serializers.ValidationError(problem)
        return value


def check_language(value: str) -> str:
    try:
        return LANGUAGE_ALIASES[value.strip().lower()]
    except KeyError:
        raise serializers.ValidationError("must be one of: python, nodejs, javascript") from None


def check_memory_mb(value: int | None) -> int | None:
    if value is not None and value < settings.SANDBOX_MEMORY_MIN_MB:
        raise serializers.ValidationError(f"must be at least {settings.SANDBOX_MEMORY_MIN_MB}")
    return value


class SessionRequestSerializer(LimitsSerializer):
    """POST /api/v1/sessions. Above the server's maximums the times and limits are clamped to them; the session's
    memory and output cap hold for each of its cells, and `timeout` is the default of its cells."""

    language = StrictCharField()
    idle_timeout = serializers.FloatField(required=False, allow_null=True, min_value=1, max_value=1e9)
    max_lifetime = serializers.FloatField(required=False, allow_null=True, min_value=1, max_value=1e9)
    files = InputFileSerializer(many=True, required=False, default=list)
    network = NetworkField(required=False, default=tuple)

    def validate_language(self, value: str) -> str:
        return check_language(value)

    def validate_files(self, value: list[dict]) -> list[dict]:
        return check_input_files(value)


class SessionUpdateSerializer(serializers.Serializer):
    """PATCH /api/v1/sessions/{id}: the session's allowlist from its next cell on."""

    network = NetworkField()


class ListingSerializer(serializers.Serializer):
    """GET /api/v1/sessions/{id}/files: one page of the listing, in path order."""

    after = serializers.CharField(required=False, default="", allow_blank=True, max_length=4096,
                                  help_text="list the paths after this one (the `next` of the page before)")
    limit = serializers.IntegerField(required=False, default=1000, min_value=1, max_value=1000)


class CellRequestSerializer(LimitsSerializer):
    """POST /api/v1/sessions/{id}/executions: one cell. Its memory is the session's; its time limit and output cap
    may be its own (within the session's output cap)."""

    code = StrictCharField(trim_whitespace=False, allow_blank=True)
    arguments = JSONObjectField(required=False, default=dict)
    memory_mb = None  # a session's memory is set when it opens
    wait = serializers.BooleanField(required=False, default=True)

    def validate_code(self, value: str) -> str:
        return check_code(value)

    def validate_arguments(self, value) -> dict:
        return check_arguments(value)


def check_code(value: str) -> str:
    if not value.strip():
        raise serializers.ValidationError("must not be empty")
    size = len(value.encode("utf-8"))
    if size > settings.SANDBOX_CODE_MAX_BYTES:
        raise PayloadTooLarge({"code": [f"is {size} bytes; the limit is {settings.SANDBOX_CODE_MAX_BYTES}"]})
    return value


class ExecutionFilter(serializers.Serializer):
    """The list's filters: known values only, so a stray byte in a query string is a 400, not a database error."""

    status = serializers.ChoiceField(choices=[status.value for status in Status], required=False)
    language = serializers.ChoiceField(choices=sorted(set(LANGUAGE_ALIASES.values())), required=False)
    provider = serializers.ChoiceField(choices=list(PROVIDERS), required=False)


class RagflowRunSerializer(serializers.Serializer):
    """The request body of RAGFlow's executor_manager `/run`."""

    code_b64 = StrictCharField()
    language = serializers.ChoiceField(choices=LANGUAGES)
    arguments = JSONObjectField(required=False, default=dict)

    def validate_code_b64(self, value: str) -> str:
        import base64
        import binascii

        try:
            code = base64.b64decode(value, validate=True).decode("utf-8")
        except (binascii.Error, ValueError):
            raise serializers.ValidationError("must be base64 of UTF-8 text") from None
        return check_code(code)

    def validate_arguments(self, value) -> dict:
        return check_arguments(value)

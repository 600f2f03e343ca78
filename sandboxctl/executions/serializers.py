import json

from django.conf import settings
from rest_framework import exceptions, serializers

from executor.verify import JSON_MAX_DEPTH, SURROGATES, json_depth
from providers.base import LANGUAGES, Status
from providers.registry import PROVIDERS
from sandboxctl.executions import files
from sandboxctl.executions.callbacks import literal_host_problem
from sandboxctl.executions.models import Execution

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


class ExecutionRequestSerializer(serializers.Serializer):
    language = StrictCharField()
    code = StrictCharField(trim_whitespace=False, allow_blank=True)
    arguments = JSONObjectField(required=False, default=dict)
    # Above the server's maximum these are clamped to it; the upper bounds only keep numbers sane.
    timeout = serializers.FloatField(required=False, allow_null=True, min_value=0.001, max_value=1e9)
    memory_mb = serializers.IntegerField(required=False, allow_null=True, max_value=10**9)
    wait = serializers.BooleanField(required=False, default=True)
    callback_url = serializers.URLField(required=False, allow_blank=True, default="", max_length=2000)

    def validate_language(self, value: str) -> str:
        try:
            return LANGUAGE_ALIASES[value.strip().lower()]
        except KeyError:
            raise serializers.ValidationError("must be one of: python, nodejs, javascript") from None

    def validate_code(self, value: str) -> str:
        return check_code(value)

    def validate_arguments(self, value) -> dict:
        return check_arguments(value)

    def validate_memory_mb(self, value: int | None) -> int | None:
        if value is not None and value < settings.SANDBOX_MEMORY_MIN_MB:
            raise serializers.ValidationError(f"must be at least {settings.SANDBOX_MEMORY_MIN_MB}")
        return value

    def validate_callback_url(self, value: str) -> str:
        if has_lone_surrogate(value):
            raise serializers.ValidationError("must be valid Unicode text")
        if value and not value.lower().startswith(("http://", "https://")):
            raise serializers.ValidationError("must be an http or https URL")
        problem = literal_host_problem(value) if value else None
        if problem:
            raise serializers.ValidationError(problem)
        return value


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


class ExecutionSerializer(serializers.ModelSerializer):
    stdout = serializers.SerializerMethodField()
    stderr = serializers.SerializerMethodField()
    result = serializers.SerializerMethodField()
    truncated = serializers.SerializerMethodField()
    error = serializers.SerializerMethodField()
    artifacts = serializers.SerializerMethodField()
    queue_wait = serializers.SerializerMethodField()

    class Meta:
        model = Execution
        fields = [
            "id", "status", "language", "provider", "stdout", "stderr", "exit_code", "result",
            "execution_time", "memory_used_kb", "artifacts", "rejected_artifacts", "truncated", "error",
            "limits", "created_at", "started_at", "finished_at", "queue_wait",
        ]

    def get_stdout(self, execution: Execution) -> str:
        return files.output(execution, "stdout")

    def get_stderr(self, execution: Execution) -> str:
        return files.output(execution, "stderr")

    def get_result(self, execution: Execution) -> dict:
        return execution.returned()

    def get_truncated(self, execution: Execution) -> dict:
        return {"stdout": execution.stdout_truncated, "stderr": execution.stderr_truncated}

    def get_error(self, execution: Execution) -> dict | None:
        if not execution.error_code:
            return None
        return {"code": execution.error_code, "message": execution.error_message}

    def get_queue_wait(self, execution: Execution) -> float | None:
        return None if execution.queue_wait is None else execution.queue_wait.total_seconds()

    def get_artifacts(self, execution: Execution) -> list[dict]:
        return files.described(execution, files.inline_limit(), self.context.get("request"))


class ExecutionSummarySerializer(ExecutionSerializer):
    """A listing's item: the first 4 KiB of stdout and stderr (files.OUTPUT_INLINE_CHARS), and artifacts by
    name, size and download URL, never their contents."""

    def get_stdout(self, execution: Execution) -> str:
        return execution.stdout

    def get_stderr(self, execution: Execution) -> str:
        return execution.stderr

    def get_artifacts(self, execution: Execution) -> list[dict]:
        return files.described(execution, None, self.context.get("request"))


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

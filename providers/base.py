"""The provider contract: every sandbox backend turns (code, language, arguments, limits) into an ExecutionResult.

A provider never raises for the user's code failing: that is a result with a status. It raises
ProviderError only when the sandbox service itself failed, saying whether a retry could help.
"""

from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any


class Status(StrEnum):
    """The one status taxonomy of an execution. Terminal states never change."""

    QUEUED = "queued"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    TIMEOUT = "timeout"
    MEMORY_LIMIT = "memory_limit"
    OUTPUT_LIMIT = "output_limit"
    CANCELLED = "cancelled"
    SANDBOX_ERROR = "sandbox_error"
    REJECTED = "rejected"

    @property
    def is_terminal(self) -> bool:
        return self not in (Status.QUEUED, Status.RUNNING)


LANGUAGES = ("python", "nodejs")


@dataclass(frozen=True)
class Limits:
    """Effective limits of one run, already clamped to the server's maximums."""

    timeout: float
    memory_mb: int
    output_limit: int


@dataclass
class ExecutionResult:
    status: Status
    stdout: str = ""
    stderr: str = ""
    exit_code: int | None = None
    execution_time: float | None = None
    memory_used_kb: int | None = None
    result_present: bool = False
    result_value: Any = None
    artifacts: list[dict] = field(default_factory=list)
    rejected_artifacts: list[dict] = field(default_factory=list)
    stdout_truncated: bool = False
    stderr_truncated: bool = False
    error_code: str = ""
    error_message: str = ""
    sandbox_id: str = ""


class ProviderError(Exception):
    """The sandbox service failed. `retryable`: another attempt may work (pool empty, 5xx, network)."""

    def __init__(self, message: str, code: str = "sandbox_error", retryable: bool = False) -> None:
        super().__init__(message)
        self.code = code
        self.retryable = retryable


class SandboxProvider:
    """Base class of sandbox backends.

    `execute_code` returns an ExecutionResult for anything the user's code did (including crashing,
    timing out or running out of memory) and raises ProviderError when the service itself failed.
    Arguments always travel as JSON data, never pasted into source.
    """

    name: str = ""
    label: str = ""
    description: str = ""
    queue: str = "sandbox.saas"

    def initialize(self, config: dict) -> None:
        self.config = config

    def get_supported_languages(self) -> tuple[str, ...]:
        return LANGUAGES

    def queue_for(self, language: str) -> str:
        return self.queue

    def create_instance(self, language: str) -> str:
        raise NotImplementedError

    def execute_code(
        self, instance_id: str, code: str, language: str, limits: Limits, arguments: dict
    ) -> ExecutionResult:
        raise NotImplementedError

    def destroy_instance(self, instance_id: str) -> None:
        raise NotImplementedError

    def health_check(self) -> bool:
        raise NotImplementedError

    def run(self, code: str, language: str, limits: Limits, arguments: dict) -> ExecutionResult:
        """One complete run in a fresh instance, destroyed afterwards whatever happens."""
        instance_id = self.create_instance(language)
        try:
            result = self.execute_code(instance_id, code, language, limits, arguments)
        finally:
            self.destroy_instance(instance_id)
        result.sandbox_id = result.sandbox_id or instance_id
        return result

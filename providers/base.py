"""The provider contract: every sandbox backend turns (code, language, arguments, limits) into an ExecutionResult.

A provider never raises for the user's code failing: that is a result with a status. It raises
ProviderError only when the sandbox service itself failed, saying whether a retry could help.
"""

import base64
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, Protocol

from django.conf import settings

from executor.config import LANGUAGES, SAAS_QUEUE, FileLimits, Limits  # noqa: F401 - the one types, re-exported
from executor.deadlines import SAAS_OVERHEAD, Budget, budget, cell_budget
from executor.sandbox import OnOutput  # re-exported: the live-output callable
from executor.verify import NotJSON, check_outcome, strict_json
from providers.schema import ConfigField, validate, with_defaults


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

    @property
    def is_terminal(self) -> bool:
        return self not in (Status.QUEUED, Status.RUNNING)




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
    # A session's cell: why the session cannot go on after it ("" while it goes on).
    session_ended: str = ""
    # The run's connections through the egress proxy: [{host, port, allowed, reason, bytes_out, bytes_in}].
    egress: list[dict] = field(default_factory=list)


@dataclass(frozen=True)
class RequestedLimits:
    """What a caller asked for, each as asked (None: the server's default). The one value that travels from the
    request's serializer to the provider's `clamp`, which makes the run's `Limits` of it: a new per-run limit is a
    field here, a field of executor.config.Limits, a serializer field and a line of `clamp` (docs/architecture.md).
    """

    timeout: float | None = None
    memory_mb: int | None = None
    output_limit: int | None = None

    @classmethod
    def from_data(cls, data: dict) -> "RequestedLimits":
        """The fields of a validated request that are limits (the rest of the request is not)."""
        return cls(**{name: data.get(name) for name in cls.__dataclass_fields__})


@dataclass(frozen=True)
class Health:
    """A provider's answer to "can it run code now?", with the reason an operator can act on."""

    healthy: bool
    reason: str = ""
    latency_ms: float | None = None


class SandboxLedger(Protocol):
    """Where a run records the remote sandbox it made, so one whose delete failed is deleted later."""

    def creating(self) -> None: ...

    def created(self, instance_id: str) -> None: ...

    def released(self) -> None: ...


class ProviderError(Exception):
    """The sandbox service failed; `code` names how (the run ends sandbox_error with it)."""

    def __init__(self, message: str, code: str = "sandbox_error") -> None:
        super().__init__(message)
        self.code = code


class SessionsUnsupported(ProviderError):
    """This provider keeps no state between runs, or takes no files (the API answers 400 naming it)."""

    def __init__(self, message: str) -> None:
        super().__init__(message, code="sessions_unsupported")


class FileRefused(Exception):
    """A file request that cannot be done: `code` says why (not_found, bad_path, link, is_a_folder,
    not_a_folder, not_a_file, too_large, no_space, file_service_gone, io_error)."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


class SessionGone(ProviderError):
    """The session's sandbox is gone (it ended, or it was never on this worker): `reason` says why."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason, code="session_ended")
        self.reason = reason


@dataclass(frozen=True)
class SessionTimes:
    """How long a session's sandbox may live: at most `max_lifetime`, `idle_timeout` between requests."""

    max_lifetime: float
    idle_timeout: float


class ProviderSession:
    """A live session with one sandbox of a provider: cells that share state, and the sandbox's files.
    Requests come one at a time (the worker's session thread serialises them); any of them may raise
    SessionGone. `close` may come from any thread at any time: it ends the sandbox without waiting for a
    request in progress, which then fails with SessionGone."""

    sandbox_id: str = ""

    def run(self, code: str, arguments: dict, limits: Limits, should_stop: Callable[[], bool] | None = None,
            on_output: OnOutput | None = None) -> ExecutionResult:
        """One cell, classified as a one-shot run is; `session_ended` says when the session cannot go on.
        `on_output`: live output, as SandboxProvider.run."""
        raise NotImplementedError

    # Files, through the sandbox's file keeper (executor/runner/workfiles.py), however its requests travel.
    file_limits: FileLimits

    def ask_keeper(self, request: dict) -> dict:
        """One request to the keeper; its answer, refused or not. SessionGone when it cannot be asked."""
        raise NotImplementedError

    def put_file(self, path: str, content: bytes) -> dict:
        """Write a file ({path, size}); FileRefused when it cannot be."""
        if len(content) > self.file_limits.max_file_bytes:
            raise FileRefused("too_large", f"the file is {len(content)} bytes; the limit is "
                                           f"{self.file_limits.max_file_bytes} (SANDBOX_SESSION_FILE_MAX_BYTES)")
        answer = self._file({"op": "put", "path": path, "content_b64": base64.b64encode(content).decode(),
                             "max_total_bytes": self.file_limits.max_total_bytes})
        return {"path": answer["path"], "size": answer["size"]}

    def get_file(self, path: str) -> bytes:
        answer = self._file({"op": "get", "path": path, "max_bytes": self.file_limits.max_file_bytes})
        return base64.b64decode(answer.get("content_b64") or "")

    def list_files(self, after: str = "", limit: int | None = None) -> dict:
        """One page of the working folder's files in path order, after `after`: {files: [{path, size,
        modified}], truncated (the walk stopped at its cap), next (the `after` of the next page, or None)}."""
        answer = self._file({"op": "list", "after": after, "limit": limit})
        return {"files": list(answer.get("files") or []), "truncated": bool(answer.get("truncated")),
                "next": answer.get("next")}

    def delete_file(self, path: str) -> None:
        self._file({"op": "delete", "path": path})

    def _file(self, request: dict) -> dict:
        answer = self.ask_keeper(request)
        if not answer.get("ok"):
            raise FileRefused(str(answer.get("code") or "io_error"), str(answer.get("message") or "refused")[:500])
        return answer

    def close(self, reason: str) -> None:
        """End the session and remove its sandbox, at once, from any thread; quiet when it is gone already."""
        raise NotImplementedError


class SandboxProvider:
    """Base class of sandbox backends.

    `run` returns an ExecutionResult for anything the user's code did (including crashing,
    timing out or running out of memory) and raises ProviderError when the service itself failed.
    Arguments always travel as JSON data, never pasted into source.
    """

    name: str = ""
    label: str = ""
    description: str = ""
    queue: str = SAAS_QUEUE
    languages: tuple[str, ...] = LANGUAGES
    # What the provider may take past a run's own limit before it gives up by itself (executor/deadlines.py).
    run_overhead: float = SAAS_OVERHEAD
    # Whether `run` takes input files and `open_session` gives sessions (the API answers 400 naming the
    # provider when not).
    takes_files: bool = False
    session_languages: tuple[str, ...] = ()

    def __init__(self) -> None:
        self.config: dict = {}

    def initialize(self, config: dict) -> None:
        self.config = with_defaults(self.get_config_schema(), config)

    @classmethod
    def get_config_schema(cls) -> list[ConfigField]:
        return []

    @classmethod
    def validate_config(cls, config: dict) -> dict[str, list[str]]:
        """Field errors ({field: [messages]}); empty when the configuration can be saved."""
        return validate(cls.get_config_schema(), config)

    @classmethod
    def get_supported_languages(cls) -> tuple[str, ...]:
        return cls.languages

    def is_configured(self) -> bool:
        return not self.validate_config(self.config)

    def acquire_wait(self, limits: Limits) -> float:
        """How long a run may wait for a sandbox before its own limit starts (none here: SaaS creation is part
        of `run_overhead`)."""
        return 0.0

    def budget(self, limits: Limits, cell: bool = False) -> Budget:
        """Every deadline of one run (or one session's cell) of this provider, from the one home of deadlines."""
        if cell:
            return cell_budget(limits.timeout, self.run_overhead)
        return budget(limits.timeout, self.acquire_wait(limits), self.run_overhead)

    def clamp(self, requested: RequestedLimits) -> Limits:
        """The run's limits: what the caller asked for, within what this provider and the server allow (a limit
        above a maximum is lowered to it, never refused; one not asked for is the server's default)."""
        output_cap = min(settings.SANDBOX_OUTPUT_LIMIT, self.output_cap())
        return Limits(
            timeout=min(requested.timeout or settings.SANDBOX_TIMEOUT_DEFAULT,
                        settings.SANDBOX_TIMEOUT_MAX, self.timeout_cap()),
            memory_mb=min(requested.memory_mb or settings.SANDBOX_MEMORY_DEFAULT_MB, self.memory_cap_mb()),
            output_limit=min(requested.output_limit or output_cap, output_cap),
        )

    def timeout_cap(self) -> float:
        return settings.SANDBOX_TIMEOUT_MAX

    def memory_cap_mb(self) -> int:
        return settings.SANDBOX_MEMORY_MAX_MB

    def output_cap(self) -> int:
        return settings.SANDBOX_OUTPUT_LIMIT

    def queue_for(self, language: str) -> str:
        return self.queue

    def egress_problem(self, entries: tuple[str, ...]) -> str | None:
        """Why this provider cannot hold a run to this egress allowlist (the API answers 400 with it), or None."""
        return f"{self.label} ({self.name}) cannot hold its sandboxes to an egress allowlist"

    def health_check(self) -> Health:
        raise NotImplementedError

    def run(
        self, code: str, language: str, limits: Limits, arguments: dict,
        should_stop: Callable[[], bool] | None = None, run_id: str = "", ledger: SandboxLedger | None = None,
        account: str = "", files: list[dict] | None = None, on_output: OnOutput | None = None,
    ) -> ExecutionResult:
        """One complete run in a fresh sandbox that is never reused. `should_stop`, when given, is polled
        while the run is quiet: True cancels it (providers that cannot interrupt a remote call may ignore
        it; the run then ends at its deadline). `run_id` names the run to the service (idempotent creates,
        tags); `ledger` records a remote sandbox until it is deleted; `account` is an opaque label of whose
        run it is (the self-managed pool shares the host's CPU equally between accounts, not runs); `files`
        ({path, content_b64}) go into the working folder first (only providers that `takes_files`);
        `on_output(stream, chunk)`, when given, gets stdout/stderr bytes as they are written (live output; a
        provider that cannot stream ignores it, and the output arrives with the result)."""
        raise NotImplementedError

    @property
    def has_sessions(self) -> bool:
        return bool(self.session_languages)

    def open_session(self, language: str, limits: Limits, files: list[dict], file_limits: "FileLimits",
                     account: str = "", session_id: str = "", times: SessionTimes | None = None
                     ) -> ProviderSession:
        """A sandbox that lives between cells (see ProviderSession), with `files` ({path, content_b64}) written
        into its working folder first; `times` is how long it may live, for a service that
        must be told. SessionsUnsupported when the provider has no such thing."""
        raise SessionsUnsupported(f"{self.label} ({self.name}) has no sessions: it keeps no state between runs")

    def delete_session_sandbox(self, sandbox_id: str) -> None:
        """Delete what is left of a session whose worker was lost (a self-managed one went with its worker)."""

    def destroy_instance(self, instance_id: str) -> None:
        """Delete a sandbox a run left behind (SaaS); quiet when it is gone, ProviderError when not deleted."""
        raise NotImplementedError

    def find_instances(self, run_id: str) -> list[str]:
        return []


def apply_outcome(result: ExecutionResult, outcome: dict | None, limits: Limits) -> None:
    """Fill the return value and, for a failed main(), the status from the runner's report.

    `outcome` is what the in-sandbox runner reported: {"ok": true, "value_json": ...} or
    {"ok": false, "error": {"type", "message"}}; None when it never reported (the process died).
    Statuses decided from the worker's own observations (timeout, OOM kill) are set by the caller first.
    """
    if result.status != Status.SUCCEEDED:
        return
    outcome = check_outcome(outcome) or {}
    if outcome.get("ok") and "value_json" in outcome:
        try:
            result.result_value = strict_json(outcome["value_json"])
        except NotJSON as exc:
            set_status(result, Status.FAILED, "result_not_serializable",
                       f"main() returned a value that is not JSON: {exc}")
            return
        result.result_present = True
    error = outcome.get("error") or {}
    if error.get("type") == "MemoryError":
        mark_memory_limit(result, limits)
    elif not outcome:
        set_status(result, Status.FAILED, "process_exited",
                   f"the process exited with code {result.exit_code} before main() returned")
    elif not outcome.get("ok"):
        set_status(result, Status.FAILED, snake_case(error.get("type", "error")),
                   f"{error.get('type', 'Error')}: {error.get('message', '')}".rstrip(": "))
    elif result.stdout_truncated or result.stderr_truncated:
        set_status(result, Status.OUTPUT_LIMIT, "output_limit",
                   f"output exceeded {limits.output_limit} bytes and was truncated")


def mark_timeout(result: ExecutionResult, limits: Limits) -> None:
    set_status(result, Status.TIMEOUT, "timeout", f"the run exceeded its {limits.timeout:g}s time limit")


def mark_memory_limit(result: ExecutionResult, limits: Limits) -> None:
    set_status(result, Status.MEMORY_LIMIT, "memory_limit", f"the run exceeded its {limits.memory_mb} MB limit")
    result.memory_used_kb = result.memory_used_kb or limits.memory_mb * 1024


def set_status(result: ExecutionResult, status: Status, code: str, message: str) -> None:
    result.status, result.error_code, result.error_message = status, code, message


def snake_case(name: str) -> str:
    return "".join(f"_{char.lower()}" if char.isupper() else char for char in name).lstrip("_")

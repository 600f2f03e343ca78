"""What the SaaS code interpreters share: the driver program, the report channel, failures, deadlines, retries.

A SaaS interpreter runs source text, so the user's code and arguments travel inside a fixed driver program
as base64 of JSON: decoded there, never spliced into source as literals (RAGFlow's `main(**{json})` breaks
on true/null). The driver starts sandboxctl's own runner (executor/runner/child.py or child.js, the same
one self-managed sandboxes run) as a separate process, so the user's code never shares a process with the
driver; it prints one report between two copies of a random per-run marker that only the driver holds,
and that line is cut from stdout.

Every failure of the service itself ends as one of `Failure`'s kinds, mapped from HTTP status and SDK
exception types, never from message text; the retryable ones are tried again a bounded number of times
within the run's deadline. Each run ends within its provider deadline (executor/deadlines.py), whatever the SDK does.
"""

import base64
import json
import logging
import re
import secrets
import threading
import time
from collections.abc import Callable
from enum import StrEnum
from pathlib import Path

from executor.config import RUNNER_DIR, SAAS_QUEUE
from executor.runner.wire import pack_message
from providers.base import (
    ExecutionResult,
    Health,
    Limits,
    ProviderError,
    SandboxLedger,
    SandboxProvider,
    SessionsUnsupported,
    SessionTimes,
    Status,
    apply_outcome,
    mark_timeout,
    set_status,
)

log = logging.getLogger(__name__)

DRIVERS = Path(__file__).parent / "drivers"
DRIVER = {"python": (DRIVERS / "driver.py").read_text(), "nodejs": (DRIVERS / "driver.js").read_text()}
RUNNER = {"python": (RUNNER_DIR / "child.py").read_bytes(), "nodejs": (RUNNER_DIR / "child.js").read_bytes()}

# Past the run's own timeout: the driver reports the timeout itself; this covers the answer's way back. The
# whole run ends within its deadline budget (executor/deadlines.py: timeout plus SAAS_OVERHEAD).
EXECUTE_GRACE = 5.0
REQUEST_TIMEOUT = 10.0  # one API call that is not the execution (create, delete, list, health)
ATTEMPTS = 3
BACKOFF = (0.5, 1.5)  # seconds before the 2nd and 3rd attempt, unless the service says Retry-After
RETRY_AFTER_CAP = 5.0


class Failure(StrEnum):
    """How a SaaS service failed; the run ends sandbox_error with this as its code."""

    CREDENTIALS_REJECTED = "credentials_rejected"
    RATE_LIMITED = "rate_limited"
    SERVICE_UNAVAILABLE = "service_unavailable"
    BAD_RESPONSE = "bad_response"
    SANDBOX_LOST = "sandbox_lost"


RETRYABLE = (Failure.RATE_LIMITED, Failure.SERVICE_UNAVAILABLE)
# Interpreter error names (not messages) meaning the service stopped the execution at its time limit.
INTERRUPTIONS = ("KeyboardInterrupt", "TimeoutError", "timeout")
# One wording per failure, in one place: a short label for health answers, and the sentence an operator can
# act on for the console's Test connection (console/probe.py).
WORDING = {
    Failure.CREDENTIALS_REJECTED: (
        "credentials rejected", "The service rejected the credentials: check the key and its permissions."),
    Failure.RATE_LIMITED: (
        "rate limited", "The service is limiting requests right now: try again in a moment."),
    Failure.SERVICE_UNAVAILABLE: (
        "service unavailable", "The service is unavailable: it answered with a server error or not at all."),
    Failure.BAD_RESPONSE: (
        "unexpected answer", "The service answered something unexpected: check that the endpoint is this service's."),
    Failure.SANDBOX_LOST: (
        "the sandbox was lost", "The service lost the test's sandbox while it ran: try again."),
}
SUMMARY = {kind: label for kind, (label, _) in WORDING.items()}


class ServiceError(ProviderError):
    """A SaaS call failed: `kind` says how, `retry_after` is the service's own hint when it gave one."""

    def __init__(self, kind: Failure, message: str, retry_after: float | None = None) -> None:
        super().__init__(message, code=kind.value)
        self.kind = kind
        self.retry_after = retry_after


def failure_for_status(status: int | None, sandbox_call: bool = False) -> Failure:
    """The kind of an HTTP failure. `sandbox_call`: the request addressed one sandbox (404 = it is gone)."""
    if status in (401, 403):
        return Failure.CREDENTIALS_REJECTED
    if status == 429:
        return Failure.RATE_LIMITED
    if status in (404, 410) and sandbox_call:
        return Failure.SANDBOX_LOST
    if status is None or status == 0 or status == 408 or status >= 500:
        return Failure.SERVICE_UNAVAILABLE  # 0/None: no answer at all (DNS, refused, reset, timeout)
    return Failure.BAD_RESPONSE


def retry_after_seconds(headers) -> float | None:
    """The service's Retry-After in seconds (capped), from headers in any letter case."""
    value = next((value for name, value in (headers or {}).items() if str(name).lower() == "retry-after"), None)
    try:
        return max(0.0, min(float(value), RETRY_AFTER_CAP))
    except (TypeError, ValueError):
        return None


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def driver_program(code: str, language: str, arguments: dict, marker: str, timeout: float) -> str:
    """The fixed driver with only base64 text, a hex marker and a number filled in (none can end a literal)."""
    # The runner reads an opening that keeps nothing, then its one cell, each one MESSAGE (a length, then the
    # JSON), as it does in our own sandboxes; it answers with one MESSAGE carrying the cell's nonce.
    cell = {"code": code, "arguments": arguments, "nonce": marker}
    job = (pack_message(json.dumps({"keep": False}).encode())
           + pack_message(json.dumps(cell, ensure_ascii=False).encode("utf-8")))
    return (
        DRIVER[language].replace('"{runner}"', f'"{b64(RUNNER[language])}"')
        .replace('"{job}"', f'"{b64(job)}"')
        .replace('"{marker}"', f'"{marker}"')
        .replace("{timeout}", repr(float(timeout)))
    )


def new_marker() -> str:
    return f"__sandboxctl_{secrets.token_hex(16)}__"


def split_outcome(stdout: str, marker: str) -> tuple[str, dict | None]:
    """Cut the marker line out of stdout and decode the report it carries (None when it never came)."""
    pattern = re.compile("\n?" + re.escape(marker) + "([A-Za-z0-9+/=]*)" + re.escape(marker) + "\n?")
    found = list(pattern.finditer(stdout))
    if not found:
        return stdout, None
    last = found[-1]
    clean = stdout[: last.start()] + stdout[last.end():]
    try:
        report = json.loads(base64.b64decode(last.group(1)))
    except ValueError:
        return clean, None
    return clean, report if isinstance(report, dict) else None


class DeadlineExceeded(Exception):
    """An SDK call did not return within the time we gave it (its thread is left to finish on its own)."""


def within(seconds: float, function: Callable, *args, **kwargs):
    """Call `function` but stop waiting after `seconds`: an SDK's own timeouts are not ours to trust."""
    box: dict = {}

    def target() -> None:
        try:
            box["value"] = function(*args, **kwargs)
        except BaseException as exc:  # noqa: BLE001 - handed to the caller's thread below
            box["error"] = exc

    thread = threading.Thread(target=target, daemon=True, name="saas-call")
    thread.start()
    thread.join(max(0.0, seconds))
    if thread.is_alive():
        raise DeadlineExceeded(f"no answer within {seconds:.1f}s")
    if "error" in box:
        raise box["error"]
    return box.get("value")


class SaaSProvider(SandboxProvider):
    """A code interpreter run as a service: one fresh remote sandbox per run, destroyed afterwards."""

    queue = SAAS_QUEUE
    language_names = {"python": "python", "nodejs": "javascript"}

    # What each provider implements, in its SDK's terms; each raises ServiceError for a service failure.
    def prepare(self, language: str, deadline: float) -> None:
        """Anything a first run of `language` needs before a sandbox can be created (once per provider; on
        every later run it returns at once). Its service calls keep to `deadline` themselves."""

    def create_instance(self, language: str, run_id: str = "", timeout: float = REQUEST_TIMEOUT,
                        session: SessionTimes | None = None, egress: tuple[str, ...] = ()) -> str:
        """A new sandbox; for a session (`session` given) one that lives as long as the session may; with no
        network unless `egress` lists what it may reach (only providers whose egress_problem allows it)."""
        raise NotImplementedError

    def set_network(self, instance_id: str, egress: tuple[str, ...]) -> None:
        """What a live sandbox may reach from now on (a session's allowlist changed between cells)."""
        raise ServiceError(Failure.BAD_RESPONSE, f"{self.label}: cannot change a sandbox's network")

    def wait_ready(self, instance_id: str, deadline: float) -> None:
        """Return when the sandbox can execute; the default assumes it can as soon as it exists."""

    def execute(self, instance_id: str, program: str, language: str, limits: Limits) -> tuple[str, str, str]:
        """Run the driver program: (stdout, stderr, the name of the interpreter's own error, or "")."""
        raise NotImplementedError

    def destroy_instance(self, instance_id: str) -> None:
        """Delete the sandbox; return quietly when it is gone already, raise ServiceError when not deleted."""
        raise NotImplementedError

    def find_instances(self, run_id: str) -> list[str]:
        """Sandboxes made for `run_id` (tagged at creation), for runs whose create answer was lost."""
        raise NotImplementedError

    def probe(self) -> None:
        """One cheap authenticated call against the host runs use; raises ServiceError when it fails."""
        raise NotImplementedError

    # The shared run.
    def run(self, code: str, language: str, limits: Limits, arguments: dict, should_stop=None,
            run_id: str = "", ledger: SandboxLedger | None = None, account: str = "",
            files: list[dict] | None = None, on_output=None) -> ExecutionResult:  # no live output: it comes at the end
        if files:
            raise SessionsUnsupported(f"{self.label} ({self.name}) takes no input files")
        deadline = time.monotonic() + self.budget(limits).provider_deadline
        self.guarded("preparing", self.prepare, language, deadline)
        if ledger:
            ledger.creating()  # from here on a sandbox may exist, even if its create answer never arrives
        instance_id = self.retrying("creating a sandbox", deadline,
                                    lambda left: self.create_instance(language, run_id, min(left, REQUEST_TIMEOUT),
                                                                      egress=limits.egress))
        if ledger:
            ledger.created(instance_id)
        try:
            self.wait_ready(instance_id, deadline)
            result = self.execute_once(instance_id, code, language, limits, arguments, deadline)
        finally:
            if self.release(instance_id) and ledger:
                ledger.released()
        result.sandbox_id = instance_id
        return result

    def retrying(self, action: str, deadline: float, attempt: Callable[[float], object]):
        """Call `attempt(seconds left)`; retry rate limits and unavailability with backoff, inside the deadline."""
        for number in range(ATTEMPTS):
            left = deadline - time.monotonic()
            if left <= 0:
                raise ServiceError(Failure.SERVICE_UNAVAILABLE, f"{self.label}: service unavailable: out of time "
                                                                f"while {action}")
            try:
                # The SDK is given REQUEST_TIMEOUT; a call it does not end by then (plus slack) is abandoned.
                return within(min(left, REQUEST_TIMEOUT + 2), self.guarded, action, attempt, left)
            except DeadlineExceeded:
                raise ServiceError(Failure.SERVICE_UNAVAILABLE,
                                   f"{self.label}: service unavailable: no answer in time while {action}") from None
            except ServiceError as exc:
                pause = exc.retry_after if exc.retry_after is not None else BACKOFF[min(number, len(BACKOFF) - 1)]
                if exc.kind not in RETRYABLE or number == ATTEMPTS - 1 or time.monotonic() + pause >= deadline:
                    raise
                log.info("%s: %s while %s; trying again in %.1fs", self.label, exc.kind, action, pause)
                time.sleep(pause)

    def guarded(self, action: str, function: Callable, *args):
        """No raw exception escapes a provider: anything not already a ServiceError is a bad response."""
        try:
            return function(*args)
        except ServiceError:
            raise
        except Exception as exc:  # noqa: BLE001 - an SDK failing in a way its types do not describe
            raise ServiceError(Failure.BAD_RESPONSE,
                               f"{self.label}: unexpected answer while {action} ({type(exc).__name__})") from exc

    def execute_once(self, instance_id: str, code: str, language: str, limits: Limits, arguments: dict,
                     deadline: float) -> ExecutionResult:
        """Execution is not retried: the code may have run. A service that stops answering is a timeout."""
        marker = new_marker()
        program = driver_program(code, language, arguments, marker, limits.timeout)
        started = time.monotonic()
        wait = min(limits.timeout + EXECUTE_GRACE, deadline - started)
        try:
            stdout, stderr, error = within(wait, self.guarded, "executing code", self.execute, instance_id, program,
                                           language, limits)
        except DeadlineExceeded:
            return self.timed_out(limits, time.monotonic() - started)
        return self.result_from(stdout, stderr, marker, limits, time.monotonic() - started, error)

    def release(self, instance_id: str) -> bool:
        """Delete the sandbox now; False leaves it to the reconciler (the execution records it)."""
        try:
            self.retrying("deleting the sandbox", time.monotonic() + 3 * REQUEST_TIMEOUT,
                          lambda left: self.destroy_instance(instance_id))
        except ProviderError as exc:
            log.warning("%s: sandbox %s not deleted yet (%s); the reconciler will retry", self.label,
                        instance_id, exc)
            return False
        return True

    def result_from(self, stdout: str, stderr: str, marker: str, limits: Limits, duration: float,
                    interpreter_error: str = "") -> ExecutionResult:
        """The result of a finished remote execution, from the driver's report."""
        clean, report = split_outcome(stdout, marker)
        cap = limits.output_limit
        result = ExecutionResult(
            status=Status.SUCCEEDED, stdout=clean[:cap], stderr=stderr[:cap], stdout_truncated=len(clean) > cap,
            stderr_truncated=len(stderr) > cap, execution_time=round(duration, 6),
        )
        if report is None:
            # The driver never reported: the service interrupted the interpreter at its own time limit, or
            # the interpreter failed under it.
            if interpreter_error in INTERRUPTIONS:
                return self.timed_out(limits, duration, clean, stderr)
            detail = f" ({interpreter_error})" if interpreter_error else ""
            raise ServiceError(Failure.BAD_RESPONSE, f"{self.label}: the interpreter returned no report{detail}")
        if report.get("timed_out") is True:
            return self.timed_out(limits, duration, clean, stderr)
        exit_code = report.get("exit_code")
        result.exit_code = exit_code if isinstance(exit_code, int) and not isinstance(exit_code, bool) else None
        outcome = report.get("outcome")
        if outcome is None:
            set_status(result, Status.FAILED, "process_exited",
                       f"the process exited with code {result.exit_code} before main() returned")
        apply_outcome(result, outcome, limits)
        return result

    def timed_out(self, limits: Limits, duration: float, partial_stdout: str = "",
                  partial_stderr: str = "") -> ExecutionResult:
        result = ExecutionResult(status=Status.TIMEOUT, stdout=partial_stdout[: limits.output_limit],
                                 stderr=partial_stderr[: limits.output_limit], execution_time=round(duration, 6))
        mark_timeout(result, limits)
        return result

    def health_check(self) -> Health:
        """An authenticated, cheap call against the host runs use; creates nothing billable."""
        if not self.is_configured():
            return Health(False, "not configured")
        started = time.monotonic()
        try:
            within(REQUEST_TIMEOUT, self.guarded, "checking health", self.probe)
        except DeadlineExceeded:
            return Health(False, "service unavailable: no answer in time")
        except ServiceError as exc:
            return Health(False, f"{SUMMARY[exc.kind]}: {exc}", latency_ms=(time.monotonic() - started) * 1000)
        return Health(True, "healthy", latency_ms=round((time.monotonic() - started) * 1000, 1))

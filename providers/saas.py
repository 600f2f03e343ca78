"""What the SaaS code interpreters share: the driver program, the result channel and error mapping.

A SaaS interpreter runs source text, so the user's code and arguments travel inside a fixed driver
program as base64 of UTF-8 and of JSON: they are decoded there, never spliced into source as literals
(RAGFlow's `main(**{json})` breaks on true/null). The driver prints main()'s outcome between two copies of
a random per-run marker that the user's code is never given; the marker line is cut from stdout.
"""

import base64
import json
import re
import secrets
from dataclasses import dataclass
from pathlib import Path

import requests

from providers.base import (
    ExecutionResult,
    ProviderError,
    SandboxProvider,
    Status,
    apply_outcome,
    mark_timeout,
    set_status,
)

DRIVERS = Path(__file__).parent / "drivers"
PYTHON_DRIVER = (DRIVERS / "driver.py").read_text()
NODE_DRIVER = (DRIVERS / "driver.js").read_text()



def b64(text: str) -> str:
    return base64.b64encode(text.encode("utf-8")).decode("ascii")


def driver_program(code: str, language: str, arguments: dict, marker: str) -> str:
    """The fixed driver with only base64 text and a hex marker filled in (neither can end a string literal)."""
    template = PYTHON_DRIVER if language == "python" else NODE_DRIVER
    return (
        template.replace("{code}", b64(code))
        .replace("{arguments}", b64(json.dumps(arguments, ensure_ascii=False)))
        .replace("{marker}", marker)
    )


def new_marker() -> str:
    return f"__sandboxctl_{secrets.token_hex(16)}__"


def split_outcome(stdout: str, marker: str) -> tuple[str, dict | None]:
    """Cut the marker line out of stdout and decode the outcome it carries (None when it never came)."""
    pattern = re.compile("\n?" + re.escape(marker) + "([A-Za-z0-9+/=]*)" + re.escape(marker) + "\n?")
    found = list(pattern.finditer(stdout))
    if not found:
        return stdout, None
    last = found[-1]
    clean = stdout[: last.start()] + stdout[last.end():]
    try:
        return clean, json.loads(base64.b64decode(last.group(1)))
    except ValueError:
        return clean, None


@dataclass
class ServiceFailure:
    """What went wrong talking to a SaaS API, in the terms every provider maps its SDK errors to."""

    message: str
    status_code: int | None = None
    network: bool = False


class SaaSProvider(SandboxProvider):
    """A code interpreter run as a service: one fresh remote sandbox per run, destroyed afterwards."""

    queue = "sandbox.saas"
    language_names = {"python": "python", "nodejs": "javascript"}

    def provider_error(self, failure: ServiceFailure, action: str) -> ProviderError:
        """Map a failed API call to a ProviderError that says whether retrying could help."""
        if failure.status_code in (401, 403):
            return ProviderError(f"{self.label}: credentials rejected ({failure.status_code}) while {action}",
                                 code="credentials_rejected")
        if failure.status_code is not None and failure.status_code >= 500:
            return ProviderError(f"{self.label}: service error {failure.status_code} while {action}: "
                                 f"{failure.message}", code="service_error")
        if failure.network:
            return ProviderError(f"{self.label}: cannot reach the service while {action}: {failure.message}",
                                 code="service_unreachable")
        return ProviderError(f"{self.label}: {action} failed: {failure.message}", code="service_error")

    def result_from(self, stdout: str, stderr: str, marker: str, limits, duration: float,
                    execution_error: str = "") -> ExecutionResult:
        """Build the common result from a finished remote execution's output."""
        clean, outcome = split_outcome(stdout, marker)
        cap = limits.output_limit
        result = ExecutionResult(
            status=Status.SUCCEEDED,
            stdout=clean[:cap],
            stderr=stderr[:cap],
            stdout_truncated=len(clean) > cap,
            stderr_truncated=len(stderr) > cap,
            execution_time=round(duration, 6),
        )
        if outcome is None and execution_error:
            set_status(result, Status.FAILED, "process_exited", execution_error)
        apply_outcome(result, outcome, limits)
        result.exit_code = 0 if result.status in (Status.SUCCEEDED, Status.OUTPUT_LIMIT) else 1
        return result

    def timed_out(self, limits, duration: float, partial_stdout: str = "", partial_stderr: str = "") -> ExecutionResult:
        result = ExecutionResult(status=Status.TIMEOUT, stdout=partial_stdout[: limits.output_limit],
                                 stderr=partial_stderr[: limits.output_limit], execution_time=round(duration, 6))
        mark_timeout(result, limits)
        return result

    def health_url(self) -> str:
        raise NotImplementedError

    def health_check(self) -> bool:
        """Cheap: the settings are complete and the service answers HTTP. Creates nothing billable."""
        if not self.is_configured():
            return False
        try:
            requests.get(self.health_url(), timeout=3, allow_redirects=False)
        except requests.RequestException:
            return False
        return True

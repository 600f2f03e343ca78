"""E2B code interpreter sandboxes, through e2b-code-interpreter (optional extra `e2b`).

Each run creates a sandbox, runs the driver program with `run_code` and kills the sandbox. The SDK is
given every connection setting explicitly, so E2B_* environment variables never decide where code goes.
"""

import re
import time

from providers.base import ExecutionResult, Limits, ProviderError
from providers.saas import SaaSProvider, ServiceFailure, driver_program, new_marker
from providers.schema import ConfigField

SANDBOX_LIFETIME_GRACE = 60  # seconds the remote sandbox may outlive the run if killing it fails


def load_sdk():
    try:
        import httpx
        from e2b import AuthenticationException, SandboxException, TimeoutException
        from e2b_code_interpreter import Sandbox
    except ImportError as exc:
        raise ProviderError("e2b-code-interpreter is not installed: pip install 'sandboxctl[e2b]'") from exc
    return Sandbox, AuthenticationException, SandboxException, TimeoutException, httpx


class E2BProvider(SaaSProvider):
    name = "e2b"
    label = "E2B"
    description = "E2B cloud code interpreter sandboxes (Python and JavaScript)."

    def __init__(self) -> None:
        super().__init__()
        self._sandboxes: dict = {}

    @classmethod
    def get_config_schema(cls) -> list[ConfigField]:
        return [
            ConfigField("api_key", label="API key", required=True, secret=True),
            ConfigField("domain", label="Domain", default="e2b.app", required=True, endpoint=True),
            ConfigField("template", label="Template", default="code-interpreter-v1", required=True),
            ConfigField("timeout", "integer", "Timeout (s)", "Per run.", default=60, min=1, max=3600),
            ConfigField("api_url", label="API URL", description="Optional; defaults to https://api.<domain>",
                        endpoint=True),
            ConfigField("sandbox_url", label="Sandbox URL", endpoint=True,
                        description="Optional; for self-hosted E2B, where sandboxes are reached"),
        ]

    def timeout_cap(self) -> float:
        return float(self.config.get("timeout", 60))

    def connection(self) -> dict:
        return {
            "api_key": self.config.get("api_key", ""),
            "domain": self.config.get("domain", "e2b.app"),
            "api_url": self.config.get("api_url") or f"https://api.{self.config.get('domain', 'e2b.app')}",
            "sandbox_url": self.config.get("sandbox_url") or None,
            "debug": False,
            "request_timeout": 30.0,
        }

    def call(self, action: str, function, *args, **kwargs):
        _, AuthenticationException, SandboxException, TimeoutException, httpx = load_sdk()
        try:
            return function(*args, **kwargs)
        except AuthenticationException as exc:
            raise self.provider_error(ServiceFailure(str(exc), status_code=401), action) from exc
        except TimeoutException:
            raise
        except SandboxException as exc:
            raise self.provider_error(ServiceFailure(str(exc), status_code=self.status_of(exc)), action) from exc
        except httpx.HTTPError as exc:
            raise self.provider_error(ServiceFailure(str(exc) or type(exc).__name__, network=True), action) from exc

    @staticmethod
    def status_of(exc: Exception) -> int | None:
        status = getattr(exc, "status_code", None)
        if status is None:
            found = re.match(r"(\d{3}):", str(exc))
            status = int(found.group(1)) if found else None
        return status

    def create_instance(self, language: str) -> str:
        Sandbox, *_ = load_sdk()
        lifetime = int(self.timeout_cap()) + SANDBOX_LIFETIME_GRACE
        sandbox = self.call("creating a sandbox", Sandbox.create, template=self.config.get("template"),
                            timeout=lifetime, **self.connection())
        self._sandboxes[sandbox.sandbox_id] = sandbox
        return sandbox.sandbox_id

    def execute_code(self, instance_id: str, code: str, language: str, limits: Limits,
                     arguments: dict, should_stop=None) -> ExecutionResult:
        _, _, _, TimeoutException, _ = load_sdk()
        sandbox = self._sandboxes[instance_id]
        marker = new_marker()
        program = driver_program(code, language, arguments, marker)
        started = time.monotonic()
        stdout: list[str] = []
        stderr: list[str] = []
        try:
            execution = self.call("executing code", sandbox.run_code, program, language=self.language_names[language],
                                  timeout=limits.timeout, on_stdout=lambda m: stdout.append(m.line),
                                  on_stderr=lambda m: stderr.append(m.line))
        except TimeoutException:
            return self.timed_out(limits, time.monotonic() - started, "".join(stdout), "".join(stderr))
        error = ""
        if execution.error is not None:
            error = f"{execution.error.name}: {execution.error.value}"
        stderr_text = "".join(execution.logs.stderr) + (f"{execution.error.traceback}\n" if error else "")
        return self.result_from("".join(execution.logs.stdout), stderr_text, marker, limits,
                                time.monotonic() - started, execution_error=error)

    def destroy_instance(self, instance_id: str) -> None:
        sandbox = self._sandboxes.pop(instance_id, None)
        if sandbox is None:
            return
        try:
            self.call("killing the sandbox", sandbox.kill)
        except ProviderError:
            pass  # the sandbox's own timeout ends it shortly; the run's result stands

    def health_url(self) -> str:
        return self.connection()["api_url"] + "/health"

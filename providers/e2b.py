"""E2B code interpreter sandboxes, through e2b-code-interpreter (optional extra `e2b`).

Each run creates a sandbox (idempotency key and metadata tag: the run's id), runs the driver program with
`run_code` and kills the sandbox. The SDK is given every connection setting explicitly, so E2B_*
environment variables never decide where code goes. Failures map from the SDK's exception types and the
HTTP status of the code interpreter's own answers (saas.Failure).
"""

from providers.base import Limits, ProviderError, SessionTimes
from providers.egress import e2b_network
from providers.saas import (
    REQUEST_TIMEOUT,
    SUMMARY,
    Failure,
    ServiceError,
    failure_for_status,
)
from providers.saas_sessions import SaaSProviderWithSessions
from providers.schema import ConfigField

SANDBOX_LIFETIME_GRACE = 60  # seconds the remote sandbox may outlive the run if killing it fails
RUN_TAG = "sandboxctl_run"


def load_sdk():
    try:
        import e2b
        import e2b_code_interpreter
    except ImportError as exc:
        raise ProviderError("e2b-code-interpreter is not installed: pip install 'sandboxctl[e2b]'") from exc
    return e2b, e2b_code_interpreter


def sandbox_class():
    """The SDK's Sandbox, noting the HTTP status of each code-interpreter answer: on `/execute` the SDK keeps
    only a message, and the status is what tells a rejected key from a lost sandbox."""
    _, interpreter = load_sdk()

    class Sandbox(interpreter.Sandbox):
        last_status: int | None = None

        @property
        def _client(self):
            client = super()._client
            client.event_hooks["response"].append(self._note_status)
            return client

        def _note_status(self, response) -> None:
            self.last_status = response.status_code

    return Sandbox


def answered_status(exc: BaseException) -> int | None:
    """The HTTP status of the answer an SDK call failed to read. For an error body that is not JSON (an HTML
    page from a proxy) the SDK's generated client raises a bare JSONDecodeError while parsing; the answer
    it was parsing is still in that frame."""
    frame = exc.__traceback__
    status = None
    while frame is not None:
        response = frame.tb_frame.f_locals.get("response")
        if isinstance(getattr(response, "status_code", None), int):
            status = response.status_code
        frame = frame.tb_next
    return status


class E2BProvider(SaaSProviderWithSessions):
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

    def connection(self, request_timeout: float = REQUEST_TIMEOUT) -> dict:
        return {
            "api_key": self.config.get("api_key", ""),
            "domain": self.config.get("domain", "e2b.app"),
            "api_url": self.config.get("api_url") or f"https://api.{self.config.get('domain', 'e2b.app')}",
            "sandbox_url": self.config.get("sandbox_url") or None,
            "debug": False,
            "request_timeout": request_timeout,
            "retries": 0,  # retries and their deadline are ours (saas.SaaSProvider.retrying)
        }

    def service_error(self, exc: Exception, action: str, status: int | None = None,
                      sandbox_call: bool = False) -> ServiceError:
        """Map an SDK exception, by its type and then by the HTTP status, to a ServiceError."""
        import httpx

        e2b, _ = load_sdk()
        status = status if status is not None else getattr(exc, "status_code", None) or answered_status(exc)
        if isinstance(exc, e2b.AuthenticationException):
            kind = Failure.CREDENTIALS_REJECTED
        elif isinstance(exc, e2b.RateLimitException):
            kind = Failure.RATE_LIMITED
        elif isinstance(exc, e2b.exceptions.ServiceBusyException):
            kind = Failure.SERVICE_UNAVAILABLE
        elif isinstance(exc, e2b.NotFoundException) and sandbox_call:
            kind = Failure.SANDBOX_LOST
        elif status is not None and status >= 300:
            kind = failure_for_status(status, sandbox_call)
        elif isinstance(exc, httpx.TransportError | OSError | e2b.TimeoutException):
            kind = Failure.SERVICE_UNAVAILABLE  # no answer: DNS, refused, reset, timed out
        else:
            kind = Failure.BAD_RESPONSE  # an answer the SDK could not read: not JSON, wrong shape
        return ServiceError(kind, f"{self.label}: {SUMMARY[kind]} while {action} ({type(exc).__name__})")

    def egress_problem(self, entries: tuple[str, ...]) -> None:
        # E2B holds a sandbox to hosts (by the HTTP Host and the TLS server name) and networks; it has no ports.
        return None

    def create_instance(self, language: str, run_id: str = "", timeout: float = REQUEST_TIMEOUT,
                        session: SessionTimes | None = None, egress: tuple[str, ...] = ()) -> str:
        # E2B ends a sandbox at its timeout on its own clock: a run's after its cap, a session's after its
        # max_lifetime; past that, nothing is left however our side ended.
        lived = session.max_lifetime if session else self.timeout_cap()
        lifetime = int(lived) + SANDBOX_LIFETIME_GRACE
        tags = {RUN_TAG: run_id} if run_id else None
        # No internet from the sandbox unless the run's allowlist names where (and then only there).
        network = {"network": e2b_network(egress)} if egress else {}
        try:
            sandbox = sandbox_class().create(template=self.config.get("template"), timeout=lifetime, metadata=tags,
                                             idempotency_key=run_id or None, allow_internet_access=False,
                                             **network, **self.connection(timeout))
        except Exception as exc:
            raise self.service_error(exc, "creating a sandbox") from exc
        if not getattr(sandbox, "sandbox_id", None):
            raise ServiceError(Failure.BAD_RESPONSE, f"{self.label}: the service returned no sandbox id")
        self._sandboxes[sandbox.sandbox_id] = sandbox
        return sandbox.sandbox_id

    def set_network(self, instance_id: str, egress: tuple[str, ...]) -> None:
        update = {**e2b_network(egress), "allow_internet_access": False}  # replaces the whole configuration
        try:
            sandbox_class().update_network(instance_id, update, **self.connection())
        except Exception as exc:
            raise self.service_error(exc, "changing the sandbox's network", sandbox_call=True) from exc

    def execute(self, instance_id: str, program: str, language: str, limits: Limits) -> tuple[str, str, str]:
        e2b, _ = load_sdk()
        sandbox = self._sandboxes[instance_id]
        sandbox.last_status = None
        try:
            execution = sandbox.run_code(program, language=self.language_names[language],
                                         timeout=limits.timeout + 5, request_timeout=REQUEST_TIMEOUT)
        except e2b.TimeoutException as exc:
            # The SDK raises this for its own deadline, for a 502 (sandbox gone) and for a killed sandbox.
            if sandbox.last_status == 502 or isinstance(exc, getattr(e2b, "SandboxNotFoundException", ())):
                raise ServiceError(Failure.SANDBOX_LOST, f"{self.label}: the sandbox was lost mid-run") from exc
            raise ServiceError(Failure.SERVICE_UNAVAILABLE, f"{self.label}: executing code timed out") from exc
        except Exception as exc:
            raise self.service_error(exc, "executing code", sandbox.last_status, sandbox_call=True) from exc
        error = execution.error.name if execution.error is not None else ""
        stderr = "".join(execution.logs.stderr)
        if execution.error is not None and execution.error.traceback:
            stderr += f"{execution.error.traceback}\n"
        return "".join(execution.logs.stdout), stderr, error

    def destroy_instance(self, instance_id: str) -> None:
        sandbox = self._sandboxes.pop(instance_id, None)
        try:
            if sandbox is not None:
                sandbox.kill()
            else:
                sandbox_class().kill(instance_id, **self.connection())
        except Exception as exc:
            if sandbox is not None:
                self._sandboxes[instance_id] = sandbox
            raise self.service_error(exc, "deleting the sandbox", sandbox_call=True) from exc

    def find_instances(self, run_id: str) -> list[str]:
        e2b, _ = load_sdk()
        try:
            listing = sandbox_class().list(query=e2b.SandboxQuery(metadata={RUN_TAG: run_id}), **self.connection())
            return [info.sandbox_id for info in listing.next_items()]
        except Exception as exc:
            raise self.service_error(exc, "listing sandboxes") from exc

    def probe(self) -> None:
        try:
            sandbox_class().list(limit=1, **self.connection()).next_items()
        except Exception as exc:
            raise self.service_error(exc, "listing sandboxes") from exc

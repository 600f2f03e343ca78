"""Aliyun AgentRun Code Interpreter, through agentrun-sdk's data-plane API (optional extra `aliyun`).

Each run creates a sandbox from the configured template under an id derived from the run (a retried or
lost create names the same sandbox), waits for its health as the SDK's own lifecycle does, executes the
driver program and deletes the sandbox. With no template named in the settings, a default
code-interpreter template per language (`sandboxctl-<language>-default`) is found or created in the account
through the control API, as RAGFlow's own provider does. The data-plane classes are used directly: they
raise ClientError and ServerError carrying the HTTP status and the service's error code, where the
higher-level client folds every refusal into status 0. Every call gets an explicit Config built from the
stored settings: the SDK would otherwise fall back to AGENTRUN_* environment variables (and it loads a
`.env` when imported, which is why it is imported lazily, only when this provider is used).
"""

import math
import os
import time

from providers.base import Limits, ProviderError, SessionTimes
from providers.saas import (
    REQUEST_TIMEOUT,
    SUMMARY,
    DeadlineExceeded,
    Failure,
    ServiceError,
    failure_for_status,
    retry_after_seconds,
    within,
)
from providers.saas_sessions import SaaSProviderWithSessions
from providers.schema import ConfigField

REGIONS = ("cn-hangzhou", "cn-beijing", "cn-shanghai", "cn-shenzhen", "cn-guangzhou")
# The service's own limit per execution. The SDK's `timeout` for execute_code is in seconds: its default,
# 30, is this limit (agentrun/sandbox/api/code_interpreter_data.py).
SERVICE_TIMEOUT_CAP = 30
READY_POLL = 0.25
READY_WAIT = 20.0  # at most, for a new sandbox's health to say ok
PROBE_SANDBOX = "sandboxctl-health-probe"
TEMPLATE_READY_WAIT = 60.0  # at most, for a template we created to become ready
TEMPLATE_POLL = 1.0  # never created: a signed lookup answers 404 when credentials work
# The data plane's own error codes (the `code` field of its answers), by kind.
CODES = {
    Failure.CREDENTIALS_REJECTED: ("Forbidden", "Unauthorized", "InvalidAccessKeyId", "SignatureDoesNotMatch"),
    Failure.RATE_LIMITED: ("Throttling", "TooManyRequests"),
    Failure.SERVICE_UNAVAILABLE: ("ServiceUnavailable", "InternalError", "SystemBusy"),
    Failure.SANDBOX_LOST: ("NotFound", "SandboxNotFound"),
}


def default_template(language: str) -> str:
    return f"sandboxctl-{language}-default"


def load_control_api():
    """agentrun-sdk's control-plane API, speaking plain HTTP when the configured endpoint says http:// (a
    private gateway, or the local fake in the tests); the SDK itself always talks HTTPS."""
    load_sdk()
    from agentrun.sandbox.api import SandboxControlAPI

    class ControlAPI(SandboxControlAPI):
        def _get_client(self, config=None):
            client = super()._get_client(config)
            endpoint = (config or self.config).get_control_endpoint()
            if endpoint.startswith("http://"):
                client._protocol = "http"  # the generated client keeps its protocol here; HTTPS when unset
            return client

    return ControlAPI


def load_sdk():
    os.environ.setdefault("DISABLE_BREAKING_CHANGES_WARNING", "1")
    try:
        from agentrun.sandbox.api import CodeInterpreterDataAPI, SandboxDataAPI
        from agentrun.utils.config import Config
        from agentrun.utils.exception import HTTPError
    except ImportError as exc:
        raise ProviderError("agentrun-sdk is not installed: pip install 'sandboxctl[aliyun]'") from exc
    return SandboxDataAPI, CodeInterpreterDataAPI, Config, HTTPError


def sandbox_id_for(run_id: str) -> str | None:
    return f"sandboxctl-{run_id}" if run_id else None


class AliyunCodeInterpreterProvider(SaaSProviderWithSessions):
    name = "aliyun_codeinterpreter"
    label = "Aliyun AgentRun Code Interpreter"
    description = "Serverless code interpreter sandboxes on Alibaba Cloud (Python and JavaScript), 30 s per run."

    @classmethod
    def get_config_schema(cls) -> list[ConfigField]:
        return [
            ConfigField("access_key_id", label="AccessKey ID", required=True),
            ConfigField("access_key_secret", label="AccessKey secret", required=True, secret=True),
            ConfigField("account_id", label="Account ID", description="The primary account ID", required=True,
                        endpoint=True),
            ConfigField("region", "select", "Region", default="cn-hangzhou", required=True, options=REGIONS,
                        endpoint=True),
            ConfigField("template_name", label="Template name",
                        description="A code-interpreter template in your account; blank: sandboxctl finds or "
                                    "creates sandboxctl-python-default / sandboxctl-nodejs-default"),
            ConfigField("timeout", "integer", "Timeout (s)", "Per run; the service allows at most 30 s.",
                        default=SERVICE_TIMEOUT_CAP, min=1, max=SERVICE_TIMEOUT_CAP),
            ConfigField("data_endpoint", label="Data endpoint", endpoint=True,
                        description="Optional; defaults to https://<account>.agentrun-data.<region>.aliyuncs.com"),
            ConfigField("control_endpoint", label="Control endpoint", endpoint=True,
                        description="Optional; defaults to https://agentrun.<region>.aliyuncs.com"),
        ]

    def __init__(self) -> None:
        super().__init__()
        self._templates: dict[str, str] = {}

    def timeout_cap(self) -> float:
        return float(min(int(self.config.get("timeout", SERVICE_TIMEOUT_CAP)), SERVICE_TIMEOUT_CAP))

    def data_endpoint(self) -> str:
        return self.config.get("data_endpoint") or (
            f"https://{self.config.get('account_id')}.agentrun-data.{self.config.get('region')}.aliyuncs.com"
        )

    def sdk_config(self, timeout: float = REQUEST_TIMEOUT):
        *_, Config, _ = load_sdk()
        region = self.config.get("region", "cn-hangzhou")
        return Config(
            access_key_id=self.config.get("access_key_id", ""),
            access_key_secret=self.config.get("access_key_secret", ""),
            security_token="",
            account_id=self.config.get("account_id", ""),
            region_id=region,
            timeout=int(math.ceil(timeout)),
            data_endpoint=self.data_endpoint(),
            control_endpoint=self.config.get("control_endpoint") or f"https://agentrun.{region}.aliyuncs.com",
        )

    def call(self, action: str, function, *args, sandbox_call: bool = False, **kwargs) -> dict:
        """One data-plane call: its answer's `data`, or a ServiceError from the HTTP status or error code."""
        *_, HTTPError = load_sdk()
        try:
            answer = function(*args, **kwargs)
        except HTTPError as exc:
            kind = self.kind_of_code(exc.error_code, sandbox_call) or failure_for_status(exc.status_code, sandbox_call)
            detail = f"HTTP {exc.status_code or 'no answer'}" + (f", {exc.error_code}" if exc.error_code else "")
            raise ServiceError(kind, f"{self.label}: {SUMMARY[kind]} while {action} ({detail})",
                               retry_after_seconds(exc.response_headers)) from exc
        if not isinstance(answer, dict):
            raise ServiceError(Failure.BAD_RESPONSE, f"{self.label}: {action}: the answer is not an object")
        code = answer.get("code")
        if code not in (None, "SUCCESS"):
            kind = self.kind_of_code(str(code), sandbox_call) or Failure.BAD_RESPONSE
            raise ServiceError(kind, f"{self.label}: {SUMMARY[kind]} while {action} ({code})")
        data = answer.get("data", answer)
        if not isinstance(data, dict):
            raise ServiceError(Failure.BAD_RESPONSE, f"{self.label}: {action}: unexpected answer")
        return data

    @staticmethod
    def kind_of_code(code: str | None, sandbox_call: bool) -> Failure | None:
        for kind, codes in CODES.items():
            if code in codes and (kind != Failure.SANDBOX_LOST or sandbox_call):
                return kind
        return None

    def egress_problem(self, entries: tuple[str, ...]) -> str:
        # AgentRun's templates choose a network mode for every sandbox made from them (public, a VPC, or both);
        # nothing in its API holds a sandbox to some hosts.
        return (f"{super().egress_problem(entries)}: its templates choose a whole network (public or private), "
                "never some hosts")

    def prepare(self, language: str, deadline: float) -> None:
        """The template runs use: the configured one, or this language's default, found or created."""
        if self.config.get("template_name") or language in self._templates:
            return
        name = default_template(language)
        api = load_control_api()(config=self.sdk_config())
        template = self.control("looking up the default template", api.get_template, name, missing_ok=True)
        if template is None:
            from agentrun.sandbox.model import TemplateType
            from alibabacloud_agentrun20250910.models import CreateTemplateInput

            wanted = CreateTemplateInput(template_name=name, template_type=TemplateType.CODE_INTERPRETER.value)
            template = self.control("creating the default template", api.create_template, wanted, exists_ok=True)
        until = min(deadline, time.monotonic() + TEMPLATE_READY_WAIT)
        while str(getattr(template, "status", "") or "READY").upper() in ("CREATING", "PENDING", "DEPLOYING"):
            if time.monotonic() + TEMPLATE_POLL >= until:
                raise ServiceError(Failure.SERVICE_UNAVAILABLE, f"{self.label}: the template {name} is not ready")
            time.sleep(TEMPLATE_POLL)
            template = self.control("waiting for the default template", api.get_template, name)
        self._templates[language] = name

    def control(self, action: str, function, *args, missing_ok: bool = False, exists_ok: bool = False):
        """One control-plane call under our own timer; None when the thing is missing and that is fine."""
        *_, HTTPError = load_sdk()
        try:
            return within(REQUEST_TIMEOUT + 2, function, *args)
        except DeadlineExceeded:
            raise ServiceError(Failure.SERVICE_UNAVAILABLE,
                               f"{self.label}: service unavailable: no answer in time while {action}") from None
        except HTTPError as exc:
            if missing_ok and exc.status_code == 404:
                return None
            if exists_ok and exc.status_code == 409:
                return None
            kind = failure_for_status(exc.status_code)
            raise ServiceError(kind, f"{self.label}: {SUMMARY[kind]} while {action} (HTTP {exc.status_code})") from exc

    def template_for(self, language: str) -> str:
        return self.config.get("template_name") or self._templates.get(language) or default_template(language)

    def create_instance(self, language: str, run_id: str = "", timeout: float = REQUEST_TIMEOUT,
                        session: SessionTimes | None = None, egress: tuple[str, ...] = ()) -> str:
        # `egress` is always empty here: a run with an allowlist is refused before it is accepted (egress_problem).
        SandboxDataAPI, *_ = load_sdk()
        # The service ends a sandbox left idle this long: a session's must outlast the gaps between its cells.
        idle = int(session.idle_timeout) + SERVICE_TIMEOUT_CAP * 2 if session else SERVICE_TIMEOUT_CAP * 4
        config = self.sdk_config(timeout)
        wanted = sandbox_id_for(run_id)
        try:
            data = self.call("creating a sandbox", SandboxDataAPI(config=config).create_sandbox,
                             template_name=self.template_for(language), sandbox_id=wanted,
                             sandbox_idle_timeout_seconds=idle, config=config)
        except ServiceError as exc:
            if wanted and getattr(exc.__cause__, "status_code", None) == 409:
                return wanted  # an earlier attempt whose answer was lost made it already
            raise
        sandbox_id = data.get("sandboxId")
        if not isinstance(sandbox_id, str) or not sandbox_id:
            raise ServiceError(Failure.BAD_RESPONSE, f"{self.label}: the service returned no sandbox id")
        return sandbox_id

    def wait_ready(self, instance_id: str, deadline: float) -> None:
        """As the SDK's lifecycle does: execute only once the sandbox's health says ok (bounded)."""
        _, CodeInterpreterDataAPI, *_ = load_sdk()
        api = CodeInterpreterDataAPI(instance_id, config=self.sdk_config())
        until = min(deadline, time.monotonic() + READY_WAIT)
        while True:
            data = self.call("waiting for the sandbox", api.check_health, sandbox_call=True)
            if str(data.get("status", "")).lower() == "ok":
                return
            if time.monotonic() + READY_POLL >= until:
                raise ServiceError(Failure.SERVICE_UNAVAILABLE, f"{self.label}: the sandbox never became ready")
            time.sleep(READY_POLL)

    def execute(self, instance_id: str, program: str, language: str, limits: Limits) -> tuple[str, str, str]:
        _, CodeInterpreterDataAPI, *_ = load_sdk()
        # The driver stops the code at limits.timeout; the service's own limit sits just past it.
        service_timeout = min(int(math.ceil(limits.timeout)) + 2, SERVICE_TIMEOUT_CAP)
        api = CodeInterpreterDataAPI(instance_id, config=self.sdk_config(service_timeout + 5))
        data = self.call("executing code", api.execute_code, code=program, context_id=None,
                         language=self.language_names[language], timeout=service_timeout, sandbox_call=True)
        return self.parse(data)

    def parse(self, data: dict) -> tuple[str, str, str]:
        """Both shapes the SDK reads: a `results` list of typed items, or flat stdout/stderr/exitCode."""
        results = data.get("results")
        if results is None and ("stdout" in data or "stderr" in data):
            return str(data.get("stdout") or ""), str(data.get("stderr") or ""), ""
        if not isinstance(results, list):
            raise ServiceError(Failure.BAD_RESPONSE, f"{self.label}: the execution answer has no results")
        stdout, stderr, error = [], [], ""
        for item in results:
            if not isinstance(item, dict):
                raise ServiceError(Failure.BAD_RESPONSE, f"{self.label}: unexpected item in the results")
            kind = item.get("type")
            if kind == "stdout":
                stdout.append(str(item.get("text", "")))
            elif kind == "stderr":
                stderr.append(str(item.get("text", "")))
            elif kind == "error":
                error = str(item.get("name") or "Error")
                stderr.append(str(item.get("traceback") or item.get("text") or ""))
            elif kind == "endOfExecution" and str(item.get("status", "ok")).lower() == "timeout":
                error = "timeout"
        return "".join(stdout), "".join(stderr), error

    def about_one_sandbox(self, action: str, method: str, sandbox_id: str) -> None:
        """A data-plane call addressing one sandbox, for which "no such sandbox" is the answer we want."""
        SandboxDataAPI, *_ = load_sdk()
        config = self.sdk_config()
        try:
            self.call(action, getattr(SandboxDataAPI(config=config), method), sandbox_id, config=config,
                      sandbox_call=True)
        except ServiceError as exc:
            if exc.kind != Failure.SANDBOX_LOST:
                raise

    def destroy_instance(self, instance_id: str) -> None:
        self.about_one_sandbox("deleting the sandbox", "delete_sandbox", instance_id)  # gone already is fine

    def find_instances(self, run_id: str) -> list[str]:
        wanted = sandbox_id_for(run_id)
        return [wanted] if wanted else []

    def probe(self) -> None:
        # 404 for a sandbox that never existed: the signed request was accepted.
        self.about_one_sandbox("checking the credentials", "get_sandbox", PROBE_SANDBOX)

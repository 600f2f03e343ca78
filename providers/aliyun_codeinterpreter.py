"""Aliyun AgentRun Code Interpreter, through agentrun-sdk's data-plane API (optional extra `aliyun`).

Each run creates a sandbox from the configured template, connects to it, executes the driver program
and deletes the sandbox. Every SDK call gets an explicit Config built from the stored settings: the
SDK would otherwise fall back to AGENTRUN_* environment variables (and it loads a `.env` when imported,
which is why it is imported lazily, only when this provider is used).
"""

import math
import os
import time

from providers.base import ExecutionResult, Limits, ProviderError
from providers.saas import SaaSProvider, ServiceFailure, driver_program, new_marker
from providers.schema import ConfigField

REGIONS = ("cn-hangzhou", "cn-beijing", "cn-shanghai", "cn-shenzhen", "cn-guangzhou")
SERVICE_TIMEOUT_CAP = 30  # the service's own hard limit per execution, in seconds
REQUEST_GRACE = 15  # HTTP timeout beyond the execution's own


def load_sdk():
    os.environ.setdefault("DISABLE_BREAKING_CHANGES_WARNING", "1")
    try:
        from agentrun.sandbox import Sandbox, SandboxClient, TemplateType
        from agentrun.utils.config import Config
        from agentrun.utils.exception import AgentRunError, ClientError, ServerError
    except ImportError as exc:
        raise ProviderError("agentrun-sdk is not installed: pip install 'sandboxctl[aliyun]'") from exc
    return Sandbox, SandboxClient, TemplateType, Config, (AgentRunError, ClientError, ServerError)


class AliyunCodeInterpreterProvider(SaaSProvider):
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
            ConfigField("template_name", label="Template name", required=True,
                        description="A code-interpreter template created in the AgentRun console"),
            ConfigField("timeout", "integer", "Timeout (s)", "Per run; the service allows at most 30 s.",
                        default=SERVICE_TIMEOUT_CAP, min=1, max=SERVICE_TIMEOUT_CAP),
            ConfigField("data_endpoint", label="Data endpoint", endpoint=True,
                        description="Optional; defaults to https://<account>.agentrun-data.<region>.aliyuncs.com"),
        ]

    def timeout_cap(self) -> float:
        return float(min(int(self.config.get("timeout", SERVICE_TIMEOUT_CAP)), SERVICE_TIMEOUT_CAP))

    def data_endpoint(self) -> str:
        return self.config.get("data_endpoint") or (
            f"https://{self.config.get('account_id')}.agentrun-data.{self.config.get('region')}.aliyuncs.com"
        )

    def sdk_config(self, timeout: float):
        *_, Config, _ = load_sdk()
        region = self.config.get("region", "cn-hangzhou")
        return Config(
            access_key_id=self.config.get("access_key_id", ""),
            access_key_secret=self.config.get("access_key_secret", ""),
            security_token="",
            account_id=self.config.get("account_id", ""),
            region_id=region,
            timeout=int(math.ceil(timeout)) + REQUEST_GRACE,
            data_endpoint=self.data_endpoint(),
            control_endpoint=f"https://agentrun.{region}.aliyuncs.com",
        )

    def call(self, action: str, function, *args, **kwargs):
        """One SDK call; its failures become ProviderErrors that say whether a retry could help."""
        *_, errors = load_sdk()
        try:
            return function(*args, **kwargs)
        except errors as exc:
            raise self.provider_error(self.failure_of(exc), action) from exc

    @staticmethod
    def failure_of(exc: Exception) -> ServiceFailure:
        status = getattr(exc, "status_code", None) or None
        message = getattr(exc, "message", None) or str(exc)
        network = status is None and "Request error" in message
        return ServiceFailure(message=message, status_code=status, network=network)

    def create_instance(self, language: str) -> str:
        _, SandboxClient, *_ = load_sdk()
        config = self.sdk_config(SERVICE_TIMEOUT_CAP)
        sandbox = self.call("creating a sandbox", SandboxClient(config=config).create_sandbox,
                            template_name=self.config.get("template_name", ""),
                            sandbox_idle_timeout_seconds=SERVICE_TIMEOUT_CAP * 4, config=config)
        if not sandbox.sandbox_id:
            raise ProviderError(f"{self.label}: the service returned no sandbox id")
        return sandbox.sandbox_id

    def execute_code(self, instance_id: str, code: str, language: str, limits: Limits,
                     arguments: dict, should_stop=None) -> ExecutionResult:
        Sandbox, _, TemplateType, *_ = load_sdk()
        config = self.sdk_config(limits.timeout)
        sandbox = self.call("connecting to the sandbox", Sandbox.connect, instance_id,
                            template_type=TemplateType.CODE_INTERPRETER, config=config)
        marker = new_marker()
        program = driver_program(code, language, arguments, marker)
        started = time.monotonic()
        try:
            response = self.call("executing code", sandbox.context.execute, code=program,
                                 language=self.language_names[language], timeout=int(math.ceil(limits.timeout)))
        except ProviderError as exc:
            if "timed out" in str(exc).lower():
                return self.timed_out(limits, time.monotonic() - started)
            raise
        return self.parse(response, marker, limits, time.monotonic() - started)

    def parse(self, response: dict, marker: str, limits: Limits, duration: float) -> ExecutionResult:
        # The data plane wraps answers as {"code": "SUCCESS", "data": {...}}; accept a bare body too.
        body = response.get("data", response) if isinstance(response, dict) else {}
        if isinstance(response, dict) and response.get("code") not in (None, "SUCCESS"):
            raise ProviderError(f"{self.label}: execution refused: {response.get('message', response.get('code'))}")
        stdout, stderr, errors, status = [], [], [], "ok"
        for item in body.get("results") or []:
            kind = item.get("type")
            if kind == "stdout":
                stdout.append(item.get("text", ""))
            elif kind == "stderr":
                stderr.append(item.get("text", ""))
            elif kind == "error":
                errors.append(item.get("text") or f"{item.get('name', 'Error')}: {item.get('value', '')}")
            elif kind == "endOfExecution":
                status = str(item.get("status", "ok")).lower()
        if "timeout" in status or any("timeout" in error.lower() for error in errors):
            return self.timed_out(limits, duration, "".join(stdout), "".join(stderr))
        stderr_text = "".join(stderr) + "".join(f"{error}\n" for error in errors)
        return self.result_from("".join(stdout), stderr_text, marker, limits, duration,
                                execution_error="; ".join(errors) or (status if status != "ok" else ""))

    def destroy_instance(self, instance_id: str) -> None:
        _, SandboxClient, *_ = load_sdk()
        config = self.sdk_config(SERVICE_TIMEOUT_CAP)
        try:
            self.call("deleting the sandbox", SandboxClient(config=config).delete_sandbox, instance_id, config=config)
        except ProviderError:
            pass  # the sandbox expires on its own after its idle timeout; the run's result stands

    def health_url(self) -> str:
        return self.data_endpoint()

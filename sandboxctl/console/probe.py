"""Test connection: a short real run with the settings as typed in the form, saving nothing.

SaaS providers are probed from here, with a throw-away provider built from the unsaved settings. The
self-managed pool lives in the workers, so its probe is a real run through the queue, deleted afterwards.
"""

import logging
import socket
import ssl
import time

from providers import manager
from providers.base import Limits, ProviderError, RequestedLimits, Status
from providers.saas import WORDING
from sandboxctl.executions.models import Execution
from sandboxctl.executions.service import Submission, submit, wait_for

log = logging.getLogger(__name__)

PROBE_CODE = "import sys\n\ndef main():\n    print('sandboxctl probe')\n    return sys.version.split()[0]\n"
PROBE_TIMEOUT = 15.0


def run_probe(name: str, config: dict, user) -> dict:
    started = time.monotonic()
    try:
        details = _probe_self_managed(user) if name == "self_managed" else _probe_saas(name, config)
    except ProviderError as exc:
        return {"success": False, "message": plain_language(exc),
                "details": {"execution_time": time.monotonic() - started, "raw": raw_detail(exc)}}
    except Exception as exc:  # noqa: BLE001 - whatever a provider's endpoint answers, the probe answers calmly
        log.exception("probe of %s failed unexpectedly", name)
        return {"success": False, "message": f"the probe failed unexpectedly: {exc.__class__.__name__}: {exc}"[:500],
                "details": {"execution_time": time.monotonic() - started}}
    success = details.pop("status") == Status.SUCCEEDED
    message = "the probe ran and returned" if success else f"the probe ended {details.get('error') or 'badly'}"
    return {"success": success, "message": message, "details": details}


PLAIN = {kind.value: sentence for kind, (_, sentence) in WORDING.items()}
# Why a connection failed, from the exception chain (the SDKs' own messages are for developers, e.g. a
# resolver's debug dump), each as one sentence an operator can act on.
NETWORK = (
    ((socket.gaierror,), ("dns error", "no records found", "failed to lookup", "name or service not known"),
     "The service's host name could not be found (DNS): check the endpoint or domain."),
    ((ssl.SSLError,), ("certificate", "tls", "ssl"),
     "A secure connection to the service failed (TLS): check the endpoint and its certificate."),
    ((ConnectionRefusedError,), ("connection refused",),
     "Nothing answered at the service's address (connection refused): check the endpoint."),
    ((TimeoutError, socket.timeout), ("timed out", "timeout"), "The service did not answer in time."),
)


def chain(exc: BaseException) -> list[BaseException]:
    found = []
    while exc is not None and exc not in found:
        found.append(exc)
        exc = exc.__cause__ or exc.__context__
    return found


def plain_language(exc: ProviderError) -> str:
    """One short sentence for the operator; the raw detail goes behind a disclosure on the page."""
    causes = chain(exc)
    if exc.code in ("service_unavailable", "sandbox_error"):
        text = " ".join(str(cause).lower() for cause in causes)
        for types, words, sentence in NETWORK:
            if any(isinstance(cause, types) for cause in causes) or any(word in text for word in words):
                return sentence
    return PLAIN.get(exc.code, str(exc))


def raw_detail(exc: BaseException) -> str:
    return "\n".join(f"{type(cause).__name__}: {cause}" for cause in chain(exc))[:4000]


def _probe_saas(name: str, config: dict) -> dict:
    provider = manager.build(name, config)
    limits = Limits(timeout=min(PROBE_TIMEOUT, provider.timeout_cap()), memory_mb=128, output_limit=64 * 1024)
    result = provider.run(PROBE_CODE, "python", limits, {})
    return {
        "status": result.status,
        "exit_code": result.exit_code,
        "execution_time": result.execution_time,
        "stdout": result.stdout,
        "stderr": result.stderr,
        "error": result.error_message,
    }


def _probe_self_managed(user) -> dict:
    execution, _ = submit(Submission(language="python", code=PROBE_CODE, arguments={},
                                      limits=RequestedLimits(timeout=PROBE_TIMEOUT)),
                          user, None, None, provider_name="self_managed")
    try:
        execution = wait_for(execution, PROBE_TIMEOUT + 15)
        if not execution.is_terminal:
            raise ProviderError("no worker ran the probe in time (is a worker with the sandbox pool running?)")
        return {
            "status": execution.status,
            "exit_code": execution.exit_code,
            "execution_time": execution.execution_time,
            "stdout": execution.stdout,
            "stderr": execution.stderr,
            "error": execution.error_message,
        }
    finally:
        Execution.objects.filter(pk=execution.pk).delete()

"""Sessions on SaaS code interpreters (E2B, AgentRun): one remote sandbox per session, kept between cells.

A service's execution is a call that returns; a session must outlive it. So the session's first execution
(drivers/session_open.py) starts a small host in the remote sandbox (drivers/session_host.py), detached, that
holds the session's interpreter — sandboxctl's own runner (child.py) in session mode, as in self-managed
sandboxes — and answers over a Unix socket. Every cell, file operation and the close is then one short
execution (drivers/session_call.py) that hands a request to the host and prints its answer under a marker
only that execution holds. Nothing relies on the service's interpreter keeping state between executions;
only on the sandbox's processes and files living on, which is what a sandbox is.

Files go through the self-managed keeper's own code (workfiles.py) in the host: the same path rules, links
refused, caps checked here and there. The host is Python: sessions on SaaS run Python cells (Node.js
sessions are self-managed only; the API says so naming the provider). The remote sandbox lives at most
the session's max_lifetime (plus a grace) on the service's own clock, and the host ends itself after the
idle timeout, so a worker that dies leaves nothing running for long; the reconciler deletes it sooner.
"""

import base64
import json
import logging
import time

from django.conf import settings

from executor.config import RUNNER_DIR, FileLimits
from executor.deadlines import SAAS_CALL_RETURN, cell_budget
from providers.base import (
    ExecutionResult,
    Limits,
    ProviderError,
    ProviderSession,
    SessionGone,
    SessionsUnsupported,
    SessionTimes,
    Status,
    apply_outcome,
    mark_timeout,
)
from providers.saas import (
    DRIVERS,
    REQUEST_TIMEOUT,
    DeadlineExceeded,
    Failure,
    SaaSProvider,
    ServiceError,
    b64,
    new_marker,
    split_outcome,
    within,
)

log = logging.getLogger(__name__)

# What the opener writes into the sandbox, by name there: read and encoded once, as saas.py does its runner.
HOST_FILES = {
    "host.py": DRIVERS / "session_host.py",
    "runner.py": RUNNER_DIR / "child.py",
    "relay.py": RUNNER_DIR / "relay.py",
    "workfiles.py": RUNNER_DIR / "workfiles.py",
    "rules.py": RUNNER_DIR / "rules.py",
    "wire.py": RUNNER_DIR / "wire.py",
}
HOST_FILES_B64 = b64(json.dumps({name: b64(path.read_bytes()) for name, path in HOST_FILES.items()}).encode())
OPEN_PROGRAM = (DRIVERS / "session_open.py").read_text()
CALL_PROGRAM = (DRIVERS / "session_call.py").read_text()
OPEN_DEADLINE = 90.0  # creating the sandbox, its readiness, and starting the host
HOST_START = 30.0  # the opener waits this long for the host's socket
CALL_TIMEOUT = 60.0  # a file request or the close, in the host


class SaaSProviderWithSessions(SaaSProvider):
    """A SaaS provider whose sandboxes keep their processes and files between executions: sessions through
    a host in the sandbox. The host is Python, so it needs a Python interpreter there."""

    session_languages = ("python",)

    def open_session(self, language: str, limits: Limits, files: list[dict], file_limits: FileLimits,
                     account: str = "", session_id: str = "", times: SessionTimes | None = None) -> "SaaSSession":
        if language not in self.session_languages:
            raise SessionsUnsupported(f"{self.label} ({self.name}) has no {language} sessions: sessions on a SaaS "
                                      f"provider run {', '.join(self.session_languages)}")
        return open_session(self, language, limits, files, file_limits, session_id,
                            times or SessionTimes(settings.SANDBOX_SESSION_MAX_LIFETIME,
                                                  settings.SANDBOX_SESSION_IDLE_TIMEOUT))

    def delete_session_sandbox(self, sandbox_id: str) -> None:
        if not self.release(sandbox_id):
            log.warning("%s: sandbox %s of a lost session not deleted; the service ends it at the session's "
                        "max_lifetime", self.label, sandbox_id)


def open_session(provider: SaaSProvider, language: str, limits: Limits, files: list[dict], file_limits: FileLimits,
                 session_id: str, times: SessionTimes) -> "SaaSSession":
    deadline = time.monotonic() + OPEN_DEADLINE
    provider.guarded("preparing", provider.prepare, language, deadline)
    run_id = f"session-{session_id}" if session_id else ""
    instance_id = provider.retrying(
        "creating a sandbox", deadline,
        lambda left: provider.create_instance(language, run_id, min(left, REQUEST_TIMEOUT), times, limits.egress))
    try:
        provider.wait_ready(instance_id, deadline)
        program = (OPEN_PROGRAM.replace('"{files}"', f'"{HOST_FILES_B64}"')
                   .replace("{lifetime}", repr(float(times.max_lifetime)))
                   .replace("{idle}", repr(float(times.idle_timeout))))
        answer = call(provider, instance_id, program, HOST_START + 10, deadline)
        if not answer.get("ok") or not isinstance(answer.get("socket"), str):
            raise ServiceError(Failure.BAD_RESPONSE, f"{provider.label}: the session did not start: "
                                                     f"{str(answer.get('message'))[:500]}")
        session = SaaSSession(provider, instance_id, answer["socket"], file_limits, limits.egress)
        for entry in files:
            session.put_file(entry["path"], base64.b64decode(entry.get("content_b64") or ""))
    except BaseException:
        provider.release(instance_id)
        raise
    return session


def call(provider: SaaSProvider, instance_id: str, program: str, timeout: float, deadline: float | None = None
         ) -> dict:
    """Run one session program and return the answer it printed under its marker."""
    marker = new_marker()
    program = program.replace('"{marker}"', f'"{marker}"')
    wait = timeout + REQUEST_TIMEOUT
    if deadline is not None:
        wait = min(wait, deadline - time.monotonic())
    execution_limits = Limits(timeout=timeout, memory_mb=0, output_limit=0)
    try:
        stdout, _, error = within(wait, provider.guarded, "executing code", provider.execute, instance_id, program,
                                  "python", execution_limits)
    except DeadlineExceeded:
        raise ServiceError(Failure.SERVICE_UNAVAILABLE,
                           f"{provider.label}: no answer in time from the session") from None
    _, answer = split_outcome(stdout, marker)
    if answer is None:
        detail = f" ({error})" if error else ""
        raise ServiceError(Failure.BAD_RESPONSE, f"{provider.label}: the session returned no answer{detail}")
    return answer


class SaaSSession(ProviderSession):
    """A session whose interpreter lives in a SaaS sandbox, reached through its host."""

    def __init__(self, provider: SaaSProvider, instance_id: str, socket_path: str, file_limits: FileLimits,
                 egress: tuple[str, ...] = ()) -> None:
        self.provider = provider
        self.sandbox_id = instance_id
        self.socket_path = socket_path
        self.file_limits = file_limits
        self.egress = egress  # what the sandbox may reach now (the session's allowlist when it was last set)
        self._closed = False

    def ask_host(self, request: dict, timeout: float) -> dict:
        program = (CALL_PROGRAM.replace('"{socket}"', f'"{b64(self.socket_path.encode())}"')
                   .replace('"{request}"', f'"{b64(json.dumps(request).encode())}"')
                   .replace("{timeout}", repr(float(timeout))))
        return call(self.provider, self.sandbox_id, program, timeout)

    def ask(self, request: dict, timeout: float = CALL_TIMEOUT) -> dict:
        """One request to the host; a service failure on the way ends the session (the state is unknown)."""
        if self._closed:
            raise SessionGone("the session is closed")
        try:
            answer = self.ask_host(request, timeout)
        except ProviderError as exc:
            lost = isinstance(exc, ServiceError) and exc.kind == Failure.SANDBOX_LOST
            self.close("the service lost the sandbox" if lost else str(exc))
            raise SessionGone(f"the session's sandbox failed: {exc}") from exc
        if answer.get("session_over") and answer.get("code") == "session_host_gone":
            self.close(answer["session_over"])
            raise SessionGone(answer["session_over"])
        return answer

    def run(self, code: str, arguments: dict, limits: Limits, should_stop=None, on_output=None) -> ExecutionResult:
        if limits.egress != self.egress:  # the session's allowlist changed since the last cell (PATCH)
            self.set_network(limits.egress)
        # The service's own limit per execution bounds a cell (AgentRun: 30 s): the cell gets what is left once
        # the host's interrupt grace and the way back are taken off.
        slack = cell_budget(0.0, SAAS_CALL_RETURN).provider_deadline
        timeout = max(1.0, min(limits.timeout, self.provider.timeout_cap() - slack))
        started = time.monotonic()
        call = cell_budget(timeout, SAAS_CALL_RETURN).provider_deadline
        answer = self.ask({"op": "cell", "code": code, "arguments": arguments, "timeout": timeout,
                           "output_limit": limits.output_limit}, call)
        result = cell_result(answer, limits, time.monotonic() - started)
        result.sandbox_id = self.sandbox_id
        if result.session_ended:
            self.close(result.session_ended)
        return result

    def set_network(self, egress: tuple[str, ...]) -> None:
        try:
            self.provider.retrying("changing the sandbox's network", time.monotonic() + 3 * REQUEST_TIMEOUT,
                                   lambda left: self.provider.set_network(self.sandbox_id, egress))
        except ProviderError as exc:
            self.close(str(exc))  # what the sandbox may reach is no longer known: it cannot go on
            raise SessionGone(f"the session's network could not be changed: {exc}") from exc
        self.egress = egress

    def ask_keeper(self, request: dict) -> dict:
        return self.ask(request)  # the host answers file requests with the keeper's own code

    def close(self, reason: str) -> None:
        if self._closed:
            return
        self._closed = True
        # Deleting the sandbox ends everything in it. The host is asked to end first all the same: where a
        # service keeps a deleted sandbox's processes a while, the interpreter must not outlive the session.
        try:
            self.ask_host({"op": "close"}, REQUEST_TIMEOUT)
        except ProviderError:
            pass
        self.provider.release(self.sandbox_id)


def cell_result(answer: dict, limits: Limits, duration: float) -> ExecutionResult:
    """A cell's result from the host's answer, classified as a one-shot SaaS run is."""
    stdout, stderr = str(answer.get("stdout") or ""), str(answer.get("stderr") or "")
    result = ExecutionResult(
        status=Status.SUCCEEDED, stdout=stdout, stderr=stderr,
        stdout_truncated=answer.get("stdout_truncated") is True,
        stderr_truncated=answer.get("stderr_truncated") is True,
        execution_time=round(float(answer.get("duration") or duration), 6),
        session_ended=str(answer.get("session_over") or ""),
    )
    outcome = answer.get("outcome")
    if answer.get("timed_out") is True:
        mark_timeout(result, limits)  # interrupted at its timeout: what it answered then is the interrupt
    result.exit_code = None if outcome is None else (0 if isinstance(outcome, dict) and outcome.get("ok") else 1)
    apply_outcome(result, outcome if isinstance(outcome, dict) else None, limits)
    return result

"""A session with one sandbox: opened once with its own key, then cells and file requests, one at a time.

The sandbox comes from the warm pool like a one-shot run's and is never reused after the session. The
supervisor (runner/session.py) answers every request with one authenticated DONE frame; the sequence
number runs on across the session, so no frame of one cell verifies as part of another. Every cell is
timed by the worker's clock and its report re-checked as a one-shot run's is.
"""

import json
import logging
import secrets
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from executor.config import Limits
from executor.deadlines import SANDBOX_KILL_GRACE
from executor.egress import job_egress
from executor.protocol import CELL, DONE, FILE, SESSION, FrameDecoder, ProtocolError, encode_frame
from executor.runner.wire import KEY_SIZE
from executor.sandbox import MAX_FRAME, RunReport, Sandbox, SandboxError, artifact_limits, read_report

log = logging.getLogger(__name__)

# A cell past its timeout is interrupted in the sandbox and gets this long to stop (runner/supervisor.py).
INTERRUPT_GRACE = 1.0
OPEN_TIMEOUT = 60.0  # writing the opening files through the keeper included
FILE_TIMEOUT = 90.0


@dataclass(frozen=True)
class FileLimits:
    """How large one file and all the files of a session (or a run's input files) may be."""

    max_file_bytes: int
    max_total_bytes: int


class SessionOver(SandboxError):
    """The session's sandbox cannot take more requests; `reason` says why."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class SandboxSession:
    def __init__(self, sandbox: Sandbox, memory_mb: int, output_limit: int, artifacts: Limits,
                 files: FileLimits) -> None:
        self.sandbox = sandbox
        self.memory_mb = memory_mb
        self.output_limit = output_limit
        self.artifacts = artifacts
        self.files = files
        self.over: str | None = None
        self._frames: FrameDecoder | None = None
        self._lock = threading.Lock()

    @property
    def id(self) -> str:
        return self.sandbox.id

    def open(self, files: list[dict] | None = None) -> list[dict]:
        """Turn the waiting sandbox into this session; returns the opening files as written."""
        key = secrets.token_bytes(KEY_SIZE)
        self._frames = FrameDecoder(MAX_FRAME, key)
        opening = {
            "key": key.hex(),
            "payload": {"memory_limit_bytes": self.sandbox.address_space(self.memory_mb)},
            "output_limit": self.output_limit,
            "artifacts": artifact_limits(self.artifacts),
            "files": files or [],
            "file_limits": {"max_total_bytes": self.files.max_total_bytes},
        }
        self.sandbox.to_foreground()
        self.sandbox.limit_memory(self.memory_mb)
        with self._lock:
            self.sandbox._send(encode_frame(SESSION, json.dumps(opening, ensure_ascii=False).encode()))
            answer = self._answer(OPEN_TIMEOUT)
        if not answer.get("ready"):
            self.end(str(answer.get("reason") or "the session did not open"))
            raise SessionOver(self.over)
        return answer.get("files") or []

    def run(self, code: str, arguments: dict, limits: Limits, should_stop: Callable[[], bool] | None = None
            ) -> RunReport:
        """One cell; the report says in `session_over` when the session cannot go on after it."""
        with self._lock:
            self._check_open()
            cell = {"code": code, "arguments": arguments, "timeout": limits.timeout,
                    "egress": job_egress(limits.egress, self.sandbox.config)}  # None without an allowlist
            started = time.monotonic()
            self.sandbox._send(encode_frame(CELL, json.dumps(cell, ensure_ascii=False).encode()))
            report = RunReport()
            done = None
            try:
                done = self.sandbox._observe(report, started, limits, should_stop, self._frames, INTERRUPT_GRACE)
            except ProtocolError as exc:
                log.warning("session sandbox %s: protocol violation: %s", self.id, exc)
                report.protocol_violation = str(exc)
                self.sandbox.kill()
            report.duration = time.monotonic() - started
            report.memory_used_kb = self.sandbox.memory_peak_kb() or report.memory_used_kb
            report.session_over = self._over_after(report, done)
            if report.session_over:
                self.end(report.session_over)
            return report

    def file(self, request: dict, timeout: float = FILE_TIMEOUT) -> dict:
        """One file request ({op, path, ...}) answered by the sandbox's file keeper."""
        with self._lock:
            self._check_open()
            self.sandbox._send(encode_frame(FILE, json.dumps(request, ensure_ascii=False).encode()))
            return self._answer(timeout)

    def end(self, reason: str) -> None:
        """No more requests: the caller releases the sandbox to the pool, which removes it."""
        if self.over is None:
            self.over = reason
        self.sandbox.kill()

    def _check_open(self) -> None:
        if self.over is not None:
            raise SessionOver(self.over)

    def _answer(self, timeout: float) -> dict:
        """The DONE that answers the request just sent; anything else ends the session."""
        deadline = time.monotonic() + timeout
        try:
            while time.monotonic() < deadline:
                data = self.sandbox._recv(min(0.5, max(0.0, deadline - time.monotonic())))
                if data == b"":
                    raise SessionOver(f"the sandbox ended: {self.sandbox.diagnostics()[-300:]}".rstrip(": "))
                for kind, body in self._frames.feed(data or b""):
                    if kind != DONE:
                        raise ProtocolError(f"unexpected frame {kind!r} outside a cell")
                    return read_report(body)
            raise SessionOver("the sandbox did not answer in time")
        except ProtocolError as exc:
            self.end(f"protocol violation: {exc}")
            raise SessionOver(self.over) from exc
        except SessionOver as exc:
            self.end(exc.reason)
            raise

    def _over_after(self, report: RunReport, done: dict | None) -> str | None:
        if report.protocol_violation:
            return f"protocol violation: {report.protocol_violation}"
        if report.cancelled:
            return "cancelled"
        if report.oom_killed:
            return "memory_limit"
        if done is None:
            return "timeout" if report.timed_out else (report.sandbox_failure or "the sandbox ended")
        reason = done.get("session_over")
        if reason is None:
            return None
        return str(reason)[:300] if isinstance(reason, str) else "the sandbox ended the session"


def hard_deadline(timeout: float) -> float:
    """How long one cell may hold the worker at most (the interrupt and the kill included)."""
    return timeout + INTERRUPT_GRACE + SANDBOX_KILL_GRACE

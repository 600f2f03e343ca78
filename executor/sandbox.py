"""One single-use gVisor sandbox whose supervisor is started and waiting to be opened, and the exchange with it.

How a sandbox is started, read from and ended depends on the backend (runsc_sandbox.py drives runsc on an
OCI bundle; docker_sandbox.py goes through dockerd). What is said to the supervisor, and how its answers are
checked, is the same for every use and lives here, in one exchange: the sandbox is opened once with a fresh
key (its memory, caps and input files), then takes requests one at a time — cells (code and arguments) and
file requests — each answered with one DONE; every frame after the opening must verify, in sequence, for the
sandbox's whole life. A one-shot run is an opening that keeps nothing and one cell; a session is an opening
and as many requests as it lives. The worker's own clock times every cell, and every field of a report is
re-checked.
"""

import json
import logging
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

from executor.config import FileLimits, Limits, SandboxConfig
from executor.deadlines import FILE_WAIT, OPEN_WAIT, SANDBOX_DRAIN, SANDBOX_KILL_GRACE
from executor.egress import job_egress
from executor.protocol import (
    CELL,
    DONE,
    FILE,
    OPEN,
    PING,
    READY,
    STDERR,
    STDOUT,
    FrameDecoder,
    ProtocolError,
    encode_frame,
)
from executor.runner.wire import INTERRUPT_GRACE, KEY_SIZE
from executor.verify import as_int, check_artifacts, check_outcome

log = logging.getLogger(__name__)

RUNNER = "/opt/sandboxctl/supervisor.py"
SILENCE_CHECK = 0.3  # after this long without bytes, ask the backend whether the sandbox is still alive
MAX_FRAME = 64 * 1024 * 1024
# Live output (sandboxctl/executions/live_output.py): called with ("stdout" | "stderr", bytes) as frames arrive.
# It must not block: the caller only queues the bytes.
OnOutput = Callable[[str, bytes], None]
SANDBOX_ENV = {
    "PATH": "/usr/local/bin:/usr/bin:/bin",
    "HOME": "/tmp",
    "LANG": "C.UTF-8",
    "MPLBACKEND": "Agg",
    "MPLCONFIGDIR": "/tmp/matplotlib",
    "MATPLOTLIBRC": "/etc/matplotlibrc",  # PyPI's matplotlib reads no /etc file by itself (Debian's did)
    "NODE_PATH": "/usr/local/lib/node_modules",  # the npm packages of the Node image (images.py)
    "OPENBLAS_NUM_THREADS": "1",
    "PYTHONDONTWRITEBYTECODE": "1",
}


class SandboxError(Exception):
    """The sandbox itself failed (not the user's code)."""


class SandboxEnded(SandboxError):
    """The sandbox cannot take more requests (it was ended, died, or broke the protocol); `reason` says why."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass
class RunReport:
    """What the worker observed of one run; classification into a status happens in the provider."""

    stdout: bytes = b""
    stderr: bytes = b""
    stdout_truncated: bool = False
    stderr_truncated: bool = False
    exit_code: int | None = None
    timed_out: bool = False
    cancelled: bool = False
    oom_killed: bool = False
    sandbox_failure: str | None = None
    protocol_violation: str | None = None
    result: dict | None = None
    memory_used_kb: int | None = None
    duration: float = 0.0
    artifacts: list[dict] = field(default_factory=list)
    rejected_artifacts: list[dict] = field(default_factory=list)
    too_many_artifacts: bool = False
    # Why the sandbox cannot take another request after this cell (None: it can). A session ends with it.
    sandbox_over: str | None = None


@dataclass
class Found:
    """A sandbox found on the host by a sweep: the key of its owner (a worker instance) and when it was made."""

    id: str
    owner: str | None
    created: float


@dataclass
class ExitState:
    """What the backend knows of a sandbox that stopped talking: still running, or why it ended."""

    running: bool
    oom_killed: bool = False
    failure: str | None = None


class Sandbox:
    """One sandbox and the exchange with it. Subclasses supply the transport:

    `_launch()` starts it; `_recv(timeout)` returns the supervisor's stdout bytes (b"" at its end, None when
    nothing came in time); `_send(data)` writes to its stdin; `_exit_state(exited)` says whether it still runs
    and, if not, why it ended; `kill()` stops it; `destroy()` removes every trace (True when nothing is left).
    """

    # A sandbox restored from a snapshot said READY before the snapshot was taken: it is asked again (PING).
    restored = False
    # Whether the supervisor must stay until it is removed after its report (dockerd can lose the tail).
    linger = False
    # Whether a caller waits for this sandbox while it starts (the pool raises its CPU weight once).
    boosted = False

    def __init__(self, language: str, config: SandboxConfig, kind: str | None = None,
                 on_created: Callable[[str], None] | None = None) -> None:
        self.language = language
        self.kind = kind or language
        self.config = config
        self._on_created = on_created
        self._frames: FrameDecoder | None = None  # verifies the supervisor's frames once the sandbox is open
        self._keep = True
        self.over: str | None = None  # why it takes no more requests (None while it does)

    @property
    def id(self) -> str:
        raise NotImplementedError

    @property
    def host_id(self) -> str:
        """The id the backend finds this sandbox by in a sweep."""
        return self.id

    # Transport (per backend)

    def _launch(self) -> None:
        raise NotImplementedError

    def _recv(self, timeout: float) -> bytes | None:
        raise NotImplementedError

    def _send(self, data: bytes) -> None:
        raise NotImplementedError

    def _exit_state(self, exited: bool) -> ExitState:
        raise NotImplementedError

    def is_alive(self) -> bool:
        raise NotImplementedError

    def kill(self) -> None:
        raise NotImplementedError

    def destroy(self) -> bool:
        raise NotImplementedError

    def diagnostics(self) -> str:
        """What the sandbox said outside the protocol (its stderr), for error messages."""
        return ""

    def to_foreground(self) -> None:
        """It is about to run a job: from now on it competes for CPU as an equal (see the runsc backend)."""

    def boost(self) -> None:
        """A run is waiting for this sandbox, still starting: let it start at full CPU weight."""

    def assign_account(self, account: str) -> None:
        """Its job belongs to `account` (an opaque label): share the CPU by account from now on."""

    def limit_memory(self, memory_mb: int) -> None:
        """It is about to run a job that asked for memory_mb: hold it to that (the runsc backend does)."""

    def memory_peak_kb(self) -> int | None:
        """The sandbox's own peak memory during the run as the host measured it, when the backend can."""
        return None

    @property
    def channel_dir(self):
        """The host folder mounted in this sandbox (and no other) where a cell's egress socket is bound
        (executor/egress_proxy.py); None for a backend that has no such channel."""
        return None

    # The exchange (the same for every backend and every use)

    def start(self) -> None:
        """Start the sandbox, then wait until its interpreter is waiting to be opened."""
        self._launch()
        if self.restored:
            self._send(encode_frame(PING, b""))
        self._wait_ready()

    def _wait_ready(self) -> None:
        frames = FrameDecoder(MAX_FRAME)
        deadline = time.monotonic() + self.config.ready_timeout
        while time.monotonic() < deadline:
            data = self._recv(max(0.0, deadline - time.monotonic()))
            if data == b"":
                raise SandboxError(f"sandbox exited while starting: {self.diagnostics()[-500:]}")
            for kind, _ in frames.feed(data or b""):
                if kind == READY:
                    return
                raise SandboxError(f"unexpected frame {kind!r} before ready")
        raise SandboxError("sandbox did not become ready in time")

    def address_space(self, memory_mb: int) -> int:
        return (memory_mb + self.config.address_space_headroom_mb) * 1024 * 1024

    def open(self, limits: Limits, files: list[dict] | None = None, file_limits: FileLimits | None = None,
             keep: bool = True) -> list[dict]:
        """Open the waiting sandbox with a fresh key and write `files` ({path, content_b64}) into its working
        folder; returns them as written. `keep` False: a one-shot run, one cell and nothing kept after it.
        Raises InputRefused when a file cannot be written, SandboxEnded when the sandbox does not answer."""
        self._send_opening(limits, files or [], file_limits, keep)
        done = self._answer(OPEN_WAIT)
        if not done.get("ready"):
            reason = str(done.get("reason") or "the sandbox did not open")[:2000]
            self.end(reason)
            raise InputRefused(reason)
        return done.get("files") or []

    def _send_opening(self, limits: Limits, files: list[dict], file_limits: FileLimits | None, keep: bool) -> None:
        # A fresh key, sent only now that the child exists: the child never holds it.
        key = secrets.token_bytes(KEY_SIZE)
        self._frames = FrameDecoder(MAX_FRAME, key)
        self._keep = keep
        opening = {
            "key": key.hex(),
            "keep": keep,
            "linger": self.linger and not keep,
            "payload": {"memory_limit_bytes": self.address_space(limits.memory_mb)},
            "output_limit": limits.output_limit,
            "artifacts": artifact_limits(limits),
            "files": files,
            "file_limits": {"max_total_bytes": file_limits.max_total_bytes} if file_limits else {},
        }
        self.to_foreground()
        self.limit_memory(limits.memory_mb)
        self._send(encode_frame(OPEN, json.dumps(opening, ensure_ascii=False).encode()))

    def run(self, code: str, arguments: dict, limits: Limits, should_stop: Callable[[], bool] | None = None,
            files: list[dict] | None = None, file_limits: FileLimits | None = None,
            on_output: OnOutput | None = None) -> RunReport:
        """A one-shot run: open the sandbox keeping nothing and run its one cell (sent at once behind the
        opening, so the run costs no round trip more). `files` are written into the working folder first.
        `on_output(stream, chunk)` (live output) gets the output kept under the cap as it arrives."""
        self._send_opening(limits, files or [], file_limits, keep=False)
        self._send_cell(code, arguments, limits)
        started = time.monotonic()
        report = RunReport()
        done = self._exchange(report, started + OPEN_WAIT, should_stop, output_limit=None)
        if done is None:
            if report.timed_out:
                report.timed_out, report.sandbox_failure = False, "the sandbox did not answer its opening in time"
            report.duration = time.monotonic() - started
            return report
        if not done.get("ready"):
            self.over = "its input files were refused"  # its supervisor ends by itself after saying so
            reason = str(done.get("reason") or "the input files were refused")[:2000]
            return RunReport(result={"ok": False, "error": {"type": "InputFileError", "message": reason}},
                             duration=time.monotonic() - started)
        return self._observe_cell(limits, should_stop, started, grace=0.0, on_output=on_output)

    def run_cell(self, code: str, arguments: dict, limits: Limits, should_stop: Callable[[], bool] | None = None,
                 on_output: OnOutput | None = None) -> RunReport:
        """One cell of an open sandbox that keeps its state; the report says in `sandbox_over` when the
        sandbox cannot take another request after it. A cell past its limit is interrupted and gets
        INTERRUPT_GRACE to stop before the sandbox is ended."""
        self._check_open()
        self.reset_memory_peak()
        self._send_cell(code, arguments, limits)
        return self._observe_cell(limits, should_stop, time.monotonic(), grace=INTERRUPT_GRACE, on_output=on_output)

    def ask(self, request: dict, wait: float = FILE_WAIT) -> dict:
        """One file request ({op, path, ...}) answered by the sandbox's file keeper."""
        self._check_open()
        self._send(encode_frame(FILE, json.dumps(request, ensure_ascii=False).encode()))
        return self._answer(wait)

    def end(self, reason: str) -> None:
        """No more requests; stop it now (from any thread: a request in progress then fails). The pool's
        release removes what is left."""
        if self.over is None:
            self.over = reason
        self.kill()

    def _check_open(self) -> None:
        if self.over is not None:
            raise SandboxEnded(self.over)
        if self._frames is None:
            raise SandboxError("the sandbox was never opened")

    def _send_cell(self, code: str, arguments: dict, limits: Limits) -> None:
        cell = {"code": code, "arguments": arguments, "timeout": limits.timeout, "output_limit": limits.output_limit,
                "egress": job_egress(limits.egress, self.config)}  # None without an allowlist (egress.py)
        try:
            self._send(encode_frame(CELL, json.dumps(cell, ensure_ascii=False).encode()))
        except SandboxError as exc:
            self.end(str(exc))
            raise SandboxEnded(str(exc)) from exc

    def _answer(self, wait: float) -> dict:
        """The DONE that answers the request just sent (no output comes before it); anything else ends the
        sandbox (SandboxEnded)."""
        report = RunReport()
        done = self._exchange(report, time.monotonic() + wait, None, output_limit=None)
        if done is None:
            reason = (report.protocol_violation and f"protocol violation: {report.protocol_violation}") or (
                "the sandbox did not answer in time" if report.timed_out else report.sandbox_failure
                or "the sandbox ended")
            self.end(reason)
            raise SandboxEnded(self.over)
        return done

    def _observe_cell(self, limits: Limits, should_stop, started: float, grace: float,
                      on_output: OnOutput | None = None) -> RunReport:
        report = RunReport()
        done = self._exchange(report, started + limits.timeout + grace + SANDBOX_KILL_GRACE, should_stop,
                              output_limit=limits.output_limit, on_output=on_output)
        if done is not None:
            self._apply_done(report, done, started, limits)
        # The worker's own clock, never a number the sandbox sends.
        report.duration = time.monotonic() - started
        report.memory_used_kb = self.memory_peak_kb() or report.memory_used_kb
        report.sandbox_over = self._over_after(report, done)
        if report.sandbox_over and self._keep:
            self.end(report.sandbox_over)
        elif report.sandbox_over:
            self.over = report.sandbox_over  # a one-shot sandbox's supervisor ends by itself after its cell
        return report

    def _exchange(self, report: RunReport, deadline: float, should_stop, output_limit: int | None,
                  on_output: OnOutput | None = None) -> dict | None:
        """Read frames until the DONE of the request just sent: returns that DONE's body, or None when the
        sandbox ended without one (the report says how: timed out, cancelled, died, broke the protocol).
        `output_limit` None: the request is no cell, and output is a protocol violation."""
        next_stop_check = time.monotonic() + SILENCE_CHECK
        stdout, stderr = bytearray(), bytearray()
        last_bytes = time.monotonic()
        drain_until = None  # set once the sandbox is seen to have ended: read what it wrote first
        buffered = True  # frames of this request may have come in one read with the last request's DONE
        try:
            while True:
                if buffered:
                    buffered, data = False, b""
                    for kind, body in self._frames.feed(data):
                        done = self._take(kind, body, report, stdout, stderr, output_limit, on_output)
                        if done is not None:
                            return done
                    continue
                now = time.monotonic()
                if drain_until is not None and now >= drain_until:
                    self._still_running(report, exited=True)
                    return None
                if now >= deadline:
                    report.timed_out = True
                    self.kill()
                    return None
                if should_stop is not None and now >= next_stop_check:
                    next_stop_check = now + SILENCE_CHECK
                    if should_stop():
                        report.cancelled = True
                        self.kill()
                        return None
                data = self._recv(min(SILENCE_CHECK, deadline - now))
                if data is None:
                    quiet = time.monotonic() - last_bytes >= SILENCE_CHECK
                    if drain_until is None and quiet and not self._exit_state(False).running:
                        # It ended while we were not reading: its last frames (DONE) may still be in the pipe,
                        # written just before it exited. Read them before concluding it died.
                        drain_until = time.monotonic() + SANDBOX_DRAIN
                    continue
                if data == b"":
                    self._still_running(report, exited=True)
                    return None
                last_bytes = time.monotonic()
                for kind, body in self._frames.feed(data):
                    done = self._take(kind, body, report, stdout, stderr, output_limit, on_output)
                    if done is not None:
                        return done
        except ProtocolError as exc:
            log.warning("sandbox %s: protocol violation: %s", self.id, exc)
            report.protocol_violation = str(exc)
            self.kill()
            return None
        finally:
            report.stdout, report.stderr = bytes(stdout), bytes(stderr)

    @staticmethod
    def _take(kind: bytes, body: bytes, report: RunReport, stdout: bytearray, stderr: bytearray,
              output_limit: int | None, on_output: OnOutput | None = None) -> dict | None:
        """One frame of the request's answer: output kept (capped), or its DONE returned."""
        if kind == DONE:
            return read_report(body)
        if output_limit is None or kind not in (STDOUT, STDERR):
            raise ProtocolError(f"unexpected frame {kind!r}")
        buffer = stdout if kind == STDOUT else stderr
        kept = len(buffer)
        if not _append_capped(buffer, body, output_limit):
            if kind == STDOUT:
                report.stdout_truncated = True
            else:
                report.stderr_truncated = True
        if on_output is not None and len(buffer) > kept:  # live output: only what the cap keeps
            on_output("stdout" if kind == STDOUT else "stderr", bytes(buffer[kept:]))
        return None

    def _apply_done(self, report: RunReport, done: dict, started: float, limits: Limits) -> None:
        # Trust the supervisor's deadline only when the worker's own clock agrees.
        report.timed_out = done.get("timed_out") is True and time.monotonic() - started >= limits.timeout * 0.9
        report.exit_code = as_int(done.get("exit_code"), -255, 255)
        report.memory_used_kb = as_int(done.get("memory_used_kb"), 0, 2**31 - 1)
        report.result = check_outcome(done.get("result"))
        report.stdout_truncated |= done.get("stdout_truncated") is True
        report.stderr_truncated |= done.get("stderr_truncated") is True
        report.too_many_artifacts = done.get("artifacts_error") == "too_many_artifacts"
        report.artifacts, report.rejected_artifacts = check_artifacts(
            done.get("artifacts"), done.get("rejected_artifacts"), limits
        )

    def _over_after(self, report: RunReport, done: dict | None) -> str | None:
        """Why the sandbox takes no more requests after this cell; None when it goes on."""
        if report.protocol_violation:
            return f"protocol violation: {report.protocol_violation}"
        if report.cancelled:
            return "cancelled"
        if report.oom_killed:
            return "memory_limit"
        if done is None:
            return "timeout" if report.timed_out else (self.over or report.sandbox_failure or "the sandbox ended")
        if not self._keep:
            return "its one run is over"
        reason = done.get("session_over")
        if reason is None:
            return None
        return str(reason)[:300] if isinstance(reason, str) else "the sandbox ended the session"

    def _still_running(self, report: RunReport, exited: bool = False) -> bool:
        """Ask the backend about the sandbox; record why it died if it did."""
        state = self._exit_state(exited)
        if state.running and not exited:
            return True
        if state.oom_killed:
            report.oom_killed = True
        else:
            report.sandbox_failure = self.over or state.failure or "sandbox exited unexpectedly"
        return False

    def reset_memory_peak(self) -> None:
        """A cell's memory is its own peak: the backends that can, start counting again here."""


class InputRefused(SandboxError):
    """The opening's input files could not be written (the message names the file and why)."""


def read_report(body: bytes) -> dict:
    try:
        done = json.loads(body, parse_constant=lambda name: None)
    except (ValueError, RecursionError) as exc:
        raise ProtocolError(f"unreadable report: {exc}") from None
    if not isinstance(done, dict):
        raise ProtocolError("the report is not an object")
    return done


def artifact_limits(limits: Limits) -> dict:
    return {"max_count": limits.artifact_max_count, "max_bytes": limits.artifact_max_bytes,
            "max_total_bytes": limits.artifact_max_total_bytes}


def _append_capped(buffer: bytearray, data: bytes, cap: int) -> bool:
    """Append up to the cap; False when something had to be dropped."""
    room = cap - len(buffer)
    if room >= len(data):
        buffer += data
        return True
    if room > 0:
        buffer += data[:room]
    return False


class SandboxBackend(Protocol):
    """What makes, finds and removes sandboxes on one host; the warm pool is written against this alone
    (runsc_sandbox.RunscBackend drives runsc directly, docker_sandbox.DockerBackend goes through dockerd)."""

    name: str
    config: SandboxConfig

    def prepare(self) -> None:
        """Check the host and build what sandboxes need (root file systems); raises when it cannot."""

    def describe(self) -> dict[str, str]:
        """The runtime as operators see it: backend, version, platform."""

    def owner_key(self, owner: str) -> str:
        """The label a worker instance's sandboxes carry, so sweeps can tell whose they are."""

    def kinds_available(self) -> set[str]:
        """The kinds of sandbox this backend can make now (languages, and the preloaded snapshot once ready)."""

    def make(self, kind: str, on_created: Callable[[str], None] | None = None) -> Sandbox:
        """A new sandbox of `kind`, started and waiting for its one job."""

    def find(self) -> list[Found]:
        """Every sandbox of this site on this host, with its owner and creation time."""

    def remove(self, sandbox_id: str) -> None:
        """Remove a sandbox and everything of it; quiet when it is gone already."""

    def share_cpu(self) -> None:
        """Rebalance CPU between accounts with runs in flight (a backend without account cgroups does nothing)."""


"""One single-use gVisor sandbox whose supervisor is started and waiting for a job: the session with it.

How a sandbox is started, read from and ended depends on the backend (runsc_sandbox.py drives runsc on an
OCI bundle; docker_sandbox.py goes through dockerd). What is said to the supervisor, and how its answer is
checked, is the same for both and lives here: the job goes out with a fresh key, every frame after it
must verify, the worker's own clock times the run, and every field of the report is re-checked.
"""

import json
import logging
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

from executor.config import Limits, SandboxConfig
from executor.deadlines import SANDBOX_DRAIN, SANDBOX_KILL_GRACE
from executor.egress import job_egress
from executor.protocol import DONE, JOB, PING, READY, STDERR, STDOUT, FrameDecoder, ProtocolError, encode_frame
from executor.runner.wire import KEY_SIZE
from executor.verify import as_int, check_artifacts, check_outcome

log = logging.getLogger(__name__)

RUNNER = "/opt/sandboxctl/supervisor.py"
SILENCE_CHECK = 0.3  # after this long without bytes, ask the backend whether the sandbox is still alive
MAX_FRAME = 64 * 1024 * 1024
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
    session_over: str | None = None  # a session's cell: why the session cannot go on (None: it goes on)


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
    """The session with one sandbox. Subclasses supply the transport:

    `_launch()` starts it; `_recv(timeout)` returns the supervisor's stdout bytes (b"" at its end, None when
    nothing came in time); `_send(data)` writes to its stdin; `_exit_state(exited)` says whether it still runs
    and, if not, why it ended; `kill()` stops it; `destroy()` removes every trace (True when nothing is left).
    """

    # A sandbox restored from a snapshot said READY before the snapshot was taken: it is asked again (PING).
    restored = False
    # Whether the supervisor must stay until it is removed after its report (dockerd can lose the tail).
    linger = False

    def __init__(self, language: str, config: SandboxConfig, kind: str | None = None,
                 on_created: Callable[[str], None] | None = None) -> None:
        self.language = language
        self.kind = kind or language
        self.config = config
        self._on_created = on_created

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
        """The host folder mounted in this sandbox (and no other) where a run's egress socket is bound
        (executor/egress_proxy.py); None for a backend that has no such channel."""
        return None

    # Session (shared)

    def start(self) -> None:
        """Start the sandbox, then wait until its interpreter is waiting for a job."""
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

    def run(
        self, code: str, arguments: dict, limits: Limits, should_stop: Callable[[], bool] | None = None,
        files: list[dict] | None = None,
    ) -> RunReport:
        """Send the one job this sandbox will ever run and observe it until it ends.

        `should_stop` is asked every SILENCE_CHECK while the run is quiet; when it answers True (the run
        was cancelled) the sandbox is killed and the report says so. `files` ({path, content_b64}) are
        written into the working folder before the code starts.
        """
        # A fresh key per run, sent only now that the child exists: the child never holds it.
        key = secrets.token_bytes(KEY_SIZE)
        job = {
            "key": key.hex(),
            "linger": self.linger,
            "payload": {"code": code, "arguments": arguments,
                        "memory_limit_bytes": self.address_space(limits.memory_mb),
                        "egress": job_egress(limits.egress, self.config)},  # None without an allowlist
            "timeout": limits.timeout,
            "output_limit": limits.output_limit,
            "artifacts": artifact_limits(limits),
            "files": files or [],
        }
        self.to_foreground()
        self.limit_memory(limits.memory_mb)
        started = time.monotonic()
        self._send(encode_frame(JOB, json.dumps(job, ensure_ascii=False).encode()))
        report = RunReport()
        try:
            self._observe(report, started, limits, should_stop, FrameDecoder(MAX_FRAME, key))
        except ProtocolError as exc:
            log.warning("sandbox %s: protocol violation: %s", self.id, exc)
            report.protocol_violation = str(exc)
            self.kill()
        # The worker's own clock, never a number the sandbox sends.
        report.duration = time.monotonic() - started
        report.memory_used_kb = self.memory_peak_kb() or report.memory_used_kb
        return report

    def _observe(self, report: RunReport, started: float, limits: Limits, should_stop, frames: FrameDecoder,
                 grace: float = 0.0) -> dict | None:
        """Read frames until the DONE of this run (or cell); returns that report as sent, None without one.
        `grace` is how long past its timeout the sandbox itself may take (a session's interrupt)."""
        hard_deadline = started + limits.timeout + grace + SANDBOX_KILL_GRACE
        next_stop_check = started + SILENCE_CHECK
        stdout, stderr = bytearray(), bytearray()
        last_bytes = time.monotonic()
        drain_until = None  # set once the sandbox is seen to have ended: read what it wrote first
        try:
            while True:
                now = time.monotonic()
                if drain_until is not None and now >= drain_until:
                    self._still_running(report, exited=True)
                    return
                if now >= hard_deadline:
                    report.timed_out = True
                    self.kill()
                    return
                if should_stop is not None and now >= next_stop_check:
                    next_stop_check = now + SILENCE_CHECK
                    if should_stop():
                        report.cancelled = True
                        self.kill()
                        return
                data = self._recv(min(SILENCE_CHECK, hard_deadline - now))
                if data is None:
                    quiet = time.monotonic() - last_bytes >= SILENCE_CHECK
                    if drain_until is None and quiet and not self._exit_state(False).running:
                        # It ended while we were not reading: its last frames (DONE) may still be in the pipe,
                        # written just before it exited. Read them before concluding it died.
                        drain_until = time.monotonic() + SANDBOX_DRAIN
                    continue
                if data == b"":
                    self._still_running(report, exited=True)
                    return
                last_bytes = time.monotonic()
                for kind, body in frames.feed(data):
                    if kind == STDOUT:
                        report.stdout_truncated |= not _append_capped(stdout, body, limits.output_limit)
                    elif kind == STDERR:
                        report.stderr_truncated |= not _append_capped(stderr, body, limits.output_limit)
                    elif kind == DONE:
                        return self._apply_done(report, body, started, limits)
                    else:
                        raise ProtocolError(f"unexpected frame {kind!r} during a run")
        finally:
            report.stdout, report.stderr = bytes(stdout), bytes(stderr)

    def _apply_done(self, report: RunReport, body: bytes, started: float, limits: Limits) -> dict:
        done = read_report(body)
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
        return done

    def _still_running(self, report: RunReport, exited: bool = False) -> bool:
        """Ask the backend about the sandbox; record why it died if it did."""
        state = self._exit_state(exited)
        if state.running and not exited:
            return True
        if state.oom_killed:
            report.oom_killed = True
        else:
            report.sandbox_failure = state.failure or "sandbox exited unexpectedly"
        return False


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


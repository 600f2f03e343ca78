"""One single-use gVisor container whose supervisor is started and waiting for a job."""

import json
import logging
import secrets
import select
import socket
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field

import docker
import requests
from docker.errors import DockerException, NotFound
from docker.types import LogConfig, Ulimit

from executor.config import IMAGE_NAMES, JobLimits, SandboxConfig
from executor.protocol import (
    DOCKER_STDERR,
    DOCKER_STDOUT,
    DONE,
    JOB,
    READY,
    STDERR,
    STDOUT,
    DockerStreamDecoder,
    FrameDecoder,
    ProtocolError,
    encode_frame,
)
from executor.runner.wire import KEY_SIZE
from executor.verify import as_int, check_artifacts, check_outcome

log = logging.getLogger(__name__)

RUNNER = "/opt/sandboxctl/supervisor.py"
HARD_GRACE = 0.6  # the supervisor stops the child at the deadline; past this the worker kills the container
SILENCE_CHECK = 0.3  # after this long without bytes, ask dockerd whether the sandbox is still alive
MAX_FRAME = 64 * 1024 * 1024
DIAGNOSTICS_CAP = 16 * 1024
SANDBOX_ENV = {
    "PATH": "/usr/local/bin:/usr/bin:/bin",
    "HOME": "/tmp",
    "LANG": "C.UTF-8",
    "MPLBACKEND": "Agg",
    "MPLCONFIGDIR": "/tmp/matplotlib",
    "OPENBLAS_NUM_THREADS": "1",
    "PYTHONDONTWRITEBYTECODE": "1",
}


class SandboxError(Exception):
    """The sandbox itself failed (not the user's code). `retryable` says whether another sandbox may help."""

    def __init__(self, message: str, retryable: bool = False) -> None:
        super().__init__(message)
        self.retryable = retryable


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


class Sandbox:
    def __init__(
        self, client: docker.DockerClient, language: str, config: SandboxConfig,
        on_created: Callable[[str], None] | None = None,
    ) -> None:
        self.client = client
        self.language = language
        self.config = config
        self._on_created = on_created
        self.name = f"sandboxctl-{language}-{uuid.uuid4().hex[:12]}"
        self.container = None
        self._sock: socket.socket | None = None
        self._raw = None

    @property
    def id(self) -> str:
        return self.container.id[:12] if self.container else self.name

    def start(self) -> None:
        """Create, attach and start the container, then wait until its interpreter is waiting for a job."""
        self.container = self.client.containers.create(**self._create_options())
        if self._on_created is not None:
            self._on_created(self.container.id)
        # Attach before start so no byte the supervisor writes can be missed.
        self._raw = self.container.attach_socket(params={"stdin": 1, "stdout": 1, "stderr": 1, "stream": 1})
        self._sock = getattr(self._raw, "_sock", self._raw)
        self._sock.setblocking(False)
        self.container.start()
        self._wait_ready()

    def _create_options(self) -> dict:
        config = self.config
        memory = f"{config.memory_mb}m"
        tmpfs_options = "rw,nosuid,nodev,mode=1777,size="
        return {
            "image": f"{IMAGE_NAMES[self.language]}:{config.image_tag}",
            "command": ["python3", "-I", RUNNER, self.language],
            "name": self.name,
            "runtime": config.runtime,
            "network_mode": "none",
            "read_only": True,
            "tmpfs": {
                "/tmp": f"{tmpfs_options}{config.tmp_size_mb}m",
                "/work": f"{tmpfs_options}{config.work_size_mb}m",
            },
            # The supervisor is the sandbox's root with only what it needs to start the child as nobody
            # and to end it; the child keeps no capability (executor/runner/confine.py).
            "user": "0:0",
            "working_dir": "/work",
            "cap_drop": ["ALL"],
            "cap_add": ["SETUID", "SETGID", "KILL"],
            "security_opt": ["no-new-privileges"],
            "mem_limit": memory,
            "memswap_limit": memory,
            "nano_cpus": int(config.cpus * 1e9),
            "pids_limit": config.pids_limit,
            "ulimits": [
                Ulimit(name="nproc", soft=config.nproc, hard=config.nproc),
                Ulimit(name="nofile", soft=config.nofile, hard=config.nofile),
            ],
            "environment": {**SANDBOX_ENV, "SANDBOX_MEMORY_MB": str(config.memory_mb),
                            "SANDBOX_PRELOAD": config.python_preload},
            "labels": {**config.labels, "sandboxctl.language": self.language},
            "hostname": "sandbox",
            "stdin_open": True,
            "tty": False,
            "log_config": LogConfig(type="none"),
            "detach": True,
        }

    def _wait_ready(self) -> None:
        decoder = DockerStreamDecoder()
        frames = FrameDecoder(MAX_FRAME)
        deadline = time.monotonic() + self.config.ready_timeout
        diagnostics = bytearray()
        while time.monotonic() < deadline:
            data = self._recv(max(0.0, deadline - time.monotonic()))
            if data == b"":
                raise SandboxError(f"sandbox exited while starting: {diagnostics[-500:].decode(errors='replace')}")
            for stream, payload in decoder.feed(data or b""):
                if stream == DOCKER_STDERR:
                    diagnostics += payload
                    continue
                for kind, _ in frames.feed(payload):
                    if kind == READY:
                        return
                    raise SandboxError(f"unexpected frame {kind!r} before ready")
        raise SandboxError("sandbox did not become ready in time", retryable=True)

    def _recv(self, timeout: float) -> bytes | None:
        """Bytes from the attach socket; b'' at end of stream; None when nothing came within `timeout`."""
        readable, _, _ = select.select([self._sock], [], [], timeout)
        if not readable:
            return None
        try:
            return self._sock.recv(262144)
        except BlockingIOError:
            return None
        except OSError:
            return b""

    def is_alive(self) -> bool:
        """Cheap health check: a waiting sandbox sends nothing, so a readable socket means it died or misbehaved."""
        if self._sock is None:
            return False
        readable, _, _ = select.select([self._sock], [], [], 0)
        return not readable

    def fileno(self) -> int:
        return self._sock.fileno()

    def run(
        self, code: str, arguments: dict, limits: JobLimits, should_stop: Callable[[], bool] | None = None
    ) -> RunReport:
        """Send the one job this sandbox will ever run and observe it until it ends.

        `should_stop` is asked about every CHECK_INTERVAL while the run is quiet; when it answers True (the run
        was cancelled) the container is killed and the report says so.
        """
        address_space = (limits.memory_mb + self.config.address_space_headroom_mb) * 1024 * 1024
        # A fresh key per run, sent only now that the child exists: the child never holds it.
        key = secrets.token_bytes(KEY_SIZE)
        job = {
            "key": key.hex(),
            "payload": {"code": code, "arguments": arguments, "memory_limit_bytes": address_space},
            "timeout": limits.timeout,
            "output_limit": limits.output_limit,
            "artifacts": {
                "max_count": limits.artifact_max_count,
                "max_bytes": limits.artifact_max_bytes,
                "max_total_bytes": limits.artifact_max_total_bytes,
            },
        }
        started = time.monotonic()
        self._send(encode_frame(JOB, json.dumps(job, ensure_ascii=False).encode()))
        report = RunReport()
        try:
            self._observe(report, started, limits, should_stop, key)
        except ProtocolError as exc:
            log.warning("sandbox %s: protocol violation: %s", self.id, exc)
            report.protocol_violation = str(exc)
            self.kill()
        # The worker's own clock, never a number the sandbox sends.
        report.duration = time.monotonic() - started
        return report

    def _send(self, data: bytes) -> None:
        view = memoryview(data)
        while view:
            select.select([], [self._sock], [], 5)
            try:
                sent = self._sock.send(view)
            except BlockingIOError:
                continue
            view = view[sent:]

    def _observe(self, report: RunReport, started: float, limits: JobLimits, should_stop, key: bytes) -> None:
        decoder = DockerStreamDecoder()
        frames = FrameDecoder(MAX_FRAME, key)
        hard_deadline = started + limits.timeout + HARD_GRACE
        next_stop_check = started + SILENCE_CHECK
        stdout, stderr = bytearray(), bytearray()
        last_bytes = time.monotonic()
        while True:
            now = time.monotonic()
            if now >= hard_deadline:
                report.timed_out = True
                self.kill()
                break
            if should_stop is not None and now >= next_stop_check:
                next_stop_check = now + SILENCE_CHECK
                if should_stop():
                    report.cancelled = True
                    self.kill()
                    break
            data = self._recv(min(SILENCE_CHECK, hard_deadline - now))
            if data is None:
                if time.monotonic() - last_bytes >= SILENCE_CHECK and not self._still_running(report):
                    break
                continue
            if data == b"":
                self._still_running(report, exited=True)
                break
            last_bytes = time.monotonic()
            for stream, payload in decoder.feed(data):
                if stream != DOCKER_STDOUT:
                    continue  # supervisor diagnostics; user stderr arrives framed on stdout
                for kind, body in frames.feed(payload):
                    if kind == STDOUT:
                        report.stdout_truncated |= not _append_capped(stdout, body, limits.output_limit)
                    elif kind == STDERR:
                        report.stderr_truncated |= not _append_capped(stderr, body, limits.output_limit)
                    elif kind == DONE:
                        self._apply_done(report, body, started, limits)
                        report.stdout, report.stderr = bytes(stdout), bytes(stderr)
                        return
                    else:
                        raise ProtocolError(f"unexpected frame {kind!r} during a run")
        report.stdout, report.stderr = bytes(stdout), bytes(stderr)

    def _apply_done(self, report: RunReport, body: bytes, started: float, limits: JobLimits) -> None:
        try:
            done = json.loads(body, parse_constant=lambda name: None)
        except (ValueError, RecursionError) as exc:
            raise ProtocolError(f"unreadable report: {exc}") from None
        if not isinstance(done, dict):
            raise ProtocolError("the report is not an object")
        # Trust the supervisor's deadline only when the worker's own clock agrees.
        report.timed_out = done.get("timed_out") is True and time.monotonic() - started >= limits.timeout * 0.9
        report.exit_code = as_int(done.get("exit_code"), -255, 255)
        report.memory_used_kb = as_int(done.get("memory_used_kb"), 0, 2**31 - 1)
        report.result = check_outcome(done.get("result"))
        report.stdout_truncated |= done.get("stdout_truncated") is True
        report.stderr_truncated |= done.get("stderr_truncated") is True
        report.artifacts, report.rejected_artifacts = check_artifacts(
            done.get("artifacts"), done.get("rejected_artifacts"), limits
        )

    def _still_running(self, report: RunReport, exited: bool = False) -> bool:
        """Ask dockerd about the container; record why it died if it did."""
        if exited:
            # The stream ended first; dockerd records the exit (and OOMKilled) a moment later.
            try:
                self.client.api.wait(self.container.id, timeout=2)
            except Exception:  # noqa: BLE001 - a timeout here just means we inspect what there is
                pass
        try:
            state = self.client.api.inspect_container(self.container.id)["State"]
        except NotFound:
            report.sandbox_failure = "sandbox container disappeared"
            return False
        except (DockerException, requests.RequestException) as exc:
            report.sandbox_failure = f"cannot inspect sandbox: {exc}"
            return False
        if state.get("Running") and not exited:
            return True
        if state.get("OOMKilled"):
            report.oom_killed = True
        else:
            report.sandbox_failure = f"sandbox exited unexpectedly (exit code {state.get('ExitCode')})"
        return False

    def kill(self) -> None:
        try:
            self.client.api.kill(self.container.id)
        except (DockerException, requests.RequestException):
            pass  # already gone, or dockerd is away; removal (retried by the sweep) is what matters

    def destroy(self) -> bool:
        """Remove the container; safe to call more than once. False when it may still exist."""
        if self._raw is not None:
            try:
                self._raw.close()
            except OSError:
                pass
        if self.container is None:
            return True
        try:
            self.container.remove(force=True)
        except NotFound:
            pass
        except (DockerException, requests.RequestException) as exc:
            log.warning("could not remove sandbox %s: %s", self.id, exc)
            return False
        return True


def _append_capped(buffer: bytearray, data: bytes, cap: int) -> bool:
    """Append up to the cap; False when something had to be dropped."""
    room = cap - len(buffer)
    if room >= len(data):
        buffer += data
        return True
    if room > 0:
        buffer += data[:room]
    return False

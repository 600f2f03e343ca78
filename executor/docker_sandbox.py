"""The docker backend: a sandbox is a container of dockerd's `runsc` runtime, spoken to over its attach socket.

Each start costs dockerd, containerd and a shim on top of runsc (about twice the CPU of the runsc backend),
so this backend is for hosts where the worker can reach dockerd but not run runsc itself (a worker in a
container with the Docker socket). No snapshots: every sandbox starts fresh.
"""

import logging
import select
import socket
import uuid

import docker
import requests
from docker.errors import DockerException, NotFound
from docker.types import LogConfig, Ulimit

from executor import cgroupfs
from executor.config import IMAGE_NAMES, SandboxConfig
from executor.protocol import DOCKER_STDOUT, DockerStreamDecoder
from executor.runtime import describe_docker_runtime
from executor.sandbox import RUNNER, SANDBOX_ENV, ExitState, Found, Sandbox

log = logging.getLogger(__name__)

DIAGNOSTICS_CAP = 16 * 1024


class DockerSandbox(Sandbox):
    linger = True
    warned_no_cgroup = False  # said once per worker: this worker cannot hold a run's memory by its cgroup

    def __init__(self, client: docker.DockerClient, language: str, config: SandboxConfig, kind: str | None = None,
                 on_created=None) -> None:
        super().__init__(language, config, kind, on_created)
        self.client = client
        self.name = f"sandboxctl-{language}-{uuid.uuid4().hex[:12]}"
        self.container = None
        self._sock: socket.socket | None = None
        self._raw = None
        self._streams = DockerStreamDecoder()
        self._diagnostics = bytearray()
        self._memory_dir = None  # the container's memory cgroup, where this process can write its limit

    @property
    def id(self) -> str:
        return self.container.id[:12] if self.container else self.name

    @property
    def host_id(self) -> str:
        return self.container.id if self.container else self.name

    def _launch(self) -> None:
        self.container = self.client.containers.create(**self._create_options())
        if self._on_created is not None:
            self._on_created(self.container.id)
        # Attach before start so no byte the supervisor writes can be missed.
        self._raw = self.container.attach_socket(params={"stdin": 1, "stdout": 1, "stderr": 1, "stream": 1})
        self._sock = getattr(self._raw, "_sock", self._raw)
        self._sock.setblocking(False)
        self.container.start()
        self._memory_dir = self._find_memory_cgroup()

    def _find_memory_cgroup(self):
        """Per-run memory limits are held as on the runsc backend, by the container's own memory cgroup:
        `docker update` cannot (runsc has no `update`). A worker that cannot write the host's cgroups (one in a
        container) holds only the container's size and RLIMIT_AS, and says so once."""
        try:
            pid = self.client.api.inspect_container(self.container.id)["State"].get("Pid") or 0
        except (DockerException, requests.RequestException):
            pid = 0
        directory = cgroupfs.memory_cgroup_of(pid) if pid else None
        if directory is None and not DockerSandbox.warned_no_cgroup:
            DockerSandbox.warned_no_cgroup = True
            log.warning("cannot write the memory cgroup of docker sandboxes from here: a run's memory_mb is "
                        "held by RLIMIT_AS and the container's size (SANDBOX_CONTAINER_MEMORY_MB) only")
        return directory

    def limit_memory(self, memory_mb: int) -> None:
        if self._memory_dir is not None:
            cgroupfs.hold_memory(self._memory_dir, cgroupfs.UNIFIED, memory_mb)

    def memory_peak_kb(self) -> int | None:
        return cgroupfs.peak_kb(self._memory_dir, cgroupfs.UNIFIED) if self._memory_dir is not None else None

    def reset_memory_peak(self) -> None:
        if self._memory_dir is not None:
            cgroupfs.reset_peak(self._memory_dir, cgroupfs.UNIFIED)

    def _create_options(self) -> dict:
        config = self.config
        memory = f"{config.container_memory_mb}m"
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
            "environment": {**SANDBOX_ENV, "SANDBOX_CONTAINER_MEMORY_MB": str(config.container_memory_mb),
                            "SANDBOX_PRELOAD": ""},
            "labels": {**config.labels, "sandboxctl.language": self.language},
            "hostname": "sandbox",
            "stdin_open": True,
            "tty": False,
            "log_config": LogConfig(type="none"),
            "detach": True,
        }

    def _recv(self, timeout: float) -> bytes | None:
        readable, _, _ = select.select([self._sock], [], [], timeout)
        if not readable:
            return None
        try:
            data = self._sock.recv(262144)
        except BlockingIOError:
            return None
        except OSError:
            return b""
        if not data:
            return b""
        stdout = bytearray()
        for stream, payload in self._streams.feed(data):
            if stream == DOCKER_STDOUT:
                stdout += payload
            elif len(self._diagnostics) < DIAGNOSTICS_CAP:
                self._diagnostics += payload  # supervisor diagnostics; user stderr arrives framed on stdout
        return bytes(stdout) or None

    def _send(self, data: bytes) -> None:
        view = memoryview(data)
        while view:
            select.select([], [self._sock], [], 5)
            try:
                sent = self._sock.send(view)
            except BlockingIOError:
                continue
            view = view[sent:]

    def diagnostics(self) -> str:
        return self._diagnostics.decode(errors="replace")

    def is_alive(self) -> bool:
        """A waiting sandbox sends nothing, so a readable socket means it died or misbehaved."""
        if self._sock is None:
            return False
        readable, _, _ = select.select([self._sock], [], [], 0)
        return not readable

    def _exit_state(self, exited: bool) -> ExitState:
        # The cgroup's own count (dockerd's OOMKilled is not set for runsc). An OOM kill in it ends the sandbox
        # even when the kernel picked a process whose death leaves the container up but hung.
        if self._memory_dir is not None and cgroupfs.oom_killed_in(self._memory_dir, cgroupfs.UNIFIED):
            return ExitState(running=False, oom_killed=True)
        if exited:
            # The stream ended first; dockerd records the exit (and OOMKilled) a moment later.
            try:
                self.client.api.wait(self.container.id, timeout=2)
            except Exception:  # noqa: BLE001 - a timeout here just means we inspect what there is
                pass
        try:
            state = self.client.api.inspect_container(self.container.id)["State"]
        except NotFound:
            return ExitState(running=False, failure="sandbox container disappeared")
        except (DockerException, requests.RequestException) as exc:
            return ExitState(running=False, failure=f"cannot inspect sandbox: {exc}")
        if state.get("Running") and not exited:
            return ExitState(running=True)
        return ExitState(running=False, oom_killed=bool(state.get("OOMKilled")),
                         failure=f"sandbox exited unexpectedly (exit code {state.get('ExitCode')})")

    def kill(self) -> None:
        try:
            self.client.api.kill(self.container.id)
        except (DockerException, requests.RequestException):
            pass  # already gone, or dockerd is away; removal (retried by the sweep) is what matters

    def destroy(self) -> bool:
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


POOL_LABEL = "sandboxctl.pool"
SITE_LABEL = "sandboxctl.site"


class DockerBackend:
    """Makes docker sandboxes and finds and removes them by label (for orphan sweeps)."""

    name = "docker"

    def __init__(self, config: SandboxConfig, site: str, owner: str) -> None:
        labels = {**config.labels, POOL_LABEL: owner, SITE_LABEL: site}
        self.config = SandboxConfig(**{**config.__dict__, "labels": labels})
        self.site = site
        self.client = docker.from_env(timeout=30)

    def prepare(self) -> None:
        """Nothing to prepare: the images are built by `manage.py build_images`."""

    def owner_key(self, owner: str) -> str:
        return owner

    def kinds_available(self) -> set[str]:
        return set(IMAGE_NAMES)

    def make(self, kind: str, on_created=None) -> DockerSandbox:
        return DockerSandbox(self.client, kind, self.config, kind, on_created)

    def find(self) -> list[Found]:
        try:
            containers = self.client.containers.list(all=True, sparse=True,
                                                     filters={"label": f"{SITE_LABEL}={self.site}"})
        except (DockerException, requests.RequestException) as exc:
            log.warning("cannot list sandboxes: %s", exc)
            return []
        return [Found(container.id, (container.attrs.get("Labels") or {}).get(POOL_LABEL),
                      float(container.attrs.get("Created") or 0)) for container in containers]

    def remove(self, sandbox_id: str) -> None:
        try:
            self.client.api.remove_container(sandbox_id, force=True)
        except NotFound:
            pass
        except (DockerException, requests.RequestException) as exc:
            log.warning("cannot remove %s: %s", sandbox_id[:12], exc)

    def describe(self) -> dict[str, str]:
        return describe_docker_runtime(self.client, self.config.runtime)

    def share_cpu(self) -> None:
        """Containers are not grouped by account here: dockerd's CPU shares are per container."""

"""The runsc backend: each sandbox is `runsc run` on an OCI bundle of its own, spoken to over plain pipes.

Starting runsc directly costs about half the CPU of a start through dockerd, containerd and a shim (0.2 vs
0.4 CPU-s measured here), which on a small host decides the throughput. Every sandbox gets:

- the image's root file system, extracted once per image version (images.py), mounted read-only with no
  overlay; tmpfs /tmp and /work; its own /proc, /dev and /sys;
- `--network=none`, fresh pid, ipc, uts and mount namespaces, hostname `sandbox`;
- the supervisor as root of the sandbox with SETUID, SETGID and KILL only, no-new-privileges, nproc and
  nofile limits, the fixed environment of sandbox.py and nothing of the worker's;
- a cgroup made here before runsc starts (memory = swap limit, CPU quota, pids backstop): the limits are
  ours, and its OOM counter is still there to read after the sandbox is gone.

Python runs whose code imports the preloaded modules (numpy, pandas, matplotlib by default) get a sandbox
*restored* from a snapshot of an interpreter that has imported them already (snapshots.py): a restore is
a fresh sandbox too — its own processes, memory, files and cgroup — cloned from the same image.

Sandbox ids carry the site, a hash of the owning worker instance and the creation time, so a sweep can
tell from `runsc list` alone which sandboxes are orphans.
"""

import hashlib
import json
import logging
import os
import select
import shutil
import signal
import subprocess
import time
import uuid
from pathlib import Path

from executor.config import LANGUAGES, PRELOADED, SandboxConfig
from executor.sandbox import RUNNER, SANDBOX_ENV, ExitState, Found, Sandbox, SandboxError

log = logging.getLogger(__name__)

DIAGNOSTICS_CAP = 16 * 1024
CLI_TIMEOUT = 10.0
CGROUP_ROOT = Path("/sys/fs/cgroup")
CGROUP_PARENT = "sandboxctl"
CAPABILITIES = ["CAP_SETUID", "CAP_SETGID", "CAP_KILL"]


def owner_key(owner: str) -> str:
    """The short, id-safe form of a worker instance's name used in sandbox ids."""
    return hashlib.sha256(owner.encode()).hexdigest()[:10]


def site_key(site: str) -> str:
    return "".join(char for char in site if char.isalnum())[:16] or "site"


class Cgroup:
    """A sandbox's cgroup, made before runsc starts it (runsc joins an existing cgroup and leaves its limits
    alone), so the limits are ours and the OOM counter can be read after the sandbox has died."""

    V1_CONTROLLERS = ("memory", "cpu", "pids")
    # CPU weight while warming (the lowest there is) and while running a job (the kernel's default). A
    # warming sandbox only takes CPU nobody else wants, so refilling the pool never slows a run in flight.
    BACKGROUND = {"cpu.weight": "1", "cpu.shares": "2"}
    FOREGROUND = {"cpu.weight": "100", "cpu.shares": "1024"}

    def __init__(self, name: str) -> None:
        self.name = name
        self.unified = (CGROUP_ROOT / "cgroup.controllers").exists()

    @property
    def path(self) -> str:
        return f"/{CGROUP_PARENT}/{self.name}"

    @classmethod
    def parents(cls) -> list[Path]:
        if (CGROUP_ROOT / "cgroup.controllers").exists():
            return [CGROUP_ROOT / CGROUP_PARENT]
        return [CGROUP_ROOT / controller / CGROUP_PARENT for controller in cls.V1_CONTROLLERS]

    def _dirs(self) -> list[Path]:
        if self.unified:
            return [CGROUP_ROOT / CGROUP_PARENT / self.name]
        return [CGROUP_ROOT / controller / CGROUP_PARENT / self.name for controller in self.V1_CONTROLLERS]

    def create(self, memory_mb: int, cpus: float, pids: int) -> None:
        memory = str(memory_mb * 1024 * 1024)
        if self.unified:
            parent = CGROUP_ROOT / CGROUP_PARENT
            parent.mkdir(exist_ok=True)
            _write(parent / "cgroup.subtree_control", "+memory +cpu +pids", quiet=True)
            directory = self._dirs()[0]
            directory.mkdir()
            _write(directory / "memory.max", memory)
            _write(directory / "memory.swap.max", "0", quiet=True)
            _write(directory / "cpu.max", f"{int(cpus * 100000)} 100000")
            _write(directory / "pids.max", str(pids))
            self.set_cpu_weight(self.BACKGROUND)
            return
        memory_dir, cpu_dir, pids_dir = self._dirs()
        for directory in (memory_dir, cpu_dir, pids_dir):
            directory.mkdir(parents=True)
        _write(memory_dir / "memory.limit_in_bytes", memory)
        _write(memory_dir / "memory.memsw.limit_in_bytes", memory, quiet=True)
        _write(cpu_dir / "cpu.cfs_period_us", "100000")
        _write(cpu_dir / "cpu.cfs_quota_us", str(int(cpus * 100000)))
        _write(pids_dir / "pids.max", str(pids))
        self.set_cpu_weight(self.BACKGROUND)

    def set_cpu_weight(self, weights: dict[str, str]) -> None:
        name = "cpu.weight" if self.unified else "cpu.shares"
        _write(self._dirs()[0 if self.unified else 1] / name, weights[name], quiet=True)

    def limit_run(self, memory_mb: int) -> None:
        """The run's memory_mb is the memory: from its job on, the sandbox may hold that much more than it held
        idle (the Sentry and the warm interpreter). gVisor keeps tmpfs files (/tmp, /work, /dev/shm) in its
        memory file, charged to this cgroup, so files count as well. The peak is reset so it is the run's."""
        directory = self._dirs()[0]
        usage_name, limit_name = (("memory.current", "memory.max") if self.unified
                                  else ("memory.usage_in_bytes", "memory.limit_in_bytes"))
        try:
            usage = int((directory / usage_name).read_text())
            current = int((directory / limit_name).read_text().strip().replace("max", str(2**62)))
        except (OSError, ValueError):
            return
        limit = str(usage + memory_mb * 1024 * 1024)
        if self.unified:
            _write(directory / "memory.max", limit, quiet=True)
            return
        # memsw must never be below the memory limit: raise it first when raising, lower it last when lowering.
        order = ["memory.memsw.limit_in_bytes", "memory.limit_in_bytes"]
        for name in order if int(limit) > current else reversed(order):
            _write(directory / name, limit, quiet=True)
        _write(directory / "memory.max_usage_in_bytes", "0", quiet=True)

    def peak_kb(self) -> int | None:
        """The cgroup's peak since the run's job began (v2: since the sandbox started; it cannot be reset)."""
        name = "memory.peak" if self.unified else "memory.max_usage_in_bytes"
        try:
            return int((self._dirs()[0] / name).read_text()) // 1024
        except (OSError, ValueError):
            return None

    def oom_killed(self) -> bool:
        events = self._dirs()[0] / ("memory.events" if self.unified else "memory.oom_control")
        try:
            for line in events.read_text().splitlines():
                name, _, value = line.partition(" ")
                if name == "oom_kill" and int(value) > 0:
                    return True
        except (OSError, ValueError):
            pass
        return False

    def remove(self) -> bool:
        removed = True
        for directory in self._dirs():
            for _ in range(20):
                try:
                    directory.rmdir()
                    break
                except FileNotFoundError:
                    break
                except OSError:  # processes still leaving it
                    time.sleep(0.05)
            else:
                removed = False
        return removed


def _write(path: Path, value: str, quiet: bool = False) -> None:
    try:
        path.write_text(value)
    except OSError:
        if not quiet:
            raise


def oci_spec(config: SandboxConfig, rootfs: Path, language: str, cgroups_path: str, preload: str,
             args: list[str] | None = None) -> dict:
    """The OCI runtime spec of one sandbox (the same for every sandbox of a kind but for its cgroup)."""
    environment = {**SANDBOX_ENV, "SANDBOX_MEMORY_MB": str(config.memory_mb), "SANDBOX_PRELOAD": preload}
    tmpfs = ["rw", "nosuid", "nodev", "mode=1777"]
    return {
        "ociVersion": "1.0.2",
        "process": {
            "terminal": False,
            "user": {"uid": 0, "gid": 0},
            "args": args or ["python3", "-I", RUNNER, language],
            "env": [f"{key}={value}" for key, value in environment.items()],
            "cwd": "/work",
            "capabilities": {name: CAPABILITIES for name in ("bounding", "effective", "permitted")},
            "rlimits": [
                {"type": "RLIMIT_NPROC", "hard": config.nproc, "soft": config.nproc},
                {"type": "RLIMIT_NOFILE", "hard": config.nofile, "soft": config.nofile},
            ],
            "noNewPrivileges": True,
        },
        "root": {"path": str(rootfs), "readonly": True},
        "hostname": "sandbox",
        "mounts": [
            {"destination": "/proc", "type": "proc", "source": "proc"},
            {"destination": "/dev", "type": "tmpfs", "source": "tmpfs", "options": ["nosuid", "mode=755"]},
            {"destination": "/sys", "type": "sysfs", "source": "sysfs", "options": ["nosuid", "noexec", "nodev", "ro"]},
            {"destination": "/tmp", "type": "tmpfs", "source": "tmpfs",
             "options": [*tmpfs, f"size={config.tmp_size_mb}m"]},
            {"destination": "/work", "type": "tmpfs", "source": "tmpfs",
             "options": [*tmpfs, f"size={config.work_size_mb}m"]},
            {"destination": "/dev/shm", "type": "tmpfs", "source": "shm",
             "options": [*tmpfs, f"size={config.tmp_size_mb}m"]},
        ],
        "linux": {
            "namespaces": [{"type": kind} for kind in ("pid", "network", "ipc", "uts", "mount")],
            "cgroupsPath": cgroups_path,
        },
    }


class RunscSandbox(Sandbox):
    def __init__(self, backend: "RunscBackend", language: str, kind: str, snapshot: Path | None = None,
                 on_created=None, preload: str = "") -> None:
        super().__init__(language, backend.config, kind, on_created)
        self.backend = backend
        self.snapshot = snapshot
        self.restored = snapshot is not None
        self.preload = preload
        self._id = backend.new_id()
        self.bundle = backend.config.bundle_dir / self._id
        self.cgroup = Cgroup(self._id)
        self.process: subprocess.Popen | None = None
        self._stdout = -1
        self._diagnostics = bytearray()

    @property
    def id(self) -> str:
        return self._id

    def command(self) -> list[str]:
        return ["python3", "-I", RUNNER, self.language]

    def _launch(self) -> None:
        config = self.config
        self.bundle.mkdir(parents=True)
        spec = oci_spec(config, self.backend.rootfs(self.language), self.language, self.cgroup.path, self.preload,
                        self.command())
        (self.bundle / "config.json").write_text(json.dumps(spec))
        self.cgroup.create(config.memory_mb, config.cpus, config.pids_limit)
        if self._on_created is not None:
            self._on_created(self._id)
        verb = ["restore", "--image-path", str(self.snapshot)] if self.snapshot else ["run"]
        self.process = subprocess.Popen(
            self.backend.runsc(*verb, "--bundle", str(self.bundle), self._id),
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, close_fds=True,
            start_new_session=True,
        )
        self._stdout = self.process.stdout.fileno()
        os.set_blocking(self._stdout, False)
        os.set_blocking(self.process.stderr.fileno(), False)

    def _recv(self, timeout: float) -> bytes | None:
        readable, _, _ = select.select([self._stdout], [], [], max(0.0, timeout))
        if not readable:
            return None
        try:
            return os.read(self._stdout, 262144)
        except BlockingIOError:
            return None
        except OSError:
            return b""

    def _send(self, data: bytes) -> None:
        stdin = self.process.stdin.fileno()
        view = memoryview(data)
        while view:
            select.select([], [stdin], [], 5)
            try:
                written = os.write(stdin, view)
            except BlockingIOError:
                continue
            except BrokenPipeError:
                raise SandboxError("the sandbox closed its input") from None
            view = view[written:]

    def diagnostics(self) -> str:
        if self.process is not None and len(self._diagnostics) < DIAGNOSTICS_CAP:
            try:
                self._diagnostics += os.read(self.process.stderr.fileno(), DIAGNOSTICS_CAP) or b""
            except (BlockingIOError, OSError, ValueError):
                pass
        return self._diagnostics.decode(errors="replace")

    def is_alive(self) -> bool:
        """A waiting sandbox sends nothing, so output or an ended process means it died or misbehaved."""
        if self.process is None or self.process.poll() is not None:
            return False
        readable, _, _ = select.select([self._stdout], [], [], 0)
        return not readable

    def _exit_state(self, exited: bool) -> ExitState:
        if not exited and self.process.poll() is None:
            return ExitState(running=True)
        try:
            code = self.process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            code = None
        if self.cgroup.oom_killed():
            return ExitState(running=False, oom_killed=True)
        detail = self.diagnostics().strip().splitlines()[-1:] or [""]
        return ExitState(running=False, failure=f"sandbox exited unexpectedly (exit code {code}) {detail[0][:200]}"
                         .rstrip())

    def kill(self) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        self.backend.cli("kill", self._id, "KILL")

    def to_foreground(self) -> None:
        self.cgroup.set_cpu_weight(Cgroup.FOREGROUND)

    def limit_memory(self, memory_mb: int) -> None:
        self.cgroup.limit_run(memory_mb)

    def memory_peak_kb(self) -> int | None:
        return self.cgroup.peak_kb()

    def destroy(self) -> bool:
        """Stop it if it still runs, then remove its state, bundle and cgroup; False when something remains."""
        if self.process is not None:
            if self.process.poll() is None:
                self.kill()
                try:
                    self.process.wait(timeout=5)
                except subprocess.TimeoutExpired:
                    self.backend.cli("delete", "-force", self._id)
                    _stop(self.process)
            for stream in (self.process.stdin, self.process.stdout, self.process.stderr):
                try:
                    stream.close()
                except OSError:
                    pass
        return self.backend.clean_up(self._id)


def keep_state_in_memory(state_dir: Path) -> None:
    """runsc writes its state and our bundles for every sandbox: on a disk that costs kernel writeback per
    run (measured ~20 ms of CPU per run where /run was not a tmpfs). Mount a tmpfs there unless it is one
    already, or unless a sandbox recorded there still runs (a sweep must find it); what is left on disk of
    sandboxes long gone is hidden under the mount."""
    state_dir.mkdir(parents=True, exist_ok=True)
    mounts = Path("/proc/mounts").read_text().split("\n")
    for parent in (state_dir, *state_dir.parents):
        found = [line.split() for line in mounts if len(line.split()) > 2 and line.split()[1] == str(parent)]
        if found:
            if found[-1][2] == "tmpfs":
                return
            break
    running = subprocess.run(["pgrep", "-f", f"runsc.*--root[= ]{state_dir}"], capture_output=True)
    if running.returncode == 0:
        log.warning("%s is not a tmpfs and sandboxes recorded there still run; leaving it on disk", state_dir)
        return
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "mode=0700,size=256m", "sandboxctl-state", str(state_dir)],
                          capture_output=True, text=True)
    if done.returncode != 0:
        log.warning("could not mount a tmpfs on %s: %s", state_dir, done.stderr.strip())


def _stop(process: subprocess.Popen) -> None:
    try:
        os.killpg(process.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass
    try:
        process.wait(timeout=5)
    except subprocess.TimeoutExpired:
        log.warning("runsc process %s did not exit", process.pid)


class RunscBackend:
    """Makes runsc sandboxes, finds them again (`runsc list`) and removes what is left of them."""

    name = "runsc"

    def __init__(self, config: SandboxConfig, site: str, owner: str) -> None:
        from executor.snapshots import Snapshots

        self.config = config
        self.site = site_key(site)
        self.owner = owner_key(owner)
        self._rootfs: dict[str, Path] = {}
        self.snapshots = Snapshots(self)

    # Invocation

    def runsc(self, *arguments: str) -> list[str]:
        config = self.config
        return [config.runsc_path, "--root", str(config.runsc_root), "--network=none",
                f"--platform={config.runsc_platform}", "--overlay2=none", *arguments]

    def cli(self, *arguments: str) -> subprocess.CompletedProcess | None:
        try:
            return subprocess.run(self.runsc(*arguments), capture_output=True, text=True, timeout=CLI_TIMEOUT)
        except (OSError, subprocess.SubprocessError) as exc:
            log.warning("runsc %s failed: %s", " ".join(arguments[:1]), exc)
            return None

    def new_id(self) -> str:
        return f"sbx.{self.site}.{self.owner}.{int(time.time())}.{uuid.uuid4().hex[:8]}"

    # Preparation

    def prepare(self) -> None:
        """Root file systems ready before any sandbox is made; the snapshot is made in the background."""
        from executor.images import ensure_rootfs

        keep_state_in_memory(self.config.runsc_root.parent)
        for directory in (self.config.runsc_root, self.config.bundle_dir):
            directory.mkdir(parents=True, exist_ok=True)
            directory.chmod(0o700)
        for language in LANGUAGES:
            self._rootfs[language] = ensure_rootfs(language, self.config.image_cache_dir, self.config.rootfs_dir)
        if self.config.preload_modules:
            self.snapshots.build_in_background()

    def rootfs(self, language: str) -> Path:
        if language not in self._rootfs:
            from executor.images import ensure_rootfs

            self._rootfs[language] = ensure_rootfs(language, self.config.image_cache_dir, self.config.rootfs_dir)
        return self._rootfs[language]

    def owner_key(self, owner: str) -> str:
        return owner_key(owner)

    def kinds_available(self) -> set[str]:
        return set(LANGUAGES) | ({PRELOADED} if self.snapshots.ready() else set())

    def make(self, kind: str, on_created=None) -> RunscSandbox:
        if kind == PRELOADED:
            return RunscSandbox(self, "python", kind, snapshot=self.snapshots.path(), on_created=on_created,
                                preload=self.config.python_preload)
        return RunscSandbox(self, kind, kind, on_created=on_created)

    # Finding and removing

    def find(self) -> list[Found]:
        """Every sandbox of this site on this host, with its owner's key and creation time, read from runsc's
        state folder (one `<id>_sandbox:<id>.state` file per sandbox), which `runsc list` would read too but
        fails on as a whole when one entry is half gone — and from our bundle and cgroup folders, so a sandbox
        whose owner died between making its cgroup and starting runsc is found (and removed) too."""
        names = []
        for folder in (self.config.runsc_root, self.config.bundle_dir, *Cgroup.parents()):
            try:
                entries = os.listdir(folder)
            except (FileNotFoundError, NotADirectoryError):
                continue
            # runsc may leave a `.lock` beside a deleted sandbox's state: only `.state` files name sandboxes.
            names += [name for name in entries if folder != self.config.runsc_root or name.endswith(".state")]
        found = {}
        for name in names:
            sandbox_id = name.split("_sandbox:", 1)[0]
            parts = sandbox_id.split(".")
            if len(parts) == 5 and parts[0] == "sbx" and parts[1] == self.site and sandbox_id not in found:
                found[sandbox_id] = Found(sandbox_id, parts[2], float(parts[3]) if parts[3].isdigit() else 0.0)
        return list(found.values())

    def remove(self, sandbox_id: str) -> None:
        self.cli("delete", "-force", sandbox_id)
        self.clean_up(sandbox_id)

    def clean_up(self, sandbox_id: str) -> bool:
        shutil.rmtree(self.config.bundle_dir / sandbox_id, ignore_errors=True)
        for leftover in self.config.runsc_root.glob(f"{sandbox_id}_sandbox:*.lock"):
            leftover.unlink(missing_ok=True)  # runsc sometimes leaves its lock file behind after a delete
        return Cgroup(sandbox_id).remove()

    def describe(self) -> dict[str, str]:
        from executor.runtime import runsc_version

        return {"runtime": "runsc", "backend": "runsc", "version": runsc_version(self.config.runsc_path),
                "platform": self.config.runsc_platform}

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

from executor import cgroupfs
from executor.cgroupfs import CGROUP_ROOT
from executor.cgroupfs import write as _write
from executor.config import LANGUAGES, PRELOADED, SandboxConfig
from executor.egress import CA_NAME, SANDBOX_CHANNEL_DIR
from executor.images import ensure_rootfs
from executor.runtime import runsc_version
from executor.sandbox import RUNNER, SANDBOX_ENV, ExitState, Found, Sandbox, SandboxError
from executor.snapshots import Snapshots

log = logging.getLogger(__name__)

DIAGNOSTICS_CAP = 16 * 1024
CLI_TIMEOUT = 10.0
CGROUP_PARENT = "sandboxctl"
CAPABILITIES = ["CAP_SETUID", "CAP_SETGID", "CAP_KILL"]
CFS_PERIOD = 100000
BUSY_CPU = 0.2  # an account using at least this many CPUs counts as busy when the host is shared out
ACCOUNT_PREFIX = "acct."  # account cgroups beside the sandboxes' own (never a sandbox id, which starts "sbx.")


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
        self.boosted = False  # a run is waiting for this sandbox: it warms at full weight (pool.acquire)
        self.account_dir: Path | None = None  # where its processes went once its job's account is known

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
            self.set_cpu_weight(self.FOREGROUND if self.boosted else self.BACKGROUND)
            return
        memory_dir, cpu_dir, pids_dir = self._dirs()
        for directory in (memory_dir, cpu_dir, pids_dir):
            directory.mkdir(parents=True)
        _write(memory_dir / "memory.limit_in_bytes", memory)
        _write(memory_dir / "memory.memsw.limit_in_bytes", memory, quiet=True)
        _write(cpu_dir / "cpu.cfs_period_us", "100000")
        _write(cpu_dir / "cpu.cfs_quota_us", str(int(cpus * 100000)))
        _write(pids_dir / "pids.max", str(pids))
        self.set_cpu_weight(self.FOREGROUND if self.boosted else self.BACKGROUND)

    def set_cpu_weight(self, weights: dict[str, str]) -> None:
        name = "cpu.weight" if self.unified else "cpu.shares"
        _write(self._cpu_dir() / name, weights[name], quiet=True)

    def _cpu_dir(self) -> Path:
        if self.account_dir is not None:
            return self.account_dir
        return self._dirs()[0 if self.unified else 1]

    def boost(self) -> None:
        """A run waits for this sandbox to warm: let it compete for CPU as an equal of the accounts' runs, or
        a busy host would starve the refill the run is waiting for."""
        self.boosted = True
        self.set_cpu_weight(self.FOREGROUND)

    # CPU by account, not by run: as its job starts, a sandbox's processes move into a cgroup of their own
    # under their account's cgroup. Every account's cgroup has the same weight, so two accounts burning CPU
    # get half the host each whatever their run counts, and a third account's run gets its share at once.
    # On cgroup v1 only the cpu hierarchy is nested (memory and pids stay where the sandbox was made); on v2
    # the one hierarchy moves, and the memory limit moves with it (see _carry_memory_limit).

    def join_account(self, group: str) -> bool:
        """Move the sandbox under the account cgroup `group` (a name of this site); False when it could not."""
        source = self._dirs()[0 if self.unified else 1]
        account = source.parent / group
        target = account / self.name
        for _ in range(3):  # another sandbox's removal may remove an empty account cgroup between the mkdirs
            try:
                account.mkdir(exist_ok=True)
                if self.unified:
                    _write(account / "cgroup.subtree_control", "+memory +cpu +pids", quiet=True)
                _write(account / ("cpu.weight" if self.unified else "cpu.shares"),
                       self.FOREGROUND["cpu.weight" if self.unified else "cpu.shares"], quiet=True)
                target.mkdir(exist_ok=True)
                break
            except FileNotFoundError:
                continue
            except OSError as exc:
                log.warning("cgroup %s: cannot make %s: %s", self.name, target, exc)
                return False
        else:
            return False
        copied = ("cpu.max", "pids.max", "memory.swap.max") if self.unified else ("cpu.cfs_period_us",
                                                                                   "cpu.cfs_quota_us")
        for name in copied:
            _copy_value(source / name, target / name)
        if self.unified:
            _carry_memory_limit(source, target)
        self.account_dir = target
        self.set_cpu_weight(self.FOREGROUND)
        moved = _move_processes(source, target)
        share_cpu(source.parent, group.split(".")[1], self.unified)
        return moved

    def _joined_dirs(self) -> list[Path]:
        """Its cgroups under an account's (found by name: a sweep's Cgroup object never joined anything)."""
        found = []
        for parent in self.parents():
            found += parent.glob(f"{ACCOUNT_PREFIX}*/{self.name}")
        return found

    def limit_run(self, memory_mb: int) -> None:
        """The run's memory_mb is the memory (see hold_memory); the peak is reset so it is the run's."""
        cgroupfs.hold_memory(self._dirs()[0], self.unified, memory_mb)

    def reset_peak(self) -> None:
        """Count the peak from now (cgroup v1; v2's memory.peak cannot be reset on the kernels we run on)."""
        cgroupfs.reset_peak(self._dirs()[0], self.unified)

    def peak_kb(self) -> int | None:
        """The cgroup's peak since the run's job or the cell began (v2: since the sandbox started)."""
        return cgroupfs.peak_kb(self._dirs()[0], self.unified)

    def oom_killed(self) -> bool:
        memory_dirs = [self._dirs()[0]] + ([self.account_dir] if self.unified and self.account_dir else [])
        return any(cgroupfs.oom_killed_in(directory, self.unified) for directory in memory_dirs)

    def remove(self) -> bool:
        removed = True
        joined = self._joined_dirs()
        for directory in joined + self._dirs():
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
        for directory in joined:
            try:
                directory.parent.rmdir()  # the account's cgroup, once its last sandbox is gone
            except OSError:
                pass
            share_cpu(directory.parent.parent, directory.parent.name.split(".")[1], self.unified)
        return removed


def account_group(site: str, account: str) -> str:
    """The name of an account's cgroup: per site, so deployments sharing a host never share one; the label
    is hashed, so whatever it holds it is one safe path component."""
    return f"{ACCOUNT_PREFIX}{site}.{hashlib.sha256(account.encode()).hexdigest()[:12]}"


def account_groups(parent: Path, site: str) -> list[Path]:
    """This site's account cgroups that hold a sandbox."""
    return [group for group in parent.glob(f"{ACCOUNT_PREFIX}{site}.*") if any(group.glob("sbx.*"))]


def share_cpu(parent: Path, site: str, unified: bool, busy: set[str] | None = None) -> None:
    """Equal weights alone leave the split between accounts to the kernel's SMP load balancer, which on a
    busy 2-core host was measured giving a one-run account anywhere from 0.3 to 0.8 of a three-run account's
    CPU. So while several accounts of this site use CPU, each account's cgroup is also capped at an equal
    part of the host; an account alone may use all of it. `busy` names the account cgroups using CPU now
    (RunscBackend.share_cpu measures it every second); without it, every account with a sandbox counts, as
    when a job has just started."""
    groups = account_groups(parent, site)
    using = len(groups) if busy is None else len([group for group in groups if group.name in busy])
    cap = None if using < 2 else max(int((os.cpu_count() or 1) * CFS_PERIOD / using), 1000)
    for group in groups:
        if unified:
            _write(group / "cpu.max", f"{cap or 'max'} {CFS_PERIOD}", quiet=True)
            continue
        # cgroup v1 refuses a parent quota below a child's and a child's above its parent's: lower the
        # children, set the parent, then raise the children (one of the two child passes is refused).
        children = list(group.glob("sbx.*"))
        for _ in range(2):
            for child in children:
                _write(child / "cpu.cfs_quota_us", _v1_child_quota(parent / child.name, cap), quiet=True)
            _write(group / "cpu.cfs_quota_us", str(cap or -1), quiet=True)


def cpu_seconds(group: Path, unified: bool) -> float:
    """CPU time an account's sandboxes have used so far (v1: of the processes alive now, and the children
    they reaped)."""
    if unified:
        try:
            for line in (group / "cpu.stat").read_text().splitlines():
                if line.startswith("usage_usec "):
                    return int(line.split()[1]) / 1e6
        except (OSError, ValueError):
            pass
        return 0.0
    ticks = 0
    for procs in group.glob("sbx.*/cgroup.procs"):
        try:
            pids = procs.read_text().split()
        except OSError:
            continue
        for pid in pids:
            try:
                fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
                ticks += sum(int(value) for value in fields[11:15])  # utime, stime, cutime, cstime
            except (OSError, ValueError, IndexError):
                continue  # it ended meanwhile
    return ticks / os.sysconf("SC_CLK_TCK")


def _v1_child_quota(first_cgroup: Path, cap: int | None) -> str:
    """A sandbox's own quota (kept in the cgroup it was made in), no higher than its account's cap."""
    try:
        own = int((first_cgroup / "cpu.cfs_quota_us").read_text())
    except (OSError, ValueError):
        own = -1
    if cap is None:
        return str(own)
    return str(cap if own < 0 else min(own, cap))


def _copy_value(source: Path, target: Path) -> None:
    try:
        _write(target, source.read_text().strip(), quiet=True)
    except OSError:
        pass


def _carry_memory_limit(source: Path, target: Path) -> None:
    """cgroup v2 never moves memory already charged: what the warm interpreter holds stays counted in the
    sandbox's first cgroup. The new one gets the limit minus that, so the run's total stays the limit."""
    try:
        limit = (source / "memory.max").read_text().strip()
        held = int((source / "memory.current").read_text().strip())
    except (OSError, ValueError):
        return
    if limit.isdigit():
        limit = str(max(int(limit) - held, 16 * 1024 * 1024))
    _write(target / "memory.max", limit, quiet=True)


def _move_processes(source: Path, target: Path) -> bool:
    """Move every process of `source` into `target`; a process forked meanwhile is caught by the next pass."""
    for _ in range(10):
        try:
            pids = (source / "cgroup.procs").read_text().split()
        except OSError:
            return False
        if not pids:
            return True
        for pid in pids:
            try:
                (target / "cgroup.procs").write_text(pid)
            except (ProcessLookupError, OSError):
                pass  # it exited meanwhile
    log.warning("cgroup %s: processes kept appearing; left some in place", source)
    return False


def oci_spec(config: SandboxConfig, rootfs: Path, language: str, cgroups_path: str, preload: str,
             args: list[str] | None = None, channel: Path = Path("/nonexistent")) -> dict:
    """The OCI runtime spec of one sandbox (the same for every sandbox of a kind but for its cgroup and its
    egress channel folder, mounted read-only: empty unless a cell with an allowlist is in it, egress_proxy.py)."""
    environment = {**SANDBOX_ENV, "SANDBOX_CONTAINER_MEMORY_MB": str(config.container_memory_mb),
                   "SANDBOX_PRELOAD": preload}
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
            {"destination": SANDBOX_CHANNEL_DIR, "type": "bind", "source": str(channel),
             "options": ["rbind", "ro", "nosuid", "nodev", "noexec"]},
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
        self.channel = self.bundle / "egress"
        self.cgroup = Cgroup(self._id)
        self.process: subprocess.Popen | None = None
        self._stdout = -1
        self._diagnostics = bytearray()

    @property
    def id(self) -> str:
        return self._id

    def command(self) -> list[str]:
        return ["python3", "-I", RUNNER, self.language]

    @property
    def channel_dir(self) -> Path:
        return self.channel

    def _launch(self) -> None:
        config = self.config
        self.bundle.mkdir(parents=True)
        self.backend.make_channel(self.channel)
        spec = oci_spec(config, self.backend.rootfs(self.language), self.language, self.cgroup.path, self.preload,
                        self.command(), self.channel)
        (self.bundle / "config.json").write_text(json.dumps(spec))
        self.cgroup.create(config.container_memory_mb, config.cpus, config.pids_limit)
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

    def boost(self) -> None:
        self.cgroup.boost()

    def assign_account(self, account: str) -> None:
        if account and not self.cgroup.join_account(account_group(self.backend.site, account)):
            log.warning("sandbox %s: not moved under its account's cgroup; it shares CPU as a run", self._id)

    def limit_memory(self, memory_mb: int) -> None:
        self.cgroup.limit_run(memory_mb)

    def memory_peak_kb(self) -> int | None:
        return self.cgroup.peak_kb()

    def reset_memory_peak(self) -> None:
        self.cgroup.reset_peak()

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


def ca_bundle(extra: Path, folder: Path) -> Path:
    """One PEM file with the public CAs (certifi's) and the operator's extra ones, for runs with egress: a
    client told to trust a file (SSL_CERT_FILE, PIP_CERT) trusts only that file."""
    import certifi

    target = folder / "egress-ca.pem"
    partial = target.with_suffix(".partial")
    partial.write_bytes(Path(certifi.where()).read_bytes().rstrip(b"\n") + b"\n" + extra.read_bytes())
    partial.chmod(0o644)
    partial.replace(target)
    return target


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
        self.config = config
        self.site = site_key(site)
        self.owner = owner_key(owner)
        self._rootfs: dict[str, Path] = {}
        self.ca_bundle: Path | None = None  # the public CAs and the operator's, made by prepare()
        self.snapshots = Snapshots(
            self,
            spec_template=lambda: oci_spec(config, Path("/"), "python", "", config.python_preload),
            make_sandbox=lambda: RunscSandbox(self, "python", "python", preload=config.python_preload),
        )
        self._cpu_seen: tuple[float, dict[str, float]] = (time.monotonic(), {})

    # Invocation

    def runsc(self, *arguments: str) -> list[str]:
        # --host-uds=open: code may connect to a host Unix socket its sandbox can see. The only one it can ever
        # see is its egress socket, in its own channel folder, while a run with an allowlist is in it.
        config = self.config
        return [config.runsc_path, "--root", str(config.runsc_root), "--network=none", "--host-uds=open",
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
        keep_state_in_memory(self.config.runsc_root.parent)
        for directory in (self.config.runsc_root, self.config.bundle_dir):
            directory.mkdir(parents=True, exist_ok=True)
            directory.chmod(0o700)
        for language in LANGUAGES:
            self._rootfs[language] = ensure_rootfs(language, self.config.image_cache_dir, self.config.rootfs_dir)
        if self.config.egress_ca_bundle:
            self.ca_bundle = ca_bundle(self.config.egress_ca_bundle, self.config.runsc_root.parent)
        if self.config.preload_modules:
            self.snapshots.build_in_background()

    def rootfs(self, language: str) -> Path:
        if language not in self._rootfs:
                self._rootfs[language] = ensure_rootfs(language, self.config.image_cache_dir, self.config.rootfs_dir)
        return self._rootfs[language]

    def owner_key(self, owner: str) -> str:
        return owner_key(owner)

    def make_channel(self, folder: Path) -> None:
        """A sandbox's egress channel folder: empty but for the CA bundle, when the operator gave one."""
        folder.mkdir(mode=0o755)
        if self.ca_bundle is not None:
            try:
                os.link(self.ca_bundle, folder / CA_NAME)
            except OSError:
                shutil.copyfile(self.ca_bundle, folder / CA_NAME)

    def share_cpu(self) -> None:
        """Cap accounts equally only while several use CPU (share_cpu): measured since the last call (the
        pool's health loop, every second), so an account whose runs sleep does not hold back a busy one.
        An account seen for the first time counts as busy (its job has just started)."""
        unified = (CGROUP_ROOT / "cgroup.controllers").exists()
        parent = CGROUP_ROOT / ("" if unified else "cpu") / CGROUP_PARENT
        now = time.monotonic()
        then, seen = self._cpu_seen
        used = {group.name: cpu_seconds(group, unified) for group in account_groups(parent, self.site)}
        busy = {name for name, seconds in used.items()
                if name not in seen or seconds - seen[name] >= BUSY_CPU * (now - then)}
        self._cpu_seen = (now, used)
        share_cpu(parent, self.site, unified, busy)

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
        return {"runtime": "runsc", "backend": "runsc", "version": runsc_version(self.config.runsc_path),
                "platform": self.config.runsc_platform}

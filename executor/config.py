"""Settings of the executor, as plain dataclasses: the Django layer fills them from its settings."""

from dataclasses import dataclass, field
from pathlib import Path

LANGUAGES = ("python", "nodejs")


def sandbox_queue(language: str) -> str:
    """The broker queue of a self-managed language's runs."""
    return f"sandbox.{language}"


# The broker's queues, named once: settings declares them, the providers route to them, and the process
# definitions (supervisord, docker-compose, Kubernetes, `make worker`) ask `python -m executor.config` for them.
SAAS_QUEUE = "sandbox.saas"
CONTROL_QUEUE = "control"  # the reconciler
CALLBACK_QUEUE = "callbacks"
SANDBOX_QUEUES = (*(sandbox_queue(language) for language in LANGUAGES), SAAS_QUEUE)
IO_QUEUES = (CONTROL_QUEUE, CALLBACK_QUEUE)
# The in-sandbox runner: baked into self-managed images, and shipped inside the SaaS driver program.
RUNNER_DIR = Path(__file__).parent / "runner"
IMAGE_NAMES = {"python": "sandboxctl-python", "nodejs": "sandboxctl-nodejs"}
SAFE_RUNTIMES = ("runsc",)
BACKENDS = ("runsc", "docker")
# The kind of sandbox a Python run whose code imports the preloaded modules gets: restored from a snapshot
# of an interpreter that has imported them already (runsc backend only).
PRELOADED = "python-preloaded"


@dataclass(frozen=True)
class SandboxConfig:
    """How every sandbox is made, whichever backend makes it."""

    backend: str = "runsc"
    runtime: str = "runsc"  # the docker backend's runtime name; the runsc backend is gVisor by construction
    allow_insecure_runtime: bool = False
    # The sandbox's own size (its cgroup's limit while it waits): the most any run in it may ask for. A run's
    # memory_mb (Limits) is lowered to it when the run starts.
    container_memory_mb: int = 512
    cpus: float = 1.0
    # A backstop only: with too few host pids a runsc sandbox crashes (64 always, 512 under a fork bomb on the
    # ptrace platform, whose every sandboxed task is a host thread); nproc below does the real capping.
    pids_limit: int = 4096
    nproc: int = 64
    nofile: int = 1024
    tmp_size_mb: int = 64
    work_size_mb: int = 128
    python_preload: str = ""
    image_tag: str = "latest"
    labels: dict[str, str] = field(default_factory=dict)
    ready_timeout: float = 30.0
    # RLIMIT_AS counts address space, not memory: numpy, pandas and matplotlib map ~200 MB more than they
    # touch, and every thread reserves a stack. The per-run limit is memory_mb plus this headroom.
    address_space_headroom_mb: int = 256
    # The runsc backend: the binary, its state folder, the gVisor platform, where root file systems and
    # snapshots are kept.
    runsc_path: str = "/usr/bin/runsc"
    runsc_root: Path = Path("/run/sandboxctl/runsc")
    runsc_platform: str = "ptrace"
    bundle_dir: Path = Path("/run/sandboxctl/bundles")
    rootfs_dir: Path = Path("/var/lib/sandboxctl/rootfs")
    snapshot_dir: Path = Path("/var/lib/sandboxctl/snapshots")
    snapshot_variants: int = 3  # snapshots from separate interpreter starts, restored in turn (snapshots.py)
    image_cache_dir: Path = Path("/var/cache/sandboxctl")
    # What a run with egress is told (executor/egress.py): pip's index and npm's registry (an operator's mirror;
    # empty, their defaults), and an extra CA bundle (a PEM file on the host) its clients trust.
    egress_pip_index_url: str = ""
    egress_npm_registry: str = ""
    egress_ca_bundle: Path | None = None

    def __post_init__(self) -> None:
        if self.backend not in BACKENDS:
            raise ValueError(f"backend {self.backend!r} is not one of {', '.join(BACKENDS)}")
        if self.backend == "docker" and self.runtime not in SAFE_RUNTIMES and not self.allow_insecure_runtime:
            raise ValueError(
                f"runtime {self.runtime!r} is not a gVisor runtime; set the explicit insecure flag to use it"
            )
        if self.pids_limit < 512:
            raise ValueError("pids_limit below 512 crashes runsc sandboxes; cap processes with nproc instead")

    @property
    def insecure(self) -> bool:
        return self.backend == "docker" and self.runtime not in SAFE_RUNTIMES

    @property
    def preload_modules(self) -> tuple[str, ...]:
        return tuple(name.strip() for name in self.python_preload.split(",") if name.strip())


@dataclass(frozen=True)
class Limits:
    """Limits of one run, already clamped to what the server and the provider allow: the one type from the
    request (service.py stores the first three on the row) to the in-sandbox supervisor."""

    timeout: float = 10.0
    memory_mb: int = 256
    output_limit: int = 1024 * 1024
    artifact_max_count: int = 10
    artifact_max_bytes: int = 10 * 1024 * 1024
    artifact_max_total_bytes: int = 20 * 1024 * 1024
    # Where the run may connect, through the egress proxy: allowlist entries (executor/egress.py) with presets
    # expanded, already within the account's ceiling. Empty: nowhere — no relay, no proxy, no way out.
    egress: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        object.__setattr__(self, "egress", tuple(self.egress))  # a list when rebuilt from the row's JSON


@dataclass(frozen=True)
class FileLimits:
    """How large one file and all the files of a session (or a run's input files) may be."""

    max_file_bytes: int
    max_total_bytes: int


@dataclass(frozen=True)
class KindSize:
    """How many warm sandboxes of one kind to keep: at least `minimum`, more as demand rises, never above
    `maximum`."""

    minimum: int
    maximum: int


@dataclass(frozen=True)
class PoolConfig:
    """How many warm sandboxes a worker keeps, and how fast it may make them."""

    name: str  # this worker instance: node name plus a boot id, so a restarted worker is a new owner
    site: str = "default"  # the deployment; reaping never looks at another deployment's sandboxes
    size: dict[str, KindSize] = field(
        default_factory=lambda: {language: KindSize(2, 8) for language in LANGUAGES}
    )
    acquire_timeout: float = 10.0
    creators: int = 2
    max_creations_per_second: float = 8.0
    health_interval: float = 1.0
    refill_delay: float = 0.05  # after a run ends, before its replacement starts (lets the result go out first)
    max_refill_delay: float = 0.25  # a long run's slot is refilled this long after it started, whatever happens
    sweep_interval: float = 15.0  # how often orphans (of dead instances, or lost by this one) are looked for
    lost_min_age: float = 60.0  # a container of this pool it does not know is lost only when older (creation races)
    demand_window: float = 30.0  # acquisitions over this many seconds set the demand of a kind


if __name__ == "__main__":
    # `python -m executor.config sandbox|io`: the queues a sandbox worker or the io worker consumes.
    import sys

    print(",".join({"sandbox": SANDBOX_QUEUES, "io": IO_QUEUES}[sys.argv[1]]))


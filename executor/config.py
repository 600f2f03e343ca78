"""Settings of the executor, as plain dataclasses: the Django layer fills them from its settings."""

from dataclasses import dataclass, field

LANGUAGES = ("python", "nodejs")
IMAGE_NAMES = {"python": "sandboxctl-python", "nodejs": "sandboxctl-nodejs"}
SAFE_RUNTIMES = ("runsc",)


@dataclass(frozen=True)
class SandboxConfig:
    """How every sandbox container is created."""

    runtime: str = "runsc"
    allow_insecure_runtime: bool = False
    memory_mb: int = 512
    cpus: float = 1.0
    pids_limit: int = 512  # a backstop only: 64 crashes a runsc sandbox; nproc below does the real capping
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

    def __post_init__(self) -> None:
        if self.runtime not in SAFE_RUNTIMES and not self.allow_insecure_runtime:
            raise ValueError(
                f"runtime {self.runtime!r} is not a gVisor runtime; set the explicit insecure flag to use it"
            )
        if self.pids_limit < 512:
            raise ValueError("pids_limit below 512 crashes runsc sandboxes; cap processes with nproc instead")

    @property
    def insecure(self) -> bool:
        return self.runtime not in SAFE_RUNTIMES


@dataclass(frozen=True)
class JobLimits:
    """Limits of one run, already clamped by the caller to what the server allows."""

    timeout: float = 10.0
    memory_mb: int = 256
    output_limit: int = 1024 * 1024
    artifact_max_count: int = 10
    artifact_max_bytes: int = 10 * 1024 * 1024
    artifact_max_total_bytes: int = 20 * 1024 * 1024


@dataclass(frozen=True)
class PoolConfig:
    """How many warm sandboxes a worker keeps, and how fast it may make them."""

    name: str  # this worker instance: node name plus a boot id, so a restarted worker is a new owner
    site: str = "default"  # the deployment; reaping never looks at another deployment's sandboxes
    size: dict[str, int] = field(default_factory=lambda: {language: 2 for language in LANGUAGES})
    acquire_timeout: float = 10.0
    creators: int = 3
    max_creations_per_second: float = 8.0
    health_interval: float = 1.0
    refill_delay: float = 0.05  # after a run ends, before its replacement starts (lets the result go out first)
    max_refill_delay: float = 0.25  # a long run's slot is refilled this long after it started, whatever happens
    sweep_interval: float = 15.0  # how often orphans (of dead instances, or lost by this one) are looked for
    lost_min_age: float = 60.0  # a container of this pool it does not know is lost only when older (creation races)

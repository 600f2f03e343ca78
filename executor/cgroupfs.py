"""The host's cgroup file system, as the sandbox backends use it: one home for writing its files and for a
sandbox's memory cgroup (its per-run limit, its peak, its OOM kills), which both backends hold the same way
(runsc_sandbox.py makes the cgroup itself; docker_sandbox.py finds the one dockerd made)."""

import os
from pathlib import Path

CGROUP_ROOT = Path("/sys/fs/cgroup")
UNIFIED = (CGROUP_ROOT / "cgroup.controllers").exists()  # cgroup v2; else v1, a hierarchy per controller


def write(path: Path, value: str, quiet: bool = False) -> None:
    try:
        path.write_text(value)
    except OSError:
        if not quiet:
            raise


def hold_memory(directory: Path, unified: bool, memory_mb: int) -> None:
    """From a job on, the sandbox whose memory cgroup is `directory` may hold memory_mb more than it held idle
    (the Sentry and the warm interpreter). gVisor keeps tmpfs files (/tmp, /work, /dev/shm) in its memory file,
    charged to this cgroup, so files count as well. The peak is reset so it is the job's."""
    usage_name, limit_name = (("memory.current", "memory.max") if unified
                              else ("memory.usage_in_bytes", "memory.limit_in_bytes"))
    try:
        usage = int((directory / usage_name).read_text())
        current = int((directory / limit_name).read_text().strip().replace("max", str(2**62)))
    except (OSError, ValueError):
        return
    limit = str(usage + memory_mb * 1024 * 1024)
    if unified:
        write(directory / "memory.max", limit, quiet=True)
        return
    # memsw must never be below the memory limit: raise it first when raising, lower it last when lowering.
    order = ["memory.memsw.limit_in_bytes", "memory.limit_in_bytes"]
    for name in order if int(limit) > current else reversed(order):
        write(directory / name, limit, quiet=True)
    reset_peak(directory, unified)


def reset_peak(directory: Path, unified: bool) -> None:
    if not unified:
        write(directory / "memory.max_usage_in_bytes", "0", quiet=True)


def peak_kb(directory: Path, unified: bool) -> int | None:
    name = "memory.peak" if unified else "memory.max_usage_in_bytes"
    try:
        return int((directory / name).read_text()) // 1024
    except (OSError, ValueError):
        return None


def oom_killed_in(directory: Path, unified: bool) -> bool:
    events = directory / ("memory.events" if unified else "memory.oom_control")
    try:
        for line in events.read_text().splitlines():
            name, _, value = line.partition(" ")
            if name == "oom_kill" and int(value) > 0:
                return True
    except (OSError, ValueError):
        pass
    return False


def memory_cgroup_of(pid: int) -> Path | None:
    """The memory cgroup folder of a host process (a docker sandbox's), when this process can write its limit."""
    try:
        lines = Path(f"/proc/{pid}/cgroup").read_text().splitlines()
    except OSError:
        return None
    for line in lines:
        _, controllers, path = line.split(":", 2)
        if (UNIFIED and controllers == "") or (not UNIFIED and "memory" in controllers.split(",")):
            directory = CGROUP_ROOT / ("" if UNIFIED else controllers) / path.lstrip("/")
            limit = directory / ("memory.max" if UNIFIED else "memory.limit_in_bytes")
            return directory if os.access(limit, os.W_OK) else None
    return None

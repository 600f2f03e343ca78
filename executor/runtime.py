"""Which runtime the sandboxes really run on: its name, version and gVisor platform.

Read once per worker (from the runsc binary itself, and for the docker backend from dockerd's registered
runtimes), so /readyz and /metrics say what is in use rather than what was meant to be configured.
"""

import functools
import re
import subprocess

PLATFORM_FLAG = re.compile(r"^--platform=(\S+)$")
DEFAULT_PLATFORM = re.compile(r"-platform string\s*\n\s*.*\(default \"(\w+)\"\)")


@functools.cache
def runsc_version(path: str) -> str:
    version = _run(path, "--version").split("\n", 1)[0].removeprefix("runsc version ").strip()
    return version or "unknown"


def describe_docker_runtime(client, runtime: str) -> dict[str, str]:
    """{"runtime", "backend", "version", "platform"} of `runtime` as dockerd runs it; "unknown" where unclear."""
    from docker.errors import DockerException

    try:
        registered = (client.info().get("Runtimes") or {}).get(runtime) or {}
    except DockerException:
        registered = {}
    description = {"runtime": runtime, "backend": "docker", "version": "unknown", "platform": "unknown"}
    if runtime != "runsc":
        description["platform"] = "none (not gVisor)"
        return description
    path = registered.get("path") or runtime
    description["version"] = runsc_version(path)
    chosen = [match.group(1) for match in map(PLATFORM_FLAG.match, registered.get("runtimeArgs") or []) if match]
    if chosen:
        description["platform"] = chosen[-1]
    else:
        default = DEFAULT_PLATFORM.search(_run(path, "flags"))
        description["platform"] = default.group(1) if default else "unknown"
    return description


def _run(*command: str) -> str:
    try:
        completed = subprocess.run(command, capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return ""
    return completed.stdout + completed.stderr

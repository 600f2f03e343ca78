"""Which container runtime the sandboxes really run on: its name, version and gVisor platform.

Read once per worker from dockerd's registered runtimes and the runsc binary itself, so /readyz and
/metrics say what is in use rather than what was meant to be configured.
"""

import re
import subprocess

import docker
from docker.errors import DockerException

PLATFORM_FLAG = re.compile(r"^--platform=(\S+)$")
DEFAULT_PLATFORM = re.compile(r"-platform string\s*\n\s*.*\(default \"(\w+)\"\)")


def describe_runtime(client: docker.DockerClient, runtime: str) -> dict[str, str]:
    """{"runtime", "version", "platform"} of `runtime` as dockerd runs it; "unknown" where it cannot tell."""
    try:
        registered = (client.info().get("Runtimes") or {}).get(runtime) or {}
    except DockerException:
        registered = {}
    path = registered.get("path") or runtime
    args = registered.get("runtimeArgs") or []
    description = {"runtime": runtime, "version": "unknown", "platform": "unknown"}
    if runtime != "runsc":
        description["platform"] = "none (not gVisor)"
        return description
    version = _run(path, "--version").split("\n", 1)[0].removeprefix("runsc version ").strip()
    description["version"] = version or "unknown"
    chosen = [match.group(1) for match in map(PLATFORM_FLAG.match, args) if match]
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

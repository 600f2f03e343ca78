"""The same per-run limit cases against each sandbox backend (issue 30, item 7): `memory_mb` was held on the runsc
backend only, and on the docker one (the backend docker-compose.yml uses) a 64 MB run could take 477 MB."""

import pytest

from executor.config import SandboxConfig
from executor.docker_sandbox import DockerBackend
from executor.runsc_sandbox import RunscBackend
from tests.sandbox_pools import run, warm_pool

BACKENDS = {"runsc": RunscBackend, "docker": DockerBackend}
PYTHON_HOG = ("def main():\n    hog = bytearray(200 * 1024 * 1024)\n"
              "    for i in range(0, len(hog), 4096):\n        hog[i] = 1\n    return len(hog)")
NODE_HOG = ("function main() {\n  const hog = [];\n"
            "  for (let i = 0; i < 60; i++) { const b = Buffer.alloc(8 * 1024 * 1024); b.fill(1); hog.push(b); }\n"
            "  return hog.length;\n}")
PYTHON_FITS = ("def main():\n    room = bytearray(20 * 1024 * 1024)\n"
               "    for i in range(0, len(room), 4096):\n        room[i] = 1\n    return len(room)")


@pytest.fixture(scope="module", params=list(BACKENDS))
def pool(request):
    backend = BACKENDS[request.param]
    pool = warm_pool(lambda site, name: backend(SandboxConfig(backend=request.param, python_preload=""), site, name),
                     f"limits-{request.param}")
    yield pool
    pool.shutdown()


def held_to_its_memory(report) -> bool:
    """Ended by its memory limit: the sandbox killed by its cgroup, or the interpreter's MemoryError."""
    error = (report.result or {}).get("error") or {}
    return report.oom_killed or error.get("type") in ("MemoryError", "RangeError")


@pytest.mark.parametrize(("language", "code"), [("python", PYTHON_HOG), ("nodejs", NODE_HOG)], ids=["python", "node"])
def test_a_run_over_its_memory_mb_is_stopped(pool, language, code):
    report = run(pool, language, code, memory_mb=64, timeout=20)
    assert held_to_its_memory(report), (report.result, report.oom_killed, report.memory_used_kb, report.sandbox_failure)


def test_a_run_within_its_memory_mb_succeeds_and_reports_its_own_peak(pool):
    report = run(pool, "python", PYTHON_FITS, memory_mb=64, timeout=20)
    assert report.result and report.result.get("ok"), report.result
    assert report.memory_used_kb is not None and 20 * 1024 <= report.memory_used_kb < 400 * 1024, report.memory_used_kb

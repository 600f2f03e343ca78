"""gVisor's platforms on this host: the cost of making a sandbox and of syscall-heavy code, ptrace against systrap.

Run as root by hand, on an otherwise idle machine (no stack needed; it makes its own sandboxes):

    .venv/bin/python bench/platforms.py --creations 20 --repeat 5

For each platform: a sandbox's creation (wall time to ready, and the machine's CPU-seconds per sandbox, made one
after another and removed), then workloads in a warm sandbox, timed by the worker's clock (the same one a run's
`execution_time` uses): a trivial main, 100,000 printed lines, 2,000 small files written and read back, 20,000
`os.stat` calls, importing a dozen standard-library modules, numpy imported and a 1,000×1,000 product. Median and
maximum of `--repeat` runs each.
"""

import argparse
import statistics
import sys
import time
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from executor.config import Limits, SandboxConfig  # noqa: E402
from executor.runsc_sandbox import RunscBackend  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
WORKLOADS = {
    "trivial main": "def main():\n    return 1",
    "100,000 printed lines": "def main():\n    for i in range(100000):\n        print(i)\n    return 1",
    "2,000 files written and read": (
        "import os\ndef main():\n    os.makedirs('f', exist_ok=True)\n    for i in range(2000):\n"
        "        open(f'f/{i}', 'w').write('x' * 100)\n"
        "    return sum(len(open(f'f/{i}').read()) for i in range(2000))"),
    "20,000 os.stat": "import os\ndef main():\n    for _ in range(20000):\n        os.stat('/work')\n    return 1",
    "stdlib imports": (
        "def main():\n    import json, decimal, email.parser, http.client, xml.dom.minidom, sqlite3, csv, "
        "statistics, fractions, zipfile, tarfile, difflib\n    return 1"),
    "numpy import and matmul": (
        "import numpy as np\ndef main():\n    a = np.ones((1000, 1000))\n    return float((a @ a)[0, 0])"),
}


def busy_seconds() -> float:
    import os

    fields = [int(value) for value in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    return (sum(fields[:8]) - fields[3] - fields[4]) / os.sysconf("SC_CLK_TCK")


def backend_for(platform: str) -> RunscBackend:
    config = SandboxConfig(python_preload="", runsc_platform=platform,
                           runsc_root=Path(f"/run/sandboxctl/bench-{platform}/runsc"),
                           bundle_dir=Path(f"/run/sandboxctl/bench-{platform}/bundles"))
    backend = RunscBackend(config, f"bench{platform}", f"bench-{uuid.uuid4().hex[:6]}")
    backend.prepare()
    return backend


def creations(backend: RunscBackend, count: int) -> tuple[float, float]:
    """(median seconds to ready, machine CPU-s per sandbox made and removed)."""
    walls = []
    busy = busy_seconds()
    for _ in range(count):
        sandbox = backend.make("python")
        started = time.monotonic()
        sandbox.start()
        walls.append(time.monotonic() - started)
        sandbox.destroy()
    return statistics.median(walls), (busy_seconds() - busy) / count


def workload(backend: RunscBackend, code: str, repeat: int) -> tuple[float, float, str]:
    durations, status = [], "ok"
    for _ in range(repeat):
        sandbox = backend.make("python")
        sandbox.start()
        try:
            report = sandbox.run(code, {}, Limits(timeout=60, memory_mb=512))
        finally:
            sandbox.destroy()
        if not (report.result or {}).get("ok"):
            status = f"failed: {report.sandbox_failure or (report.result or {}).get('error') or report.timed_out}"
        durations.append(report.duration)
    return statistics.median(durations), max(durations), status


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--platforms", nargs="+", default=["ptrace", "systrap"])
    parser.add_argument("--creations", type=int, default=20)
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    rows = {}
    for platform in args.platforms:
        backend = backend_for(platform)
        wall, cpu = creations(backend, args.creations)
        rows[platform] = {"sandbox ready (s)": f"{wall:.3f}", "CPU-s per sandbox": f"{cpu:.3f}"}
        for name, code in WORKLOADS.items():
            median, worst, status = workload(backend, code, args.repeat)
            rows[platform][name] = f"{median:.3f} / {worst:.3f}" + ("" if status == "ok" else f" ({status})")
    names = list(next(iter(rows.values())))
    print(f"\n{'':32}" + "".join(f"{platform:>22}" for platform in rows))
    for name in names:
        print(f"{name:32}" + "".join(f"{rows[platform][name]:>22}" for platform in rows))
    print("(workloads: median / max seconds by the worker's clock)")


if __name__ == "__main__":
    main()

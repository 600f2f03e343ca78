"""What an image's libraries cost on the executor alone (no Django, no broker): the time to make a warm Python
sandbox, and the time a run spends importing numpy, pandas and matplotlib.pyplot inside it, with no preload.

Compare two builds of the image by running this against each tree (the image is the one that tree's
executor/images.py describes, extracted under --rootfs-dir):

    .venv/bin/python bench/image_cost.py --rootfs-dir /var/lib/sandboxctl/rootfs
    PYTHONPATH=/path/to/older/checkout .venv/bin/python bench/image_cost.py --rootfs-dir /var/lib/other/rootfs

The naive baseline of the same run is a run that imports nothing.
"""

import argparse
import json
import statistics
import time
import uuid
from pathlib import Path

from executor.config import KindSize, Limits, PoolConfig, SandboxConfig
from executor.pool import SandboxPool
from executor.runsc_sandbox import RunscBackend

PROGRAMS = {
    "nothing": "",
    "numpy": "import numpy",
    "pandas": "import pandas",
    "numpy+pandas+pyplot": "import numpy, pandas, matplotlib.pyplot",
}
TEMPLATE = "import time\n_t = time.perf_counter()\n{imports}\n_t = time.perf_counter() - _t\ndef main():\n    return _t"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rootfs-dir", type=Path, required=True)
    parser.add_argument("--runs", type=int, default=8)
    args = parser.parse_args()
    site, name = f"bench{uuid.uuid4().hex[:6]}", f"bench-{uuid.uuid4().hex[:6]}#1"
    backend = RunscBackend(SandboxConfig(python_preload="", rootfs_dir=args.rootfs_dir), site, name)
    pool = SandboxPool(backend, PoolConfig(name=name, site=site, size={"python": KindSize(1, 1)}))
    pool.start()
    try:
        created = []
        for _ in range(args.runs):
            started = time.monotonic()
            sandbox = pool.acquire("python", timeout=120)
            created.append(time.monotonic() - started)
            pool.release(sandbox)
        print(f"warm-up of the first sandbox: {pool.warm_up_seconds:.2f}s")
        print(f"{'imports':<22} {'p50 ms':>8} {'max ms':>8}")
        for label, imports in PROGRAMS.items():
            times = []
            for _ in range(args.runs):
                sandbox = pool.acquire("python", timeout=120)
                report = sandbox.run(TEMPLATE.format(imports=imports), {}, Limits(timeout=60))
                pool.release(sandbox)
                times.append(json.loads(report.result["value_json"]))
            print(f"{label:<22} {statistics.median(times) * 1000:>8.1f} {max(times) * 1000:>8.1f}")
    finally:
        pool.shutdown()


if __name__ == "__main__":
    main()

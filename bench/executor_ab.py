"""A/B of the executor alone: trivial Python runs straight on a runsc pool (acquire → run → release), no web,
database or broker, so a change in the sandbox or the runner shows without the rest of the path's noise.

Run as root on an otherwise idle machine, once per checkout to compare (a worktree of the old commit):

    .venv/bin/python bench/executor_ab.py /path/to/old/checkout 60
    .venv/bin/python bench/executor_ab.py . 60

Prints the paced p50 (a warm sandbox is always there), the sequential p50 (each run waits for the next
sandbox), runs per second and the machine's busy CPU-seconds per run. Run each side twice: the sequential
figures move by ±20 ms between runs here.
"""

import os
import statistics
import sys
import time
import uuid

tree = os.path.abspath(sys.argv[1] if len(sys.argv) > 1 else ".")
sys.path.insert(0, tree)
os.chdir(tree)

from executor.config import KindSize, Limits, PoolConfig, SandboxConfig  # noqa: E402
from executor.pool import SandboxPool  # noqa: E402
from executor.runsc_sandbox import RunscBackend  # noqa: E402

TRIVIAL = "def main():\n    return 'hello'"


def busy_ticks() -> int:
    with open("/proc/stat") as stat:
        return sum(map(int, stat.readline().split()[1:4]))


def one(pool: SandboxPool) -> float:
    started = time.monotonic()
    sandbox = pool.acquire("python")
    sandbox.run(TRIVIAL, {}, Limits())
    pool.release(sandbox)
    return (time.monotonic() - started) * 1000


def main() -> None:
    runs = int(sys.argv[2]) if len(sys.argv) > 2 else 60
    name = f"ab-{uuid.uuid4().hex[:6]}#1"
    pool = SandboxPool(RunscBackend(SandboxConfig(python_preload=""), "absite", name),
                       PoolConfig(name=name, site="absite", size={"python": KindSize(2, 4)}))
    pool.start()
    try:
        while pool.depth().get("python", 0) < 2:
            time.sleep(0.05)
        time.sleep(2)
        paced = []
        for _ in range(20):
            paced.append(one(pool))
            time.sleep(1.0)
        before, started = busy_ticks(), time.monotonic()
        sequential = [one(pool) for _ in range(runs)]
        wall, busy = time.monotonic() - started, busy_ticks() - before
    finally:
        pool.shutdown()
    print(f"{tree}: paced p50 {statistics.median(paced):.1f} ms; sequential p50 {statistics.median(sequential):.1f} "
          f"ms, {runs / wall:.2f} runs/s, machine {busy / os.sysconf('SC_CLK_TCK') / runs:.3f} CPU-s per run")


if __name__ == "__main__":
    main()

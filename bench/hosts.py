"""Scale-out cost on one machine: throughput, CPU-seconds per run and each host's idle overhead, with one and
with two worker hosts (`make worker`, each in its own network namespace), against the same web, PostgreSQL and
Redis — the harness of tests/chaos/test_multi_host.py.

On a 2-core machine a second host adds no CPU, so the interesting numbers are what a run costs the machine as a
whole (CPU-seconds from /proc/stat per finished run) and what a host costs while idle (its process group's
CPU-seconds per second: heartbeats, broker polling, pool sweeps). Run as root, by hand:

    .venv/bin/python bench/hosts.py --runs 60
"""

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "sandboxctl.settings")

from chaos.test_multi_host import Deployment  # noqa: E402 - the test's harness, after the path is set

TICKS = os.sysconf("SC_CLK_TCK")


def busy_seconds() -> float:
    fields = [int(value) for value in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    idle = fields[3] + fields[4]
    return (sum(fields[:8]) - idle) / TICKS


def group_cpu_seconds(pgid: int) -> float:
    total = 0
    for entry in Path("/proc").iterdir():
        try:
            if entry.name.isdigit() and os.getpgid(int(entry.name)) == pgid:
                stat = (entry / "stat").read_text().rsplit(")", 1)[1].split()
                total += int(stat[11]) + int(stat[12])
        except (OSError, ProcessLookupError, IndexError):
            continue
    return total / TICKS


def throughput(deployment: Deployment, runs: int) -> tuple[float, float]:
    started, busy = time.monotonic(), busy_seconds()
    ids = deployment.submit(0, runs)
    deployment.wait_finished(ids, timeout=600)
    elapsed = time.monotonic() - started
    return runs / elapsed, (busy_seconds() - busy) / runs


def idle_overhead(deployment: Deployment, host: str, seconds: float = 20) -> float:
    pgid = deployment.processes[host].pid
    before = group_cpu_seconds(pgid)
    time.sleep(seconds)
    return (group_cpu_seconds(pgid) - before) / seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=60)
    args = parser.parse_args()
    import django

    django.setup()
    with tempfile.TemporaryDirectory() as scratch:
        deployment = Deployment(Path(scratch))
        try:
            deployment.start()
            deployment.start_host(1)
            deployment.wait_for_hosts("host-1")
            deployment.wait_finished(deployment.submit(0, 4))  # warm
            one = throughput(deployment, args.runs)
            idle = idle_overhead(deployment, "host-1")
            deployment.start_host(2)
            deployment.wait_for_hosts("host-1", "host-2")
            deployment.wait_finished(deployment.submit(0, 4))
            two = throughput(deployment, args.runs)
        finally:
            deployment.stop()
    print(f"{'hosts':<6} {'runs/s':>8} {'CPU-s per run':>14}")
    print(f"{1:<6} {one[0]:>8.2f} {one[1]:>14.3f}")
    print(f"{2:<6} {two[0]:>8.2f} {two[1]:>14.3f}")
    print(f"idle overhead of one host: {idle * 1000:.1f} ms of CPU per second")


if __name__ == "__main__":
    main()

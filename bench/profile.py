"""Where a trivial run's CPU goes: CPU-seconds per run by program, for the whole machine, through the whole path.

Run by hand against a running `make run` stack on an otherwise idle machine (it reads every process's CPU time):

    SANDBOXCTL_BOOTSTRAP_TOKEN=bench SANDBOX_TENANT_MAX_CONCURRENT=8 make run           # one terminal
    .venv/bin/python bench/profile.py --token bench --runs 200 --concurrency 1 4         # another

For each concurrency it submits `--runs` trivial Python runs (`wait=true`) and reports the machine's busy CPU per
run (from /proc/stat) and its split by program: the web (gunicorn and its uvicorn workers), the sandbox worker
(the Celery process itself), the sandboxes (runsc's sandbox, gofer and command-line processes, which the worker
starts and reaps), the io worker and beat, the broker (redis-server), PostgreSQL when used, and the rest of the
machine (this script, anything else). Processes that live and die within the measurement (every sandbox) are
caught by sampling every 20 ms; what no sample saw (the kernel's own work, the last milliseconds of a process
between its last sample and its exit) is the last line.
"""

import argparse
import os
import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import requests

TICKS = os.sysconf("SC_CLK_TCK")
TRIVIAL = "def main():\n    return 'hello'"


def busy_seconds() -> float:
    fields = [int(value) for value in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    return (sum(fields[:8]) - fields[3] - fields[4]) / TICKS


def read_processes() -> dict[tuple[int, int], tuple[str, int, float, float]]:
    """(pid, start time) → (command line, parent pid, own CPU-s, its reaped children's CPU-s) of every process."""
    found = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            command = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        fields = stat.rsplit(")", 1)[1].split()
        own = (int(fields[11]) + int(fields[12])) / TICKS
        reaped = (int(fields[13]) + int(fields[14])) / TICKS
        found[(int(entry.name), int(fields[19]))] = (command or stat.split("(", 1)[1].split(")")[0],
                                                     int(fields[1]), own, reaped)
    return found


def program_of(command: str) -> str:
    if "runsc" in command:
        if "boot" in command or "runsc-sandbox" in command:
            return "sandboxes: runsc sandbox (the Sentry and the code)"
        if "gofer" in command:
            return "sandboxes: runsc gofer"
        return "sandboxes: runsc command line"
    if "gunicorn" in command or "uvicorn" in command:
        return "web (gunicorn + uvicorn)"
    if "celery" in command and " worker" in command:
        return "io worker" if "-Q control" in command or "callbacks" in command.split("-Q", 1)[-1][:40] else (
            "sandbox worker (Celery process)")
    if "celery" in command and "beat" in command:
        return "beat"
    if "redis-server" in command:
        return "broker (redis-server)"
    if "postgres" in command:
        return "PostgreSQL"
    if "supervisord" in command:
        return "supervisord"
    return "rest of the machine"


class Sampler:
    """Samples every process's CPU time; keeps the highest seen per process, so short-lived ones count too."""

    def __init__(self) -> None:
        self.first = read_processes()
        self.seen: dict[tuple[int, int], tuple[str, int, float, float]] = dict(self.first)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)

    def _loop(self) -> None:
        while not self._stop.wait(0.02):
            self.seen.update(read_processes())

    def __enter__(self) -> "Sampler":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()
        self.seen.update(read_processes())

    def by_program(self) -> Counter:
        used: Counter = Counter()
        for key, (command, _, own, _) in self.seen.items():
            before = self.first.get(key, (command, 0, 0.0, 0.0))[2]
            used[program_of(command)] += own - before
        return used


def one_run(session: requests.Session, url: str) -> str:
    response = session.post(f"{url}/api/v1/executions", json={"language": "python", "code": TRIVIAL}, timeout=120)
    return response.json().get("status", str(response.status_code))


def measure(url: str, token: str, runs: int, concurrency: int) -> None:
    session = requests.Session()
    session.headers["Authorization"] = f"Bearer {token}"
    session.mount("http://", requests.adapters.HTTPAdapter(pool_maxsize=concurrency))
    for _ in range(5):
        one_run(session, url)  # warm: connections, the pool's demand
    busy_before = busy_seconds()
    started = time.monotonic()
    with Sampler() as sampler, ThreadPoolExecutor(concurrency) as pool:
        statuses = Counter(pool.map(lambda _: one_run(session, url), range(runs)))
    elapsed = time.monotonic() - started
    busy = busy_seconds() - busy_before
    used = sampler.by_program()
    print(f"\n{runs} trivial runs at concurrency {concurrency} in {elapsed:.1f}s ({runs / elapsed:.1f}/s): "
          f"{dict(statuses)}")
    print(f"  whole machine: {busy / runs:.3f} CPU-s per run")
    attributed = 0.0
    for program, seconds in sorted(used.items(), key=lambda item: -item[1]):
        if seconds > 0.0005 * runs:
            print(f"  {program:55} {seconds / runs:.3f}")
            attributed += seconds
    print(f"  {'not seen by sampling (kernel, exits between samples)':55} {(busy - attributed) / runs:.3f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--url", default=os.environ.get("SANDBOXCTL_URL", "http://127.0.0.1:8000"))
    parser.add_argument("--token", default=os.environ.get("SANDBOXCTL_TOKEN", ""))
    parser.add_argument("--runs", type=int, default=200)
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 4])
    args = parser.parse_args()
    for concurrency in args.concurrency:
        measure(args.url, args.token, args.runs, concurrency)


if __name__ == "__main__":
    main()

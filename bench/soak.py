"""Soak: thousands of mixed runs against a running `make run` stack, checking it stays up and stays right.

Run by hand (it takes a while) against `make run`'s embedded default (SQLite, the private Redis broker):

    SANDBOXCTL_BOOTSTRAP_TOKEN=soak-token SANDBOX_TENANT_MAX_CONCURRENT=8 make run     # in one terminal
    .venv/bin/python bench/soak.py --token soak-token --runs 400 --concurrency 4 8      # in another

Every run's final status must be the one its code implies (success, exception, timeout, memory limit,
output flood; Python and Node). It reports: runs by kind and status, unexpected statuses, process restarts
seen by supervisord (pids of web, worker, io, beat, broker at start and end), sandboxes left over,
and the resident memory of the web and worker processes at the start and the end, and every failure by its
error code (`pool_exhausted` must never appear on a host that is merely busy). Several concurrencies run one
after the other, each with `--runs` runs.
"""

import argparse
import itertools
import os
import subprocess
import sys
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import requests

ROOT = Path(__file__).resolve().parent.parent
PROGRAMS = ("web", "worker", "io", "beat", "broker")

# kind: (language, code, extra request fields, expected status); weights below set the mix.
KINDS = {
    "py_success": ("python", "def main(n):\n    return sum(range(n))", {"arguments": {"n": 1000}}, "succeeded"),
    "py_exception": ("python", "def main():\n    raise ValueError('soak')", {}, "failed"),
    "py_timeout": ("python", "def main():\n    while True:\n        pass", {"timeout": 1}, "timeout"),
    "py_memory": ("python", "def main():\n    a = []\n    while True:\n        a.append(bytearray(32 << 20))",
                  {"memory_mb": 64}, "memory_limit"),
    "py_flood": ("python", "def main():\n    print('x' * (3 << 20))\n    return 1", {}, "output_limit"),
    "node_success": ("nodejs", "function main(args) { return args.n * 2; }", {"arguments": {"n": 21}}, "succeeded"),
    "node_exception": ("nodejs", "function main() { throw new Error('soak'); }", {}, "failed"),
    "node_timeout": ("nodejs", "function main() { for (;;) {} }", {"timeout": 1}, "timeout"),
    "node_memory": ("nodejs", "function main() { const a = []; for (;;) a.push(new Array(1e6).fill(1.5)); }",
                    {"timeout": 30}, "memory_limit"),
    "node_flood": ("nodejs", "function main() { process.stdout.write('y'.repeat(3 << 20)); return 1; }", {},
                   "output_limit"),
}
WEIGHTS = {"py_success": 8, "py_exception": 3, "py_timeout": 1, "py_memory": 1, "py_flood": 1,
           "node_success": 5, "node_exception": 2, "node_timeout": 1, "node_memory": 1, "node_flood": 1}


def supervisorctl(data_dir: Path, *args: str) -> str:
    command = [str(ROOT / ".venv/bin/supervisorctl"), "-s", f"unix://{data_dir}/supervisor.sock", *args]
    return subprocess.run(command, capture_output=True, text=True, timeout=30).stdout


def pids(data_dir: Path) -> dict[str, str]:
    return {program: supervisorctl(data_dir, "pid", program).strip() for program in PROGRAMS}


def rss_mb(pid: str) -> float:
    """Resident memory of a process and its children (gunicorn's workers, for the web)."""
    total = 0
    for candidate in [pid, *subprocess.run(["pgrep", "-P", pid], capture_output=True, text=True).stdout.split()]:
        try:
            status = Path(f"/proc/{candidate}/status").read_text()
        except OSError:
            continue
        total += next(int(line.split()[1]) for line in status.splitlines() if line.startswith("VmRSS"))
    return total / 1024


def sandboxes(state_dir: str = "/run/sandboxctl/runsc") -> int:
    """Sandboxes on this host, on either backend: runsc's own state entries and dockerd's labelled containers."""
    runsc = {name.split("_sandbox:", 1)[0] for name in os.listdir(state_dir)} if os.path.isdir(state_dir) else set()
    docker = subprocess.run(["docker", "ps", "-aq", "--filter", "label=sandboxctl.pool"], capture_output=True,
                            text=True)
    return len(runsc) + len(docker.stdout.split())


def one_run(session: requests.Session, url: str, kind: str) -> tuple[str, str, str, float]:
    """(kind, status, error code, seconds) of one run."""
    language, code, extra, _ = KINDS[kind]
    started = time.perf_counter()
    code_of_error = ""
    try:
        response = session.post(f"{url}/api/v1/executions", json={"language": language, "code": code, **extra},
                                timeout=180)
        body = response.json()
        status = body.get("status", f"http {response.status_code}")
        code_of_error = (body.get("error") or {}).get("code", "") or body.get("code", "")
    except (requests.RequestException, ValueError) as exc:
        status = f"error {exc.__class__.__name__}"
    return kind, status, code_of_error, time.perf_counter() - started


def soak(session: requests.Session, url: str, runs: int, concurrency: int) -> list[tuple[str, str, str, float]]:
    mix = list(itertools.chain.from_iterable([kind] * weight for kind, weight in WEIGHTS.items()))
    plan = [mix[index % len(mix)] for index in range(runs)]
    started = time.monotonic()
    results = []
    with ThreadPoolExecutor(concurrency) as pool:
        for index, result in enumerate(pool.map(lambda kind: one_run(session, url, kind), plan), 1):
            results.append(result)
            if index % 250 == 0:
                print(f"  {index}/{runs} runs, {time.monotonic() - started:.0f}s", flush=True)
    elapsed = time.monotonic() - started
    by_kind = Counter((kind, status) for kind, status, _, _ in results)
    wrong = Counter((kind, status, error) for kind, status, error, _ in results if status != KINDS[kind][3])
    failures = Counter(error for _, status, error, _ in results if error and status not in ("failed",))
    print(f"\n{len(results)} runs in {elapsed:.0f}s ({len(results) / elapsed:.2f} runs/s) at concurrency {concurrency}")
    for (kind, status), count in sorted(by_kind.items()):
        print(f"  {kind:15} {status:15} {count}")
    print(f"unexpected statuses: {sum(wrong.values())} {dict(wrong) if wrong else ''}")
    print(f"errors by code (user-code failures left out): {dict(failures) or 'none'}; "
          f"pool_exhausted: {failures.get('pool_exhausted', 0)}")
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--url", default="http://127.0.0.1:8000")
    parser.add_argument("--token", required=True)
    parser.add_argument("--data-dir", default=str(ROOT / "data"))
    parser.add_argument("--runs", type=int, default=3000)
    parser.add_argument("--concurrency", type=int, nargs="+", default=[4])
    args = parser.parse_args()
    data_dir = Path(args.data_dir)
    session = requests.Session()
    session.headers["Authorization"] = f"Bearer {args.token}"
    session.mount("http://", requests.adapters.HTTPAdapter(pool_maxsize=max(args.concurrency)))

    before = pids(data_dir)
    memory_before = {program: rss_mb(before[program]) for program in ("web", "worker")}
    wrong = 0
    for concurrency in args.concurrency:
        results = soak(session, args.url, args.runs, concurrency)
        wrong += sum(1 for kind, status, _, _ in results if status != KINDS[kind][3])
    after = pids(data_dir)
    memory_after = {program: rss_mb(after[program]) for program in ("web", "worker")}
    restarted = [program for program in PROGRAMS if before[program] != after[program]]
    print(f"process restarts: {restarted or 'none'} (pids before {before}, after {after})")
    print(f"sandboxes now (warm pool included): {sandboxes()}")
    for program in ("web", "worker"):
        print(f"RSS {program}: {memory_before[program]:.0f} MB at the start, {memory_after[program]:.0f} MB at the end")
    sys.exit(1 if wrong or restarted else 0)


if __name__ == "__main__":
    main()

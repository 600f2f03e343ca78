"""Session latency through the REST API: creating a session, and a trivial cell in a warm session, against the
naive way to keep state without sessions (a one-shot run that replays every earlier cell) in the same run.

Run by hand against a running stack (`make run`):

    SANDBOXCTL_URL=http://127.0.0.1:8000 SANDBOXCTL_TOKEN=... .venv/bin/python bench/sessions.py

Prints: session creation p50/p99 (paced, each session deleted after it opened), a trivial cell paced at
`--rate` per second p50/p99 as the client sees it and as the worker timed it (`execution_time`), and the
baseline: a one-shot run of the same cell after N earlier cells replayed (N = `--history`), paced too.
Targets from the issue: cell p50 <= 20 ms, creation p50 <= 100 ms.
"""

import argparse
import os
import time
from collections import Counter

import requests

TRIVIAL_CELL = "def main(step):\n    global total\n    total = globals().get('total', 0) + step\n    return total"
HISTORY_CELL = "rows = [i * i for i in range(1000)]\n"
TARGETS = {"cell_p50_ms": 20, "creation_p50_ms": 100}
failures: Counter[str] = Counter()


def percentiles(samples: list[float]) -> dict[str, float]:
    ordered = sorted(samples)

    def pick(fraction: float) -> float:
        return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))] * 1000

    return {"p50": pick(0.50), "p99": pick(0.99), "n": len(ordered)}


def paced(call, count: int, rate: float) -> list[float]:
    samples = []
    for _ in range(count):
        started = time.monotonic()
        samples.append(call())
        time.sleep(max(0.0, 1.0 / rate - (time.monotonic() - started)))
    return samples


def timed(request) -> tuple[float, requests.Response]:
    started = time.perf_counter()
    response = request()
    return time.perf_counter() - started, response


def note_failure(response: requests.Response, expected: int) -> None:
    if response.status_code != expected:
        failures[f"{response.status_code} {response.text[:80]}"] += 1


def open_and_delete(http: requests.Session, url: str) -> float:
    elapsed, response = timed(lambda: http.post(f"{url}/api/v1/sessions", json={"language": "python"}, timeout=120))
    note_failure(response, 201)
    if response.status_code == 201:
        http.delete(f"{url}/api/v1/sessions/{response.json()['id']}", timeout=60)
    return elapsed


class CellTimer:
    def __init__(self, http: requests.Session, url: str, session_id: str) -> None:
        self.http, self.url, self.session_id = http, url, session_id
        self.worker_times: list[float] = []

    def __call__(self) -> float:
        elapsed, response = timed(lambda: self.http.post(
            f"{self.url}/api/v1/sessions/{self.session_id}/executions",
            json={"code": TRIVIAL_CELL, "arguments": {"step": 1}, "timeout": 10}, timeout=60))
        note_failure(response, 200)
        if response.status_code == 200 and response.json().get("execution_time") is not None:
            self.worker_times.append(response.json()["execution_time"])
        return elapsed


def replayed_run(http: requests.Session, url: str, history: int) -> float:
    code = HISTORY_CELL * history + TRIVIAL_CELL
    elapsed, response = timed(lambda: http.post(f"{url}/api/v1/executions", json={
        "language": "python", "code": code, "arguments": {"step": 1}, "timeout": 30}, timeout=120))
    note_failure(response, 200)
    return elapsed


def row(name: str, ours: str, naive: str, ratio: str) -> str:
    return f"| {name:<40} | {ours:>20} | {naive:>20} | {ratio:>7} |"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--url", default=os.environ.get("SANDBOXCTL_URL", "http://127.0.0.1:8000"))
    parser.add_argument("--token", default=os.environ.get("SANDBOXCTL_TOKEN", ""))
    parser.add_argument("--cells", type=int, default=300)
    parser.add_argument("--rate", type=float, default=5.0, help="cells per second (paced)")
    parser.add_argument("--creations", type=int, default=30)
    parser.add_argument("--baseline-runs", type=int, default=40)
    parser.add_argument("--history", type=int, default=10)
    args = parser.parse_args()
    http = requests.Session()
    http.headers["Authorization"] = f"Bearer {args.token}"

    created = percentiles(paced(lambda: open_and_delete(http, args.url), args.creations, 0.5))
    opened = http.post(f"{args.url}/api/v1/sessions", json={"language": "python"}, timeout=120)
    opened.raise_for_status()
    session_id = opened.json()["id"]
    try:
        timer = CellTimer(http, args.url, session_id)
        for _ in range(10):
            timer()  # warm the connection and the interpreter
        timer.worker_times.clear()
        cells = percentiles(paced(timer, args.cells, args.rate))
        in_worker = percentiles(timer.worker_times)
    finally:
        http.delete(f"{args.url}/api/v1/sessions/{session_id}", timeout=60)
    baseline = percentiles(paced(lambda: replayed_run(http, args.url, args.history), args.baseline_runs, 1.0))

    print(f"sessions at {args.url}; baseline = one-shot run replaying {args.history} earlier cells")
    print(row("", "session", "one-shot replay", "ratio"))
    print(row("-" * 40, "-" * 20, "-" * 20, "-" * 7))
    print(row(f"trivial cell, paced {args.rate:g}/s, p50 / p99", f"{cells['p50']:.1f} / {cells['p99']:.1f} ms",
              f"{baseline['p50']:.0f} / {baseline['p99']:.0f} ms", f"{cells['p50'] / baseline['p50']:.3f}x"))
    print(row("  of which in the sandbox (worker clock)", f"{in_worker['p50']:.1f} / {in_worker['p99']:.1f} ms",
              "-", "-"))
    print(row("session creation, paced 0.5/s, p50 / p99", f"{created['p50']:.0f} / {created['p99']:.0f} ms", "-",
              "-"))
    print(f"requests that did not succeed: {sum(failures.values())} {dict(failures) if failures else ''}")
    print("targets: " + ", ".join(f"{key} {value}" for key, value in TARGETS.items()))


if __name__ == "__main__":
    main()

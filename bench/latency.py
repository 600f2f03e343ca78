"""Latency and throughput of the real stack through the REST API, against a naive `docker run --rm` baseline.

Run by hand against a running stack (`make run`), for one workload at a time:

    SANDBOXCTL_URL=http://127.0.0.1:8000 SANDBOXCTL_TOKEN=... .venv/bin/python bench/latency.py --workload hello
    ... --workload datascience

`hello` calls a `main()` that returns a string; `datascience` imports numpy, pandas and matplotlib, builds a
1,000-row DataFrame, describes it, saves a line chart to artifacts/chart.png and returns a dict. The naive
baseline runs the same program in `docker run --rm --runtime=runsc` per execution, in the same run. It prints
one table: sequential back to back, paced, concurrency 4 (p50/p99), sustained throughput at concurrency 4,
the pool's warm-up, and every run that did not succeed.
"""

import argparse
import os
import subprocess
import sys
import time
import uuid
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import requests

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

WORKLOADS = {
    "hello": "def main():\n    return 'hello'",
    "datascience": (
        "import numpy as np\n"
        "import pandas as pd\n"
        "import matplotlib.pyplot as plt\n"
        "def main():\n"
        "    df = pd.DataFrame({'x': np.arange(1000), 'y': np.random.default_rng().normal(size=1000).cumsum()})\n"
        "    summary = df.describe()\n"
        "    fig, ax = plt.subplots()\n"
        "    ax.plot(df['x'], df['y'])\n"
        "    fig.savefig('artifacts/chart.png')\n"
        "    return {'rows': len(df), 'mean_y': float(summary.loc['mean', 'y'])}"
    ),
}
TARGETS = {
    "hello": {"paced_p50_ms": 30, "seq_ratio": 0.15, "throughput_ratio": 2.0},
    "datascience": {"paced_p50_ms": 300, "throughput_ratio": 2.5},
}
failures: Counter[str] = Counter()


def percentiles(samples: list[float]) -> dict[str, float]:
    ordered = sorted(samples)

    def pick(fraction: float) -> float:
        return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))] * 1000

    return {"p50": pick(0.50), "p90": pick(0.90), "p99": pick(0.99), "n": len(ordered)}


def api_call(session: requests.Session, url: str, code: str) -> float:
    started = time.perf_counter()
    response = session.post(f"{url}/api/v1/executions", json={"language": "python", "code": code, "timeout": 30},
                            timeout=120)
    elapsed = time.perf_counter() - started
    try:
        body = response.json()
    except ValueError:
        body = {}
    if response.status_code != 200 or body.get("status") != "succeeded":
        failures[f"{response.status_code} {body.get('status')} {(body.get('error') or {}).get('code', '')}"] += 1
    return elapsed


def naive_call(code: str) -> float:
    program = f"import os\nos.makedirs('artifacts', exist_ok=True)\n{code}\nprint(main())"
    started = time.perf_counter()
    subprocess.run(
        ["docker", "run", "--rm", "--runtime=runsc", "--network=none", "--tmpfs", "/work", "-w", "/work",
         "-e", "MPLCONFIGDIR=/tmp/mpl", "sandboxctl-python", "python3", "-c", program],
        check=True, capture_output=True,
    )
    return time.perf_counter() - started


def back_to_back(call, count: int, concurrency: int) -> list[float]:
    if concurrency == 1:
        return [call() for _ in range(count)]
    with ThreadPoolExecutor(concurrency) as pool:
        return list(pool.map(lambda _: call(), range(count)))


def paced(call, count: int, rate: float) -> list[float]:
    """Open loop: one request every 1/rate seconds, the way agents call, below what the pool refills."""
    samples = []
    for _ in range(count):
        started = time.monotonic()
        samples.append(call())
        time.sleep(max(0.0, 1.0 / rate - (time.monotonic() - started)))
    return samples


def sustained(call, seconds: float, concurrency: int) -> float:
    deadline = time.monotonic() + seconds
    done = [0] * concurrency

    def loop(index: int) -> None:
        while time.monotonic() < deadline:
            call()
            done[index] += 1

    started = time.monotonic()
    with ThreadPoolExecutor(concurrency) as pool:
        list(pool.map(loop, range(concurrency)))
    return sum(done) / (time.monotonic() - started)


def pool_warm_up() -> float:
    """Time for a fresh pool of the default sizes to be full, measured with the executor as the worker makes it."""
    import django

    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "sandboxctl.settings")
    django.setup()
    from executor.config import PoolConfig
    from executor.pool import SandboxPool
    from sandboxctl.worker.pool import make_backend, pool_sizes, sandbox_config

    name = f"bench-{uuid.uuid4().hex[:6]}#1"
    config = sandbox_config()
    pool = SandboxPool(make_backend(config, name),
                       PoolConfig(name=name, site="benchsite", size=pool_sizes(("python", "nodejs"), config)))
    pool.start()
    try:
        while pool.warm_up_seconds is None:
            time.sleep(0.05)
        return pool.warm_up_seconds
    finally:
        pool.shutdown()


def table_row(name: str, ours: str, naive: str, ratio: str) -> str:
    return f"| {name:<34} | {ours:>22} | {naive:>22} | {ratio:>8} |"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--url", default=os.environ.get("SANDBOXCTL_URL", "http://127.0.0.1:8000"))
    parser.add_argument("--token", default=os.environ.get("SANDBOXCTL_TOKEN", ""))
    parser.add_argument("--workload", choices=WORKLOADS, default="hello")
    parser.add_argument("--runs", type=int, default=200)
    parser.add_argument("--paced", type=int, default=60, help="requests of the paced run, one per second")
    parser.add_argument("--sustain", type=float, default=60.0)
    parser.add_argument("--naive-runs", type=int, default=20)
    parser.add_argument("--naive-sustain", type=float, default=30.0)
    args = parser.parse_args()
    code = WORKLOADS[args.workload]

    sessions = [requests.Session() for _ in range(4)]
    for item in sessions:
        item.headers["Authorization"] = f"Bearer {args.token}"
    counter = iter(range(10**9))
    call = lambda: api_call(sessions[next(counter) % 4], args.url, code)  # noqa: E731
    for _ in range(5):
        call()  # warm connections and the pool
    failures.clear()

    seq = percentiles(back_to_back(call, args.runs, 1))
    time.sleep(3)  # let the pool refill
    steady = percentiles(paced(call, args.paced, 1.0))
    conc = percentiles(back_to_back(call, args.runs, 4))
    rate = sustained(call, args.sustain, 4)
    warm = pool_warm_up()

    naive = lambda: naive_call(code)  # noqa: E731
    naive_seq = percentiles(back_to_back(naive, args.naive_runs, 1))
    naive_conc = percentiles(back_to_back(naive, args.naive_runs, 4))
    naive_rate = sustained(naive, args.naive_sustain, 4)

    print(f"workload {args.workload}: {args.url}, fresh sandbox per run; naive = docker run --rm --runtime=runsc")
    print(table_row("", "sandboxctl", "naive docker run", "ratio"))
    print(table_row("-" * 34, "-" * 22, "-" * 22, "-" * 8))
    print(table_row("sequential back to back, p50", f"{seq['p50']:.0f} ms", f"{naive_seq['p50']:.0f} ms",
                    f"{seq['p50'] / naive_seq['p50']:.2f}x"))
    print(table_row("paced 1/s, p50 / p99", f"{steady['p50']:.0f} / {steady['p99']:.0f} ms", "-", "-"))
    print(table_row("concurrency 4, p50 / p99", f"{conc['p50']:.0f} / {conc['p99']:.0f} ms",
                    f"{naive_conc['p50']:.0f} / {naive_conc['p99']:.0f} ms", f"{conc['p50'] / naive_conc['p50']:.2f}x"))
    print(table_row("sustained at concurrency 4", f"{rate:.2f} runs/s", f"{naive_rate:.2f} runs/s",
                    f"{rate / naive_rate:.2f}x"))
    print(table_row("pool warm-up (default pool)", f"{warm:.2f} s", "-", "-"))
    print(f"runs that did not succeed: {sum(failures.values())} {dict(failures) if failures else ''}")
    targets = TARGETS[args.workload]
    print("targets: " + ", ".join(f"{key} {value}" for key, value in targets.items()))


if __name__ == "__main__":
    main()

"""Latency and throughput of the real stack through the REST API, against a naive `docker run --rm` baseline.

Run by hand against a running stack (`make run`, or gunicorn + a worker):

    SANDBOXCTL_URL=http://127.0.0.1:8000 SANDBOXCTL_TOKEN=... .venv/bin/python bench/latency.py

It prints p50/p90/p99 sequential and at concurrency 4, sustained runs/s, the pool's warm-up time, and the
same figures for `docker run --rm --runtime=runsc` per execution, with the ratios.
"""

import argparse
import os
import subprocess
import sys
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import requests

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

HELLO = "def main():\n    return 'hello'"
NAIVE = ["python3", "-c", "def main():\n    return 'hello'\nprint(main())"]


def percentiles(samples: list[float]) -> dict[str, float]:
    ordered = sorted(samples)

    def pick(fraction: float) -> float:
        return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))] * 1000

    return {"p50": pick(0.50), "p90": pick(0.90), "p99": pick(0.99), "n": len(ordered)}


def api_call(session: requests.Session, url: str) -> float:
    started = time.perf_counter()
    response = session.post(f"{url}/api/v1/executions", json={"language": "python", "code": HELLO}, timeout=60)
    elapsed = time.perf_counter() - started
    body = response.json()
    if response.status_code != 200 or body.get("status") != "succeeded":
        raise RuntimeError(f"run failed: {response.status_code} {body}")
    return elapsed


def naive_call(_: object = None) -> float:
    started = time.perf_counter()
    subprocess.run(
        ["docker", "run", "--rm", "--runtime=runsc", "--network=none", "sandboxctl-python", *NAIVE],
        check=True, capture_output=True,
    )
    return time.perf_counter() - started


def measure(call, count: int, concurrency: int) -> list[float]:
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
    """Time for a fresh pool of the default size to be full, measured with the executor itself."""
    import docker

    from executor.config import PoolConfig, SandboxConfig
    from executor.pool import SandboxPool

    pool = SandboxPool(docker.from_env(), SandboxConfig(), PoolConfig(name=f"bench-{uuid.uuid4().hex[:6]}"))
    pool.start()
    try:
        while pool.warm_up_seconds is None:
            time.sleep(0.05)
        return pool.warm_up_seconds
    finally:
        pool.shutdown()


def row(name: str, stats: dict) -> str:
    figures = "  ".join(f"{key} {stats[key]:8.1f} ms" for key in ("p50", "p90", "p99"))
    return f"  {name:<34} {figures}  (n={stats['n']})"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--url", default=os.environ.get("SANDBOXCTL_URL", "http://127.0.0.1:8000"))
    parser.add_argument("--token", default=os.environ.get("SANDBOXCTL_TOKEN", ""))
    parser.add_argument("--runs", type=int, default=200)
    parser.add_argument("--sustain", type=float, default=60.0)
    parser.add_argument("--paced-rate", type=float, default=2.0, help="requests/s of the paced run")
    parser.add_argument("--naive-runs", type=int, default=20)
    parser.add_argument("--naive-sustain", type=float, default=20.0)
    args = parser.parse_args()

    session = requests.Session()
    session.headers["Authorization"] = f"Bearer {args.token}"
    call = lambda: api_call(session, args.url)  # noqa: E731
    for _ in range(5):
        call()  # warm connections and the pool

    print("sandboxctl (REST API, warm runsc pool, fresh sandbox per run)")
    seq = percentiles(measure(call, args.runs, 1))
    print(row("sequential, back to back", seq))
    time.sleep(3)  # let the pool refill
    steady = percentiles(paced(call, args.runs // 2, args.paced_rate))
    print(row(f"sequential, paced at {args.paced_rate:g}/s", steady))
    # One session per thread: requests.Session is not meant to be shared across threads.
    sessions = [requests.Session() for _ in range(4)]
    for item in sessions:
        item.headers["Authorization"] = f"Bearer {args.token}"
    counter = iter(range(10**9))
    conc_call = lambda: api_call(sessions[next(counter) % 4], args.url)  # noqa: E731
    conc = percentiles(measure(conc_call, args.runs, 4))
    print(row("concurrency 4, back to back", conc))
    rate = sustained(conc_call, args.sustain, 4)
    print(f"  sustained over {args.sustain:.0f}s at concurrency 4: {rate:.2f} runs/s")
    warm = pool_warm_up()
    print(f"  pool warm-up (default size, from empty): {warm:.2f} s")

    print("naive baseline (docker run --rm --runtime=runsc per execution)")
    naive_seq = percentiles(measure(naive_call, args.naive_runs, 1))
    print(row("sequential", naive_seq))
    naive_conc = percentiles(measure(naive_call, args.naive_runs, 4))
    print(row("concurrency 4", naive_conc))
    naive_rate = sustained(naive_call, args.naive_sustain, 4)
    print(f"  sustained over {args.naive_sustain:.0f}s at concurrency 4: {naive_rate:.2f} runs/s")

    print("ratios (baseline / sandboxctl)")
    print(f"  p50 sequential {naive_seq['p50'] / seq['p50']:.1f}x (paced {naive_seq['p50'] / steady['p50']:.1f}x), "
          f"p50 concurrency 4 "
          f"{naive_conc['p50'] / conc['p50']:.1f}x, throughput {rate / naive_rate:.1f}x")


if __name__ == "__main__":
    main()

"""What the image's libraries cost a run: the time to import them inside a sandbox, and the end-to-end latency
of a run that uses them, through the REST API of a running stack.

Run by hand against a stack started with no preload, so each run pays its own imports:

    SANDBOX_PYTHON_PRELOAD= make run   # in another terminal
    SANDBOXCTL_URL=http://127.0.0.1:8000 SANDBOXCTL_TOKEN=... .venv/bin/python bench/imports.py

and again against a default stack (imports restored from the preloaded snapshot). Compare two image builds by
running it against each. The naive baseline of the same run is the import of nothing (`hello`).
"""

import argparse
import os
import statistics
import time

import requests

IMPORTS = {
    "hello": "",
    "numpy": "import numpy",
    "pandas": "import pandas",
    "datascience": "import numpy, pandas, matplotlib.pyplot",
}
TEMPLATE = (
    "import time\n"
    "_started = time.perf_counter()\n"
    "{imports}\n"
    "_imported = time.perf_counter() - _started\n"
    "def main():\n"
    "    return {{'import_s': _imported}}"
)


def measure(session: requests.Session, url: str, imports: str, runs: int) -> tuple[list[float], list[float]]:
    import_times, latencies = [], []
    for _ in range(runs):
        started = time.perf_counter()
        response = session.post(f"{url}/api/v1/executions", timeout=120, json={
            "language": "python", "code": TEMPLATE.format(imports=imports), "wait": True})
        latencies.append(time.perf_counter() - started)
        body = response.json()
        if body.get("status") != "succeeded":
            raise SystemExit(f"run failed: {body}")
        import_times.append(body["result"]["value"]["import_s"])
        time.sleep(0.5)  # paced: the pool refills between runs, so this measures a warm start
    return import_times, latencies


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=15)
    args = parser.parse_args()
    url = os.environ.get("SANDBOXCTL_URL", "http://127.0.0.1:8000")
    session = requests.Session()
    session.headers["Authorization"] = f"Bearer {os.environ['SANDBOXCTL_TOKEN']}"
    print(f"{'imports':<12} {'import p50 ms':>14} {'latency p50 ms':>15} {'latency p90 ms':>15}")
    for name, imports in IMPORTS.items():
        import_times, latencies = measure(session, url, imports, args.runs)
        ordered = sorted(latencies)
        print(f"{name:<12} {statistics.median(import_times) * 1000:>14.1f} {statistics.median(latencies) * 1000:>15.1f}"
              f" {ordered[int(0.9 * len(ordered))] * 1000:>15.1f}")


if __name__ == "__main__":
    main()

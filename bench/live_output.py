"""How long a line the code prints takes to reach a client of GET /api/v1/executions/{id}/events.

    python bench/live_output.py --url http://localhost:8000 --token … [--lines 20] [--every 0.5]

One run prints a wall-clock time stamp every `--every` seconds; the client notes when each line arrives
(sandboxctl.client.stream) and prints the delay's median, 90th percentile and maximum. gVisor's clock is the
host's, so the stamps compare with the client's clock when both are on one host.
"""

import argparse
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import requests  # noqa: E402

from sandboxctl.client import stream  # noqa: E402

CODE = """
import time
for _ in range({lines}):
    print(repr(time.time()), flush=True)
    time.sleep({every})
"""


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--url", default="http://localhost:8000")
    parser.add_argument("--token", required=True)
    parser.add_argument("--lines", type=int, default=20)
    parser.add_argument("--every", type=float, default=0.5)
    args = parser.parse_args()
    body = {"language": "python", "code": CODE.format(lines=args.lines, every=args.every), "wait": False,
            "timeout": args.lines * args.every + 10}
    run = requests.post(f"{args.url}/api/v1/executions", json=body, timeout=60,
                        headers={"Authorization": f"Bearer {args.token}"}).json()
    delays = []
    for event, data in stream(run["id"], base_url=args.url, token=args.token):
        arrived = time.time()
        if event == "stdout":
            delays += [(arrived - float(line)) * 1000 for line in data["text"].split()]
        elif event == "execution":
            print(f"run {run['id']}: {data['status']}")
    delays.sort()
    print(f"{len(delays)} lines: median {statistics.median(delays):.1f} ms, "
          f"p90 {delays[int(len(delays) * 0.9) - 1]:.1f} ms, max {delays[-1]:.1f} ms")


if __name__ == "__main__":
    main()

"""What a SaaS session adds of its own: a trivial cell in an E2B session against a one-shot E2B run of the same
code, in the same run, both through the real SDK against the local fake of E2B's wire protocol (tests/fakes),
which runs each execution as a fresh process. The service's own latency is not in it: this measures our side
(the call driver, the host, the runner) and what a session saves (no sandbox made per step).

    .venv/bin/python bench/saas_sessions.py [--runs 30]

Needs the settings' environment (SECRET_KEY, DATABASE_URL) only to load Django's settings; touches no database.
"""

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "sandboxctl.settings")

import django  # noqa: E402

django.setup()

from conftest import e2b_settings  # noqa: E402
from executor.config import FileLimits  # noqa: E402
from providers.base import Limits, SessionTimes  # noqa: E402
from providers.registry import provider_class  # noqa: E402
from tests.fakes.e2b import FakeE2B  # noqa: E402

CODE = "def main(step):\n    return step"
LIMITS = Limits(timeout=5, memory_mb=256, output_limit=65536)


def timed_calls(call, runs: int) -> list[float]:
    elapsed = []
    for step in range(runs):
        started = time.monotonic()
        result = call(step)
        elapsed.append(time.monotonic() - started)
        assert result.result_value == step, result
    return elapsed


def summary(samples: list[float]) -> str:
    return f"p50 {statistics.median(samples) * 1000:6.1f} ms   max {max(samples) * 1000:6.1f} ms"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", type=int, default=30)
    args = parser.parse_args()
    fake = FakeE2B("e2b_test_key_0001")
    provider = provider_class("e2b")()
    provider.initialize(e2b_settings(fake.url))
    try:
        session = provider.open_session("python", LIMITS, [], FileLimits(1 << 20, 1 << 22), session_id="bench",
                                        times=SessionTimes(max_lifetime=600, idle_timeout=120))
        try:
            cells = timed_calls(lambda step: session.run(CODE, {"step": step}, LIMITS), args.runs)
        finally:
            session.close("benchmark over")
        one_shots = timed_calls(lambda step: provider.run(CODE, "python", LIMITS, {"step": step}), args.runs)
    finally:
        fake.stop()
    print(f"cell in a session   {summary(cells)}")
    print(f"one-shot run        {summary(one_shots)}")
    print(f"ratio (p50)         {statistics.median(cells) / statistics.median(one_shots):.2f}x")


if __name__ == "__main__":
    main()

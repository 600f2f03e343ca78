"""Restored data-science sandboxes do not share what a reseed cannot change: each restore comes from one of
several snapshots made by separate interpreter starts, in turn, so the string-hash seed and the address
layout differ between consecutive runs (random generators are reseeded too: test_cross_run.py)."""

import os
import time
from pathlib import Path

import pytest

from conftest import WORKER_NAME, latest_beat

PRELOADED = "python-preloaded"
PROBE = (
    "import ctypes\n"
    "import numpy as np\n"
    "def main():\n"
    "    return {'hash': hash('abcdef'), 'object': id(object()), 'array': int(np.zeros(4).ctypes.data),\n"
    "            'libc': ctypes.cast(ctypes.CDLL(None).printf, ctypes.c_void_p).value}"
)


def wait_for_variants(count: int = 3, timeout: float = 300) -> None:
    folder = Path(os.environ.get("SANDBOX_SNAPSHOT_DIR", "/var/lib/sandboxctl/snapshots"))
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if len(list(folder.glob("*-[0-9]/complete"))) >= count:
            return
        time.sleep(2)
    pytest.fail(f"{count} snapshot variants were not made in {folder} within {timeout}s")


def test_consecutive_restored_runs_differ_in_hash_seed_and_layout(api):
    wait_for_variants()
    # Sandboxes made before every variant existed may be warm already: use them up first.
    beat = latest_beat(WORKER_NAME)
    for _ in range((beat.pool_depth.get(PRELOADED, 0) if beat else 0) + 1):
        api.run(PROBE, timeout=30)
    runs = [api.run(PROBE, timeout=30) for _ in range(3)]
    assert all(run["status"] == "succeeded" for run in runs), runs
    values = [run["result"]["value"] for run in runs]
    for field in ("hash", "object", "array", "libc"):
        assert len({value[field] for value in values}) == 3, (field, values)

"""A warm pool of one backend's sandboxes for the executor-level tests, and one run on it."""

import time
import uuid

from executor.config import KindSize, Limits, PoolConfig
from executor.pool import SandboxPool


def warm_pool(make_backend, label: str, nodejs_max: int = 2, timeout: float = 90) -> SandboxPool:
    """A started pool of one Python and one Node.js sandbox; `make_backend(site, name)` builds its backend."""
    site, name = f"site-{uuid.uuid4().hex[:8]}", f"{label}#{uuid.uuid4().hex[:6]}"
    pool = SandboxPool(make_backend(site, name), PoolConfig(name=name, site=site, size={
        "python": KindSize(1, 2), "nodejs": KindSize(1, nodejs_max)}))
    pool.start()
    deadline = time.monotonic() + timeout
    while pool.depth() != {"python": 1, "nodejs": 1}:
        assert time.monotonic() < deadline, f"the {label} pool did not warm up"
        time.sleep(0.1)
    return pool


def run(pool: SandboxPool, language: str, code: str, **limits):
    sandbox = pool.acquire(language)
    try:
        return sandbox.run(code, {}, Limits(**limits))
    finally:
        pool.release(sandbox)

"""A snapshot of a warmed Python sandbox, so data-science runs start with numpy, pandas and matplotlib imported.

`import numpy, pandas` alone takes 1.6 s under gVisor. Once per image version (and runsc version, platform
and sandbox settings) a sandbox is started with the preload list imported, checkpointed while its
supervisor waits for a job, and kept on disk; every sandbox of the preloaded kind is then *restored* from
it (about 0.4 CPU-s here), already past the imports.

A restore is a clone: each comes back with the same memory, so every pseudo-random generator seeded
before the snapshot would repeat its numbers; the runner reseeds them when the job arrives (child.py), and
the run's key is sent only then. Nothing secret is in a snapshot: it is taken before any job exists.
"""

import hashlib
import json
import logging
import shutil
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

from executor.images import content_hash
from executor.runtime import runsc_version

log = logging.getLogger(__name__)

READY_MARK = "complete"


class Snapshots:
    """The backend hands in what the snapshot needs of it — the preloaded sandbox's OCI spec and a way to make
    one — so this module needs nothing of runsc_sandbox (which uses it)."""

    def __init__(self, backend, spec_template: Callable[[], dict], make_sandbox: Callable[[], Any]) -> None:
        self.backend = backend
        self.config = backend.config
        self.spec_template = spec_template
        self.make_sandbox = make_sandbox
        self._ready = threading.Event()
        self._failed: str | None = None
        self._thread: threading.Thread | None = None

    def key(self) -> str:
        config = self.config
        template = self.spec_template()
        recipe = json.dumps({
            "image": content_hash("python"), "runsc": runsc_version(config.runsc_path),
            "platform": config.runsc_platform, "spec": template, "preload": config.python_preload,
        }, sort_keys=True)
        return hashlib.sha256(recipe.encode()).hexdigest()[:16]

    def path(self) -> Path:
        return self.config.snapshot_dir / self.key()

    def ready(self) -> bool:
        return self._ready.is_set()

    def failure(self) -> str | None:
        return self._failed

    def build_in_background(self) -> None:
        if (self.path() / READY_MARK).exists():
            self._ready.set()
            return
        self._thread = threading.Thread(target=self._build, name="snapshot-builder", daemon=True)
        self._thread.start()

    def wait(self, timeout: float) -> bool:
        return self._ready.wait(timeout)

    def _build(self) -> None:
        try:
            self.build()
            self._ready.set()
        except Exception as exc:  # noqa: BLE001 - without a snapshot, data-science runs start fresh instead
            self._failed = str(exc)[:300]
            log.warning("no snapshot of a preloaded interpreter (data-science runs start fresh): %s", exc)

    def build(self) -> Path:
        """Start a sandbox with the preload list imported, checkpoint it, keep the image; returns its folder."""
        target = self.path()
        if (target / READY_MARK).exists():
            return target
        target.parent.mkdir(parents=True, exist_ok=True)
        target.parent.chmod(0o700)
        partial = target.with_name(target.name + ".partial")
        shutil.rmtree(partial, ignore_errors=True)
        sandbox = self.make_sandbox()
        try:
            sandbox.start()
            completed = self.backend.cli("checkpoint", "--image-path", str(partial), "--compression", "none",
                                         sandbox.id)
            if completed is None or completed.returncode != 0:
                raise RuntimeError(f"runsc checkpoint failed: {(completed.stderr if completed else '')[-300:]}")
        finally:
            sandbox.destroy()
        (partial / READY_MARK).write_text("")
        shutil.rmtree(target, ignore_errors=True)
        partial.rename(target)
        log.info("snapshot of a preloaded interpreter ready in %s", target)
        return target

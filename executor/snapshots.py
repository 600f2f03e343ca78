"""A snapshot of a warmed Python sandbox, so data-science runs start with numpy, pandas and matplotlib imported.

`import numpy, pandas` alone takes 1.6 s under gVisor. Once per image version (and runsc version, platform
and sandbox settings) a sandbox is started with the preload list imported, checkpointed while its
supervisor waits for a job, and kept on disk; every sandbox of the preloaded kind is then *restored* from
it (about 0.4 CPU-s here), already past the imports.

A restore is a clone: each comes back with the same memory, so every pseudo-random generator seeded
before the snapshot would repeat its numbers; the runner reseeds them when the job arrives (child.py), and
the run's key is sent only then. Nothing secret is in a snapshot: it is taken before any job exists.

What cannot be reseeded — the string-hash seed, the address-space layout of every process, object
addresses — differs between interpreter starts only. So several snapshots (`snapshot_variants`, 3 by
default) are made, each from its own start, and restores rotate through them: consecutive restores never
share a hash seed or a layout. Each costs one more sandbox start with the imports and a checkpoint
(~69 MB on disk, 6-9 s of wall time each on this shared 2-core host), paid once per image version in the
background; re-making a snapshot every N restores instead would pay that again and again on the serving
host. What still repeats within a variant is written in the README's threat model.
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
        self._built: list[Path] = []
        self._turn = 0
        self._lock = threading.Lock()

    def key(self) -> str:
        config = self.config
        template = self.spec_template()
        recipe = json.dumps({
            "image": content_hash("python"), "runsc": runsc_version(config.runsc_path),
            "platform": config.runsc_platform, "spec": template, "preload": config.python_preload,
        }, sort_keys=True)
        return hashlib.sha256(recipe.encode()).hexdigest()[:16]

    def variants(self) -> list[Path]:
        key = self.key()
        return [self.config.snapshot_dir / f"{key}-{index}" for index in range(max(1, self.config.snapshot_variants))]

    def path(self) -> Path:
        """The snapshot the next restore comes from: the built variants in turn."""
        with self._lock:
            chosen = self._built[self._turn % len(self._built)]
            self._turn += 1
            return chosen

    def ready(self) -> bool:
        return self._ready.is_set()

    def failure(self) -> str | None:
        return self._failed

    def build_in_background(self) -> None:
        missing = []
        for variant in self.variants():
            if (variant / READY_MARK).exists():
                self._add(variant)
            else:
                missing.append(variant)
        if missing:
            self._thread = threading.Thread(target=self._build, args=(missing,), name="snapshot-builder",
                                            daemon=True)
            self._thread.start()

    def _add(self, variant: Path) -> None:
        with self._lock:
            self._built.append(variant)
        self._ready.set()

    def wait(self, timeout: float) -> bool:
        return self._ready.wait(timeout)

    def _build(self, missing: list[Path]) -> None:
        for variant in missing:
            try:
                self._add(self.build(variant))
            except Exception as exc:  # noqa: BLE001 - without a snapshot, data-science runs start fresh instead
                self._failed = str(exc)[:300]
                log.warning("no snapshot of a preloaded interpreter (data-science runs start fresh): %s", exc)
                return

    def build(self, target: Path) -> Path:
        """Start a sandbox with the preload list imported, checkpoint it, keep the image; returns its folder."""
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

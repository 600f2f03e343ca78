"""The worker's side of the exchange with a sandbox (executor/sandbox.py), on a scripted transport (no sandbox):
what it concludes from what it reads."""

import json
import time

from executor.config import Limits, SandboxConfig
from executor.protocol import CELL, DONE, OPEN, STDOUT, encode_frame
from executor.runner.wire import HEADER
from executor.sandbox import SILENCE_CHECK, ExitState, Sandbox

DONE_BODY = {"exit_code": 0, "result": {"ok": True, "value_json": "42"}, "artifacts": [], "rejected_artifacts": []}
OPENED = {"ready": True, "files": []}


class Scripted(Sandbox):
    """A sandbox that answers its opening at once, then its cell with `frames` after `quiet` seconds of silence,
    exiting as it writes them: the race a real sandbox can win between a silence check and the read of its last
    frames."""

    def __init__(self, quiet: float, frames) -> None:
        super().__init__("python", SandboxConfig())
        self.quiet, self.frames, self.exited = quiet, frames, False
        self.key = None
        self.pending: list[bytes] = []
        self.answered_at = None

    @property
    def id(self) -> str:
        return "scripted"

    def _send(self, data: bytes) -> None:
        kind, size = HEADER.unpack_from(data)
        if kind == OPEN:
            self.key = bytes.fromhex(json.loads(data[HEADER.size:HEADER.size + size])["key"])
            self.pending = [encode_frame(DONE, json.dumps(OPENED).encode(), self.key, 0)]
            return
        assert kind == CELL
        self.answered_at = time.monotonic() + self.quiet

    def _recv(self, timeout: float):
        if not self.exited and self.pending:
            return self.pending.pop(0)
        if not self.exited and time.monotonic() + timeout >= self.answered_at:
            time.sleep(max(0.0, self.answered_at - time.monotonic()))
            # It writes its last frames and exits — but this read reports nothing, as a select that timed
            # out an instant before the bytes arrived would.
            self.pending = [b"".join(frame(self.key, number) for number, frame in enumerate(self.frames, 1)), b""]
            self.exited = True
            return None
        if self.exited:
            return self.pending.pop(0) if self.pending else b""
        time.sleep(timeout)
        return None

    def _exit_state(self, exited: bool) -> ExitState:
        if not self.exited:
            return ExitState(running=True)
        return ExitState(running=False, failure="sandbox exited unexpectedly (exit code 0)")

    def kill(self) -> None:
        self.exited = True


def test_a_report_written_just_before_the_sandbox_exited_is_read_not_lost():
    frames = [lambda key, n: encode_frame(STDOUT, b"hi\n", key, n),
              lambda key, n: encode_frame(DONE, json.dumps(DONE_BODY).encode(), key, n)]
    report = Scripted(quiet=SILENCE_CHECK + 0.05, frames=frames).run("", {}, Limits(timeout=5, memory_mb=64,
                                                                                       output_limit=1024))
    assert report.sandbox_failure is None, report.sandbox_failure
    assert report.stdout == b"hi\n" and report.result == {"ok": True, "value_json": "42"}


def test_a_sandbox_that_ended_without_a_report_is_still_a_sandbox_failure():
    frames = [lambda key, n: encode_frame(STDOUT, b"partial\n", key, n)]
    report = Scripted(quiet=SILENCE_CHECK + 0.05, frames=frames).run("", {}, Limits(timeout=5, memory_mb=64,
                                                                                       output_limit=1024))
    assert report.sandbox_failure == "sandbox exited unexpectedly (exit code 0)"
    assert report.stdout == b"partial\n"


class OneRead(Scripted):
    """A fast sandbox: the opening's DONE and the whole answer of the cell arrive in a single read, after which
    it has exited."""

    def _send(self, data: bytes) -> None:
        kind, size = HEADER.unpack_from(data)
        if kind == OPEN:
            self.key = bytes.fromhex(json.loads(data[HEADER.size:HEADER.size + size])["key"])
            return
        opened = encode_frame(DONE, json.dumps(OPENED).encode(), self.key, 0)
        self.pending = [opened + b"".join(frame(self.key, n) for n, frame in enumerate(self.frames, 1)), b""]
        self.exited = True


def test_a_cell_answered_in_the_same_read_as_the_opening_is_not_lost():
    frames = [lambda key, n: encode_frame(STDOUT, b"fast\n", key, n),
              lambda key, n: encode_frame(DONE, json.dumps(DONE_BODY).encode(), key, n)]
    report = OneRead(quiet=0, frames=frames).run("", {}, Limits(timeout=5, memory_mb=64, output_limit=1024))
    assert report.sandbox_failure is None, report.sandbox_failure
    assert report.stdout == b"fast\n" and report.result == {"ok": True, "value_json": "42"}

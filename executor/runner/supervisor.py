"""In-sandbox supervisor: the sandbox's entrypoint and PID 1.

It starts the language child and the file keeper before any request exists (so the interpreter is already
warm), tells the host it is ready, and waits to be opened. Every sandbox is then served the same way:

    OPEN    the key, the memory limit, the output and artifact caps, the input files (written by the keeper),
            and whether anything is kept after the first cell (a one-shot run keeps nothing)
    CELL    code and arguments, run by the child (relay.py); output streamed back in frames (capped); one DONE
            with what was measured, the outcome and the artifacts the cell wrote
    FILE    one request to the keeper (workfiles.py): put, get, list, delete

each answered with one DONE, in order. A one-shot run is an opening and one cell; a session is an opening
and cells and file requests until the host closes our input or a cell leaves the interpreter unable to go on.

Two walls keep user code from speaking for the supervisor:
- uids: the supervisor is root of the sandbox with only SETUID, SETGID and KILL (it keeps only KILL after
  the forks); the child and the keeper are nobody (65534) with no capabilities under a seccomp filter
  (confine.py), so they cannot open /proc/1/fd/*, /proc/1/mem or the supervisor's pipes;
- a MAC: the opening carries a fresh key, sent after the child exists and never given to it; every frame
  after it carries an HMAC over a sequence number that runs on across the sandbox's life, its type and
  payload (wire.py). A frame the host cannot verify ends the sandbox as a protocol violation.

Nothing the child reports about itself is used as a measurement: time is the host's clock, memory the
sandbox's cgroup as the host reads it (or, without one, what this process reads of its children), and the
deadline is kept here and by the host. This file runs inside the sandbox image with only the standard
library; it must not import the project. Its parts: channel.py (frames), processes.py (the child, the
keeper, the user's processes), relay.py (one cell), artifacts.py (what a cell saved).
"""

import json
import os
import signal
import sys
import time

RUNNER_DIR = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, RUNNER_DIR)  # -I leaves the script's folder off the path; the runner's own modules are here

from artifacts import collect_artifacts  # noqa: E402
from channel import Channel, close_input, read_frame, wait_for_opening  # noqa: E402
import egress_relay  # noqa: E402
from confine import keep_only_capabilities  # noqa: E402
from processes import (  # noqa: E402
    Keeper,
    end_strays,
    kill_all_but_this,
    peak_resident_kb,
    reap_all,
    reaped_peak_kb,
    start_child,
)
from relay import Interpreter, Stream, run_cell  # noqa: E402
from wire import CELL, DONE, FILE, INTERRUPT_GRACE, READY, STDERR, STDOUT  # noqa: E402

CAP_KILL = 5


class InputFileError(Exception):
    pass


def wait_ready(interpreter: Interpreter) -> None:
    if os.read(interpreter.results, 1) != b"R":
        os.set_blocking(interpreter.stderr, False)
        try:
            reason = os.read(interpreter.stderr, 4096)
        except BlockingIOError:
            reason = b""
        raise RuntimeError(f"language child exited before it was ready: {reason.decode(errors='replace')}")


def write_input_files(keeper: Keeper, files: list[dict], limits: dict) -> list[dict]:
    """Write the opening's files into the working folder through the keeper; returns what it wrote."""
    written = []
    for entry in files:
        answer = keeper.ask({"op": "put", "path": entry.get("path"), "content_b64": entry.get("content_b64", ""),
                             "max_total_bytes": limits.get("max_total_bytes")})
        if not answer.get("ok"):
            raise InputFileError(f"{entry.get('path')!r}: {answer.get('message')}")
        written.append({"path": answer["path"], "size": answer["size"]})
    return written


class Served:
    """The sandbox once opened: its child, its keeper, what the opening set, and the host's channel."""

    def __init__(self, channel: Channel, interpreter: Interpreter, keeper: Keeper, opening: dict) -> None:
        self.channel = channel
        self.interpreter = interpreter
        self.keeper = keeper
        self.opening = opening
        self.keep = opening.get("keep", True) is not False

    def serve(self) -> None:
        """Answer the opening, then every request, until the sandbox cannot or need not go on."""
        self.interpreter.send({"memory_limit_bytes": self.opening["payload"]["memory_limit_bytes"],
                               "keep": self.keep})
        try:
            files = write_input_files(self.keeper, self.opening.get("files") or [],
                                      self.opening.get("file_limits") or {})
        except InputFileError as exc:
            self.answer({"ready": False, "reason": str(exc)[:2000]})
            return
        self.answer({"ready": True, "files": files})
        while True:
            frame = read_frame()
            if frame is None:
                return
            kind, body = frame
            if kind == CELL:
                if not self.keep:
                    close_input()  # a one-shot run's last request has come
                report = self.cell(json.loads(body))
                self.answer(report)
                if report["session_over"] or not self.keep:
                    return
            elif kind == FILE:
                self.answer(self.keeper.ask(json.loads(body)))
            else:
                return

    def answer(self, report: dict) -> None:
        self.channel.send(DONE, json.dumps(report).encode())

    def cell(self, request: dict) -> dict:
        started_wall = time.time()
        cap = min(self.opening["output_limit"], int(request.get("output_limit") or self.opening["output_limit"]))
        interpreter = self.interpreter
        streams = {interpreter.stdout: Stream(self.channel.send, STDOUT, cap),
                   interpreter.stderr: Stream(self.channel.send, STDERR, cap)}
        # A session's cell past its timeout is interrupted and may keep the session; a one-shot run just ends.
        grace = INTERRUPT_GRACE if self.keep else 0.0
        # A cell with an allowlist gets its egress relay before its code runs (egress_relay.py); it ends with the
        # cell's other processes.
        problem = egress_relay.start_for(request.get("egress"))
        if problem:
            streams[interpreter.stderr].feed(problem.encode())
        outcome, timed_out, over = run_cell(interpreter, request, float(request["timeout"]), grace, streams)
        if over or not self.keep:
            memory = self.end_every_user_process()
        else:
            memory = peak_resident_kb(interpreter.pid)
            end_strays({interpreter.pid, self.keeper.pid})
        # Only what this cell wrote is its artifacts (not an input file, not an earlier cell's).
        artifacts, rejected, artifacts_error = collect_artifacts(self.opening["artifacts"], since=started_wall)
        if outcome is not None:
            exit_code = 0 if outcome.get("ok") is True else 1
        else:
            exit_code = interpreter.exit_code() if not timed_out else None
        return {
            "timed_out": timed_out,
            "exit_code": exit_code,
            "memory_used_kb": memory,
            "stdout_truncated": streams[interpreter.stdout].truncated,
            "stderr_truncated": streams[interpreter.stderr].truncated,
            "result": None if timed_out and outcome is None else outcome,
            "artifacts": artifacts,
            "rejected_artifacts": rejected,
            "artifacts_error": artifacts_error,
            "session_over": over,
        }

    def end_every_user_process(self) -> int:
        """Kill the child, the keeper and all they started, reap them all; the largest one's peak memory."""
        self.interpreter.ended()  # its exit status, if it has one, before reaping takes it
        kill_all_but_this()
        reap_all()
        return reaped_peak_kb()


def main() -> None:
    language = sys.argv[1]
    channel = Channel()
    interpreter = Interpreter(*start_child(language))
    keeper = Keeper()
    keep_only_capabilities(CAP_KILL)  # SETUID/SETGID were for the drops to nobody; they are done
    wait_ready(interpreter)
    channel.send(READY, b"")
    opening = wait_for_opening(channel)
    channel.key = bytes.fromhex(opening.pop("key"))
    Served(channel, interpreter, keeper, opening).serve()
    kill_all_but_this()
    if opening.get("linger"):
        # Through dockerd's attach stream, a container that exits right after writing can lose the tail of
        # its output (the report included); there the worker removes the sandbox instead.
        while True:
            signal.pause()


if __name__ == "__main__":
    main()

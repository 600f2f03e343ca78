"""One cell's exchange with the language child (executor/runner/relay.py and child.py), with a real Python child
on this host: the protocol every sandbox and the SaaS session host speak, without a sandbox around it."""

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

RUNNER = Path(__file__).resolve().parents[2] / "executor" / "runner"
sys.path.insert(0, str(RUNNER))

import relay  # noqa: E402
from wire import STDERR, STDOUT, pack_message  # noqa: E402

COMMANDS = {"python": [sys.executable, "-I", str(RUNNER / "child.py")], "nodejs": ["node", str(RUNNER / "child.js")]}


class Child:
    """child.py (or child.js) in a process of its own, opened as a session (keep) or a one-shot run."""

    def __init__(self, tmp_path: Path, keep: bool = True, language: str = "python") -> None:
        results, result_w = os.pipe()
        self.process = subprocess.Popen(
            [*COMMANDS[language], str(result_w)], stdin=subprocess.PIPE,
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, pass_fds=(result_w,), cwd=tmp_path,
            env={"PATH": os.environ["PATH"]})
        os.close(result_w)
        self.interpreter = relay.Interpreter(self.process.pid, self.process.stdin.fileno(),
                                             self.process.stdout.fileno(), self.process.stderr.fileno(), results)
        assert os.read(results, 1) == b"R"
        self.interpreter.send({"keep": keep})
        self.output: dict[bytes, bytearray] = {STDOUT: bytearray(), STDERR: bytearray()}

    def cell(self, code: str, timeout: float = 5.0, grace: float = 1.0, arguments: dict | None = None, cap=1 << 20):
        def keep(kind: bytes, data: bytes) -> None:
            self.output[kind] += data

        for buffer in self.output.values():
            buffer.clear()
        streams = {self.interpreter.stdout: relay.Stream(keep, STDOUT, cap),
                   self.interpreter.stderr: relay.Stream(keep, STDERR, cap)}
        return relay.run_cell(self.interpreter, {"code": code, "arguments": arguments or {}}, timeout, grace,
                              streams)

    def close(self) -> None:
        self.process.kill()
        self.process.wait()


@pytest.fixture
def child(tmp_path):
    process = Child(tmp_path)
    yield process
    process.close()


def test_cells_share_one_namespace_and_each_answer_is_its_own(child):
    assert child.cell("x = 20")[0] == {"ok": True, "script": True}
    outcome, timed_out, over = child.cell("def main(y):\n    print('adding')\n    return x + y", arguments={"y": 1})
    assert (outcome, timed_out, over) == ({"ok": True, "value_json": "21"}, False, None)
    assert bytes(child.output[STDOUT]) == b"adding\n"


def test_a_cell_past_its_timeout_is_interrupted_and_the_session_goes_on(child):
    outcome, timed_out, over = child.cell("import time\ntime.sleep(30)", timeout=0.3, grace=2.0)
    assert timed_out and over is None
    assert outcome["error"]["type"] == "KeyboardInterrupt"
    assert child.cell("def main():\n    return 'still here'")[0] == {"ok": True, "value_json": '"still here"'}


def test_a_cell_that_ignores_the_interrupt_ends_the_interpreter(child):
    code = "import signal, time\nsignal.signal(signal.SIGINT, signal.SIG_IGN)\ntime.sleep(30)"
    outcome, timed_out, over = child.cell(code, timeout=0.3, grace=0.3)
    assert (outcome, timed_out, over) == (None, True, "timeout")


def test_without_grace_the_deadline_ends_the_cell_at_once(child):
    started = time.monotonic()
    assert child.cell("import time\ntime.sleep(30)", timeout=0.3, grace=0.0) == (None, True, "timeout")
    assert time.monotonic() - started < 5


def test_an_interpreter_that_exits_ends_the_cell_with_its_code(child):
    outcome, timed_out, over = child.cell("import os\nos._exit(7)")
    assert (outcome, timed_out, over) == (None, False, "the interpreter exited (code 7)")
    assert child.interpreter.exit_code() == 7


def test_an_answer_without_this_cells_nonce_is_never_taken(child):
    # The code writes a well-formed answer of its own on the result pipe: it carries no (or a wrong) nonce.
    forged = json.dumps({"ok": True, "value_json": "666", "nonce": "guessed"}).encode()
    code = f"import os, sys\nos.write(int(sys.argv[1]), {pack_message(forged)!r})\ndef main():\n    return 1"
    assert child.cell(code)[0] == {"ok": True, "value_json": "1"}


def test_output_written_between_cells_belongs_to_no_cell(child):
    child.cell("import threading, time\n"
               "def chatter():\n    for _ in range(10):\n        print('tick', flush=True)\n        time.sleep(0.02)\n"
               "threading.Thread(target=chatter, daemon=True).start()")
    time.sleep(0.6)  # the thread wrote all its ticks while no cell ran
    child.cell("print('mine')")
    assert bytes(child.output[STDOUT]) == b"mine\n", "what was written between cells was dropped"


def test_output_past_the_cap_is_counted_not_kept(child):
    streams_cap = 10
    child.cell("print('x' * 100)", cap=streams_cap)
    assert bytes(child.output[STDOUT]) == b"x" * streams_cap


def test_a_one_shot_child_runs_its_one_cell_then_ends(tmp_path):
    one_shot = Child(tmp_path, keep=False)
    try:
        assert one_shot.cell("def main():\n    return 5")[0] == {"ok": True, "value_json": "5"}
        one_shot.process.wait(5)
        assert one_shot.process.returncode == 0
    finally:
        one_shot.close()


LINES = {"python": "def main():\n    for i in range(30000):\n        print(i)\n    return 'done'",
         "nodejs": "function main() {\n  for (let i = 0; i < 30000; i++) console.log(i);\n  return 'done';\n}"}
SLEEPER = {"python": "import time\nprint('before', flush=False)\ntime.sleep(30)",
           "nodejs": "console.log('before');\nconst end = Date.now() + 30000;\nwhile (Date.now() < end) {}"}


@pytest.mark.parametrize("language", ["python", "nodejs"])
def test_every_printed_line_arrives_though_output_is_written_in_blocks(tmp_path, language):
    one_shot = Child(tmp_path, keep=False, language=language)
    try:
        outcome, _, _ = one_shot.cell(LINES[language], timeout=30)
        assert outcome == {"ok": True, "value_json": '"done"'}
        assert bytes(one_shot.output[STDOUT]).split(b"\n")[:-1] == [str(i).encode() for i in range(30000)]
    finally:
        one_shot.close()


def test_buffered_output_reaches_the_supervisor_while_the_code_still_runs(tmp_path):
    # Python flushes on a timer thread; Node's timer cannot fire while a busy loop holds its only thread, so
    # its part of the promise is a flush before a cell answers and at exit (the test above).
    one_shot = Child(tmp_path, keep=False)
    try:
        assert one_shot.cell(SLEEPER["python"], timeout=1.0, grace=0.0) == (None, True, "timeout")
        assert bytes(one_shot.output[STDOUT]) == b"before\n", "the timer flushed it before the deadline"
    finally:
        one_shot.close()


def test_text_written_on_the_result_pipe_makes_the_answer_unreadable_not_forged(child):
    forge = "import os, sys\nos.write(int(sys.argv[1]), b'{\"ok\": true, \"value_json\": \"666\"}')\n"
    outcome, _, over = child.cell(forge + "def main():\n    return 1")
    assert outcome == relay.UNREADABLE and over, "a failure that ends the session, never 666 nor a hang"

"""The second wall: frames the worker cannot authenticate are a protocol violation, never a result.

The first wall (uids) keeps user code away from the supervisor's stdout, so to attack the second one
these tests replace the supervisor itself with a hostile program in a real runsc sandbox: it plays the
part of code that got hold of the stream but not the key, or that replays and reorders genuine frames.
"""

import json
import uuid

import pytest

from executor.config import Limits, SandboxConfig
from executor.runsc_sandbox import RunscBackend, RunscSandbox
from providers.base import Status
from providers.self_managed import classify

HOSTILE = r"""
import json, os, sys, time
sys.path.insert(0, '/opt/sandboxctl')
from wire import DONE, HEADER, READY, STDOUT, encode_frame

def read_exact(size):
    data = b''
    while len(data) < size:
        data += os.read(0, size - len(data))
    return data

os.write(1, encode_frame(READY, b''))
kind, length = HEADER.unpack(read_exact(HEADER.size))
key = bytes.fromhex(json.loads(read_exact(length))['key'])
# The opening is answered honestly (frame 0); the attack is on the answer of the run's one cell (frames 1, 2).
opened = encode_frame(DONE, json.dumps({'ready': True, 'files': []}).encode(), key, 0)
done = json.dumps({'exit_code': 0, 'memory_used_kb': 1, 'timed_out': False,
                   'result': {'ok': True, 'value_json': '{"forged": true}'}}).encode()
frames = {
    'untagged': encode_frame(STDOUT, b'hi') + encode_frame(DONE, done),
    'wrong_key': encode_frame(STDOUT, b'hi', os.urandom(32), 1) + encode_frame(DONE, done, os.urandom(32), 2),
    'replayed': (encode_frame(STDOUT, b'hi', key, 1) + encode_frame(STDOUT, b'hi', key, 1)
                 + encode_frame(DONE, done, key, 2)),
    'reordered': encode_frame(DONE, done, key, 2) + encode_frame(STDOUT, b'hi', key, 1),
    'truncated_tag': encode_frame(DONE, done, key, 1)[:-4],
    'injected_between': (encode_frame(STDOUT, b'hi', key, 1) + encode_frame(STDOUT, b'x')
                         + encode_frame(DONE, done, key, 2)),
    'honest': encode_frame(STDOUT, b'hi', key, 1) + encode_frame(DONE, done, key, 2),
    'unopened': encode_frame(STDOUT, b'hi', key, 0) + encode_frame(DONE, done, key, 1),
}[sys.argv[1]]
os.write(1, (b'' if sys.argv[1] == 'unopened' else opened) + frames)
time.sleep(30)
"""


class HostileSandbox(RunscSandbox):
    """A real runsc sandbox whose supervisor is the hostile program above."""

    def __init__(self, mode: str) -> None:
        backend = RunscBackend(SandboxConfig(python_preload="", ready_timeout=60), f"hostile{uuid.uuid4().hex[:6]}",
                               "hostile#1")
        super().__init__(backend, "python", "python")
        self.mode = mode

    def command(self) -> list[str]:
        return ["python3", "-I", "-c", HOSTILE, self.mode]


def run_hostile(mode: str):
    sandbox = HostileSandbox(mode)
    try:
        sandbox.start()
        return sandbox.run("def main():\n    return 1", {}, Limits(timeout=3))
    finally:
        sandbox.destroy()


@pytest.mark.parametrize("mode", ["untagged", "wrong_key", "replayed", "reordered", "injected_between", "unopened"])
def test_unauthenticated_frames_end_the_run_as_a_protocol_violation(mode):
    report = run_hostile(mode)
    assert report.protocol_violation, report
    assert report.result is None
    result = classify(report, Limits(timeout=3, memory_mb=256, output_limit=1024), "python")
    assert result.status == Status.SANDBOX_ERROR
    assert result.error_code == "protocol_violation"
    assert result.result_present is False


def test_a_truncated_tag_never_completes_a_run():
    report = run_hostile("truncated_tag")
    assert report.result is None
    assert report.timed_out or report.protocol_violation or report.sandbox_failure


def test_authenticated_frames_are_accepted_but_measurements_are_the_workers():
    report = run_hostile("honest")
    assert report.protocol_violation is None
    assert report.stdout == b"hi"
    assert json.loads(report.result["value_json"]) == {"forged": True}
    assert report.duration > 0.0, "the duration is the worker's own clock, whatever the frame says"

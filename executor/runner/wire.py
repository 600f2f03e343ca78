"""The frame format between the worker and the in-sandbox supervisor: one home for both ends.

A frame is 1 type byte, a 4-byte big-endian payload length, the payload and, once the job's key is
known, a 16-byte tag: HMAC-SHA256 over an 8-byte sequence number and the frame's header and payload.
The sequence number makes a frame impossible to replay, drop or reorder without the tag failing.
Before anything else, the host may send PING (a sandbox restored from a snapshot cannot announce itself):
the supervisor answers READY. Then the host OPENs the sandbox, once, with the key (a one-shot run and a
session are opened alike; a one-shot run's opening says it keeps nothing after its one cell), and sends
CELLs and FILE requests: the supervisor answers each, and the opening, with one DONE, in order, until its
input closes or the sandbox cannot go on.

Inside the sandbox, the supervisor and its processes (the language child, the file keeper) exchange
MESSAGEs: a 4-byte big-endian length, then that many bytes of JSON. The child gets the opening, then one
cell after another, and answers each cell with one MESSAGE on its result pipe carrying the cell's nonce.
Standard library only: this file runs inside the sandbox image and is imported by the worker as
`executor.runner.wire`.
"""

import hashlib
import hmac
import struct

HEADER = struct.Struct(">cI")
TAG_SIZE = 16
KEY_SIZE = 32
READY, STDOUT, STDERR, DONE, PING = b"R", b"O", b"E", b"D", b"P"
OPEN, CELL, FILE = b"S", b"C", b"F"
MESSAGE = struct.Struct(">I")
# A session's cell past its timeout is interrupted (SIGINT) and gets this long to stop and keep the session;
# the host's deadlines (executor/deadlines.py) count it too. A one-shot run is stopped at its timeout.
INTERRUPT_GRACE = 1.0


def frame_tag(key: bytes, sequence: int, frame: bytes) -> bytes:
    return hmac.new(key, sequence.to_bytes(8, "big") + frame, hashlib.sha256).digest()[:TAG_SIZE]


def encode_frame(kind: bytes, payload: bytes, key: bytes | None = None, sequence: int = 0) -> bytes:
    frame = HEADER.pack(kind, len(payload)) + payload
    return frame + frame_tag(key, sequence, frame) if key is not None else frame


def pack_message(body: bytes) -> bytes:
    return MESSAGE.pack(len(body)) + body

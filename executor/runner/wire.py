"""The frame format between the worker and the in-sandbox supervisor: one home for both ends.

A frame is 1 type byte, a 4-byte big-endian payload length, the payload and, once the job's key is
known, a 16-byte tag: HMAC-SHA256 over an 8-byte sequence number and the frame's header and payload.
The sequence number makes a frame impossible to replay, drop or reorder without the tag failing.
Before the job, the host may send PING (a sandbox restored from a snapshot cannot announce itself): the
supervisor answers READY. Instead of the one JOB, the host may open a session (SESSION): the supervisor then
answers every CELL and FILE request with one DONE, in order, until its input closes.

Inside the sandbox, the supervisor and its processes (the language child, the file keeper) exchange
MESSAGEs: a 4-byte big-endian length, then that many bytes of JSON.
Standard library only: this file runs inside the sandbox image and is imported by the worker as
`executor.runner.wire`.
"""

import hashlib
import hmac
import struct

HEADER = struct.Struct(">cI")
TAG_SIZE = 16
KEY_SIZE = 32
READY, STDOUT, STDERR, DONE, JOB, PING = b"R", b"O", b"E", b"D", b"J", b"P"
SESSION, CELL, FILE = b"S", b"C", b"F"
MESSAGE = struct.Struct(">I")


def frame_tag(key: bytes, sequence: int, frame: bytes) -> bytes:
    return hmac.new(key, sequence.to_bytes(8, "big") + frame, hashlib.sha256).digest()[:TAG_SIZE]


def encode_frame(kind: bytes, payload: bytes, key: bytes | None = None, sequence: int = 0) -> bytes:
    frame = HEADER.pack(kind, len(payload)) + payload
    return frame + frame_tag(key, sequence, frame) if key is not None else frame


def pack_message(body: bytes) -> bytes:
    return MESSAGE.pack(len(body)) + body

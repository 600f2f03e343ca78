"""Wire format between the worker and the in-sandbox supervisor, as the worker reads it.

Docker multiplexes a non-TTY container's stdout and stderr on the attach socket in 8-byte-header frames;
inside the container's stdout the supervisor speaks its own frames (executor/runner/wire.py). Once the
sandbox is opened (and with it the key is sent), every frame must carry a valid tag in sequence: a frame that
does not is a protocol violation, never data.
"""

import hmac
import struct
from collections.abc import Iterator

from executor.runner.wire import (
    CELL,
    DONE,
    FILE,
    HEADER,
    OPEN,
    PING,
    READY,
    STDERR,
    STDOUT,
    TAG_SIZE,
    encode_frame,
    frame_tag,
)

__all__ = ["CELL", "DONE", "FILE", "OPEN", "PING", "READY", "STDERR", "STDOUT", "encode_frame",
           "DockerStreamDecoder", "FrameDecoder", "ProtocolError"]

DOCKER_HEADER = struct.Struct(">BxxxI")
DOCKER_STDOUT, DOCKER_STDERR = 1, 2


class ProtocolError(Exception):
    """The sandbox sent something that is not a valid frame, or a frame whose tag does not verify."""


class DockerStreamDecoder:
    """Splits docker's multiplexed attach stream into (stream id, bytes) pieces, incrementally."""

    def __init__(self) -> None:
        self._buffer = bytearray()

    def feed(self, data: bytes) -> Iterator[tuple[int, bytes]]:
        self._buffer += data
        while len(self._buffer) >= DOCKER_HEADER.size:
            stream, size = DOCKER_HEADER.unpack_from(self._buffer)
            end = DOCKER_HEADER.size + size
            if len(self._buffer) < end:
                return
            payload = bytes(self._buffer[DOCKER_HEADER.size : end])
            del self._buffer[:end]
            yield stream, payload


class FrameDecoder:
    """Splits the supervisor's stdout into (kind, payload) frames, incrementally; verifies tags once keyed."""

    def __init__(self, max_payload: int, key: bytes | None = None) -> None:
        self._buffer = bytearray()
        self._max_payload = max_payload
        self._key = key
        self._sequence = 0

    def feed(self, data: bytes) -> Iterator[tuple[bytes, bytes]]:
        self._buffer += data
        tag_size = TAG_SIZE if self._key is not None else 0
        while len(self._buffer) >= HEADER.size:
            kind, size = HEADER.unpack_from(self._buffer)
            if size > self._max_payload:
                raise ProtocolError(f"frame of {size} bytes exceeds {self._max_payload}")
            end = HEADER.size + size
            if len(self._buffer) < end + tag_size:
                return
            frame = bytes(self._buffer[:end])
            if self._key is not None:
                expected = frame_tag(self._key, self._sequence, frame)
                if not hmac.compare_digest(expected, bytes(self._buffer[end : end + tag_size])):
                    raise ProtocolError(f"frame {self._sequence} ({kind!r}) failed authentication")
                self._sequence += 1
            del self._buffer[: end + tag_size]
            yield kind, frame[HEADER.size :]

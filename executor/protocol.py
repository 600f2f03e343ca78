"""Wire format between the worker and the in-sandbox supervisor.

Docker multiplexes a non-TTY container's stdout and stderr on the attach socket in 8-byte-header frames;
inside the container's stdout the supervisor speaks its own frames (type byte + 4-byte length). Only the
supervisor holds the container's stdout, so user output arrives here already framed as STDOUT/STDERR.
"""

import struct
from collections.abc import Iterator

FRAME_HEADER = struct.Struct(">cI")
DOCKER_HEADER = struct.Struct(">BxxxI")
READY, STDOUT, STDERR, DONE, JOB = b"R", b"O", b"E", b"D", b"J"
DOCKER_STDOUT, DOCKER_STDERR = 1, 2


def encode_frame(kind: bytes, payload: bytes) -> bytes:
    return FRAME_HEADER.pack(kind, len(payload)) + payload


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
    """Splits the supervisor's stdout into (kind, payload) frames, incrementally."""

    def __init__(self, max_payload: int) -> None:
        self._buffer = bytearray()
        self._max_payload = max_payload

    def feed(self, data: bytes) -> Iterator[tuple[bytes, bytes]]:
        self._buffer += data
        while len(self._buffer) >= FRAME_HEADER.size:
            kind, size = FRAME_HEADER.unpack_from(self._buffer)
            if size > self._max_payload:
                raise ProtocolError(f"frame of {size} bytes exceeds {self._max_payload}")
            end = FRAME_HEADER.size + size
            if len(self._buffer) < end:
                return
            payload = bytes(self._buffer[FRAME_HEADER.size : end])
            del self._buffer[:end]
            yield kind, payload


class ProtocolError(Exception):
    """The sandbox sent something that is not a valid frame."""

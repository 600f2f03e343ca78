"""The supervisor's side of the frames to and from the host (wire.py): what it sends on fd 1, authenticated
once the opening's key is known, and what it reads from fd 0. Standard library only (inside the sandbox)."""

import json
import os

from wire import HEADER, OPEN, PING, READY, encode_frame


class Channel:
    """Frames to the host on fd 1; authenticated once the opening's key is known."""

    def __init__(self) -> None:
        self.key: bytes | None = None
        self.sequence = 0

    def send(self, kind: bytes, payload: bytes) -> None:
        data = encode_frame(kind, payload, self.key, self.sequence)
        if self.key is not None:
            self.sequence += 1
        view = memoryview(data)
        while view:
            view = view[os.write(1, view):]


def read_exact(fd: int, size: int) -> bytes:
    chunks = []
    while size:
        chunk = os.read(fd, size)
        if not chunk:
            raise EOFError("the host closed our input")
        chunks.append(chunk)
        size -= len(chunk)
    return b"".join(chunks)


def read_frame() -> tuple[bytes, bytes] | None:
    """The host's next frame (its type and payload); None when it closed our input."""
    try:
        kind, length = HEADER.unpack(read_exact(0, HEADER.size))
        return kind, read_exact(0, length)
    except EOFError:
        return None


def wait_for_opening(channel: Channel) -> dict:
    """Answer PINGs (a restored sandbox is asked whether it is there) until the host opens the sandbox."""
    while True:
        request = read_frame()
        if request is None:
            raise EOFError("the host closed our input before opening the sandbox")
        kind, body = request
        if kind == PING:
            channel.send(READY, b"")
            continue
        if kind != OPEN:
            raise ValueError(f"unexpected frame type {kind!r} before the opening")
        return json.loads(body)


def close_input() -> None:
    """Nothing more comes from the host: put /dev/null on fd 0 so /proc/1/fd/0 leads nowhere."""
    null = os.open(os.devnull, os.O_RDONLY)
    os.dup2(null, 0)
    os.close(null)

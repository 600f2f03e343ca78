"""The server name a TLS ClientHello asks for (SNI), read without terminating TLS: what the egress proxy compares
with the host a CONNECT named, so a tunnel opened to an allowed host cannot carry a handshake for another one
(domain fronting). Only the unencrypted ClientHello is read (RFC 8446 4.1.2, RFC 6066 3); one that hides its
real server name (Encrypted ClientHello) or names two is refused, never guessed at.
"""

from dataclasses import dataclass

HANDSHAKE = 0x16
CLIENT_HELLO = 0x01
SERVER_NAME = 0x0000
ENCRYPTED_CLIENT_HELLO = 0xFE0D
HOST_NAME = 0x00
RECORD_HEADER = 5
MAX_HELLO = 64 * 1024  # a ClientHello larger than this is refused (a post-quantum one is ~2 KiB)


class NotTLS(ValueError):
    """The bytes are not the start of a TLS handshake."""


class BadHello(ValueError):
    """A ClientHello that cannot be judged (malformed, two server names, encrypted)."""


@dataclass(frozen=True)
class Hello:
    server_name: str | None  # None: the client sent no SNI


def record_length(header: bytes) -> int:
    """The payload length a TLS record header announces; NotTLS when it is not a handshake record."""
    if len(header) < RECORD_HEADER or header[0] != HANDSHAKE or header[1] != 3:
        raise NotTLS("the first bytes are not a TLS handshake")
    return int.from_bytes(header[3:5], "big")


def handshake_message(records: bytes) -> bytes | None:
    """The first handshake message carried by `records` (one or more whole TLS records), or None while it is
    incomplete; NotTLS / BadHello when the records are not a ClientHello."""
    fragments = bytearray()
    offset = 0
    while offset + RECORD_HEADER <= len(records):
        length = record_length(records[offset:offset + RECORD_HEADER])
        if offset + RECORD_HEADER + length > len(records):
            break
        fragments += records[offset + RECORD_HEADER:offset + RECORD_HEADER + length]
        offset += RECORD_HEADER + length
        if len(fragments) >= 4:
            if fragments[0] != CLIENT_HELLO:
                raise BadHello("the first handshake message is not a ClientHello")
            size = int.from_bytes(fragments[1:4], "big")
            if size > MAX_HELLO:
                raise BadHello("the ClientHello is too large")
            if len(fragments) >= 4 + size:
                return bytes(fragments[4:4 + size])
    return None


def parse_hello(body: bytes) -> Hello:
    """The server name of a ClientHello's body (after its 4-byte handshake header)."""
    reader = _Reader(body)
    reader.take(2 + 32)  # legacy_version, random
    reader.take(reader.number(1))  # legacy_session_id
    reader.take(reader.number(2))  # cipher_suites
    reader.take(reader.number(1))  # legacy_compression_methods
    if reader.done():
        return Hello(None)  # no extensions at all
    extensions = _Reader(reader.take(reader.number(2)))
    seen: set[int] = set()
    name = None
    while not extensions.done():
        kind = extensions.number(2)
        data = extensions.take(extensions.number(2))
        if kind in seen:
            raise BadHello(f"extension {kind} appears twice")
        seen.add(kind)
        if kind == ENCRYPTED_CLIENT_HELLO:
            raise BadHello("an encrypted ClientHello hides the server name")
        if kind == SERVER_NAME:
            name = _server_name(data)
    return Hello(name)


def _server_name(data: bytes) -> str:
    names = _Reader(data)
    entries = _Reader(names.take(names.number(2)))
    found = None
    while not entries.done():
        kind = entries.number(1)
        value = entries.take(entries.number(2))
        if kind == HOST_NAME:
            if found is not None:
                raise BadHello("two server names")
            try:
                found = value.decode("ascii")
            except UnicodeDecodeError:
                raise BadHello("a server name that is not ASCII") from None
    if found is None:
        raise BadHello("a server_name extension without a host name")
    return found


class _Reader:
    def __init__(self, data: bytes) -> None:
        self.data = data
        self.offset = 0

    def take(self, size: int) -> bytes:
        if self.offset + size > len(self.data):
            raise BadHello("a truncated ClientHello")
        chunk = self.data[self.offset:self.offset + size]
        self.offset += size
        return chunk

    def number(self, size: int) -> int:
        return int.from_bytes(self.take(size), "big")

    def done(self) -> bool:
        return self.offset >= len(self.data)

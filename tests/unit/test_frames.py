"""The frame format and its authentication, on bytes alone: what the worker accepts and what it refuses."""

import pytest

from executor.protocol import DONE, STDOUT, FrameDecoder, ProtocolError, encode_frame

KEY = bytes(range(32))


def decode(data: bytes, key: bytes | None = KEY) -> list[tuple[bytes, bytes]]:
    return list(FrameDecoder(1024, key).feed(data))


def test_tagged_frames_in_sequence_decode():
    data = encode_frame(STDOUT, b"hi", KEY, 0) + encode_frame(DONE, b"{}", KEY, 1)
    assert decode(data) == [(STDOUT, b"hi"), (DONE, b"{}")]


def test_frames_split_anywhere_decode_the_same():
    data = encode_frame(STDOUT, b"hello", KEY, 0) + encode_frame(DONE, b"{}", KEY, 1)
    decoder = FrameDecoder(1024, KEY)
    frames = [frame for byte in data for frame in decoder.feed(bytes([byte]))]
    assert frames == [(STDOUT, b"hello"), (DONE, b"{}")]


@pytest.mark.parametrize(
    "data",
    [
        encode_frame(DONE, b"{}") * 4,  # untagged
        encode_frame(DONE, b"{}", bytes(32), 0),  # another key
        encode_frame(STDOUT, b"a", KEY, 0) + encode_frame(STDOUT, b"a", KEY, 0),  # replayed
        encode_frame(DONE, b"{}", KEY, 1),  # out of order
        encode_frame(STDOUT, b"a", KEY, 0)[:-1] + b"\x00",  # tag altered
        b"O\x00\x00\x00\x01b" + encode_frame(STDOUT, b"a", KEY, 0)[6:],  # payload swapped under a tag
    ],
    ids=["untagged", "other_key", "replayed", "reordered", "altered_tag", "altered_payload"],
)
def test_frames_that_fail_authentication_raise(data):
    with pytest.raises(ProtocolError):
        decode(data)


def test_oversized_frame_raises_before_it_is_buffered():
    with pytest.raises(ProtocolError, match="exceeds"):
        decode(b"O\x7f\xff\xff\xff")


def test_unkeyed_decoder_reads_the_ready_frame():
    assert decode(encode_frame(b"R", b""), key=None) == [(b"R", b"")]

"""Frame codec: literal wire bytes, incremental feeding, and one test per error code."""

from __future__ import annotations

import pytest

from tcpdispatch.errors import ErrorCode, RemoteProtocolError
from tcpdispatch.protocol import frames as fr
from tcpdispatch.protocol.frames import (
    Bye,
    Data,
    Error,
    Frame,
    FrameDecoder,
    Hello,
    Ping,
    Pong,
    Reconnect,
    Welcome,
    encode,
)


def h(text: str) -> bytes:
    """Hex with spaces and '|' separators allowed, for readable expected bytes."""
    return bytes.fromhex(text.replace("|", ""))


# (frame, its exact encoding) -- written by hand from docs/protocol.md, not from the encoder.
WIRE: list[tuple[Frame, bytes]] = [
    (Hello("t", "c1"), h("00000009 01 01 | 0001 74 | 0002 6331")),
    (Hello("", ""), h("00000006 01 01 | 0000 | 0000")),
    (Hello("v1.x", "é"), h("0000000c 01 01 | 0004 76312e78 | 0002 c3a9")),
    (Welcome("s1", 10_000, 30_000), h("0000000d 01 02 | 00002710 00007530 02 7331")),
    (Welcome("", 0, 0), h("0000000b 01 02 | 00000000 00000000 00")),
    (Ping(0x0102030405060708), h("0000000a 01 03 | 0102030405060708")),
    (Ping(2**64 - 1), h("0000000a 01 03 | ffffffffffffffff")),
    (Pong(7), h("0000000a 01 04 | 0000000000000007")),
    (Data(b"hi"), h("00000004 01 05 | 6869")),
    (Data(b""), h("00000002 01 05")),
    (Data(b"\x00\xff"), h("00000004 01 05 | 00ff")),
    (Reconnect(1500, "drain"), h("0000000b 01 06 | 000005dc 647261696e")),
    (Reconnect(0), h("00000006 01 06 | 00000000")),
    (Error(104, "x"), h("00000005 01 07 | 0068 78")),
    (Error(ErrorCode.OVERLOADED), h("00000004 01 07 | 012c")),
    (Bye(), h("00000002 01 08")),
]
IDS = [f"{type(f).__name__}-{i}" for i, (f, _) in enumerate(WIRE)]


@pytest.mark.parametrize(("frame", "wire"), WIRE, ids=IDS)
def test_encode_matches_literal_bytes(frame: Frame, wire: bytes) -> None:
    assert encode(frame) == wire


@pytest.mark.parametrize(("frame", "wire"), WIRE, ids=IDS)
def test_decode_literal_bytes(frame: Frame, wire: bytes) -> None:
    dec = FrameDecoder()
    assert dec.feed(wire) == [frame]
    assert dec.buffered == 0
    dec.feed_eof()  # a clean end between frames is fine


@pytest.mark.parametrize(("frame", "wire"), WIRE, ids=IDS)
def test_byte_at_a_time(frame: Frame, wire: bytes) -> None:
    dec = FrameDecoder()
    out: list[Frame] = []
    for i in range(len(wire)):
        got = dec.feed(wire[i : i + 1])
        if i < len(wire) - 1:
            assert got == [], f"frame completed early at byte {i}"
        out += got
    assert out == [frame]


def test_encode_data_fast_path_matches_encode() -> None:
    assert fr.encode_data(b"abc") == encode(Data(b"abc")) == h("00000005 01 05 616263")


def test_several_frames_in_one_chunk_and_split_across_chunks() -> None:
    stream = b"".join(w for _, w in WIRE)
    expected = [f for f, _ in WIRE]
    assert FrameDecoder().feed(stream) == expected
    # every split point: the two halves produce the same frames in order
    for cut in range(0, len(stream) + 1, 7):
        dec = FrameDecoder()
        assert dec.feed(stream[:cut]) + dec.feed(stream[cut:]) == expected


def test_partial_frame_stays_buffered() -> None:
    dec = FrameDecoder()
    wire = encode(Data(b"hello"))
    assert dec.feed(wire + wire[:3]) == [Data(b"hello")]
    assert dec.buffered == 3
    assert dec.feed(wire[3:]) == [Data(b"hello")]
    assert dec.buffered == 0


def test_max_frame_size_is_inclusive() -> None:
    limit = 16
    exact = encode(Data(b"x" * (limit - 2)))  # length field == limit
    assert FrameDecoder(limit).feed(exact) == [Data(b"x" * (limit - 2))]


def test_encoder_rejects_fields_that_do_not_fit() -> None:
    with pytest.raises(ValueError):
        encode(Hello("t", "c" * (fr.MAX_CLIENT_ID + 1)))
    with pytest.raises(ValueError):
        encode(Hello("t" * (fr.MAX_TICKET + 1), "c"))
    with pytest.raises(ValueError):
        encode(Welcome("s" * 256, 1, 1))
    with pytest.raises(ValueError):
        encode(Ping(2**64))
    with pytest.raises(ValueError):
        encode(Reconnect(-1))
    with pytest.raises(ValueError):
        encode(Error(70_000))
    with pytest.raises(TypeError):
        encode("not a frame")  # type: ignore[arg-type]


# --- errors: one test per code --------------------------------------------------------


def _error(data: bytes, max_frame: int = fr.DEFAULT_MAX_FRAME) -> RemoteProtocolError:
    dec = FrameDecoder(max_frame)
    with pytest.raises(RemoteProtocolError) as info:
        dec.feed(data)
    return info.value


def test_bad_version() -> None:
    err = _error(h("00000002 02 08"))
    assert err.code is ErrorCode.BAD_VERSION
    assert _error(h("00000002 00 08")).code is ErrorCode.BAD_VERSION


def test_bad_version_detected_from_header_alone() -> None:
    # the payload never arrives: the header suffices to refuse
    assert _error(h("0000ffff 07 05")).code is ErrorCode.BAD_VERSION


@pytest.mark.parametrize("opcode", [0, 9, 0x7F, 0xFF])
def test_unknown_opcode(opcode: int) -> None:
    assert _error(h("00000002 01") + bytes([opcode])).code is ErrorCode.UNKNOWN_OPCODE


def test_unknown_opcode_in_decode_payload() -> None:
    with pytest.raises(RemoteProtocolError) as info:
        fr.decode_payload(42, b"")
    assert info.value.code is ErrorCode.UNKNOWN_OPCODE


def test_frame_too_large() -> None:
    err = _error(encode(Data(b"x" * 15)), max_frame=16)  # length 17 > 16
    assert err.code is ErrorCode.FRAME_TOO_LARGE
    # refused from the header alone, before the payload is buffered
    assert _error(h("ffffffff 01 05")).code is ErrorCode.FRAME_TOO_LARGE


def test_length_shorter_than_header() -> None:
    assert _error(h("00000001 01 08")).code is ErrorCode.TRUNCATED_FRAME
    assert _error(h("00000000 01 08")).code is ErrorCode.TRUNCATED_FRAME


@pytest.mark.parametrize(
    "wire",
    [
        h("00000009 01 03 | 0102030405060708"[:-2]),  # PING with 7-byte nonce
        h("00000002 01 04"),  # PONG without nonce
        h("00000003 01 01 | 00"),  # HELLO: half a ticket length
        h("00000006 01 01 | 0005 7474"),  # HELLO: ticket shorter than declared
        h("00000005 01 01 | 0001 74"),  # HELLO: no client id length
        h("00000008 01 01 | 0001 74 | 0003 63"),  # HELLO: client id shorter than declared
        h("0000000a 01 02 | 00000001 00000002"),  # WELCOME: no session id length
        h("0000000c 01 02 | 00000001 00000002 05 73"),  # WELCOME: short session id
        h("00000005 01 06 | 000005"),  # RECONNECT: 3-byte delay
        h("00000003 01 07 | 00"),  # ERROR: 1-byte code
    ],
)
def test_truncated_frame_fields(wire: bytes) -> None:
    assert _error(wire).code is ErrorCode.TRUNCATED_FRAME


def test_truncated_stream_at_eof() -> None:
    dec = FrameDecoder()
    assert dec.feed(encode(Data(b"abc"))[:-1]) == []
    with pytest.raises(RemoteProtocolError) as info:
        dec.feed_eof()
    assert info.value.code is ErrorCode.TRUNCATED_FRAME


def test_truncated_header_at_eof() -> None:
    dec = FrameDecoder()
    dec.feed(b"\x00\x00")
    with pytest.raises(RemoteProtocolError) as info:
        dec.feed_eof()
    assert info.value.code is ErrorCode.TRUNCATED_FRAME


@pytest.mark.parametrize(
    "wire",
    [
        h("00000006 01 01 | 0001 ff | 0000"),  # ticket not UTF-8
        h("00000008 01 01 | 0000 | 0002 c328"),  # client id not UTF-8
        h("0000000c 01 02 | 00000001 00000002 01 80"),  # session id not UTF-8
        h("00000007 01 06 | 00000001 c0"),  # RECONNECT reason not UTF-8
        h("00000005 01 07 | 0068 ed"),  # ERROR reason not UTF-8 (lone lead byte)
    ],
)
def test_malformed_bad_utf8(wire: bytes) -> None:
    assert _error(wire).code is ErrorCode.MALFORMED_FRAME


@pytest.mark.parametrize(
    "wire",
    [
        h("0000000b 01 03 | 0102030405060708 00"),  # PING + 1 byte
        h("0000000b 01 04 | 0102030405060708 00"),  # PONG + 1 byte
        h("0000000a 01 01 | 0001 74 | 0002 6331 | 00"),  # HELLO + 1 byte
        h("0000000c 01 02 | 00000001 00000002 00 | 00"),  # WELCOME + 1 byte
        h("00000003 01 08 | 00"),  # BYE with a payload
    ],
)
def test_malformed_trailing_bytes(wire: bytes) -> None:
    assert _error(wire).code is ErrorCode.MALFORMED_FRAME


def test_malformed_overlong_client_id() -> None:
    n = fr.MAX_CLIENT_ID + 1
    wire = fr.HEADER.pack(2 + 2 + 2 + n, 1, 1) + b"\x00\x00" + n.to_bytes(2, "big") + b"c" * n
    assert _error(wire).code is ErrorCode.MALFORMED_FRAME
    # the longest allowed id is fine
    ok = Hello("", "c" * fr.MAX_CLIENT_ID)
    assert FrameDecoder().feed(encode(ok)) == [ok]


def test_malformed_overlong_ticket() -> None:
    n = fr.MAX_TICKET + 1
    wire = fr.HEADER.pack(2 + 2 + n + 2, 1, 1) + n.to_bytes(2, "big") + b"t" * n + b"\x00\x00"
    assert _error(wire).code is ErrorCode.MALFORMED_FRAME


def test_decoder_poisoned_after_error() -> None:
    dec = FrameDecoder()
    with pytest.raises(RemoteProtocolError) as first:
        dec.feed(h("00000002 09 08"))
    assert dec.failed is first.value
    for action in (
        lambda: dec.feed(encode(Bye())),
        lambda: dec.feed(b""),
        dec.feed_eof,
        dec.next_frame,
    ):
        with pytest.raises(RemoteProtocolError) as again:
            action()
        assert again.value.code is ErrorCode.BAD_VERSION
    assert dec.buffered == 0  # the garbage is not kept around


def test_error_discards_frames_of_the_same_call() -> None:
    dec = FrameDecoder()
    with pytest.raises(RemoteProtocolError):
        dec.feed(encode(Data(b"ok")) + h("00000002 01 63"))


def test_decoder_rejects_silly_max_frame() -> None:
    with pytest.raises(ValueError):
        FrameDecoder(1)


def test_docs_hex_examples_are_exact() -> None:
    """Every frame example in docs/protocol.md decodes to the frame it is said to be."""
    from pathlib import Path

    doc = (Path(__file__).parents[2] / "docs" / "protocol.md").read_text()
    examples = {
        "00 00 00 09 | 01 | 01 | 00 01 | 74 | 00 02 | 63 31": Hello("t", "c1"),
        "00 00 00 0d | 01 | 02 | 00 00 27 10 | 00 00 75 30 | 02 | 73 31": Welcome(
            "s1", 10000, 30000
        ),
        "00 00 00 0a | 01 | 03 | 00 00 00 00 00 00 00 01": Ping(1),
        "00 00 00 0a | 01 | 04 | 00 00 00 00 00 00 00 01": Pong(1),
        "00 00 00 04 | 01 | 05 | 68 69": Data(b"hi"),
        "00 00 00 0b | 01 | 06 | 00 00 05 dc | 64 72 61 69 6e": Reconnect(1500, "drain"),
        "00 00 00 0c | 01 | 07 | 01 30 | 64 72 61 69 6e 69 6e 67": Error(304, "draining"),
        "00 00 00 02 | 01 | 08": Bye(),
    }
    for text, frame in examples.items():
        assert text in doc, text
        assert encode(frame) == h(text)

"""Property tests: whatever bytes arrive, however chunked, the codec and the Connection
raise nothing but RemoteProtocolError, finish, and judge the stream the same way."""

from __future__ import annotations

from datetime import timedelta

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tcpdispatch.errors import ErrorCode, RemoteProtocolError
from tcpdispatch.protocol import (
    Bye,
    Connection,
    Data,
    Error,
    Frame,
    FrameDecoder,
    Hello,
    Ping,
    Pong,
    Reconnect,
    Role,
    State,
    Welcome,
    encode,
)

# Generous per-example deadline for a loaded 2-core machine; a hang still fails
# (and pytest-timeout backs it up). Example counts keep the file under ~15 s.
FAST = settings(
    max_examples=150,
    deadline=timedelta(seconds=3),
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)

text = st.text(max_size=24)
u32 = st.integers(0, 2**32 - 1)
u64 = st.integers(0, 2**64 - 1)
payloads = st.binary(max_size=48)

hello = st.builds(Hello, text, text)
welcome = st.builds(Welcome, text, u32, u32)
ping, pong = st.builds(Ping, u64), st.builds(Pong, u64)
data = st.builds(Data, payloads)
reconnect = st.builds(Reconnect, u32, text)
error = st.builds(Error, st.integers(0, 65535), text)
any_frame = st.one_of(hello, welcome, ping, pong, data, reconnect, error, st.just(Bye()))

# What each role legitimately receives: the server after its WELCOME went out
# (a valid client sends nothing between HELLO and WELCOME), the client after HELLO.
server_inbound = st.tuples(
    st.lists(st.one_of(ping, data), max_size=8), st.sampled_from([[], [Bye()]])
).map(lambda t: [*t[0], *t[1]])
client_inbound = st.tuples(
    welcome,
    st.lists(st.one_of(pong, data), max_size=5),
    st.sampled_from([[], [Reconnect(500, "drain")]]),
    st.lists(st.one_of(pong, data), max_size=3),
    st.sampled_from([[], [Bye()], [Error(304, "draining")]]),
).map(lambda t: [t[0], *t[1], *(t[2] + t[3] if t[2] else []), *t[4]])


def _feed(
    role: Role, stream: bytes, sizes: list[int], opened: bool = False
) -> tuple[list[Frame], ErrorCode | None, bytes]:
    """Feed ``stream`` cut into ``sizes`` (cycled); then EOF. Only our error may escape.

    A client has sent HELLO; a server is fresh, or OPEN when ``opened``.
    """
    conn = Connection(role, max_frame_size=1024)
    if role is Role.CLIENT:
        conn.send(Hello("t", "c"))
    elif opened:
        conn.receive_data(encode(Hello("t", "c")))
        conn.send(Welcome("s", 1000, 3000))
    conn.data_to_send()
    got: list[Frame] = []
    code: ErrorCode | None = None
    pos, i = 0, 0
    try:
        while pos < len(stream):
            n = sizes[i % len(sizes)] if sizes else len(stream)
            i += 1
            got += conn.receive_data(stream[pos : pos + n])
            pos += n
        conn.receive_eof()
    except RemoteProtocolError as exc:
        code = exc.code
        assert conn.state is State.CLOSED
        assert conn.receive_data(stream[:16]) == []  # closed: ignores the rest
    assert conn.state is State.CLOSED
    return got, code, conn.data_to_send()


def _check_consistent(role: Role, stream: bytes, sizes: list[int], opened: bool = False) -> None:
    ref_frames, ref_code, ref_out = _feed(role, stream, [1], opened)  # byte at a time
    frames, code, out = _feed(role, stream, sizes, opened)
    assert code == ref_code
    assert out == ref_out  # same PONGs and the same ERROR frame
    if code is None:
        assert frames == ref_frames
    else:  # frames of the call that failed are not returned
        assert frames == ref_frames[: len(frames)]


def _mutate(stream: bytes, ops: list[tuple[int, int, int, bytes]]) -> bytes:
    buf = bytearray(stream)
    for kind, a, b, extra in ops:
        if not buf:
            buf += extra
            continue
        i = a % len(buf)
        if kind == 0:  # flip a bit
            buf[i] ^= 1 << (b % 8)
        elif kind == 1:  # truncate
            del buf[i:]
        elif kind == 2:  # insert bytes
            buf[i:i] = extra
        elif kind == 3:  # delete a range
            del buf[i : i + 1 + b % 8]
        else:  # overwrite one byte
            buf[i] = b % 256
    return bytes(buf)


mutations = st.lists(
    st.tuples(
        st.integers(0, 4),
        st.integers(0, 2**16),
        st.integers(0, 2**16),
        st.binary(min_size=1, max_size=8),
    ),
    min_size=1,
    max_size=4,
)
chunk_sizes = st.lists(st.integers(1, 64), min_size=1, max_size=8)
roles = st.sampled_from([Role.CLIENT, Role.SERVER])


@FAST
@given(frames=st.lists(any_frame, max_size=8), sizes=chunk_sizes)
def test_decoder_round_trips_any_frames_any_chunking(frames: list[Frame], sizes: list[int]) -> None:
    stream = b"".join(encode(f) for f in frames)
    dec = FrameDecoder()
    out: list[Frame] = []
    pos, i = 0, 0
    while pos < len(stream):
        n = sizes[i % len(sizes)]
        out += dec.feed(stream[pos : pos + n])
        pos, i = pos + n, i + 1
    dec.feed_eof()
    assert out == frames


@FAST
@given(role=roles, stream=st.binary(max_size=600), sizes=chunk_sizes, opened=st.booleans())
def test_random_bytes_only_raise_remote_protocol_error(
    role: Role, stream: bytes, sizes: list[int], opened: bool
) -> None:
    _check_consistent(role, stream, sizes, opened)


@FAST
@given(stream=st.binary(max_size=600), sizes=chunk_sizes, max_frame=st.integers(2, 300))
def test_decoder_on_random_bytes(stream: bytes, sizes: list[int], max_frame: int) -> None:
    dec = FrameDecoder(max_frame)
    pos, i = 0, 0
    try:
        while pos < len(stream):
            n = sizes[i % len(sizes)]
            dec.feed(stream[pos : pos + n])
            pos, i = pos + n, i + 1
            assert dec.buffered <= max_frame + 4  # never hoards more than one frame
        dec.feed_eof()
    except RemoteProtocolError as exc:
        try:
            dec.feed(b"")
        except RemoteProtocolError as again:
            assert again.code is exc.code  # poisoned
        else:
            raise AssertionError("decoder accepted bytes after an error")


@FAST
@given(frames=server_inbound, sizes=chunk_sizes)
def test_valid_server_streams_are_accepted(frames: list[Frame], sizes: list[int]) -> None:
    stream = b"".join(encode(f) for f in frames)
    got, code, out = _feed(Role.SERVER, stream, sizes, opened=True)
    assert code is None and got == frames
    pongs = [encode(Pong(f.nonce)) for f in frames if isinstance(f, Ping)]
    assert out == b"".join(pongs)


@FAST
@given(frames=client_inbound, sizes=chunk_sizes)
def test_valid_client_streams_are_accepted(frames: list[Frame], sizes: list[int]) -> None:
    stream = b"".join(encode(f) for f in frames)
    got, code, out = _feed(Role.CLIENT, stream, sizes)
    assert code is None and got == frames and out == b""


@FAST
@given(
    frames=st.one_of(
        server_inbound.map(lambda fs: (Role.SERVER, fs)),
        client_inbound.map(lambda fs: (Role.CLIENT, fs)),
    ),
    ops=mutations,
    sizes=chunk_sizes,
)
def test_mutated_streams(frames: tuple[Role, list[Frame]], ops: list, sizes: list[int]) -> None:
    role, fs = frames
    _check_consistent(role, _mutate(b"".join(encode(f) for f in fs), ops), sizes, opened=True)


@FAST
@given(
    frames=st.one_of(
        server_inbound.map(lambda fs: (Role.SERVER, fs)),
        client_inbound.map(lambda fs: (Role.CLIENT, fs)),
    ),
    order=st.randoms(use_true_random=False),
    dup=st.booleans(),
    sizes=chunk_sizes,
)
def test_reordered_and_duplicated_frames(
    frames: tuple[Role, list[Frame]], order: object, dup: bool, sizes: list[int]
) -> None:
    role, fs = frames
    fs = list(fs) + (fs[:2] if dup else [])
    order.shuffle(fs)  # type: ignore[attr-defined]
    _check_consistent(role, b"".join(encode(f) for f in fs), sizes, opened=True)


@FAST
@given(
    role=roles,
    frames=st.lists(any_frame, max_size=8),
    cut=st.integers(0, 2**16),
    opened=st.booleans(),
)
def test_truncated_streams(role: Role, frames: list[Frame], cut: int, opened: bool) -> None:
    stream = b"".join(encode(f) for f in frames)
    stream = stream[: cut % (len(stream) + 1)]
    _check_consistent(role, stream, [7], opened)

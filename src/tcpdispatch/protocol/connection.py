"""Sans-I/O protocol connection: bytes in, frames out, bytes to write.

The gateway and the client are thin asyncio adapters over this class::

    conn = Connection(Role.SERVER)
    for frame in conn.receive_data(chunk):   # may raise RemoteProtocolError
        ...
    transport.write(conn.data_to_send())

On a remote violation ``receive_data`` queues an ERROR frame with the
violation's code, moves to CLOSED and raises ``RemoteProtocolError``; the
adapter writes what is queued and closes the transport. PINGs received by a
server are answered with PONG automatically.
"""

from __future__ import annotations

from tcpdispatch.errors import ErrorCode, LocalProtocolError, RemoteProtocolError
from tcpdispatch.protocol import frames as f
from tcpdispatch.protocol.states import Direction, Role, State, next_state


class Connection:
    """One end of a tcpdispatch connection (client or server role)."""

    __slots__ = ("_decoder", "_out", "role", "state")

    def __init__(self, role: Role, max_frame_size: int = f.DEFAULT_MAX_FRAME) -> None:
        self.role = role
        self.state = State.HANDSHAKE
        self._decoder = f.FrameDecoder(max_frame_size)
        self._out = bytearray()

    # -- receiving ---------------------------------------------------------
    def receive_data(self, data: bytes) -> list[f.Frame]:
        """Feed received bytes; return the frames they complete.

        Frames are decoded and checked against the state table one at a time,
        so the outcome does not depend on how the stream was chunked: bytes
        after a closing frame (BYE, ERROR) are ignored, and the first violation
        wins. On a violation, the frames of this call are not returned.
        """
        if self.state is State.CLOSED:
            return []
        decoder = self._decoder
        frames: list[f.Frame] = []
        try:
            decoder.receive(data)
            while (frame := decoder.next_frame()) is not None:
                new = next_state(self.role, self.state, Direction.RECV, frame.opcode)
                if new is None:
                    raise RemoteProtocolError(
                        ErrorCode.UNEXPECTED_FRAME,
                        f"{frame.opcode.name} not allowed in state {self.state.name}",
                    )
                self.state = new
                frames.append(frame)
                if new is State.CLOSED:
                    break
                if frame.opcode is f.Opcode.PING and self.role is Role.SERVER:
                    self.send(f.Pong(frame.nonce))  # type: ignore[union-attr]
        except RemoteProtocolError as exc:
            self._fail(exc)
            raise
        return frames

    def receive_eof(self) -> None:
        """The peer closed its side; move to CLOSED.

        A partial frame left over raises TRUNCATED_FRAME (RemoteProtocolError),
        with an ERROR frame queued as for ``receive_data``.
        """
        if self.state is State.CLOSED:
            return
        try:
            self._decoder.feed_eof()
        except RemoteProtocolError as exc:
            self._fail(exc)
            raise
        self.state = State.CLOSED

    def _fail(self, exc: RemoteProtocolError) -> None:
        if self.state is not State.CLOSED:
            self._out += f.encode(f.Error(int(exc.code), exc.reason[:200]))
        self.state = State.CLOSED

    # -- sending -----------------------------------------------------------
    def send(self, frame: f.Frame) -> None:
        """Queue ``frame``; raises LocalProtocolError if the state forbids it."""
        new = next_state(self.role, self.state, Direction.SEND, frame.opcode)
        if new is None:
            raise LocalProtocolError(
                ErrorCode.UNEXPECTED_FRAME,
                f"cannot send {frame.opcode.name} in state {self.state.name}",
            )
        self._out += f.encode(frame)
        self.state = new

    def send_data(self, payload: bytes) -> None:
        """Queue a DATA frame (hot path: skips building a Data object)."""
        if self.state is not State.OPEN and self.state is not State.DRAINING:
            raise LocalProtocolError(
                ErrorCode.UNEXPECTED_FRAME, f"cannot send DATA in state {self.state.name}"
            )
        self._out += f.encode_data(payload)

    def fail(self, code: ErrorCode, reason: str) -> None:
        """Queue ERROR(code, reason) and close, whatever the state (used for limits)."""
        if self.state is not State.CLOSED:
            self._out += f.encode(f.Error(int(code), reason))
            self.state = State.CLOSED

    def data_to_send(self) -> bytes:
        """Bytes queued for the peer since the last call."""
        if not self._out:
            return b""
        out = bytes(self._out)
        self._out.clear()
        return out

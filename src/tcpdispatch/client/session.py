"""One client connection to one gateway: an asyncio adapter over the sans-I/O Connection.

:func:`open_session` connects, sends HELLO and waits for WELCOME (or raises
:class:`HandshakeFailed`). :func:`race` runs several such attempts Happy-Eyeballs
style. :class:`GatewaySession` then carries data and heartbeats until it ends,
and reports *why* it ended as a :class:`Loss`.
"""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Generic, TypeVar

from tcpdispatch.client.policy import Endpoint
from tcpdispatch.errors import (
    ClientError,
    ErrorCode,
    ProtocolError,
    RemoteProtocolError,
    SecureHandshakeError,
)
from tcpdispatch.protocol import (
    Bye,
    Connection,
    Data,
    Error,
    Hello,
    Ping,
    Pong,
    Reconnect,
    Role,
    State,
    Welcome,
)
from tcpdispatch.secure.handshake import ClientHandshake
from tcpdispatch.secure.keys import PublicKey
from tcpdispatch.secure.resumption import ResumptionGrant, ResumptionStore
from tcpdispatch.secure.transport import SecureTransport

_nonces = itertools.count(1)


class HandshakeFailed(ClientError):
    """A connect attempt did not reach WELCOME (refused, timed out, or ERROR frame)."""

    def __init__(self, endpoint: Endpoint, reason: str, code: int | None = None) -> None:
        self.endpoint = endpoint
        self.reason = reason
        self.code = code
        super().__init__(f"{endpoint.label}: {reason}")

    @property
    def unreachable(self) -> bool:
        """True when the gateway never answered (worth a passive report to the dispatcher)."""
        return self.code is None


@dataclass(frozen=True, slots=True)
class Loss:
    """Why an open session ended (or asked us to leave)."""

    kind: str  # eof | error | reconnect | heartbeat | protocol | secure | closed
    reason: str = ""
    code: int | None = None
    delay: float | None = None  # RECONNECT delay hint, seconds

    @property
    def graceful(self) -> bool:
        """RECONNECT: the gateway still serves us while we move."""
        return self.kind == "reconnect"


class _Protocol(asyncio.Protocol):
    """Feeds bytes into the protocol core and routes the frames it returns."""

    def __init__(self, conn: Connection) -> None:
        self.conn = conn
        self.transport: asyncio.Transport | None = None
        loop = asyncio.get_running_loop()
        self.welcome: asyncio.Future[Welcome] = loop.create_future()
        self.ended: asyncio.Future[Loss] = loop.create_future()
        self.on_data: Callable[[bytes], None] | None = None
        self.early: list[bytes] = []  # DATA that arrived with WELCOME, before on_data is set
        self.last_seen = loop.time()
        self.pongs = 0
        # Encrypted sessions: the handshake until it completes, then the transport.
        self.handshake: ClientHandshake | None = None
        self.secure: SecureTransport | None = None
        self.grant: ResumptionGrant | None = None
        self.resumed = False
        self._writable = asyncio.Event()
        self._writable.set()

    # asyncio callbacks
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        if self.handshake is not None or self.secure is not None:
            data = self._unwrap(data)
            if not data:
                return
        try:
            frames = self.conn.receive_data(data)
        except RemoteProtocolError as exc:
            self._flush()
            self._end(Loss("protocol", exc.reason, int(exc.code)))
            return
        self.last_seen = asyncio.get_running_loop().time()
        for frame in frames:
            if isinstance(frame, Data):
                if self.on_data is not None:
                    self.on_data(frame.payload)
                else:
                    self.early.append(frame.payload)
            elif isinstance(frame, Pong):
                self.pongs += 1
            elif isinstance(frame, Welcome):
                if not self.welcome.done():
                    self.welcome.set_result(frame)
            elif isinstance(frame, Reconnect):
                self._signal(Loss("reconnect", frame.reason, None, frame.delay_ms / 1000))
            elif isinstance(frame, Error):
                self._end(Loss("error", frame.reason, frame.code))
            elif isinstance(frame, Bye):
                self._end(Loss("eof", "gateway said BYE"))

    def eof_received(self) -> bool:
        try:
            self.conn.receive_eof()
        except ProtocolError:
            pass
        self._end(Loss("eof", "gateway closed the connection"))
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        self._end(Loss("eof", str(exc) if exc else "connection closed"))
        self._writable.set()

    def pause_writing(self) -> None:
        self._writable.clear()

    def resume_writing(self) -> None:
        self._writable.set()

    # helpers
    def _unwrap(self, data: bytes) -> bytes:
        hs = self.handshake
        try:
            if hs is None:
                assert self.secure is not None
                return self.secure.decrypt(data)
            done = hs.receive(data)
        except SecureHandshakeError as exc:
            self.handshake = None
            self._end(Loss("secure", exc.reason, exc.code))
            return b""
        except RemoteProtocolError as exc:
            self.conn.fail(exc.code, exc.reason)
            self._flush()
            self._end(Loss("protocol", exc.reason, int(exc.code)))
            return b""
        if done is None:
            return b""
        self.handshake = None
        self.secure = done.transport
        self.grant = done.grant
        self.resumed = done.resumed
        return done.plaintext

    def _flush(self) -> None:
        out = self.conn.data_to_send()
        if out and self.transport is not None and not self.transport.is_closing():
            if self.secure is not None:
                out = self.secure.encrypt(out)
            self.transport.write(out)

    def _signal(self, loss: Loss) -> None:
        if not self.ended.done():
            self.ended.set_result(loss)

    def _end(self, loss: Loss) -> None:
        if not self.welcome.done():
            self.welcome.set_exception(_Refused(loss))
            self.welcome.exception()  # mark retrieved: the attempt may be gone already
        self._signal(loss)
        if self.transport is not None:
            self.transport.close()


class _Refused(ClientError):
    def __init__(self, loss: Loss) -> None:
        self.loss = loss


class GatewaySession:
    """An open session (after WELCOME) with one gateway."""

    def __init__(
        self, endpoint: Endpoint, proto: _Protocol, welcome: Welcome, connect_time: float
    ) -> None:
        self.endpoint = endpoint
        self.welcome = welcome
        self.connect_time = connect_time  # seconds from first SYN to WELCOME
        self._proto = proto
        self._hb_task: asyncio.Task[None] | None = None

    @property
    def session_id(self) -> str:
        return self.welcome.session_id

    @property
    def encrypted(self) -> bool:
        return self._proto.secure is not None

    @property
    def resumed(self) -> bool:
        """True when this session's handshake used a resumption grant."""
        return self._proto.resumed

    @property
    def open(self) -> bool:
        return (
            self._proto.conn.state in (State.OPEN, State.DRAINING) and not self._proto.ended.done()
        )

    @property
    def usable(self) -> bool:
        """Can still carry DATA (open, or asked to move but not yet gone)."""
        t = self._proto.transport
        return (
            self._proto.conn.state in (State.OPEN, State.DRAINING)
            and t is not None
            and not t.is_closing()
        )

    @property
    def ended(self) -> asyncio.Future[Loss]:
        return self._proto.ended

    def attach(self, on_data: Callable[[bytes], None]) -> None:
        """Route received DATA to ``on_data`` (first the DATA that came with WELCOME)."""
        early, self._proto.early = self._proto.early, []
        self._proto.on_data = on_data
        for payload in early:
            on_data(payload)

    def pause_reading(self) -> None:
        if self._proto.transport is not None:
            self._proto.transport.pause_reading()

    def resume_reading(self) -> None:
        if self._proto.transport is not None and not self._proto.transport.is_closing():
            self._proto.transport.resume_reading()

    async def send(self, payload: bytes) -> None:
        """Send one DATA frame, waiting while the socket's write buffer is full."""
        self._proto.conn.send_data(payload)
        self._proto._flush()
        if not self._proto._writable.is_set():
            await self._proto._writable.wait()

    def start_heartbeat(self, interval: float, missed: int = 2) -> None:
        """PING every ``interval``; ``missed`` intervals without any frame back = dead."""
        self._hb_task = asyncio.get_running_loop().create_task(self._heartbeat(interval, missed))

    async def _heartbeat(self, interval: float, missed: int) -> None:
        proto = self._proto
        loop = asyncio.get_running_loop()
        outstanding = 0
        pongs = proto.pongs
        seen = proto.last_seen
        while not proto.ended.done():
            await asyncio.sleep(interval)
            if proto.ended.done():
                return
            if proto.pongs != pongs or proto.last_seen != seen:
                outstanding = 0
                pongs, seen = proto.pongs, proto.last_seen
            if outstanding >= missed:
                proto._end(Loss("heartbeat", f"no PONG for {loop.time() - seen:.1f}s"))
                return
            try:
                proto.conn.send(Ping(next(_nonces) & 0xFFFFFFFFFFFFFFFF))
            except ProtocolError:
                return
            proto._flush()
            outstanding += 1

    def close(self, bye: bool = True) -> None:
        """Close now (with BYE when the state allows it)."""
        if self._hb_task is not None:
            # Drop it: the cancelled task keeps a traceback whose frame points back
            # at this session, a cycle only the full (rare) GC pass would free.
            self._hb_task.cancel()
            self._hb_task = None
        proto = self._proto
        proto.on_data = None  # the client's bound method: session <-> client cycle
        if bye:
            try:
                proto.conn.send(Bye())
                proto._flush()
            except ProtocolError:
                pass
        proto._signal(Loss("closed", "closed by client"))
        if proto.transport is not None:
            proto.transport.close()


async def open_session(
    endpoint: Endpoint,
    client_id: str,
    *,
    timeout: float = 5.0,
    local_host: str | None = None,
    max_frame: int = 65536,
    key: PublicKey | None = None,
    grants: ResumptionStore | None = None,
) -> GatewaySession:
    """Connect, HELLO, await WELCOME; raise HandshakeFailed on any failure.

    With ``key`` the connection is encrypted and the gateway must prove it holds that
    key (docs/protocol.md section 9). A grant for ``key`` in ``grants`` is used once
    (resumption); if the gateway rejects it, one full handshake follows at once. The
    grant the gateway hands out is stored back in ``grants``.
    """
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    grant = grants.take(key, loop.time()) if key is not None and grants is not None else None
    try:
        session = await _attempt(
            endpoint, client_id, deadline, timeout, local_host, max_frame, key, grant
        )
    except HandshakeFailed as exc:
        if grant is None or exc.code != ErrorCode.RESUME_REJECTED:
            raise
        session = await _attempt(
            endpoint, client_id, deadline, timeout, local_host, max_frame, key, None
        )
    if grants is not None and session._proto.grant is not None:
        grants.put(session._proto.grant)
    return session


async def _attempt(
    endpoint: Endpoint,
    client_id: str,
    deadline: float,
    timeout: float,
    local_host: str | None,
    max_frame: int,
    key: PublicKey | None,
    grant: ResumptionGrant | None,
) -> GatewaySession:
    loop = asyncio.get_running_loop()
    start = loop.time()
    conn = Connection(Role.CLIENT, max_frame)
    proto: _Protocol | None = None
    ok = False
    try:
        async with asyncio.timeout_at(deadline):
            try:
                _, proto = await loop.create_connection(
                    lambda: _Protocol(conn),
                    endpoint.host,
                    endpoint.port,
                    local_addr=(local_host, 0) if local_host else None,
                )
            except OSError as exc:
                raise HandshakeFailed(endpoint, exc.strerror or str(exc)) from None
            conn.send(Hello(endpoint.ticket, client_id))
            if key is not None:
                # The HELLO rides in the first handshake message: still one round trip.
                hs = proto.handshake = ClientHandshake(
                    key, conn.data_to_send(), grant, clock=loop.time
                )
                assert proto.transport is not None
                proto.transport.write(hs.first_message())
            else:
                proto._flush()
            try:
                welcome = await proto.welcome
            except _Refused as exc:
                loss = exc.loss
                exc.__traceback__ = None  # proto.welcome keeps exc: its frames would hold proto
                raise HandshakeFailed(endpoint, loss.reason or loss.kind, loss.code) from None
        ok = True
        return GatewaySession(endpoint, proto, welcome, loop.time() - start)
    except TimeoutError:
        raise HandshakeFailed(endpoint, f"no WELCOME within {timeout:g}s") from None
    finally:
        if not ok and proto is not None and proto.transport is not None:
            proto.transport.abort()


def error_name(code: int | None) -> str:
    """``overloaded`` for 300, etc.; ``unreachable`` when there was no ERROR frame."""
    if code is None:
        return "unreachable"
    try:
        return ErrorCode(code).slug
    except ValueError:
        return f"error_{code}"


T = TypeVar("T")
R = TypeVar("R")


@dataclass(slots=True)
class RaceResult(Generic[T, R]):
    winner: tuple[T, R] | None
    failures: list[tuple[T, BaseException]]


async def race(
    candidates: Sequence[T],
    attempt: Callable[[T], Awaitable[R]],
    *,
    stagger: float = 0.25,
    max_in_flight: int = 3,
    on_failure: Callable[[T, BaseException], None] | None = None,
    discard: Callable[[R], None] | None = None,
) -> RaceResult[T, R]:
    """Happy-Eyeballs race over ``candidates`` (RFC 8305 style).

    Starts the first attempt; starts the next one when the current ones have
    not finished after ``stagger`` seconds, or at once when one fails; keeps
    at most ``max_in_flight`` running. The first success wins; the others are
    cancelled, and any other success that finished in the same instant is
    passed to ``discard``.
    """
    loop = asyncio.get_running_loop()
    pending: dict[asyncio.Future[R], T] = {}
    queue = list(candidates)
    failures: list[tuple[T, BaseException]] = []

    def start_next() -> bool:
        if not queue:
            return False
        cand = queue.pop(0)
        pending[loop.create_task(attempt(cand))] = cand  # type: ignore[arg-type]
        return True

    start_next()
    winner: tuple[T, R] | None = None
    try:
        while pending and winner is None:
            timeout = stagger if queue and len(pending) < max_in_flight else None
            done, _ = await asyncio.wait(
                pending, timeout=timeout, return_when=asyncio.FIRST_COMPLETED
            )
            if not done:
                start_next()
                continue
            failed_now = 0
            for task in done:
                cand = pending.pop(task)
                exc = task.exception()
                if exc is None:
                    if winner is None:
                        winner = (cand, task.result())
                    elif discard is not None:
                        discard(task.result())
                else:
                    failures.append((cand, exc))
                    failed_now += 1
                    if on_failure is not None:
                        on_failure(cand, exc)
            if winner is None:
                for _ in range(failed_now):
                    if len(pending) < max_in_flight:
                        start_next()
                if not pending:
                    start_next()
    finally:
        for task in pending:
            task.cancel()
        if pending:
            await asyncio.wait(pending)
            for task in pending:
                if not task.cancelled() and task.exception() is None and discard is not None:
                    discard(task.result())
    return RaceResult(winner, failures)

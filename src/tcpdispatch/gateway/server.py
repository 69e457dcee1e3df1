"""The asyncio adapter: one :class:`Gateway` per worker process, one small protocol object
per connection.

Memory per connection is the point of this module (the target is 100,000
connections per node at <= 3 KiB each), so:

* :class:`GatewayConnection` is an ``asyncio.Protocol`` with ``__slots__`` and
  holds only the transport, the sans-I/O :class:`~tcpdispatch.protocol.Connection`,
  an integer number, the tick of its last activity, and the client id and IP
  (IP strings are interned, so thousands of connections share one).
* There is no per-connection timer: a periodic sweep walks the connections
  and closes those past the handshake or idle deadline. Activity only stores
  the current tick (a shared int object), so it allocates nothing. Before
  WELCOME that tick is the accept tick and bytes do not move it: the
  handshake deadline counts from accept whatever arrives.
* Read buffers belong to the event loop; the codec keeps only a partial frame.

All protocol decisions (which frame is allowed when, PING -> PONG, error
codes) live in the sans-I/O core; this module feeds it bytes and writes what
it returns.
"""

from __future__ import annotations

import asyncio
import logging
import math
import random
import sys
import time
from collections.abc import Callable, Iterator
from typing import Any

from tcpdispatch.errors import ConfigError, ErrorCode, RemoteProtocolError, TicketError
from tcpdispatch.gateway.config import GatewayConfig
from tcpdispatch.gateway.handlers import Handler, load_handler_class
from tcpdispatch.gateway.shed import LEAVE_GRACE_S, MAX_DELAY_MS, AgeIndex, pick_oldest, send_spread
from tcpdispatch.gateway.shm import NodeCounters
from tcpdispatch.protocol import Bye, Connection, Opcode, Reconnect, Role, State, Welcome
from tcpdispatch.protocol.frames import Error, encode, encode_data
from tcpdispatch.secure.handshake import MODE_FULL, MODE_RESUME, ServerHandshake, ServerSecurity
from tcpdispatch.secure.transport import SecureTransport

log = logging.getLogger("tcpdispatch.gateway")

_LIVE = (State.OPEN, State.DRAINING)
_DATA, _HELLO, _BYE, _ERROR = Opcode.DATA, Opcode.HELLO, Opcode.BYE, Opcode.ERROR
_UNDECIDED = "undecided"  # encrypted gateway, no byte from the client yet
_REFUSALS = {
    ErrorCode.OVERLOADED: encode(Error(int(ErrorCode.OVERLOADED), "gateway is at capacity")),
    ErrorCode.IP_LIMIT: encode(Error(int(ErrorCode.IP_LIMIT), "too many connections from your IP")),
}


class GatewayConnection(asyncio.Protocol):
    """One client connection; also the ``Session`` handlers see once it is open."""

    __slots__ = (
        "_admitted",
        "_client_id",
        "_conn",
        "_gw",
        "_ip",
        "_num",
        "_open",
        "_sec",
        "_transport",
        "last",
        "user",
    )

    def __init__(self, gw: Gateway) -> None:
        self._gw = gw
        self._transport: Any = None
        self._conn: Connection | None = None
        self._num = 0
        self.last = 0
        self._client_id: str | None = None
        self._ip: str | None = None
        self._open = False
        self._admitted = False
        # None: plain; _UNDECIDED; a ServerHandshake in progress; then a SecureTransport.
        self._sec: Any = None
        self.user: Any = None  # free for the application handler

    # -- Session API -------------------------------------------------------
    @property
    def session_id(self) -> str:
        return f"{self._gw.session_prefix}{self._num:x}"

    @property
    def client_id(self) -> str | None:
        return self._client_id

    @property
    def peer(self) -> str | None:
        return self._ip

    @property
    def is_open(self) -> bool:
        conn = self._conn
        return conn is not None and conn.state in _LIVE

    def send(self, payload: bytes) -> bool:
        """Queue a DATA frame to this client; False if the session is not open."""
        conn = self._conn
        if conn is None or conn.state not in _LIVE:
            return False
        conn.send_data(payload)
        self._write(conn.data_to_send())
        self._gw.messages_out += 1
        return True

    def close(self) -> None:
        """End the session with BYE."""
        conn = self._conn
        if conn is not None and conn.state is not State.CLOSED:
            conn.send(Bye())
            self._write(conn.data_to_send())
        if self._transport is not None:
            self._transport.close()

    # -- asyncio callbacks ---------------------------------------------------
    def connection_made(self, transport: Any) -> None:  # type: ignore[override]
        gw = self._gw
        self._transport = transport
        self.last = gw.tick
        peer = transport.get_extra_info("peername")
        self._ip = gw.intern_ip(peer[0]) if peer else None
        refusal = gw.admit(self)
        if refusal is not None:
            transport.write(_REFUSALS[refusal])
            transport.close()
            return
        self._conn = Connection(Role.SERVER, gw.cfg.max_frame)
        if gw.security is not None:
            self._sec = _UNDECIDED

    def data_received(self, data: bytes) -> None:
        conn = self._conn
        if conn is None:
            return
        gw = self._gw
        if self._open:
            # Before WELCOME ``last`` stays the accept tick: the handshake deadline counts from
            # accept, so a client trickling a byte at a time cannot hold a slot.
            self.last = gw.tick
        if self._sec is not None:
            data = self._unwrap(data)
            if not data:
                return
        try:
            frames = conn.receive_data(data)
        except RemoteProtocolError as exc:
            gw.count_error(exc.code, self._open)
            self._write(conn.data_to_send())
            self._transport.close()
            return
        received = 0
        for frame in frames:
            op = frame.opcode
            if op is _DATA:
                received += 1
                gw.call_handler("on_message", self, frame.payload)  # type: ignore[union-attr]
            elif op is _HELLO:
                self._hello(frame)  # type: ignore[arg-type]
            elif op is _BYE or op is _ERROR:
                break
            if conn.state is State.CLOSED:
                break
        if received:
            gw.messages_in += received
        out = conn.data_to_send()
        if out:
            self._write(out)
        if conn.state is State.CLOSED:
            self._transport.close()

    def eof_received(self) -> bool | None:
        conn = self._conn
        if conn is not None:
            try:
                conn.receive_eof()
            except RemoteProtocolError:
                pass
        return None  # let the transport close itself

    def connection_lost(self, exc: Exception | None) -> None:
        self._gw.forget(self, "connection lost" if exc is None else str(exc))
        self._transport = None

    def pause_writing(self) -> None:
        # The peer does not read: stop reading its input too, so echo traffic cannot pile up here.
        if self._transport is not None:
            self._transport.pause_reading()

    def resume_writing(self) -> None:
        if self._transport is not None and not self._transport.is_closing():
            self._transport.resume_reading()

    # -- internals -----------------------------------------------------------
    def _write(self, data: bytes) -> None:
        t = self._transport
        if t is None or t.is_closing():
            return
        if type(self._sec) is SecureTransport:
            data = self._sec.encrypt(data)
        t.write(data)
        if t.get_write_buffer_size() > self._gw.max_backlog:
            log.info("dropping %s: client does not read (write buffer over limit)", self.session_id)
            t.abort()

    def _unwrap(self, data: bytes) -> bytes:
        """Encrypted gateway: the frame-stream bytes in ``data`` (b"" when none, or closed).

        The first byte decides: a Noise handshake mode byte starts the handshake; any
        other byte is a plain client, served only with ``--allow-plain``.
        """
        sec = self._sec
        gw = self._gw
        try:
            if type(sec) is SecureTransport:
                return sec.decrypt(data)
            if sec is _UNDECIDED:
                security = gw.security
                if data[0] != MODE_FULL and data[0] != MODE_RESUME:
                    if security is not None and security.allow_plain:
                        self._sec = None
                        gw.handshakes_plain += 1
                        gw.counters.add_handshake("plain")
                        return data
                    raise RemoteProtocolError(
                        ErrorCode.ENCRYPTION_REQUIRED,
                        "this gateway accepts encrypted connections only (docs/protocol.md §9)",
                    )
                assert security is not None  # _UNDECIDED only exists on encrypted gateways
                sec = self._sec = ServerHandshake(security)
            done = sec.receive(data)
            if done is None:
                return b""
        except RemoteProtocolError as exc:
            self._sec_failed(exc)
            return b""
        self._sec = done.transport
        if done.resumed:
            gw.handshakes_resumed += 1
            gw.counters.add_handshake("resumed")
        else:
            gw.handshakes_full += 1
            gw.counters.add_handshake("full")
        if self._transport is not None:
            self._transport.write(done.reply)
        return done.plaintext

    def _sec_failed(self, exc: RemoteProtocolError) -> None:
        conn = self._conn
        self._gw.count_error(exc.code, self._open)
        if type(self._sec) is not SecureTransport:
            self._sec = None  # the refusal goes in clear: no keys were agreed
        if conn is not None:
            conn.fail(exc.code, exc.reason[:200])
            self._write(conn.data_to_send())
        if self._transport is not None:
            self._transport.close()

    def _hello(self, hello: Any) -> None:
        gw = self._gw
        conn = self._conn
        assert conn is not None
        code_reason = gw.check_hello(hello.ticket, hello.client_id)
        if code_reason is not None:
            self.fail(*code_reason)
            return
        self._client_id = hello.client_id or None
        conn.send(Welcome(self.session_id, gw.heartbeat_ms, gw.idle_ms))
        self._open = True
        self.last = gw.tick  # from now on ``last`` is the last activity (idle deadline)
        gw.opened(self)

    def reconnect(self, delay_ms: int, reason: str) -> bool:
        """Send RECONNECT if the session is open and was not asked to move yet; True if sent."""
        conn = self._conn
        if conn is None or conn.state is not State.OPEN:
            return False
        conn.send(Reconnect(delay_ms, reason))
        self._write(conn.data_to_send())
        return True

    def fail(self, code: ErrorCode, reason: str) -> None:
        """Send ERROR(code, reason) and close; counted as a rejection before WELCOME."""
        conn = self._conn
        if conn is None or conn.state is State.CLOSED:
            return
        self._gw.count_error(code, self._open)
        conn.fail(code, reason)
        self._write(conn.data_to_send())
        if self._transport is not None:
            self._transport.close()


class Gateway:
    """One worker's listener, its connections, the sweep and the drain; also the handlers' Hub."""

    def __init__(
        self,
        cfg: GatewayConfig,
        counters: NodeCounters,
        *,
        worker: int = 0,
        clock: Callable[[], float] = time.monotonic,
        rng: random.Random | None = None,
    ) -> None:
        self.cfg = cfg
        self.counters = counters
        self.worker = worker
        self._clock = clock
        self._rng = rng or random.Random()
        self.session_prefix = f"{cfg.id}.{worker}."
        self.heartbeat_ms = int(cfg.heartbeat * 1000)
        self.idle_ms = int(cfg.idle_timeout * 1000)
        self.max_backlog = max(1 << 20, 16 * cfg.max_frame)
        # Sweep often enough that a timeout fires at most ~20% late, but never more than 1/s.
        self.sweep_interval = min(1.0, max(0.02, min(cfg.handshake_timeout, cfg.idle_timeout) / 5))
        self._hs_ticks = math.ceil(cfg.handshake_timeout / self.sweep_interval)
        self._idle_ticks = math.ceil(cfg.idle_timeout / self.sweep_interval)
        self.tick = 0
        self.conns: dict[int, GatewayConnection] = {}
        self._next = 0
        self._ips: dict[str, str] = {}
        self.draining = False
        self.messages_in = 0
        self.messages_out = 0
        self._verifier: Any = None
        self._nonces: Any = None
        if cfg.secrets is not None:
            from tcpdispatch.tickets import TicketVerifier

            self._verifier = TicketVerifier(list(cfg.secrets))
            self._nonces = counters.nonce_cache()  # node-wide: shared by every worker
        self.security: ServerSecurity | None = None
        self.handshakes_full = self.handshakes_resumed = self.handshakes_plain = 0
        if cfg.key_file is not None:
            self.security = load_security(cfg)
        self.handler: Handler = load_handler_class(cfg.handler)(self)
        self._server: asyncio.AbstractServer | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self.ages = AgeIndex(clock)  # session number -> age, for shedding (see shed.py)
        self.shedding = 0  # sessions chosen by shed orders and not yet sent RECONNECT
        self._shed_queued: set[int] = set()  # their session numbers
        self._shed_leaving: set[int] = set()  # session numbers chosen by shed orders, still open
        self._empty = asyncio.Event()
        self._done = asyncio.Event()

    # -- lifecycle -----------------------------------------------------------
    async def start(self) -> None:
        """Bind the listener and start the sweep; raises OSError if the port is taken."""
        loop = asyncio.get_running_loop()
        host, port = self.cfg.listen
        self._server = await loop.create_server(
            lambda: GatewayConnection(self),
            host,
            port,
            reuse_port=self.cfg.workers > 1,
            backlog=self.cfg.backlog,
        )
        self._tasks.append(loop.create_task(self._sweep_loop()))

    async def wait_closed(self) -> None:
        await self._done.wait()

    def drain(self) -> None:
        """Start draining (idempotent): stop accepting,
        RECONNECT everyone over the window, then stop."""
        if self.draining or self._done.is_set():
            return
        self.draining = True
        self.counters.set_draining()
        if self._server is not None:
            self._server.close()
        log.info(
            "worker %d draining %d connections over %.1fs",
            self.worker,
            len(self.conns),
            self.cfg.drain_window,
        )
        self._tasks.append(asyncio.get_running_loop().create_task(self._drain()))

    def stop(self) -> None:
        """Stop at once: close the listener and every connection."""
        if self._server is not None:
            self._server.close()
        for p in list(self.conns.values()):
            if p._transport is not None:
                p._transport.abort()
        for t in self._tasks:
            if t is not asyncio.current_task():
                t.cancel()
        self._done.set()

    async def _drain(self) -> None:
        window = self.cfg.drain_window
        start = self._clock()
        # Send over the first 90% of the window, so the last clients still have time to leave.
        spread = window * 0.9
        targets = [p for p in self.conns.values() if p._open]
        n = len(targets)
        sent = 0
        while sent < n:
            elapsed = self._clock() - start
            due = min(n, math.floor(n * elapsed / spread) + 1) if spread > 0 else n
            for p in targets[sent:due]:
                conn = p._conn
                if conn is not None and conn.state is State.OPEN:
                    delay = self._rng.randrange(0, 250)
                    conn.send(Reconnect(delay, "gateway draining"))
                    p._write(conn.data_to_send())
            sent = due
            if sent < n:
                next_at = start + spread * sent / n
                await asyncio.sleep(max(0.01, next_at - self._clock()))
        del targets
        rest = window - (self._clock() - start)
        if self.conns and rest > 0:
            try:
                await asyncio.wait_for(self._empty.wait(), rest)
            except TimeoutError:
                pass
        if self.conns:
            log.info("drain window over: closing %d remaining connections", len(self.conns))
            for p in list(self.conns.values()):
                p.close()
            try:
                await asyncio.wait_for(self._empty.wait(), 1.0)
            except TimeoutError:
                pass
        self.stop()

    async def _sweep_loop(self) -> None:
        while True:
            await asyncio.sleep(self.sweep_interval)
            self.sweep()
            self.counters.add_messages(self.messages_in, self.messages_out)
            self.messages_in = self.messages_out = 0
            if self.counters.draining and not self.draining:
                self.drain()  # another process (the supervisor) flagged the node
            order = self.counters.take_shed() if self.counters.workers > 1 else None
            if order is not None:
                self.shed(*order)  # posted by the supervisor's POST /shed

    def sweep(self) -> int:
        """Advance the tick and close connections past their deadline; returns how many."""
        self.tick += 1
        self.ages.record(self._next)
        hs_limit = self.tick - self._hs_ticks
        idle_limit = self.tick - self._idle_ticks
        late: list[GatewayConnection] = []
        for p in self.conns.values():
            if p.last < (idle_limit if p._open else hs_limit) and p._conn is not None:
                late.append(p)
        for p in late:
            if p._open:
                p.fail(ErrorCode.IDLE_TIMEOUT, f"no frame for {self.cfg.idle_timeout:g}s")
            else:
                p.fail(
                    ErrorCode.HANDSHAKE_TIMEOUT, f"no HELLO within {self.cfg.handshake_timeout:g}s"
                )
        return len(late)

    def reload_keys(self) -> bool:
        """Re-read ``--key-file`` (SIGHUP). Open connections keep their keys; only new
        handshakes see the new set. A bad file keeps the old keys; returns success."""
        if self.cfg.key_file is None:
            return True
        try:
            security = load_security(self.cfg)
        except ConfigError as exc:
            log.error("worker %d: key reload failed, keeping the old keys: %s", self.worker, exc)
            return False
        old = self.security
        self.security = security
        if old is None or [k.id for k in old.keys] != [k.id for k in security.keys]:
            log.info(
                "worker %d: keys reloaded: current %s, %d accepted",
                self.worker,
                security.current.public.text,
                len(security.keys),
            )
        return True

    def shed(self, count: int, window_s: float, min_age_s: float) -> int:
        """RECONNECT up to ``count`` of the oldest open sessions older than ``min_age_s``, spread
        over ``window_s``; returns how many were chosen (fewer when not enough are old enough)."""
        if self.draining or count <= 0:
            return 0
        cutoff = self.ages.cutoff(min_age_s)
        queued = self._shed_queued
        chosen = pick_oldest(
            self.conns,
            cutoff,
            count,
            lambda p: (
                p._num not in queued
                and p._open
                and p._conn is not None
                and p._conn.state is State.OPEN
            ),
        )
        if not chosen:
            return 0
        nums = [p._num for p in chosen]
        queued.update(nums)  # a later order must not pick them again before their turn
        self._shed_leaving.update(nums)  # reported as "leaving" until they close
        self.counters.set_leaving(len(self._shed_leaving))
        self.shedding += len(chosen)
        log.info(
            "worker %d shedding %d sessions over %.1fs (asked %d, older than %.1fs)",
            self.worker,
            len(chosen),
            window_s,
            count,
            min_age_s,
        )

        def sent(n: int) -> None:
            self.shedding -= n
            self.counters.add_shed(n)

        async def run() -> None:
            try:
                done = await send_spread(
                    chosen,
                    window_s,
                    self._clock,
                    lambda: self._rng.randrange(0, MAX_DELAY_MS),
                    sent,
                )
                self.shedding -= len(chosen) - done  # closed before their turn
            finally:
                queued.difference_update(nums)
            # A client that ignores RECONNECT (an old SDK) must not count as leaving for ever.
            await asyncio.sleep(LEAVE_GRACE_S)
            self._shed_leaving.difference_update(nums)
            self.counters.set_leaving(len(self._shed_leaving))

        task = asyncio.get_running_loop().create_task(run())
        self._tasks.append(task)
        task.add_done_callback(self._task_done)
        return len(chosen)

    def _task_done(self, task: asyncio.Task[None]) -> None:
        if task in self._tasks:
            self._tasks.remove(task)

    # -- called by GatewayConnection -------------------------------------------
    def intern_ip(self, ip: str) -> str:
        ips = self._ips
        got = ips.get(ip)
        if got is None:
            if len(ips) > 65536:
                ips.clear()
            got = ips[ip] = sys.intern(ip)
        return got

    def admit(self, p: GatewayConnection) -> ErrorCode | None:
        refusal = self.counters.admit(self.cfg.capacity, p._ip, self.cfg.per_ip_limit)
        if refusal is not None:
            self.counters.add_rejected(refusal)
            self.counters.add_error(refusal)
            return refusal
        p._admitted = True
        self._next += 1
        p._num = self._next
        self.conns[self._next] = p
        self._empty.clear()
        return None

    def check_hello(self, ticket: str, client_id: str) -> tuple[ErrorCode, str] | None:
        if self.draining:
            return ErrorCode.DRAINING, "gateway is draining; ask the dispatcher for another"
        if self._verifier is None:
            return None
        if not ticket:
            return ErrorCode.TICKET_REQUIRED, "this gateway requires a ticket"
        try:
            claims = self._verifier.verify(ticket, self.cfg.id, client_id)
            self._nonces.admit(claims)
        except TicketError as exc:
            return exc.code, exc.reason
        return None

    def opened(self, p: GatewayConnection) -> None:
        self.counters.add_accepted()
        self.call_handler("on_connect", p)

    def count_error(self, code: ErrorCode, opened: bool) -> None:
        self.counters.add_error(code)
        if not opened:
            self.counters.add_rejected(code)

    def call_handler(self, name: str, p: GatewayConnection, *args: Any) -> None:
        try:
            getattr(self.handler, name)(p, *args)
        except Exception:  # a handler bug fails this session, never the gateway
            log.exception("handler %s failed for %s", name, p.session_id)
            if name != "on_close":
                p.fail(ErrorCode.INTERNAL, "application error")

    def forget(self, p: GatewayConnection, reason: str) -> None:
        if not p._admitted:
            return
        p._admitted = False
        self.conns.pop(p._num, None)
        if self._shed_leaving and p._num in self._shed_leaving:
            self._shed_leaving.discard(p._num)
            self.counters.set_leaving(len(self._shed_leaving))
        self.counters.release(p._ip, self.cfg.per_ip_limit)
        if p._open:
            self.call_handler("on_close", p, reason)
        if not self.conns:
            self._empty.set()

    # -- Hub API for handlers ------------------------------------------------
    def sessions(self) -> Iterator[GatewayConnection]:
        """Open sessions of this worker."""
        return (p for p in list(self.conns.values()) if p.is_open)

    def get(self, session_id: str) -> GatewayConnection | None:
        prefix, _, num = session_id.rpartition(".")
        if prefix + "." != self.session_prefix:
            return None
        try:
            p = self.conns.get(int(num, 16))
        except ValueError:
            return None
        return p if p is not None and p.is_open else None

    def send(self, session_id: str, payload: bytes) -> bool:
        p = self.get(session_id)
        return p.send(payload) if p is not None else False

    def broadcast(self, payload: bytes, exclude: Any = None) -> int:
        """DATA to every open session of this worker but ``exclude``; returns how many."""
        frame = encode_data(payload)  # encode once, write to all
        n = 0
        for p in list(self.conns.values()):
            if p is exclude or not p.is_open:
                continue
            p._write(frame)
            n += 1
        self.messages_out += n
        return n


def load_security(cfg: GatewayConfig) -> ServerSecurity:
    """The encryption settings of ``cfg`` (reads the key file; ConfigError if bad)."""
    from tcpdispatch.secure.keys import key_file_is_private, load_key_file

    assert cfg.key_file is not None
    keys = load_key_file(cfg.key_file)
    if not key_file_is_private(cfg.key_file):
        log.warning("key file %s is readable by group or others; chmod 600 it", cfg.key_file)
    return ServerSecurity(keys, allow_plain=cfg.allow_plain, resume_lifetime=cfg.resume_lifetime)

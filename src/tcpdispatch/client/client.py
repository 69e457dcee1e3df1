"""The asyncio client SDK: find a gateway, stay connected, move when told to.

::

    client = Client(dispatchers=["http://127.0.0.1:8080"], fallback=["127.0.0.1:9001"],
                    client_id="alice", cache_path="~/.cache/myapp/dispatch.json")
    await client.connect()
    await client.send(b"hello")
    async for message in client:
        ...
    await client.close()

One supervisor task owns the connection life cycle: it asks for addresses
(dispatchers in order, then the cached answer, then the static list), races
the candidates, then watches the session until it ends and waits the backoff
delay before the next round. All decisions (delays, bans, order) come from
:mod:`tcpdispatch.client.policy`.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
import uuid
from collections import deque
from collections.abc import AsyncIterator, Callable, Coroutine, Sequence
from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path
from typing import Any, Self

import aiohttp

from tcpdispatch.client.policy import (
    Backoff,
    BackoffConfig,
    DispatchAnswer,
    Endpoint,
    FailureMemory,
    order_candidates,
    parse_static,
)
from tcpdispatch.client.session import (
    GatewaySession,
    HandshakeFailed,
    Loss,
    error_name,
    open_session,
    race,
)
from tcpdispatch.client.sources import fetch_dispatch, load_cache, report_gateway, save_cache
from tcpdispatch.errors import ClientError, DispatchError, ErrorCode
from tcpdispatch.ids import gateway_id_problem
from tcpdispatch.secure.keys import PublicKey, parse_public_key
from tcpdispatch.secure.resumption import ResumptionStore

log = logging.getLogger("tcpdispatch.client")


class EventKind(Enum):
    CONNECTED = "connected"
    DISCONNECTED = "disconnected"
    RECONNECTING = "reconnecting"
    GATEWAY_CHANGED = "gateway_changed"
    FALLBACK = "fallback"  # no dispatcher answered; using the cache or the static list
    CLOSED = "closed"


@dataclass(frozen=True, slots=True)
class ClientEvent:
    """A status change, passed to every listener (see :meth:`Client.add_listener`)."""

    kind: EventKind
    gateway: str | None = None  # gateway id (or address) concerned
    session_id: str | None = None
    delay: float | None = None  # RECONNECTING: seconds until the next attempt
    reason: str = ""
    source: str = ""  # CONNECTED: dispatcher | cache | static
    connect_time: float | None = None  # CONNECTED: seconds from first SYN to WELCOME
    previous: str | None = None  # GATEWAY_CHANGED: the gateway we left


class ClientClosed(ClientError):
    """The client was closed; nothing more can be sent."""


@dataclass(slots=True)
class ClientStats:
    connects: int = 0
    reconnects: int = 0
    failed_rounds: int = 0
    dispatch_requests: int = 0
    dispatch_seconds: float = 0.0  # total time spent waiting for dispatcher answers
    handshake_seconds: float = 0.0  # total time from first SYN to WELCOME of winning attempts
    waited_seconds: float = 0.0  # total backoff / delay-hint sleeping
    attempt_errors: dict[str, int] = field(default_factory=dict)  # gateway attempts, by error slug
    dispatch_errors: dict[str, int] = field(default_factory=dict)  # dispatcher requests, by kind


class _RoundFailed(ClientError):
    def __init__(self, reason: str, hint: float | None = None) -> None:
        self.reason = reason
        self.hint = hint
        super().__init__(reason)


Listener = Callable[[ClientEvent], object]


def check_payload(payload: object) -> bytes:
    """``payload`` as bytes; TypeError naming the type
    for anything not bytes-like (e.g. ``str``)."""
    if isinstance(payload, bytes):
        return payload
    if isinstance(payload, (bytearray, memoryview)):
        return bytes(payload)
    hint = "; encode it first, e.g. text.encode()" if isinstance(payload, str) else ""
    raise TypeError(f"send() takes bytes, not {type(payload).__name__}{hint}")


class Client:
    """A self-healing connection to one of the gateways.

    ``dispatchers`` are tried in order (a failing or slow one is banned for a
    growing time); when none answers, the answer cached at ``cache_path`` and
    then the static ``fallback`` addresses are raced. With no dispatchers the
    client does classic client-side balancing over ``fallback`` (random
    order, failover). ``rng`` and ``clock`` are injectable for tests.

    Encryption (docs/client.md, docs/protocol.md section 9): a gateway whose public
    key is known — ``pinned_keys`` (by gateway id or ``host:port``), a ``KEY@host:port``
    fallback entry, or the ``key`` of the dispatcher's answer — is connected to
    encrypted, and must prove it holds that key. ``encryption="required"`` (the setting
    for anything outside loopback) refuses gateways with no known key;
    ``"auto"`` (default) connects to those in clear; ``"off"`` never encrypts.
    ``ca_file`` verifies an HTTPS dispatcher against that CA bundle.
    ``zone``: the client's zone, sent to the dispatcher as a hint (docs/zones.md); a
    dispatcher with zones serves it from that zone while the zone has room.
    """

    def __init__(
        self,
        dispatchers: Sequence[str] = (),
        fallback: Sequence[str] = (),
        *,
        client_id: str | None = None,
        zone: str | None = None,
        cache_path: str | Path | None = None,
        backoff: BackoffConfig | None = None,
        dispatch_timeout: float = 2.0,
        handshake_timeout: float = 5.0,
        stagger: float = 0.25,
        max_in_flight: int = 3,
        missed_pongs: int = 2,
        heartbeat: float | None = None,
        max_pending: int = 1000,
        max_received: int = 10000,
        linger: float = 1.0,
        report_failures: bool = True,
        shuffle_fallback: bool = True,
        local_host: str | None = None,
        encryption: str = "auto",
        pinned_keys: dict[str, str] | None = None,
        resumption: bool = True,
        ca_file: str | None = None,
        http: aiohttp.ClientSession | None = None,
        rng: random.Random | None = None,
        clock: Callable[[], float] = time.monotonic,
        on_connected: Listener | None = None,
        on_reconnecting: Listener | None = None,
        on_gateway_changed: Listener | None = None,
    ) -> None:
        self.dispatchers = [d.rstrip("/") for d in dispatchers if d]
        self.fallback = parse_static(fallback)
        if not self.dispatchers and not self.fallback:
            raise ValueError("Client needs at least one dispatcher URL or fallback address")
        self.client_id = client_id or uuid.uuid4().hex[:16]
        if zone is not None and (why := gateway_id_problem(zone)):  # zone names follow the id rules
            raise ValueError(f"zone {why}, got {zone!r}")
        self.zone = zone
        self.cache_path = Path(cache_path).expanduser() if cache_path else None
        self.rng = rng or random.Random()
        self.clock = clock
        self.backoff = Backoff(backoff, self.rng)
        self.dispatch_timeout = dispatch_timeout
        self.handshake_timeout = handshake_timeout
        self.stagger = stagger
        self.max_in_flight = max_in_flight
        self.missed_pongs = missed_pongs
        self.heartbeat_override = heartbeat
        # After a move the old session stays open this long, still delivering what arrives on
        # it (replies to messages sent just before the switch), then says BYE.
        self.linger = linger
        self.report_failures = report_failures
        self.shuffle_fallback = shuffle_fallback
        self.local_host = local_host
        if encryption not in ("auto", "required", "off"):
            raise ValueError(f"encryption must be auto, required or off, not {encryption!r}")
        self.encryption = encryption
        self.pinned_keys: dict[str, PublicKey] = {}
        for name, text in (pinned_keys or {}).items():
            try:
                self.pinned_keys[name] = parse_public_key(text)
            except ValueError as exc:
                raise ValueError(f"pinned_keys[{name!r}]: {exc}") from None
        self.grants = ResumptionStore() if resumption else None
        self.ca_file = ca_file
        self._ssl = _ssl_context(ca_file)
        self.last_failure = ""
        self._dispatch_failures: dict[str, str] = {}  # dispatcher -> its last failure, for messages
        self.stats = ClientStats()
        self.dispatcher_memory = FailureMemory(clock, base=1.0, factor=2.0, max_ban=30.0)
        self.gateway_memory = FailureMemory(clock, base=1.0, factor=2.0, max_ban=60.0)
        self._not_before: dict[str, float] = {}  # dispatcher -> time its Retry-After ends
        self._heartbeat_hint: float | None = None
        self._http = http
        self._own_http = http is None
        self._listeners: list[Listener] = []
        for kind, cb in (
            (EventKind.CONNECTED, on_connected),
            (EventKind.RECONNECTING, on_reconnecting),
            (EventKind.GATEWAY_CHANGED, on_gateway_changed),
        ):
            if cb is not None:
                self._listeners.append(_only(kind, cb))
        self._session: GatewaySession | None = None
        self._pending: deque[bytes] = deque()
        self._max_pending = max_pending
        self._space = asyncio.Event()
        self._connected = asyncio.Event()
        self._received: asyncio.Queue[bytes | None] = asyncio.Queue()
        self._max_received = max_received
        self._reading_paused = False
        self._supervisor: asyncio.Task[None] | None = None
        self._closing = False
        self._wake = asyncio.Event()
        self._last_gateway: str | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._handshake_avg: float | None = None  # smoothed SYN->WELCOME time of past winners
        self._leaving: str | None = None  # gateway that asked us to move for rebalancing

    # -- public API --------------------------------------------------------
    @property
    def gateway(self) -> str | None:
        """The id (or address) of the gateway we are connected to, else None."""
        s = self._session
        return s.endpoint.label if s is not None and s.usable else None

    @property
    def gateway_address(self) -> str | None:
        s = self._session
        return s.endpoint.address if s is not None and s.usable else None

    @property
    def session_id(self) -> str | None:
        s = self._session
        return s.session_id if s is not None and s.usable else None

    @property
    def connected(self) -> bool:
        return self._session is not None and self._session.usable

    def add_listener(self, listener: Listener) -> None:
        """Call ``listener(ClientEvent)`` on every status change."""
        self._listeners.append(listener)

    async def connect(self, timeout: float | None = None) -> None:
        """Start the client and wait until the first gateway session is open.

        On timeout raises DispatchError; the client keeps trying in the
        background until :meth:`close`.
        """
        if self._closing:
            raise ClientClosed("client is closed")
        if self._supervisor is None:
            if self._http is None:
                self._http = make_http_session(self._ssl)
            self._supervisor = asyncio.get_running_loop().create_task(self._supervise())
        try:
            async with asyncio.timeout(timeout):
                await self._connected.wait()
        except TimeoutError:
            why = f": {self.last_failure}" if self.last_failure else ""
            raise DispatchError(f"no gateway reachable within {timeout:g}s{why}") from None

    async def wait_connected(self, timeout: float | None = None) -> None:
        """Wait until a session is open (again)."""
        async with asyncio.timeout(timeout):
            await self._connected.wait()

    async def send(self, payload: bytes) -> None:
        """Send one message (bytes-like; TypeError otherwise). While reconnecting it is queued
        (bounded) and sent after."""
        payload = check_payload(payload)
        if self._closing:
            raise ClientClosed("client is closed")
        s = self._session
        if s is not None and s.usable and not self._pending:
            await s.send(payload)
            return
        while len(self._pending) >= self._max_pending:
            self._space.clear()
            await self._space.wait()
            if self._closing:
                raise ClientClosed("client is closed")
        self._pending.append(payload)
        if s is not None and s.usable:
            await self._flush()

    async def receive(self) -> bytes:
        """The next received message; raises ClientClosed once closed and drained."""
        item = await self._received.get()
        if item is None:
            self._received.put_nowait(None)  # keep the end marker for other readers
            raise ClientClosed("client is closed")
        if self._reading_paused and self._received.qsize() < self._max_received // 2:
            self._reading_paused = False
            if self._session is not None:
                self._session.resume_reading()
        return item

    def __aiter__(self) -> AsyncIterator[bytes]:
        return self._iterate()

    async def _iterate(self) -> AsyncIterator[bytes]:
        while True:
            try:
                yield await self.receive()
            except ClientClosed:
                return

    async def close(self) -> None:
        """Say BYE and stop reconnecting. Messages still queued are dropped (and counted)."""
        if self._closing:
            return
        self._closing = True
        self._wake.set()
        self._space.set()
        if self._supervisor is not None:
            self._supervisor.cancel()
            try:
                await self._supervisor
            except asyncio.CancelledError:
                pass
        if self._session is not None:
            self._session.close()
        for t in list(self._tasks):
            t.cancel()
        if self._own_http and self._http is not None:
            await self._http.close()
        self._received.put_nowait(None)
        self._emit(ClientEvent(EventKind.CLOSED, reason=f"{len(self._pending)} unsent"))

    async def __aenter__(self) -> Self:
        await self.connect()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    @property
    def pending(self) -> int:
        """Messages queued while no session is open."""
        return len(self._pending)

    # -- supervisor --------------------------------------------------------
    async def _supervise(self) -> None:
        delay = 0.0
        reason = "start"
        old: GatewaySession | None = None  # a session that asked us to move, still usable
        while not self._closing:
            if delay > 0:
                self._emit(
                    ClientEvent(
                        EventKind.RECONNECTING, self._last_gateway, delay=delay, reason=reason
                    )
                )
                await self._sleep(delay)
                self.stats.waited_seconds += delay
                if self._closing:
                    return
            try:
                session = await self._round()
            except _RoundFailed as exc:
                self.stats.failed_rounds += 1
                delay = self.backoff.failure_delay(exc.hint)
                reason = self.last_failure = exc.reason
                log.debug(
                    "client %s: round failed: %s; retry in %.2fs", self.client_id, reason, delay
                )
                continue
            if old is not None:
                self._spawn(self._retire(old))
                old = None
            loss, up_for = await self._serve(session)
            if self._closing:
                return
            # The gateway we are leaving (dead, or draining) goes to the end of the
            # next race for a while: the dispatcher may not know yet and hand it out.
            self.gateway_memory.failed(session.endpoint.address)
            # A rebalancing RECONNECT: tell the dispatcher
            # which gateway we leave (docs/protocol.md).
            self._leaving = (
                session.endpoint.id
                if loss.graceful and loss.reason.startswith("rebalance")
                else None
            )
            if loss.graceful:
                old = session  # keep using it while we look for the next gateway
                delay = self.backoff.loss_delay(up_for, loss.delay or 0.0)
            else:
                delay = self.backoff.loss_delay(up_for)
            reason = f"{loss.kind}: {loss.reason}" if loss.reason else loss.kind
            self.stats.reconnects += 1

    async def _retire(self, old: GatewaySession) -> None:
        """Close the session we moved away from after ``linger`` (make-before-break, no loss).

        When handshakes are slow (an overloaded host), replies are slow too: linger at
        least four handshake times, up to 10 s.
        """
        linger = self.linger
        if linger > 0 and self._handshake_avg is not None:
            linger = max(linger, min(10.0, 4 * self._handshake_avg))
        try:
            await asyncio.sleep(linger)
        finally:
            old.close()

    async def _sleep(self, delay: float) -> None:
        """Sleep ``delay`` seconds, cut short by :meth:`close`."""
        self._wake.clear()
        try:
            await asyncio.wait_for(self._wake.wait(), timeout=delay)
        except TimeoutError:
            pass

    async def _serve(self, session: GatewaySession) -> tuple[Loss, float]:
        """Make ``session`` current and wait until it ends or asks us to move."""
        previous = self._last_gateway
        self._session = session
        self._last_gateway = session.endpoint.label
        session.attach(self._on_data)
        interval = (
            self.heartbeat_override
            or (session.welcome.heartbeat_ms / 1000)
            or self._heartbeat_hint
            or 10.0
        )
        session.start_heartbeat(max(interval, 0.05), self.missed_pongs)
        started = self.clock()
        self.stats.connects += 1
        self.stats.handshake_seconds += session.connect_time
        self.gateway_memory.succeeded(session.endpoint.address)
        self._connected.set()
        self._emit(
            ClientEvent(
                EventKind.CONNECTED,
                session.endpoint.label,
                session.session_id,
                source=session.endpoint.source,
                connect_time=session.connect_time,
            )
        )
        if previous is not None and previous != session.endpoint.label:
            self._emit(
                ClientEvent(
                    EventKind.GATEWAY_CHANGED,
                    session.endpoint.label,
                    session.session_id,
                    previous=previous,
                )
            )
        await self._flush()
        loss = await asyncio.shield(session.ended)
        up_for = self.clock() - started
        if not loss.graceful:
            self._connected.clear()
            session.close(bye=False)
            self._emit(
                ClientEvent(
                    EventKind.DISCONNECTED,
                    session.endpoint.label,
                    session.session_id,
                    reason=f"{loss.kind} {error_name(loss.code) if loss.code else ''}".strip(),
                )
            )
        return loss, up_for

    def _on_data(self, payload: bytes) -> None:
        self._received.put_nowait(payload)
        if not self._reading_paused and self._received.qsize() >= self._max_received:
            self._reading_paused = True
            if self._session is not None:
                self._session.pause_reading()

    async def _flush(self) -> None:
        while self._pending:
            s = self._session
            if s is None or not s.usable:
                return
            payload = self._pending.popleft()
            self._space.set()
            await s.send(payload)

    # -- one connect round -------------------------------------------------
    async def _round(self) -> GatewaySession:
        candidates, dispatcher_url = await self._candidates()
        ordered = order_candidates(
            candidates,
            self.gateway_memory,
            shuffle=not self.dispatchers and self.shuffle_fallback,
            rng=self.rng,
        )

        def failed(ep: Endpoint, exc: BaseException) -> None:
            code = exc.code if isinstance(exc, HandshakeFailed) else None
            slug = error_name(code)
            self.stats.attempt_errors[slug] = self.stats.attempt_errors.get(slug, 0) + 1
            self.gateway_memory.failed(ep.address)
            log.debug("client %s: %s failed: %s", self.client_id, ep.label, exc)
            if (
                self.report_failures
                and dispatcher_url
                and ep.id
                and isinstance(exc, HandshakeFailed)
                and exc.unreachable
                and self._http is not None
                and _report_due(dispatcher_url, ep.id, self.clock())
            ):
                self._spawn(report_gateway(self._http, dispatcher_url, ep.id, exc.reason))

        async def attempt(ep: Endpoint) -> GatewaySession:
            return await open_session(
                ep,
                self.client_id,
                timeout=self.handshake_timeout,
                local_host=self.local_host,
                key=self.key_for(ep),
                grants=self.grants,
            )

        result = await race(
            ordered,
            attempt,
            stagger=self.current_stagger(),
            max_in_flight=self.max_in_flight,
            on_failure=failed,
            discard=lambda s: s.close(),
        )
        if result.winner is None:
            reasons = sorted({str(e) for _, e in result.failures})
            raise _RoundFailed("no gateway answered: " + "; ".join(reasons[:3]))
        took = result.winner[1].connect_time
        avg = self._handshake_avg
        self._handshake_avg = took if avg is None else 0.7 * avg + 0.3 * took
        return result.winner[1]

    def key_for(self, ep: Endpoint) -> PublicKey | None:
        """The public key ``ep`` must prove, None to connect in clear.

        A pinned key wins over the dispatcher's: the pin is the application's own
        configuration. HandshakeFailed(ENCRYPTION_REQUIRED) when encryption is required
        and no key is known.
        """
        if self.encryption == "off":
            return None
        key = self.pinned_keys.get(ep.id) if ep.id else None
        if key is None:
            key = self.pinned_keys.get(ep.address)
        if key is None and ep.key:
            try:
                key = parse_public_key(ep.key)
            except ValueError as exc:
                raise HandshakeFailed(
                    ep, f"bad public key: {exc}", int(ErrorCode.HANDSHAKE_FAILED)
                ) from None
        if key is None and self.encryption == "required":
            raise HandshakeFailed(
                ep,
                "no public key known for this gateway (neither pinned nor in the "
                "dispatcher's answer); refusing to connect in clear (encryption='required')",
                int(ErrorCode.ENCRYPTION_REQUIRED),
            )
        return key

    def current_stagger(self) -> float:
        """Delay before racing the next candidate: ``stagger``, or twice the usual handshake time.

        When gateways are slow to answer (a reconnect storm), a fixed 250 ms
        would open a second and third connection for every client and add to
        the overload; like RFC 8305, adapt to the observed handshake time,
        capped at 2 s.
        """
        if self._handshake_avg is None:
            return self.stagger
        return min(max(self.stagger, 2 * self._handshake_avg), max(self.stagger, 2.0))

    async def _candidates(self) -> tuple[list[Endpoint], str | None]:
        """Endpoints to race and the dispatcher that gave them (None for cache/static)."""
        now = self.clock()
        deferred: list[float] = []
        errors: list[str] = []
        for url in self.dispatcher_memory.usable(self.dispatchers):
            not_before = self._not_before.get(url, 0.0)
            if not_before > now:
                deferred.append(not_before - now)
                continue
            assert self._http is not None
            self.stats.dispatch_requests += 1
            res = await fetch_dispatch(
                self._http,
                url,
                self.client_id,
                self.dispatch_timeout,
                leaving=self._leaving,
                zone=self.zone,
            )
            self.stats.dispatch_seconds += self.clock() - now
            now = self.clock()
            if res.answer is not None:
                self._leaving = None
                self.dispatcher_memory.succeeded(url)
                self._dispatch_failures.pop(url, None)
                self._use_answer(res.answer)
                return res.answer.endpoints, url
            if res.retry_after is not None:
                # Alive but refusing: all gateways are full. Do not fall back (that
                # would overload the gateways the dispatcher protects); wait instead.
                self._not_before[url] = now + res.retry_after
                self._count_dispatch_error("503")
                deferred.append(res.retry_after)
                continue
            self.dispatcher_memory.failed(url)
            self._count_dispatch_error(res.kind)
            self._dispatch_failures[url] = msg = f"{url}: {res.error}"
            errors.append(msg)
            log.debug("client %s: dispatcher %s failed: %s", self.client_id, url, res.error)
        if deferred:
            raise _RoundFailed("dispatchers have no gateway available", hint=min(deferred))
        endpoints: list[Endpoint] = []
        detail = ""
        if self.cache_path is not None:
            cached = load_cache(self.cache_path)
            if cached is not None:
                endpoints += cached.answer.endpoints
                detail = f"cached answer ({cached.age(time.time()):.0f}s old)"
        endpoints += self.fallback
        if not endpoints:
            # Banned dispatchers were not asked this round: name why they failed last time.
            why = errors or list(self._dispatch_failures.values())
            raise _RoundFailed("no dispatcher answered and there is no fallback: " + "; ".join(why))
        if self.dispatchers:
            self._emit(ClientEvent(EventKind.FALLBACK, reason=detail or "static list"))
        return endpoints, None

    def _use_answer(self, answer: DispatchAnswer) -> None:
        self.backoff.config = self.backoff.config.with_hints(answer.retry)
        self._heartbeat_hint = answer.heartbeat_s
        if self.cache_path is not None:
            save_cache(self.cache_path, answer, time.time())

    # -- helpers -----------------------------------------------------------
    def _count_dispatch_error(self, kind: str) -> None:
        self.stats.dispatch_errors[kind] = self.stats.dispatch_errors.get(kind, 0) + 1

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _emit(self, event: ClientEvent) -> None:
        for listener in list(self._listeners):
            try:
                listener(event)
            except Exception:
                log.exception("client event listener failed")


# Passive reports are deduplicated per process: when a gateway dies, thousands of
# clients in one loadgen process notice at once, and one report a second is plenty.
_REPORT_INTERVAL = 1.0
_last_report: dict[tuple[str, str], float] = {}


def _report_due(url: str, gateway_id: str, now: float) -> bool:
    key = (url, gateway_id)
    if now - _last_report.get(key, -1e9) < _REPORT_INTERVAL:
        return False
    if len(_last_report) > 10_000:
        _last_report.clear()
    _last_report[key] = now
    return True


def _only(kind: EventKind, cb: Listener) -> Listener:
    def listener(event: ClientEvent) -> None:
        if event.kind is kind:
            cb(event)

    return listener


def _ssl_context(ca_file: str | None) -> Any:
    """An SSL context trusting ``ca_file`` (None: aiohttp's default, the system store)."""
    if ca_file is None:
        return None
    import ssl

    try:
        return ssl.create_default_context(cafile=ca_file)
    except (OSError, ssl.SSLError) as exc:
        raise ValueError(f"ca_file {ca_file!r}: {exc}") from None


def make_http_session(ssl_context: Any = None) -> aiohttp.ClientSession:
    """The client's HTTP session; HTTPS dispatchers are verified with ``ssl_context``
    (see :func:`_ssl_context`), or with the system trust store when it is None."""
    if ssl_context is None:
        return aiohttp.ClientSession()
    return aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=ssl_context))

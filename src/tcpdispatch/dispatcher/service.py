"""The dispatch service: validate -> pick -> sign -> answer, for ``GET /v1/dispatch``.

:class:`DispatchService` is built with everything it needs (config, pool, counters,
the rebalancer that places moved clients) and keeps the answer pieces that make a
dispatch cheap: precomputed per-gateway JSON fragments (refreshed at picker rebuild),
answer templates cut where the ticket goes, one HMAC per answer, no JSON encoder call.
For ``p2c`` and ``random`` the same answer is made in C when the accelerator is built
(:mod:`tcpdispatch.dispatcher.fastpath`). It does no I/O: the HTTP server calls
:meth:`DispatchService.dispatch_bytes` inline, and every other route goes through
:class:`tcpdispatch.dispatcher.routes.Router`.
"""

from __future__ import annotations

import ipaddress
import logging
import random
import re
import time
from bisect import bisect_left
from collections import OrderedDict
from collections.abc import Callable
from time import perf_counter
from typing import TYPE_CHECKING, Any
from urllib.parse import unquote

from tcpdispatch.balancing.base import PickRequest
from tcpdispatch.balancing.registry import get_policy
from tcpdispatch.config import DispatcherConfig
from tcpdispatch.dispatcher import fastpath
from tcpdispatch.dispatcher.http import Headers, json_body
from tcpdispatch.dispatcher.pool import Pool
from tcpdispatch.httputil import error_body
from tcpdispatch.ids import gateway_id_problem
from tcpdispatch.metrics_common import DISPATCH_BUCKETS, PROBE_BUCKETS, LatencyHistogram
from tcpdispatch.tickets import TicketSigner, pack_id

if TYPE_CHECKING:
    from tcpdispatch.dispatcher.rebalancer import Rebalancer

log = logging.getLogger("tcpdispatch.dispatcher")

# For policies that never read the PickRequest: one
# shared instance spares a dataclass build per dispatch.
_NO_KEY = PickRequest()
# Answer templates kept per ordered gateway-id tuple (LRU: large pools see many distinct tuples).
TEMPLATE_CACHE = 4096


class Stats:
    """Plain counters on the hot path; exported by the metrics collector at scrape time."""

    __slots__ = (
        "bad_request",
        "dispatched",
        "latency",
        "other",
        "per_gateway",
        "probes",
        "unavailable",
    )

    def __init__(self) -> None:
        self.dispatched = 0
        self.unavailable = 0
        self.bad_request = 0
        self.per_gateway: dict[str, int] = {}
        self.other: dict[tuple[str, int], int] = {}  # (route, status) -> count
        # Answer times of dispatches answered through
        # dispatch_core (the C recogniser keeps its own).
        self.latency = LatencyHistogram(DISPATCH_BUCKETS)
        # Health probe durations by result ("ok" / "failed").
        self.probes = {
            "ok": LatencyHistogram(PROBE_BUCKETS),
            "failed": LatencyHistogram(PROBE_BUCKETS),
        }

    def observe_probe(self, ok: bool, seconds: float | None) -> None:
        if seconds is not None:
            self.probes["ok" if ok else "failed"].observe(seconds)


class DispatchService:
    """Answers dispatch requests from the pool's current picker snapshot.

    ``stats`` are the counters the metrics page and the rebalancer's breaker read;
    ``rebalance`` places clients that the rebalancer moved (``leaving=``); ``rng``
    jitters Retry-After; ``clock`` (wall time) dates tickets, on both hot paths.
    Picks and ticket nonces both draw from the pool's generator (``pool.rng``), which the
    C hot path shares when it is a C-backed :class:`~tcpdispatch.rng.SplitMixRandom`.
    """

    def __init__(
        self,
        config: DispatcherConfig,
        pool: Pool,
        *,
        stats: Stats | None = None,
        rebalance: Rebalancer | None = None,
        rng: random.Random | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.pool = pool
        self.rng = rng or random.Random()
        self.clock = clock
        self.draws = pool.rng  # picks, ticket nonces and the C path: one generator
        self.stats = stats if stats is not None else Stats()
        self.rebalance = rebalance
        self._frags: dict[
            str, bytes
        ] = {}  # gateway id -> JSON fragment of the current picker's candidates
        self._packed_ids: dict[
            str, bytes
        ] = {}  # gateway id -> the id as a ticket payload carries it
        self._pieces: dict[
            tuple[str, str, int, str, str], tuple[bytes, bytes]
        ] = {}  # id, host, port, key, zone
        self._templates: OrderedDict[tuple[str, ...], list[bytes]] = OrderedDict()
        self._unavailable: tuple[str, list[bytes]] = ("", [])
        self.fast: Any = None  # the C hot path (fastpath.FastDispatch) when built and enabled
        self._fast_body: Callable[[bytes], bytes | None] | None = None
        self._announced: str | None = None  # the hot path last logged (None: not yet announced)
        self._latency = self.stats.latency
        self.configure(config)
        pool.add_listener(self._refresh_fragments)
        self._refresh_fragments()

    # ------------------------------------------------------------ configuration

    def configure(self, config: DispatcherConfig) -> None:
        """Apply a (re)loaded config to the app (tokens, signer, hints, limits)."""
        self.config = config
        self.signer = TicketSigner(
            config.secrets[0], config.ticket_lifetime, clock=self.clock, rng=self.draws
        )
        self._issue = self.signer.issue
        self.k = 1 + config.alternates
        policy = get_policy(config.policy)
        self._unordered_alternates = not policy.ordered_alternates
        self._keyless = not policy.keyed
        self.max_client_id = config.max_client_id
        self.trusted = config.trusted_proxies
        self._trusted_cache: dict[str, bool] = {}
        hints = {"heartbeat_s": config.heartbeat_s, "retry": config.retry.as_hints()}
        self._tail = json_body(hints)[1:]  # '"heartbeat_s":..,"retry":{..}}'
        self._templates.clear()
        self._refresh_unavailable()
        if config.speedups:
            if self.fast is None:
                self.fast = fastpath.create(config, self.stats, self._tail, self.draws, self.clock)
            else:
                fastpath.configure(
                    self.fast, config, self.stats, self._tail, self.draws, self.clock
                )
        self._install_fast()

    def _install_fast(self) -> None:
        fast = self.fast
        if fast is None or any(c.id not in self._frags for c in self.pool.picker.candidates):
            return  # first configure(): fragments come with the first refresh
        picker = self.pool.picker
        fastpath.install(
            fast,
            picker,
            self._frags,
            self._packed_ids,
            enabled=self.config.speedups and picker.rng is self.draws and not self.config.zones,
        )
        self._fast_body = fast.body if fast.active else None
        if self._announced is not None and self._announced != self.hot_path:
            self.announce_hot_path()

    @property
    def hot_path(self) -> str:
        """``"c"`` while plain dispatches are answered by the C accelerator, else ``"python"``."""
        return "c" if self._fast_body is not None else "python"

    def hot_path_reason(self) -> str:
        """Why plain dispatches are not answered in C right now ("" while they are)."""
        if self.hot_path == "c":
            return ""
        if not self.config.speedups:
            return "speedups = false"
        if not fastpath.available():
            return "tcpdispatch._speedups not built, or TCPDISPATCH_SPEEDUPS=0"
        if not fastpath.shares(self.draws):
            return "the pool's random generator is not a C-backed tcpdispatch.rng.SplitMixRandom"
        if self.config.zones:
            return "zones configured"
        if fastpath.policy_code(get_policy(self.config.policy)) == fastpath.OFF:
            return f"policy {self.config.policy} has no C picker"
        return "no gateway can be handed out yet; C takes over with the first one"

    def announce_hot_path(self) -> None:
        """Log which path answers plain dispatches, and why; later changes are logged again."""
        self._announced = self.hot_path
        why = self.hot_path_reason()
        log.info("dispatch hot path: %s%s", self.hot_path, f" ({why})" if why else "")

    @property
    def fast_request(self) -> Callable[[bytes], tuple[bytes, bool] | None] | None:
        """The C recogniser for whole raw requests (the built-in server's fast path), if built."""
        return None if self.fast is None else self.fast.request

    def set_date(self, line: bytes) -> None:
        """The server's once-a-second ``date:`` header line, for answers built in C."""
        if self.fast is not None:
            self.fast.set_date(line)

    def answer_times(self) -> tuple[list[int], float]:
        """The answer-time histogram so far (bucket counts, total seconds), both hot paths."""
        lat = self.stats.latency
        counts, total = list(lat.counts), lat.total
        if self.fast is not None:
            c_counts, c_total = self.fast.latency()
            counts = [a + b for a, b in zip(counts, c_counts, strict=True)]
            total += c_total
        return counts, total

    def _refresh_fragments(self) -> None:
        """After a picker rebuild: per-gateway JSON fragments and the 503 answer.

        Fragments and ticket-encoded ids are kept per (id, host, port) across rebuilds:
        slow start rebuilds ten times a second, and encoding 10,000 of them each time
        cost more than the rebuild itself.
        """
        cache = self._pieces
        frags, ids = {}, {}
        gateways = self.pool.gateways
        keys = {}
        zoned = bool(self.config.zones)  # the answer names the gateway's zone (docs/zones.md)
        for c in self.pool.handed_out():
            gw = gateways.get(c.id)
            pub = gw.config.key if gw is not None else ""  # the gateway's public key, if encrypted
            zone = gw.config.zone if gw is not None and zoned else ""
            keys[c.id] = key = (c.id, c.host, c.port, pub, zone)
            hit = cache.get(key)
            if hit is None:
                doc: dict[str, Any] = {"id": c.id, "host": c.host, "port": c.port}
                if pub:
                    doc["key"] = pub
                if zone:
                    doc["zone"] = zone
                hit = cache[key] = (json_body(doc)[:-1], pack_id(c.id))
            frags[c.id], ids[c.id] = hit
        if (
            len(cache) > 2 * len(frags) + 1024
        ):  # gateways removed or moved: keep only the current ones
            self._pieces = {keys[gid]: (frags[gid], ids[gid]) for gid in frags}
        self._frags, self._packed_ids = frags, ids
        self._templates.clear()
        self._refresh_unavailable()
        self._install_fast()

    def _refresh_unavailable(self) -> None:
        """Precompute the 503 detail (an O(n) count) so
        a refusal costs no scan and no encoder call."""
        counts = self.pool.counts()
        if not self.pool.gateways:
            detail = "no gateways are configured"
        elif counts["up"] == 0:
            detail = f"no gateway is up ({counts['down']} down, {counts['draining']} draining)"
        else:
            detail = f"all {counts['up']} gateways that are up are at capacity"
        cfg = self.config
        bodies = [
            error_body("no_gateway_available", detail, retry_after_s=after)
            for after in range(cfg.retry_after_min, cfg.retry_after_max + 1)
        ]
        self._unavailable = (detail, bodies)

    # ------------------------------------------------------------ hot path

    def dispatch_bytes(
        self, qs: bytes, ip: str, headers: Headers | None
    ) -> tuple[int, str | None, bytes]:
        """:meth:`dispatch_core` for a raw query string, as the HTTP server has it."""
        try:
            text = qs.decode("ascii")
        except UnicodeDecodeError:
            return self.bad_request("query string must be ASCII (percent-encode other bytes)")
        return self.dispatch_core(text, ip, headers)

    def dispatch_core(
        self, qs: str, ip: str, headers: Headers | None
    ) -> tuple[int, str | None, bytes]:
        """Validate, pick, sign: ``(status, retry_after or None, JSON body)``.

        ``headers`` (lower-cased name/value byte pairs) are only read for X-Forwarded-For when
        the peer is a trusted proxy. The time it takes goes to the answer-time histogram.
        """
        t0 = perf_counter()
        answer = self._dispatch(qs, ip, headers)
        dt = perf_counter() - t0
        lat = self._latency  # LatencyHistogram.observe, inlined: this runs once per answer
        lat.counts[bisect_left(lat.bounds, dt)] += 1
        lat.total += dt
        return answer

    def _dispatch(self, qs: str, ip: str, headers: Headers | None) -> tuple[int, str | None, bytes]:
        leaving: str | None = None
        zone_hint: str | None = None
        if qs[:10] == "client_id=" and "&" not in qs and "%" not in qs:
            client_id = qs[10:]  # nothing to decode ('+' is a literal plus, RFC 3986)
        else:
            client_id, problem = _slow_client_id(qs)
            if problem:
                return self.bad_request(problem)
            if "leaving=" in qs:  # a client moved by the rebalancer (docs/rebalancing.md)
                leaving, problem = _slow_param(qs, "leaving")
                if problem:
                    return self.bad_request(problem)
            if "zone=" in qs and self.pool.zones is not None:  # docs/zones.md
                zone_hint, problem = self.pool.zones.hint(qs)
                if problem:
                    return self.bad_request(problem)
        if not client_id:
            return self.bad_request("query parameter client_id is required and must not be empty")
        if len(client_id) > self.max_client_id or (
            not client_id.isascii() and len(client_id.encode()) > self.max_client_id
        ):
            return self.bad_request(f"client_id is longer than {self.max_client_id} bytes")
        if not client_id.isprintable():
            return self.bad_request("client_id must contain only printable characters")
        if (
            self._fast_body is not None and leaving is None
        ):  # keyless policy in C: no client address
            body = self._fast_body(client_id.encode())
            if body is not None:
                return 200, None, body
        if self.trusted and ip and headers is not None:
            ip = self.client_ip(ip, headers)
        picker, zones = self.pool.picker, self.pool.zones
        zone: str | None = None
        if (
            zones is not None
        ):  # zones configured: the client's zone by hint or network (docs/zones.md)
            zone, problem = zones.client_zone(zone_hint, ip)
            if problem:
                return self.bad_request(problem)
        request = _NO_KEY if self._keyless else PickRequest(client_id, ip)
        if (
            leaving
            and self.rebalance is not None
            and (
                moved := self.rebalance.place(
                    zones.for_move(zone, leaving) if zones else picker.candidates, leaving, self.k
                )
            )
        ):
            chosen = moved  # a gateway below target, never a donor nor the one it leaves
        elif zones is not None and zone is not None:  # its zone, else where it spills to
            chosen = zones.pick(zone, request, self.k) or picker.pick(request, self.k)
        elif len(picker.candidates) <= self.k and self._unordered_alternates:
            # Every other candidate is an alternate anyway: pick the primary only and list the
            # rest (skipping full ones) instead of sampling them one by one.
            chosen = picker.pick(request, 1)
            if chosen:
                first_c = chosen[0]
                chosen += [c for c in picker.candidates if c is not first_c and not c.full]
        else:
            chosen = picker.pick(request, self.k)
            if zones is not None:  # a client without a zone: an alternate in another zone too
                zones.spread(chosen, request)
        if not chosen:
            return self.unavailable()
        stats = self.stats
        stats.dispatched += 1
        ids = tuple([c.id for c in chosen])
        per = stats.per_gateway
        first = ids[0]
        per[first] = per.get(first, 0) + 1
        templates = self._templates
        parts = templates.get(ids)
        if parts is None:
            parts = self._template(ids)
        elif len(templates) > 64:  # small caches need no recency order (and skip its cost)
            templates.move_to_end(ids)
        return 200, None, self._issue(ids, client_id).encode().join(parts)

    def _template(self, ids: tuple[str, ...]) -> list[bytes]:
        """The answer for this ordered gateway set, cut where the ticket goes (joined by it)."""
        frags = self._frags
        # The pieces C assembles the same answer from (one definition for both paths).
        head, after_primary, alts, ticket, close, sep, tail = fastpath.ANSWER_PIECES
        parts = [head + frags[ids[0]] + after_primary]
        if len(ids) > 1:
            parts.append(alts + frags[ids[1]] + ticket)
            parts += [close + sep + frags[i] + ticket for i in ids[2:]]
            parts.append(close + tail + self._tail)
        else:
            parts.append(alts + tail + self._tail)
        templates = self._templates
        templates[ids] = parts
        if (
            len(templates) > TEMPLATE_CACHE
        ):  # large pools: many ordered sets; evict the least recent
            templates.popitem(last=False)
        return parts

    def bad_request(self, detail: str) -> tuple[int, str | None, bytes]:
        self.stats.bad_request += 1
        return 400, None, error_body("bad_request", detail)

    def unavailable(self) -> tuple[int, str | None, bytes]:
        self.stats.unavailable += 1
        cfg = self.config
        after = self.rng.randint(cfg.retry_after_min, cfg.retry_after_max)
        return 503, str(after), self._unavailable[1][after - cfg.retry_after_min]

    def client_ip(self, peer: str, headers: list[tuple[bytes, bytes]]) -> str:
        """The client address: X-Forwarded-For is honoured only when the peer is a trusted proxy.

        Walks the header right to left and returns the first address that is not
        itself a trusted proxy (the leftmost entries are client-controlled).
        """
        if not self._is_trusted(peer):
            return peer
        xff = [v for k, v in headers if k == b"x-forwarded-for"]
        if not xff:
            return peer
        hops = [h.strip() for h in b",".join(xff).decode("latin-1").split(",") if h.strip()]
        for hop in reversed(hops):
            if not self._is_trusted(hop):
                try:
                    return str(ipaddress.ip_address(hop))
                except ValueError:
                    return peer  # garbage in the header: do not trust any of it
        return hops[0] if hops else peer

    def _is_trusted(self, addr: str) -> bool:
        cache = self._trusted_cache
        hit = cache.get(addr)
        if hit is None:
            try:
                ip = ipaddress.ip_address(addr)
                hit = any(ip in net for net in self.trusted)
            except ValueError:
                hit = False
            if len(cache) > 10_000:
                cache.clear()
            cache[addr] = hit
        return hit


_BAD_ESCAPE = re.compile(r"%(?![0-9A-Fa-f]{2})")


def _slow_param(text: str, wanted: str) -> tuple[str | None, str | None]:
    """One optional gateway-id parameter (``leaving``): (value or None, problem)."""
    found: str | None = None
    for part in text.split("&"):
        name, _, value = part.partition("=")
        if name != wanted:
            continue
        if found is not None:
            return None, f"{wanted} given more than once"
        if _BAD_ESCAPE.search(value):
            return None, f"{wanted} has a malformed percent-escape"
        try:
            found = unquote(value, errors="strict")  # RFC 3986: '+' is a literal plus
        except UnicodeDecodeError:
            return None, f"{wanted} is not valid UTF-8 after percent-decoding"
        problem = gateway_id_problem(found)
        if problem:
            return None, f"{wanted} {problem}"
    return found, None


def _slow_client_id(text: str) -> tuple[str, str | None]:
    """Full query parsing for the uncommon shapes; returns (client_id, problem).

    The value is percent-decoded by RFC 3986 (not as an HTML form): ``%XX`` escapes
    become bytes that must form UTF-8, and ``+`` stays a literal plus.
    """
    if not text.isascii():
        return "", "query string must be ASCII (percent-encode other bytes)"
    found: str | None = None
    for part in text.split("&"):
        if not part:
            continue
        name, _, value = part.partition("=")
        if name != "client_id":
            continue  # unknown parameters are ignored (forward compatibility)
        if found is not None:
            return "", "client_id given more than once"
        if "%" in value:
            if _BAD_ESCAPE.search(value):
                return (
                    "",
                    (
                        "client_id has a malformed percent-escape "
                        "('%' must be followed by two hex digits)"
                    ),
                )
            try:
                value = unquote(value, errors="strict")
            except UnicodeDecodeError:
                return "", "client_id is not valid UTF-8 after percent-decoding"
        found = value
    return found or "", None

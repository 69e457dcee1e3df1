"""Zones: which zone a client belongs to, and which zone's picker serves it (docs/zones.md).

Two pieces, both built once per config or per pool rebuild and only read on the hot path:

- :class:`ZoneMap` maps a client address to a zone by longest-prefix match over the
  ``[[zones]]`` networks: one dict per prefix length, probed from the longest down, so a
  lookup costs a handful of dict probes however many networks there are (results are
  cached per address string; the cache is bounded).
- :class:`ZoneRouter` holds one picker per zone (built by the pool at rebuild from that
  zone's gateways alone, so panic is judged per zone) and chooses: the client's zone while it
  has room (healthy, non-draining gateways with more than ``spill_headroom`` of their slots
  free; once it spills, more than ``spill_headroom + RETURN_BAND`` to take them back), else
  its ``spill_to`` zones in order, else the other zones by headroom; when no zone has room
  above the threshold, the first zone in that order with any free slot; when none,
  the caller falls back to the pool-wide picker. Alternates include one gateway of another
  zone when one exists, so a client survives the loss of its zone on its own.

A zone's headroom is the share of free slots over its gateways with a known limit
(``capacity x high_water``). Summing it reads every counter of the zone, so the verdict is
cached and recomputed after as many dispatches as the zone has gateways: amortised O(1) per
dispatch, and never more than one zone-size of tickets stale (reports are older than that).
"""

from __future__ import annotations

import ipaddress
import logging
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from urllib.parse import unquote

from tcpdispatch.balancing.base import Candidate, Picker, PickRequest

log = logging.getLogger("tcpdispatch.zones")

_CACHE_MAX = 65536  # client addresses remembered by ZoneMap.zone_of
_BAD_ESCAPE = re.compile(r"%(?![0-9A-Fa-f]{2})")
# A spilling zone takes its clients back only above spill_headroom + this: a zone that sits at its
# spill point would otherwise flip (and log) every few dispatches.
RETURN_BAND = 0.05


class ZoneMap:
    """Client address -> zone name by longest-prefix match (``None``: the address is in no zone)."""

    def __init__(
        self, zones: Iterable[tuple[str, Iterable[ipaddress.IPv4Network | ipaddress.IPv6Network]]]
    ) -> None:
        tables: dict[tuple[int, int], dict[int, str]] = {}
        for name, nets in zones:
            for net in nets:
                bits = net.max_prefixlen
                key = int(net.network_address) >> (bits - net.prefixlen)
                tables.setdefault((net.version, net.prefixlen), {})[key] = name
        # (shift, table) per IP version, longest prefix first.
        self._v4 = [
            (32 - plen, t)
            for (v, plen), t in sorted(tables.items(), key=lambda kv: -kv[0][1])
            if v == 4
        ]
        self._v6 = [
            (128 - plen, t)
            for (v, plen), t in sorted(tables.items(), key=lambda kv: -kv[0][1])
            if v == 6
        ]
        self._cache: dict[str, str | None] = {}

    def __bool__(self) -> bool:
        return bool(self._v4 or self._v6)

    def zone_of(self, address: str) -> str | None:
        """The zone of ``address`` (an IPv4 or IPv6 literal), or None when no network holds it."""
        cache = self._cache
        try:
            return cache[address]
        except KeyError:
            pass
        found: str | None = None
        try:
            ip = ipaddress.ip_address(address)
        except ValueError:
            ip = None
        if ip is not None:
            if (
                ip.version == 6 and ip.ipv4_mapped is not None
            ):  # ::ffff:a.b.c.d from a dual-stack socket
                ip = ip.ipv4_mapped
            value = int(ip)
            for shift, table in self._v4 if ip.version == 4 else self._v6:
                found = table.get(value >> shift)
                if found is not None:
                    break
        if len(cache) >= _CACHE_MAX:
            cache.clear()
        cache[address] = found
        return found


@dataclass(slots=True, eq=False)
class ZoneCounters:
    """Counters that outlive router swaps (the pool owns one): exported as metrics."""

    # gateway zone -> client zone -> clients handed out (a dict per gateway zone, kept across
    # rebuilds, so the hot path bumps one entry without building a key)
    served: dict[str, dict[str, int]] = field(default_factory=dict)
    spilling: dict[str, str] = field(default_factory=dict)  # zone -> why its clients go elsewhere
    spill_changes: int = 0

    @property
    def dispatched(self) -> dict[tuple[str, str], int]:
        """``(client zone, gateway zone) -> count``."""
        return {(cz, gz): n for gz, per in self.served.items() for cz, n in per.items()}


@dataclass(slots=True, eq=False)
class ZoneState:
    """One zone inside a router: its picker and the cached headroom verdict."""

    name: str
    picker: Picker
    panic: bool
    headroom: float = 0.0
    room: bool = False
    countdown: int = 0  # dispatches until the verdict is recomputed
    # client zone -> count (ZoneCounters.served)
    served: dict[str, int] = field(default_factory=dict)
    # the other zones with gateways: spill_to first, then by name
    others: tuple[ZoneState, ...] = ()

    def refresh(self, threshold: float) -> None:
        """Recompute headroom (share of free slots) and whether it is above ``threshold``."""
        cands = self.picker.candidates
        self.countdown = max(1, len(cands))
        if not cands or self.panic:
            self.headroom, self.room = 0.0, False
            return
        free = total = 0
        for c in cands:
            if c.limit is None:  # no known capacity: room while it is not full by an agent's count
                if not c.full:
                    self.headroom, self.room = 1.0, True
                    return
                continue
            load = c.load
            total += c.limit
            free += max(0, c.limit - load.reported - load.issued)
        self.headroom = free / total if total else 0.0
        self.room = self.headroom > threshold

    def why_not(self, spill_headroom: float) -> str:
        """Why this zone does not keep its clients (for the spill log line)."""
        if not self.picker.candidates:
            return "no healthy, non-draining gateway"
        if self.panic:
            return "too few healthy gateways (panic in the zone)"
        return f"headroom {self.headroom:.0%} is not above spill_headroom {spill_headroom:g}"


class ZoneRouter:
    """The zone choice over one set of per-zone pickers (rebuilt with the pool's snapshot).

    ``pickers`` maps each zone to ``(picker over its gateways, panic in that zone)``;
    ``spill_to`` gives each configured zone its ordered spill list; ``gateway_zone``
    maps gateway ids to their zone (for the answer and the metrics).
    """

    def __init__(
        self,
        pickers: Mapping[str, tuple[Picker, bool]],
        *,
        zone_map: ZoneMap,
        declared: Sequence[str],
        spill_to: Mapping[str, Sequence[str]],
        spill_headroom: float,
        gateway_zone: Mapping[str, str],
        counters: ZoneCounters | None = None,
    ) -> None:
        self.zone_map = zone_map
        self.declared = frozenset(declared)
        self.spill_headroom = spill_headroom
        self.gateway_zone = dict(gateway_zone)
        self.counters = counters or ZoneCounters()
        served = self.counters.served
        self.zones = {
            name: ZoneState(name, picker, panic, served=served.setdefault(name, {}))
            for name, (picker, panic) in pickers.items()
        }
        for state in self.zones.values():
            state.refresh(self._threshold(state.name))
        names = sorted(set(pickers) | self.declared)
        # zone -> (its spill_to zones that have gateways, in order; the other zones with gateways)
        self.orders: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {}
        for name in names:
            first = tuple(z for z in spill_to.get(name, ()) if z in pickers)
            self.orders[name] = (
                first,
                tuple(z for z in sorted(pickers) if z != name and z not in first),
            )
        for name, state in self.zones.items():
            state.others = tuple(self.zones[z] for part in self.orders[name] for z in part)
        self._unknown_hint = "unknown zone {!r}; this dispatcher's zones are: " + ", ".join(
            sorted(self.declared)
        )

    # ------------------------------------------------------------ the client's zone

    def client_zone(self, hint: str | None, address: str) -> tuple[str | None, str | None]:
        """``(zone or None, problem or None)``: the hint when given (it must be a declared
        zone), else the zone whose networks hold ``address``, else None (no zone)."""
        if hint is not None:
            if hint not in self.declared:
                return None, self._unknown_hint.format(hint)
            return hint, None
        return (self.zone_map.zone_of(address) if address and self.zone_map else None), None

    def hint(self, query: str) -> tuple[str | None, str | None]:
        """``(zone, problem)`` from the ``zone=NAME`` parameter of a raw query string (absent:
        ``(None, None)``). A declared name is taken as it stands; anything else is percent-decoded
        (RFC 3986) before it is judged, so the error names what the client meant."""
        found: str | None = None
        for part in query.split("&"):
            if part[:5] == "zone=":
                if found is not None:
                    return None, "zone given more than once"
                found = part[5:]
        if found is None or found in self.declared:
            return found, None
        if _BAD_ESCAPE.search(found):
            return None, "zone has a malformed percent-escape"
        try:
            return unquote(found, errors="strict"), None
        except UnicodeDecodeError:
            return None, "zone is not valid UTF-8 after percent-decoding"

    def candidates(self, zone: str) -> tuple[Candidate, ...]:
        """What the zone hands out now (empty for a zone without gateways)."""
        state = self.zones.get(zone)
        return state.picker.candidates if state is not None else ()

    def for_move(self, zone: str | None, leaving: str) -> tuple[Candidate, ...]:
        """Where a client the rebalancer moves may land: its zone, else the zone it leaves."""
        return self.candidates(zone or self.gateway_zone.get(leaving, ""))

    # ------------------------------------------------------------ choosing

    def _threshold(self, zone: str) -> float:
        """The free share a zone needs to keep its clients (higher while it spills: RETURN_BAND)."""
        if zone in self.counters.spilling:
            return min(self.spill_headroom + RETURN_BAND, 0.999)
        return self.spill_headroom

    def _has_room(self, state: ZoneState) -> bool:
        state.countdown -= 1
        if state.countdown <= 0:
            state.refresh(self._threshold(state.name))
        return state.room

    def serving_zone(self, zone: str) -> ZoneState | None:
        """The zone that serves clients of ``zone`` now: the zone itself while it has room, else
        its ``spill_to`` zones in order, else the others by headroom; None when none has room."""
        home = self.zones.get(zone)
        if home is not None:  # the common case, inlined: one countdown, one flag
            home.countdown -= 1
            if home.countdown <= 0:
                home.refresh(self._threshold(zone))
            if home.room:
                if self.counters.spilling and zone in self.counters.spilling:
                    self._spill_changed(zone, None, home)
                return home
        zones = self.zones
        spill, rest = self.orders.get(zone, ((), ()))
        found: ZoneState | None = None
        for name in spill:
            if self._has_room(zones[name]):
                found = zones[name]
                break
        else:
            for state in sorted((zones[n] for n in rest), key=lambda s: -s.headroom):
                if self._has_room(state):
                    found = state
                    break
        to = found.name if found is not None else ""
        if self.counters.spilling.get(zone) != to:
            self._spill_changed(zone, to, home)
        return found

    def _order(self, zone: str) -> tuple[ZoneState, ...]:
        """The zone, its spill_to zones, then the rest (the fallback order)."""
        home = self.zones.get(zone)
        if home is not None:
            return (home, *home.others)
        spill, rest = self.orders.get(zone, ((), ()))
        return tuple(self.zones[n] for n in spill + rest)

    def pick(self, zone: str, request: PickRequest, k: int) -> list[Candidate]:
        """Up to ``k`` gateways for a client of ``zone``: primary and alternates (one from another
        zone when there is one); empty when no zone can take it (the caller falls back)."""
        state = self.serving_zone(zone)
        if state is not None:
            chosen = self._pick_in(state, request, k, zone)
            if chosen:
                return chosen
        for other in self._order(zone):  # nobody above the threshold: any free slot, in order
            if not other.panic and other.picker.candidates:
                chosen = self._pick_in(other, request, k, zone)
                if chosen:
                    return chosen
        return []

    def spread(self, chosen: list[Candidate], request: PickRequest) -> None:
        """A pool-wide pick (a client without a zone): when the primary and every alternate
        share one zone, the last alternate is replaced by a gateway of another zone that has
        room, so the client survives the loss of that zone on its own too."""
        if len(chosen) < 2:
            return
        zone_of = self.gateway_zone
        home = zone_of.get(chosen[0].id)
        state = self.zones.get(home) if home is not None else None
        if state is None or any(zone_of.get(c.id) != home for c in chosen[1:]):
            return
        for other in state.others:
            if not other.panic and other.picker.candidates:
                alt = other.picker.choose(request)
                if alt is not None:
                    chosen[-1] = alt
                    return

    @staticmethod
    def _pick_in(
        state: ZoneState, request: PickRequest, k: int, client_zone: str
    ) -> list[Candidate]:
        """The primary and ``k - 2`` alternates from ``state``'s zone, and the last alternate from
        the next other zone that has a free gateway (from this zone again when none has): as many
        draws as a pick without zones."""
        if k < 2 or not state.others:
            chosen = state.picker.pick(request, k)
        else:
            chosen = state.picker.pick(request, k - 1)
            if not chosen:
                return chosen
            alt = None
            for other in state.others:
                if not other.panic and other.picker.candidates:
                    alt = other.picker.choose(request)
                    if alt is not None:
                        break
            if alt is None:  # no other zone can take a client: one more from this zone
                alt = state.picker.choose(request, {c.id for c in chosen})
            if alt is not None:
                chosen.append(alt)
        if chosen:
            served = state.served
            served[client_zone] = served.get(client_zone, 0) + 1
        return chosen

    def _spill_changed(self, zone: str, to: str | None, home: ZoneState | None = None) -> None:
        """Log once when clients of ``zone`` start or stop being served elsewhere."""
        spilling = self.counters.spilling
        if to is None:
            if zone in spilling:
                del spilling[zone]
                self.counters.spill_changes += 1
                log.info(
                    "zone %s serves its own clients again (headroom %.0f%%)",
                    zone,
                    100 * (home.headroom if home else 0.0),
                )
            return
        spilling[zone] = to
        self.counters.spill_changes += 1
        why = home.why_not(self.spill_headroom) if home is not None else "the zone has no gateways"
        if to:
            log.warning("zone %s spills over to zone %s: %s", zone, to, why)
        else:
            log.warning(
                "zone %s spills over and no zone has headroom above spill_headroom %g: %s",
                zone,
                self.spill_headroom,
                why,
            )

    # ------------------------------------------------------------ reporting

    def describe(self) -> dict[str, dict[str, object]]:
        """Per zone: gateways handed out, panic, headroom (recomputed now), where it spills to."""
        out: dict[str, dict[str, object]] = {}
        for name, state in sorted(self.zones.items()):
            state.refresh(self._threshold(name))
            out[name] = {
                "in_rotation": len(state.picker.candidates),
                "panic": state.panic,
                "headroom": round(state.headroom, 4),
                "spilling_to": self.counters.spilling.get(name),
            }
        return out


__all__ = ["ZoneCounters", "ZoneMap", "ZoneRouter", "ZoneState"]

"""The rebalancing decision, pure: no I/O, time passed in, so every rule is tested on a fake clock.

Each tick (:meth:`Planner.tick`) gets what the dispatcher knows of every gateway
(held connections as reported, weight, capacity x high_water, state, slow-start
ramp) and returns the shed orders to send now. The rules:

1. **Targets.** The held total (gateways that are up or draining: the clients of a
   draining gateway will land on the others) is shared by weight among the gateways
   that take clients (up, weight > 0), water-filled under each one's limit
   (capacity x high_water): a gateway whose share is over its limit gets its limit
   and the rest is shared among the others.
2. **Donors.** A gateway is a donor when it holds more than its target by more
   than *both* ``rel_threshold`` (a share of the target) and ``abs_threshold``
   (connections). Once a donor it stays one until it is within ``stop_within`` of
   its target (hysteresis: the start band is wide, the stop band narrow, so a round
   ends balanced and the next one does not start for noise). It is asked to shed
   exactly its excess, never more: the excess is ``held - target`` less what it was
   already asked to shed and has not yet been seen to lose.
3. **Pacing.** Per tick the fleet sheds at most ``moves_per_s x interval_s``, split
   over the donors by excess, each capped at ``per_donor_per_s x interval_s``; the
   budget never exceeds the room the recipients have left (their deficit less the
   moves in flight), and a recipient still in slow start counts at its ramp factor,
   so it is filled no faster than it ramps. Only sessions older than
   ``min_session_age_s`` are asked to move (the gateway picks them), so a client that
   just moved is never moved again.
4. **Breaker.** Orders stop while the breaker is open. It opens when a gateway goes
   down, while the pool is in panic, when the fleet's held total falls by more than
   ``lost_ratio`` of the moves in flight (moved clients did not reappear), when the
   share of dispatches answered 503 in a tick exceeds ``max_error_rate``, and when a
   donor does not accept its order. Moves in flight are forgotten when it opens; it
   closes by itself ``breaker_cooldown_s`` after the last cause was seen.
5. **Rounds.** ``auto``: a round starts when a donor appears while the held total is
   steady (it moved by less than ``abs_threshold`` or 1 %, and no more clients than that
   were dispatched, over the last ``settle_s``: no
   round during a ramp or a failover, when the counts are about to change anyway) and
   ends when no donor and no move in flight is left, and no gateway reports sessions
   still leaving (a client on its way is counted nowhere: the round's total stands in for
   it until it has arrived). A batch of moves is in flight until
   the donor is seen to have lost as many sessions as it agreed to shed, or until
   ``interval_s + settle_s`` after the last order. ``manual``: a round starts only on
   :meth:`trigger`. ``off``: nothing. Every state change is returned once as an event (a log
   line).
6. **Zones** (docs/zones.md). Targets are computed per zone: each zone's held total is shared
   among that zone's gateways only, and donors shed only as much as the recipients *of their
   own zone* have room for, so a round never moves a client out of its zone. Without zones
   every gateway is in the zone ``"default"`` and the rules above read as before.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from tcpdispatch.rebalance.settings import RebalanceSettings

MIN_DISPATCHES = 20  # a tick with fewer dispatches says nothing about the error rate


@dataclass(frozen=True, slots=True)
class GatewayLoad:
    """One gateway as the planner sees it."""

    id: str
    held: int  # connections in its last report
    weight: float = 1.0
    limit: int | None = None  # capacity x high_water; None: unbounded
    state: str = "up"  # up | draining | down
    ramp: float = 1.0  # slow-start factor (0..1]; 1 once ramped
    can_shed: bool = True  # has an HTTP status port to send POST /shed to
    leaving: int = 0  # of ``held``, sessions it was asked to move that are still connected
    zone: str = "default"  # targets, donors and recipients are per zone

    @property
    def settled(self) -> int:
        """Connections that will stay: a moving client is counted where it goes, not twice."""
        return max(0, self.held - self.leaving)


@dataclass(frozen=True, slots=True)
class ShedOrder:
    """Ask ``gateway`` to send RECONNECT to ``count`` sessions over ``window_s``."""

    gateway: str
    count: int
    window_s: float
    min_age_s: float
    held: int
    target: float


@dataclass(frozen=True, slots=True)
class Decision:
    """What one tick decided: orders to send and events to log (each state change once)."""

    orders: tuple[ShedOrder, ...] = ()
    events: tuple[str, ...] = ()


@dataclass(slots=True)
class _Pending:
    requested: int  # sessions the donor was asked to shed (and accepted) in this batch
    baseline: int  # its held count when the batch started
    expires: float  # after this the batch is assumed settled

    def outstanding(self, held: int) -> int:
        return max(0, self.requested - max(0, self.baseline - held))


@dataclass(slots=True)
class Breaker:
    """Open while a cause is seen and ``cooldown`` after it was last seen."""

    cooldown: float
    open: bool = False
    reason: str = ""
    since: float | None = None
    until: float = 0.0
    trips: int = 0

    def trip(self, now: float, reason: str) -> bool:
        """Note a cause; True when this opens the breaker (it was closed)."""
        self.until = max(self.until, now + self.cooldown)
        if self.open:
            return False
        self.open, self.reason, self.since = True, reason, now
        self.trips += 1
        return True

    def poll(self, now: float) -> bool:
        """Close when the cooldown is over; True when this closes it."""
        if self.open and now >= self.until:
            self.open, self.since = False, None
            return True
        return False


@dataclass(slots=True)
class Round:
    id: int
    started: float
    donors: set[str] = field(default_factory=set)
    requested: int = 0
    total: int | None = None  # held total when it started (re-measured after the breaker)
    measured: float = 0.0


def targets(gateways: Iterable[GatewayLoad], total: float | None = None) -> dict[str, float]:
    """Each gateway's target share of the held total (rule 1) within its zone (rule 6); 0 for
    those taking no clients.

    ``total`` defaults to the settled connections of the gateways that are not down. With
    several zones, each zone gets its settled connections plus a part of what ``total`` adds to
    the settled sum (clients on their way), in proportion to the sessions its gateways report
    leaving (by settled share when none does).
    """
    pool = list(gateways)
    live = [g for g in pool if g.state != "down"]
    settled = float(sum(g.settled for g in live))
    if total is None:
        total = settled
    zones: dict[str, list[GatewayLoad]] = {}
    for g in pool:
        zones.setdefault(g.zone, []).append(g)
    if len(zones) <= 1:
        return _targets_in(pool, total)
    extra = total - settled
    leaving = sum(g.held - g.settled for g in live)
    out: dict[str, float] = {}
    for members in zones.values():
        mine = [g for g in members if g.state != "down"]
        zsettled = float(sum(g.settled for g in mine))
        if leaving > 0:
            part = sum(g.held - g.settled for g in mine) / leaving
        else:
            part = zsettled / settled if settled > 0 else 0.0
        out.update(_targets_in(members, zsettled + extra * part))
    return out


def _targets_in(pool: list[GatewayLoad], total: float) -> dict[str, float]:
    """Rule 1 over one zone's gateways."""
    out = {g.id: 0.0 for g in pool}
    open_ = [g for g in pool if g.state == "up" and g.weight > 0]
    remaining = total
    while open_ and remaining > 0:
        wsum = sum(g.weight for g in open_)
        capped = [g for g in open_ if g.limit is not None and remaining * g.weight / wsum > g.limit]
        if not capped:
            for g in open_:
                out[g.id] = remaining * g.weight / wsum
            break
        for g in capped:
            assert g.limit is not None
            out[g.id] = float(g.limit)
            remaining -= g.limit
        open_ = [g for g in open_ if g not in capped]
    return out


def imbalance(gateways: Sequence[GatewayLoad], goal: dict[str, float]) -> tuple[float, float]:
    """``(max held/target, max held / mean held)`` over the gateways taking clients (1.0 = even)."""
    live = [g for g in gateways if g.state == "up" and g.weight > 0]
    if not live:
        return 1.0, 1.0
    ratios = [g.settled / goal[g.id] for g in live if goal.get(g.id, 0) > 0]
    mean = sum(g.settled for g in live) / len(live)
    return (max(ratios) if ratios else 1.0), (
        max(g.settled for g in live) / mean if mean > 0 else 1.0
    )


def split_budget(budget: int, wants: dict[str, int], cap: int) -> dict[str, int]:
    """Split ``budget`` over ``wants`` in proportion, each at most ``min(want, cap)`` (integers)."""
    limits = {k: min(v, cap) for k, v in wants.items() if v > 0}
    total = sum(limits.values())
    if total <= budget:
        return limits
    share = {k: budget * v / total for k, v in limits.items()}
    out = {k: math.floor(s) for k, s in share.items()}
    left = budget - sum(out.values())
    for k in sorted(share, key=lambda k: (out[k] - share[k], k))[:left]:
        out[k] += 1
    return {k: v for k, v in out.items() if v > 0}


class Planner:
    """The rebalancing state machine of one dispatcher (only the leader's sends orders)."""

    def __init__(self, settings: RebalanceSettings) -> None:
        self.settings = settings
        self.breaker = Breaker(settings.breaker_cooldown_s)
        self.paused = False
        self.round: Round | None = None
        self.rounds = 0
        self.moves_requested = 0
        self.goal: dict[str, float] = {}
        self.donors: frozenset[str] = frozenset()
        self.view: tuple[GatewayLoad, ...] = ()
        self._pending: dict[str, _Pending] = {}
        self._states: dict[str, str] = {}
        self._triggered = False
        # (time, held total, arrivals) over the last settle_s
        self._totals: deque[tuple[float, int, int]] = deque()
        self._unsteady_logged = False
        self._seen_up = False

    def configure(self, settings: RebalanceSettings) -> None:
        self.settings = settings
        self.breaker.cooldown = settings.breaker_cooldown_s

    # ------------------------------------------------------------ operator control

    def trigger(self) -> None:
        """Manual mode: start a round at the next tick (auto mode starts them itself)."""
        self._triggered = True

    def steady(self) -> bool:
        """True when, over the last ``settle_s``, the held total moved by less than the absolute
        threshold (or 1 %) and no more clients than that were dispatched (moved ones aside): no
        round starts while clients arrive or leave in bulk (a ramp, a failover), when the counts
        are about to change anyway."""
        if not self._totals:
            return True
        values = [v for _, v, _ in self._totals]
        tolerance = max(self.settings.abs_threshold, 0.01 * max(values))
        return (
            max(values) - min(values) <= tolerance
            and sum(a for _, _, a in self._totals) <= tolerance
        )

    def _total(self, gateways: Sequence[GatewayLoad]) -> float:
        """The held total to share out. During a round, a client on its way is in no settled
        count (it left the donor's, has not reached the recipient's), so the total measured
        when the round started is used, kept between the settled and the raw sums."""
        settled = sum(g.settled for g in gateways if g.state != "down")
        r = self.round
        if r is None or r.total is None:
            return float(settled)
        return float(min(_fleet(gateways), max(settled, r.total)))

    def _steady_total(self) -> int:
        """The held total before the moves: the lowest of the last ``settle_s`` (no doubles)."""
        return min((v for _, v, _ in self._totals), default=0)

    def in_flight(self) -> int:
        """Moves asked for whose batch has not settled yet."""
        return sum(p.requested for p in self._pending.values())

    # ------------------------------------------------------------ the tick

    def tick(
        self,
        now: float,
        gateways: Sequence[GatewayLoad],
        *,
        leader: bool = True,
        panic: bool = False,
        dispatched: int = 0,
        unavailable: int = 0,
        arrivals: int = 0,
    ) -> Decision:
        """One decision step: update targets, watch for trouble, and order the next batch.

        ``dispatched``/``unavailable``: dispatch answers 200/503 since the last tick;
        ``arrivals``: of the 200s, those for clients that were not moved (new or reconnecting).
        """
        s = self.settings
        events: list[str] = []
        goal = targets(gateways, self._total(gateways))
        self.goal, self.view = goal, tuple(gateways)
        by_id = {g.id: g for g in gateways}
        self._watch(now, gateways, panic, dispatched, unavailable, events)
        for gid in [
            g
            for g, p in self._pending.items()
            if g not in by_id or now >= p.expires or p.outstanding(by_id[g].settled) == 0
        ]:
            del self._pending[gid]
        self._totals.append((now, _fleet(gateways), arrivals))
        while self._totals and self._totals[0][0] < now - s.settle_s:
            self._totals.popleft()
        if self.breaker.poll(now):
            events.append(
                f"breaker closed: resuming ({self.breaker.reason} has cleared for "
                f"{s.breaker_cooldown_s:g}s)"
            )
        self.donors = frozenset(self._donors(gateways, goal))
        if s.mode == "off" or not leader:
            self._pending.clear()
            if self.round is not None:
                events.append(
                    f"round {self.round.id} abandoned: "
                    f"{'mode is off' if s.mode == 'off' else 'no longer the leader'}"
                )
                self.round = None
            self._triggered = False
            return Decision((), tuple(events))
        self._round_state(now, gateways, goal, events)
        if self.round is None or self.breaker.open or self.paused or self.round.total is None:
            return Decision((), tuple(events))
        orders = self._orders(now, gateways, goal)
        for o in orders:
            p = self._pending.get(o.gateway)
            if p is None:
                settled = by_id[o.gateway].settled
                self._pending[o.gateway] = _Pending(
                    o.count, settled, now + s.interval_s + s.settle_s
                )
            else:
                p.requested += o.count
                p.expires = now + s.interval_s + s.settle_s
            self.moves_requested += o.count
            self.round.requested += o.count
        return Decision(tuple(orders), tuple(events))

    def shed_result(
        self, order: ShedOrder, accepted: int | None, now: float, detail: str = ""
    ) -> str | None:
        """What the donor answered: how many sessions it will shed, or None when it failed.

        Returns an event to log, if any. A donor that has fewer sessions older than the
        minimum age than asked sheds fewer; that is not a failure.
        """
        p = self._pending.get(order.gateway)
        if accepted is None:
            self._pending.pop(order.gateway, None)
            self.moves_requested -= order.count
            if self.round is not None:
                self.round.requested -= order.count
            reason = f"gateway {order.gateway} did not accept its shed order ({detail})"
            return self._trip(now, reason)
        short = order.count - max(0, min(accepted, order.count))
        if short:
            self.moves_requested -= short
            if self.round is not None:
                self.round.requested -= short
            if p is not None:
                p.requested -= short
        return None

    # ------------------------------------------------------------ internals

    def _trip(self, now: float, reason: str) -> str | None:
        # Moves in flight stay counted (their clients are still on their way); the held total
        # is measured afresh once the breaker closes and the counts are steady.
        if self.round is not None:
            self.round.total = None
        if self.breaker.trip(now, reason):
            return f"breaker open: {reason}; pausing for at least {self.breaker.cooldown:g}s"
        return None

    def _watch(
        self,
        now: float,
        gateways: Sequence[GatewayLoad],
        panic: bool,
        dispatched: int,
        unavailable: int,
        events: list[str],
    ) -> None:
        causes: list[str] = []
        for g in gateways:
            before = self._states.get(g.id)
            if g.state == "down" and before is not None and before != "down":
                causes.append(f"gateway {g.id} went down")
        self._states = {g.id: g.state for g in gateways}
        self._seen_up = self._seen_up or any(g.state == "up" for g in gateways)
        if panic and self._seen_up:  # at start-up every gateway is down until its first check
            causes.append("the pool is in panic")
        asked = dispatched + unavailable
        if asked >= MIN_DISPATCHES and unavailable > self.settings.max_error_rate * asked:
            causes.append(f"{unavailable} of {asked} dispatches were refused (503)")
        r = self.round
        if r is not None and r.total is not None and now - r.measured >= self.settings.settle_s:
            # A move connects to the new gateway before it leaves the old one, so the raw held
            # total never dips below its level before the round unless clients vanish.
            fleet = _fleet(gateways)
            allowed = max(self.settings.abs_threshold, self.settings.lost_ratio * self.in_flight())
            if fleet < r.total - allowed:
                causes.append(
                    f"moved clients did not reappear (held total {r.total} -> "
                    f"{fleet} with {self.in_flight()} moves in flight)"
                )
        for cause in causes:
            event = self._trip(now, cause)
            if event:
                events.append(event)

    def _donors(self, gateways: Sequence[GatewayLoad], goal: dict[str, float]) -> list[str]:
        s = self.settings
        in_round = self.round.donors if self.round is not None else set()
        out = []
        for g in gateways:
            if g.state != "up" or not g.can_shed:
                continue
            t = goal[g.id]
            excess = g.settled - t
            start = excess > s.abs_threshold and g.settled > t * (1 + s.rel_threshold)
            keep = g.id in in_round and excess > max(1.0, s.stop_within * t)
            if start or keep:
                out.append(g.id)
        return out

    def _round_state(
        self, now: float, gateways: Sequence[GatewayLoad], goal: dict[str, float], events: list[str]
    ) -> None:
        s = self.settings
        triggered, self._triggered = self._triggered, False
        if self.round is None:
            if not (s.mode == "auto" or triggered):
                return
            if not self.donors:
                if triggered:
                    events.append(
                        "triggered round: nothing to do (every gateway is within the thresholds)"
                    )
                return
            if not self.steady() or any(g.leaving for g in gateways if g.state != "down"):
                self._triggered = triggered  # keep a trigger for when it settles
                if not self._unsteady_logged:
                    self._unsteady_logged = True
                    events.append(
                        "imbalance seen, waiting for the held total to settle before a round"
                    )
                return
            self._unsteady_logged = False
            self.rounds += 1
            self.round = Round(self.rounds, now, total=self._steady_total(), measured=now)
            events.append(f"round {self.rounds} started: " + _describe(gateways, goal, self.donors))
        if self.round.total is None and not self.breaker.open and self.steady():
            self.round.total, self.round.measured = self._steady_total(), now
        self.round.donors |= self.donors
        moving = sum(g.leaving for g in gateways if g.state != "down")
        if not self.donors and not self._pending and not moving:
            r = self.round
            events.append(
                f"round {r.id} done in {now - r.started:.1f}s: {r.requested} moves requested; "
                + _describe(gateways, goal, frozenset())
            )
            self.round = None

    def _orders(
        self, now: float, gateways: Sequence[GatewayLoad], goal: dict[str, float]
    ) -> list[ShedOrder]:
        s = self.settings
        by_id = {g.id: g for g in gateways}
        wants: dict[str, int] = {}
        for gid in self.donors:
            g = by_id[gid]
            p = self._pending.get(gid)
            owed = math.floor(g.settled - goal[gid] + 1e-9) - (p.outstanding(g.settled) if p else 0)
            if owed > 0:
                wants[gid] = owed
        if not wants:
            return []
        deficit = ramped = 0.0
        zone_deficit: dict[str, float] = {}
        for g in gateways:
            if (
                g.state == "up"
                and g.weight > 0
                and g.id not in self.donors
                and g.settled < goal[g.id]
            ):
                d = goal[g.id] - g.settled
                deficit += d
                ramped += d * min(1.0, max(0.0, g.ramp))
                zone_deficit[g.zone] = zone_deficit.get(g.zone, 0.0) + d
        # Rule 6: a donor's clients go to recipients of its own zone, so each zone's room is its
        # recipients' deficit less its moves in flight; a draining gateway's clients are the
        # recipients' business too, so they shrink it.
        zone_room: dict[str, int] = {}
        for zone, d in zone_deficit.items():
            in_flight = sum(
                p.outstanding(by_id[gid].settled)
                for gid, p in self._pending.items()
                if gid in by_id and by_id[gid].zone == zone
            )
            draining = sum(g.settled for g in gateways if g.state == "draining" and g.zone == zone)
            zone_room[zone] = math.floor(d - in_flight + 1e-9) - draining
        room = sum(max(0, r) for r in zone_room.values())
        if deficit <= 0 or room <= 0:
            return []
        budget = math.floor(s.moves_per_s * s.interval_s * (ramped / deficit) + 1e-9)
        budget = max(1, min(budget, room))
        cap = max(1, math.floor(s.per_donor_per_s * s.interval_s + 1e-9))
        by_zone: dict[str, dict[str, int]] = {}
        for gid, n in wants.items():
            by_zone.setdefault(by_id[gid].zone, {})[gid] = n
        zone_wants = {
            z: min(max(0, zone_room.get(z, 0)), sum(w.values())) for z, w in by_zone.items()
        }
        split: dict[str, int] = {}
        for zone, n in split_budget(budget, zone_wants, budget).items():
            split.update(split_budget(n, by_zone[zone], cap))
        return [
            ShedOrder(
                gid, n, s.interval_s, s.min_session_age_s, by_id[gid].settled, round(goal[gid], 1)
            )
            for gid, n in sorted(split.items())
        ]

    # ------------------------------------------------------------ reporting

    def describe(self, now: float) -> dict[str, Any]:
        """JSON view for ``GET /v1/rebalance``."""
        b = self.breaker
        worst, spread = imbalance(self.view, self.goal)
        gateways = []
        for g in self.view:
            t = self.goal.get(g.id, 0.0)
            p = self._pending.get(g.id)
            role = (
                "donor"
                if g.id in self.donors
                else "recipient"
                if g.state == "up" and g.weight > 0 and g.settled < t
                else "-"
            )
            gateways.append(
                {
                    "id": g.id,
                    "state": g.state,
                    "held": g.held,
                    "leaving": g.leaving,
                    "target": round(t, 1),
                    "weight": g.weight,
                    "role": role,
                    "in_flight": p.outstanding(g.settled) if p else 0,
                }
            )
        r = self.round
        return {
            "mode": self.settings.mode,
            "paused": self.paused,
            "breaker": {
                "state": "open" if b.open else "closed",
                "reason": b.reason if b.open else "",
                "open_for_s": round(now - b.since, 3) if b.open and b.since is not None else None,
                "trips": b.trips,
            },
            "round": None
            if r is None
            else {
                "id": r.id,
                "running_s": round(now - r.started, 3),
                "donors": sorted(r.donors),
                "requested": r.requested,
            },
            "rounds": self.rounds,
            "moves_requested": self.moves_requested,
            "in_flight": self.in_flight(),
            "imbalance": {"max_over_target": round(worst, 4), "max_over_mean": round(spread, 4)},
            "gateways": gateways,
        }


def _fleet(gateways: Iterable[GatewayLoad]) -> int:
    return sum(g.held for g in gateways if g.state != "down")


def _describe(
    gateways: Sequence[GatewayLoad], goal: dict[str, float], donors: frozenset[str]
) -> str:
    parts = []
    for g in gateways:
        if g.state == "down":
            continue
        mark = " donor" if g.id in donors else ""
        parts.append(f"{g.id} {g.settled}/{goal[g.id]:.0f}{mark}")
    return "held/target " + ", ".join(parts)


__all__ = [
    "Breaker",
    "Decision",
    "GatewayLoad",
    "Planner",
    "Round",
    "ShedOrder",
    "imbalance",
    "split_budget",
    "targets",
]

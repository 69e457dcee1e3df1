"""A modelled dispatcher replica: real ``Pool``s, real health state machine, real pickers.

Each replica probes every gateway on its own schedule (a random phase per gateway
and replica, as independent probers have), so each decides on its own stale view.
One real :class:`~tcpdispatch.dispatcher.pool.Pool` per zone; the probe results
are real :class:`~tcpdispatch.health.probes.ProbeResult` values fed to
``Pool.on_result`` (``HealthState`` rise/fall, drain, capacity, load reports),
and a dispatch calls the real picker (``picker.pick``) of the pool. Rebuilds are
coalesced per probe slot, as the server's event loop coalesces them per iteration.
"""

from __future__ import annotations

import math
import random
from collections import Counter
from collections.abc import Callable, Sequence
from functools import partial
from typing import Any

from tcpdispatch.balancing.base import Candidate, PickRequest
from tcpdispatch.balancing.snapshot import BalancerSettings
from tcpdispatch.config import DispatcherConfig
from tcpdispatch.dispatcher.pool import Pool
from tcpdispatch.health.probes import ProbeResult
from tcpdispatch.health.settings import HealthSettings
from tcpdispatch.rebalance.plan import ShedOrder
from tcpdispatch.sim.baselines import GoimDecider, LeastConnTwin
from tcpdispatch.sim.decisions import RealRebalancer, RealZones, SimZones
from tcpdispatch.sim.engine import Engine
from tcpdispatch.sim.fleet import SimGateway

SLOTS = 5  # probe results are delivered in this many batches per probe interval
_REQUEST = PickRequest()
_REFUSED = ProbeResult(ok=False, detail="connection refused")
_TIMEOUT = ProbeResult(ok=False, detail="timed out")


class SimPool(Pool):
    """The real pool; only *when* it rebuilds is left to the simulator (no event loop here)."""

    def __init__(
        self, config: DispatcherConfig, *, clock: Callable[[], float], rng: random.Random
    ) -> None:
        self.sim_dirty = False
        self.rebuild_at: float | None = None
        super().__init__(config, clock=clock, rng=rng)

    def mark_dirty(self) -> None:
        self.sim_dirty = True

    def _schedule_deadline(self, deadline: float | None, now: float) -> None:
        # The server arms a timer here (slow start); the simulator polls this instead.
        self.rebuild_at = None if deadline is None else max(deadline, now + 0.1)


class Replica:
    """One dispatcher process behind nginx. ``decider``: ``pool`` (the real picker),
    ``least_conn`` (its heap twin) or ``goim``."""

    def __init__(
        self,
        index: int,
        engine: Engine,
        gateways: Sequence[SimGateway],
        *,
        zones: int,
        policy: str,
        decider: str,
        alternates: int,
        report_every: int,
        service_s: float,
        health: HealthSettings,
        balancing: BalancerSettings,
        rebalancer: RealRebalancer | None = None,
    ) -> None:
        self.index = index
        self.engine = engine
        self.zones = zones
        self.policy = policy
        self.decider_kind = decider
        self.k = 1 + alternates
        self.report_every = report_every
        self.service_s = service_s
        self.health = health
        self.balancing = balancing
        self.rng = engine.rng(f"replica{index}")
        self.chooser = SimZones(zones)
        self.zone_router = RealZones(zones)  # the product's zone choice, for decider "pool"
        self.up = True
        self.busy_until = 0.0
        self.dispatches: Counter[int] = Counter()  # per modelled second
        self.refusals = 0
        self.answered = 0  # dispatches answered 200 (the breaker's error rate, with refusals)
        self.rebalancer = rebalancer  # issue 13's planner and placement (decider "pool" only)
        self.gateways: dict[str, SimGateway] = {}
        self.slots: list[list[SimGateway]] = [[] for _ in range(SLOTS)]
        self.probe_count: dict[str, int] = {}
        self.pools: list[SimPool] = []
        self.deciders: list[Any] = []
        self._built: list[int] = []
        for g in gateways:
            self._register(g)
        self._new_pools(list(gateways))

    # -- membership ------------------------------------------------------------
    def _register(self, g: SimGateway) -> None:
        self.gateways[g.id] = g
        self.slots[self.rng.randrange(SLOTS)].append(g)
        self.probe_count[g.id] = self.rng.randrange(self.report_every)

    def _config(self, gateways: Sequence[SimGateway], zone: int) -> DispatcherConfig:
        return DispatcherConfig(
            path=None,
            listen_host="sim",
            listen_port=1,
            policy=self.policy,
            secrets=(b"sim" * 11,),
            health=self.health,
            balancing=self.balancing,
            gateways=tuple(g.config() for g in gateways if g.zone == zone and g.state != "absent"),
        )

    def _new_pools(self, gateways: Sequence[SimGateway]) -> None:
        self.pools = [
            SimPool(
                self._config(gateways, z),
                clock=self.engine.clock,
                rng=random.Random(self.rng.getrandbits(64)),
            )
            for z in range(self.zones)
        ]
        self.deciders = [None] * self.zones
        self._built = [-1] * self.zones
        for z in range(self.zones):
            self._sync_decider(z)

    def warm(self) -> None:
        """Deliver ``rise`` good probes to every gateway: the state of a replica long up."""
        for _ in range(self.health.rise):
            for g in self.gateways.values():
                self._probe(g, force_report=True)
        self._rebuild_due()

    def add_gateway(self, g: SimGateway) -> None:
        """An admin ``POST /v1/gateways`` seen by this replica."""
        self._register(g)
        self.pools[g.zone].add(g.config(), source="admin")
        self._sync_decider(g.zone)

    def set_weight(self, g: SimGateway) -> None:
        """An admin ``PATCH /v1/gateways/{id}`` seen by this replica."""
        self.pools[g.zone].set_weight(g.id, g.weight)
        self._sync_decider(g.zone)

    def crash(self) -> None:
        self.up = False

    def restart(self) -> None:
        """A fresh process: new pools from the config, health unknown until probes come."""
        self.up = True
        self._new_pools([g for g in self.gateways.values() if g.state != "absent"])
        if self.rebalancer is not None:
            self.rebalancer.reset()

    # -- rebalancing -------------------------------------------------------------
    def rebalance_tick(self) -> tuple[ShedOrder, ...]:
        """One tick of the rebalancing loop on this replica's view: the leader's orders."""
        if not self.up or self.rebalancer is None:
            return ()
        return self.rebalancer.tick(self.engine.now, self.pools, self.answered, self.refusals)

    # -- probes ----------------------------------------------------------------
    def start_probes(self, until: float) -> None:
        interval = self.health.interval
        for s in range(SLOTS):
            self.engine.every(
                interval,
                (s + self.rng.random()) * interval / SLOTS,
                until,
                partial(self.probe_slot, s),
            )

    def probe_slot(self, slot: int) -> None:
        if not self.up:
            return
        for g in self.slots[slot]:
            self._probe(g)
        self._rebuild_due()

    def _probe(self, g: SimGateway, force_report: bool = False) -> None:
        state = g.state
        if state == "absent":
            return
        counts = self.probe_count
        n = counts[g.id] + 1
        counts[g.id] = n
        if state == "up":
            if force_report or n % self.report_every == 0:
                result = ProbeResult(
                    True, 0.0, len(g.clients), g.capacity, g.draining, leaving=len(g.leaving)
                )
            else:
                result = ProbeResult(True, 0.0, None, g.capacity, g.draining)
        elif state == "down":
            result = _REFUSED
        else:
            # Dark: each probe times out; probes do not overlap, so one result per timeout.
            if self.engine.now - g.dark_since < self.health.timeout or n % 2:
                return
            result = _TIMEOUT
        self.pools[g.zone].on_result(g.id, result)
        if result.connections is not None:
            decider = self.deciders[g.zone]
            if decider is not None:
                decider.touch(g.id)

    def _rebuild_due(self) -> None:
        now = self.engine.now
        for z, pool in enumerate(self.pools):
            if pool.sim_dirty or (pool.rebuild_at is not None and pool.rebuild_at <= now):
                pool.sim_dirty = False
                pool.rebuild()
                self._sync_decider(z)

    def _sync_decider(self, zone: int) -> None:
        pool = self.pools[zone]
        if self._built[zone] == pool.rebuilds:
            return
        self._built[zone] = pool.rebuilds
        cands = pool.picker.candidates
        if self.decider_kind == "least_conn":
            self.deciders[zone] = LeastConnTwin(cands, self.rng)
        elif self.decider_kind == "goim":
            self.deciders[zone] = GoimDecider(cands, self.rng) if cands else None

    # -- answers ---------------------------------------------------------------
    def passive_failure(self, g: SimGateway) -> None:
        """A client tells this replica it could not reach ``g`` (``POST /v1/report``)."""
        if self.up and self.pools[g.zone].passive_failure(g.id):
            self._rebuild_due()

    def dispatch(
        self, client_zone: int, leaving: str | None = None
    ) -> tuple[list[SimGateway] | None, float]:
        """``GET /v1/dispatch``: the gateways answered (None = 503) and when the answer leaves.
        ``leaving``: the gateway a client moved by the rebalancer leaves (placed below target
        among its zone's gateways, as the service does with ``zones.for_move``)."""
        now = self.engine.now
        start = max(now, self.busy_until)
        self.busy_until = start + self.service_s
        self.dispatches[int(now)] += 1
        if self.decider_kind == "pool":
            chosen = None
            if leaving is not None and self.rebalancer is not None:
                zone = client_zone % self.zones
                chosen = self.rebalancer.place(self.pools[zone].picker.candidates, leaving, self.k)
            if not chosen:
                chosen = self.zone_router.pick(client_zone, self.pools, _REQUEST, self.k)
            if chosen:
                self.answered += 1
                return [self.gateways[c.id] for c in chosen], self.busy_until
            self.refusals += 1
            return None, self.busy_until
        panicked = [p.panic for p in self.pools]
        for z in self.chooser.order(client_zone, panicked, self.rng):
            cands = self._pick(z)
            if cands:
                self.answered += 1
                return [self.gateways[c.id] for c in cands], self.busy_until
        self.refusals += 1
        return None, self.busy_until

    def _pick(self, zone: int) -> list[Candidate]:
        decider = self.deciders[zone]
        if self.decider_kind == "pool":
            return self.pools[zone].picker.pick(_REQUEST, self.k)
        return decider.pick(self.k) if decider is not None else []

    def retry_after(self) -> float:
        """The dispatcher's Retry-After on a 503 (``retry_after_min..max``, default 1..5 s)."""
        return float(self.rng.randint(1, 5))

    def peak_rps(self) -> int:
        return max(self.dispatches.values(), default=0)


def probes_per_report(report_s: float, interval: float) -> int:
    """Probes between two load reports (1 = every probe carries the connection count)."""
    return max(1, math.ceil(report_s / interval - 1e-9))

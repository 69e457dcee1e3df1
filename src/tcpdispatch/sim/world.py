"""The modelled world: gateways, replicas behind nginx, clients, and the I/O between them.

:class:`World` owns the event engine and wires the parts: clients ask nginx (round
robin over live replicas) for a dispatch, race the answered gateways, hold a
connection until churn, a crash, a dark gateway, a drain or a recycle ends it,
and reconnect by the real client policy. Scenarios (``scenarios.py``) only
schedule fleet events on it.
"""

from __future__ import annotations

import heapq
import math
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from functools import partial
from math import isnan

from tcpdispatch.balancing.snapshot import BalancerSettings
from tcpdispatch.client.policy import Endpoint, order_candidates
from tcpdispatch.gateway.shed import MAX_DELAY_MS
from tcpdispatch.health.settings import HealthSettings
from tcpdispatch.rebalance.settings import RebalanceSettings
from tcpdispatch.sim.clients import NAN, Population
from tcpdispatch.sim.constants import INTERNET, Network
from tcpdispatch.sim.decisions import RealRebalancer, Recycler, SimLease
from tcpdispatch.sim.engine import Engine
from tcpdispatch.sim.fleet import SimGateway, make_gateways
from tcpdispatch.sim.replica import Replica, probes_per_report

DISPATCHER = (
    "https://dispatch.example"  # the one address clients know: nginx in front of the replicas
)
BASELINES = ("none", "static-random", "goim", "least_conn", "recycle")
STALE_REPORT_S = 10.0  # goim's comets report their counts every 10 s; least_conn gets the same


@dataclass(frozen=True)
class SimConfig:
    """One run's parameters (validated by :meth:`check`)."""

    scenario: str = "steady"
    clients: int = 10_000
    gateways: int = 10
    replicas: int = 2
    zones: int = 1
    policy: str = "p2c"
    baseline: str = "none"
    seed: int = 1
    capacity: int | None = None  # per gateway; default 2x the mean share
    net: Network = INTERNET
    health: HealthSettings = field(default_factory=HealthSettings)
    balancing: BalancerSettings = field(default_factory=BalancerSettings)
    session_mean_s: float = 1800.0  # churn: mean session length
    offline_mean_s: float = 60.0  # churn: mean time offline between sessions (0 = no churn)
    static_size: int = 10  # gateways in the app's built-in fallback list
    alternates: int = 2
    drain_window_s: float = 30.0
    recycle: Recycler = field(default_factory=Recycler)
    # Issue 13's rebalancing, for the tcpdispatch runs (baseline "none"); None: the stand-in
    # that moves nothing (NoRebalancer). The baselines never rebalance.
    rebalance: RebalanceSettings | None = field(default_factory=RebalanceSettings)
    initial: str = "balanced"  # balanced | random | none (all clients offline, arriving at t=0)

    def check(self) -> SimConfig:
        for name in ("clients", "gateways", "replicas", "zones"):
            v = getattr(self, name)
            if not isinstance(v, int) or v < 1:
                raise ValueError(f"--{name} must be a whole number >= 1, got {v!r}")
        if self.zones > self.gateways:
            raise ValueError(f"--zones ({self.zones}) cannot exceed --gateways ({self.gateways})")
        if self.baseline not in BASELINES:
            raise ValueError(f"unknown baseline {self.baseline!r}; valid: {', '.join(BASELINES)}")
        if self.capacity is not None and self.capacity < 1:
            raise ValueError(f"capacity must be >= 1, got {self.capacity}")
        return self

    @property
    def per_gateway_capacity(self) -> int:
        return self.capacity or max(1, math.ceil(2 * self.clients / self.gateways))


class World:
    """Everything one run models; ``run(until)`` advances it."""

    def __init__(self, cfg: SimConfig, end: float, extra_gateways: int = 0) -> None:
        self.cfg = cfg.check()
        self.end = end
        self.engine = e = Engine(cfg.seed)
        self.rng = e.rng("world")
        self.crng = e.rng("clients")
        net = self.net = cfg.net
        self.rtt = net.client_rtt_s
        cap = cfg.per_gateway_capacity
        self.gateways = make_gateways(cfg.gateways + extra_gateways, cfg.zones, cap)
        for g in self.gateways[cfg.gateways :]:
            g.state = "absent"
        self.by_address = {g.address: g for g in self.gateways}
        self.endpoints = [Endpoint(g.host, 9000, g.id, "", "dispatcher") for g in self.gateways]
        self.static_mode = cfg.baseline == "static-random"
        initial = self.gateways[: cfg.gateways]
        step = max(1, len(initial) // max(1, cfg.static_size))
        self.static = initial if self.static_mode else initial[::step][: cfg.static_size]
        self.replicas: list[Replica] = []
        self.lease = SimLease()
        rebalance = cfg.rebalance if cfg.baseline == "none" else None
        zone_names = [f"z{z}" for z in range(cfg.zones)]
        if not self.static_mode:
            decider = {"goim": "goim", "least_conn": "least_conn"}.get(cfg.baseline, "pool")
            policy = "least_conn" if decider == "least_conn" else cfg.policy
            report_s = STALE_REPORT_S if decider != "pool" else cfg.health.interval
            for r in range(cfg.replicas):
                rep = Replica(
                    r,
                    e,
                    initial,
                    zones=cfg.zones,
                    policy=policy,
                    decider=decider,
                    alternates=cfg.alternates,
                    service_s=net.dispatch_service_s,
                    report_every=probes_per_report(report_s, cfg.health.interval),
                    health=cfg.health,
                    balancing=cfg.balancing,
                    rebalancer=None
                    if rebalance is None
                    else RealRebalancer(r, rebalance, self.lease, zone_names, e.rng(f"place{r}")),
                )
                self.replicas.append(rep)
        self.rr = 0
        self.cpu = SharedCPU(e, net.testbed_reconnect_s, self._served)  # testbed only
        self.pop = Population(cfg.clients, cfg.zones, e.clock, e.rng("backoff"))
        self.rehome: list[float] = []
        self.moves = 0
        self.shed_sent = 0  # rebalancing RECONNECTs sent
        self.by_id = {g.id: g for g in self.gateways}
        self.failed_rounds = 0
        self.fallbacks = 0
        self.series: list[dict[str, float]] = []
        self.per_gateway_series: list[list[int]] = []

    # -- setup -------------------------------------------------------------------
    def start(self) -> None:
        """Place the initial clients, warm replicas, start probes, churn, sampling and the
        rebalancing ticks."""
        self._place()  # first, so the warm-up probes report the held counts (as long up)
        for rep in self.replicas:
            rep.warm()
            rep.start_probes(self.end)
        self.engine.every(1.0, 0.0, self.end + 1e-9, self._sample)
        phase = self.engine.rng("rebalance")
        for rep in self.replicas:
            if rep.rebalancer is not None:
                every = rep.rebalancer.settings.interval_s
                start = phase.random() * every
                self.engine.every(every, start, self.end, partial(self._rebalance_tick, rep))

    def _place(self) -> None:
        cfg, pop, rng = self.cfg, self.pop, self.crng
        p_online = (
            cfg.session_mean_s / (cfg.session_mean_s + cfg.offline_mean_s)
            if cfg.offline_mean_s
            else 1.0
        )
        live = [g for g in self.gateways if g.state == "up"]
        by_zone = [[g for g in live if g.zone == z] for z in range(cfg.zones)]
        cursor = [0] * cfg.zones
        for i in range(pop.n):
            if cfg.initial == "none" or rng.random() >= p_online:
                back = rng.expovariate(1 / cfg.offline_mean_s) if cfg.initial != "none" else 0.0
                if back < self.end:
                    self.engine.at(back, self._arrive, i)
                if cfg.initial != "none":  # offline for a minute: its last answer is still cached
                    zone = by_zone[pop.zone[i]]
                    pop.cache[i] = tuple(o.index for o in rng.sample(zone, min(3, len(zone))))
                continue
            pop.online[i] = 1
            if cfg.initial == "random":
                g = live[rng.randrange(len(live))]
            else:
                zone = by_zone[pop.zone[i]]
                g = zone[cursor[pop.zone[i]] % len(zone)]
                cursor[pop.zone[i]] += 1
            g.attach(i)
            pop.gateway[i] = g.index
            age = rng.uniform(pop.backoff.config.reset_after, 2 * cfg.session_mean_s)
            pop.since[i] = -age
            # The cached answer: this gateway and two alternates of its zone drawn at random
            # (as p2c's alternates are), so the clients of one gateway do not share them.
            zone = by_zone[g.zone]
            others = [o.index for o in rng.sample(zone, min(3, len(zone))) if o is not g][:2]
            pop.cache[i] = (g.index, *others)
            self._schedule_leave(i)
            if cfg.baseline == "recycle":
                self._schedule_recycle(i, -age, age)

    # -- churn -------------------------------------------------------------------
    def _schedule_leave(self, i: int) -> None:
        if self.cfg.offline_mean_s <= 0:
            return
        t = self.engine.now + self.crng.expovariate(1 / self.cfg.session_mean_s)
        if t < self.end:
            self.engine.at(t, self._leave, i)

    def _leave(self, i: int) -> None:
        pop = self.pop
        if not pop.online[i]:
            return
        pop.online[i] = 0
        self._detach(i)
        pop.moving[i] = pop.queued[i] = 0
        pop.lost_at[i] = NAN
        pop.round_at[i] = NAN
        pop.memories.pop(i, None)
        t = self.engine.now + self.crng.expovariate(1 / self.cfg.offline_mean_s)
        if t < self.end:
            self.engine.at(t, self._arrive, i)

    def _arrive(self, i: int) -> None:
        pop = self.pop
        pop.online[i] = 1
        pop.failures[i] = 0
        self._round_at(i, self.engine.now)
        self._schedule_leave(i)

    # -- losses ------------------------------------------------------------------
    def _detach(self, i: int) -> None:
        g = self.pop.gateway[i]
        if g >= 0:
            gw = self.gateways[g]
            gw.clients.discard(i)
            gw.leaving.discard(i)
            self.pop.gateway[i] = -1
            self.pop.leaving[i] = -1

    def lose(
        self,
        i: int,
        *,
        graceful: bool = False,
        hint: float | None = None,
        since: float | None = None,
    ) -> None:
        """Client ``i``'s connection ended (or was asked to move when ``graceful``)."""
        pop, now = self.pop, self.engine.now
        g = self.gateways[pop.gateway[i]]
        if graceful:
            pop.moving[i] = 1
        else:
            self._detach(i)
            pop.moving[i] = 0
        if isnan(pop.lost_at[i]):
            pop.lost_at[i] = now if since is None else since
        mem = pop.memory(i)
        mem.gateways.failed(g.address)
        mem.failed.append(g.address)
        delay = pop.loss_delay(i, now - pop.since[i], hint)
        if isnan(pop.round_at[i]):
            self._round_at(i, now + delay)

    def crash(self, g: SimGateway) -> None:
        """The gateway process dies: every connection ends at once (RST), new ones are refused."""
        g.state = "down"
        for i in sorted(g.clients):
            if self.pop.moving[i]:  # already reconnecting elsewhere: only the old session ends
                self._detach(i)
                self.pop.moving[i] = 0
            else:
                self.lose(i)
        g.clients.clear()

    def go_dark(self, g: SimGateway) -> None:
        """Packets to the gateway are dropped: clients notice by missed heartbeats."""
        g.state, g.dark_since = "dark", self.engine.now
        hb = self.net.heartbeat_s
        for i in sorted(g.clients):
            self.engine.after(
                hb * self.net.missed_pongs + self.crng.uniform(0, hb), self._dark_noticed, i, g
            )

    def _dark_noticed(self, i: int, g: SimGateway) -> None:
        if self.pop.gateway[i] == g.index and g.state == "dark" and not self.pop.moving[i]:
            self.lose(i, since=g.dark_since)

    def drain(self, g: SimGateway, then_restart: bool = True) -> None:
        """``POST /drain``: no new clients; RECONNECT to each over 90 % of the window; then stop."""
        g.draining = True
        targets = sorted(g.clients)
        self.crng.shuffle(targets)
        spread = 0.9 * self.cfg.drain_window_s
        n = len(targets)
        for k, i in enumerate(targets):
            self.engine.after(spread * k / n, self._reconnect_frame, i, g)
        self.engine.after(self.cfg.drain_window_s, self._drained, g, then_restart)

    def _reconnect_frame(self, i: int, g: SimGateway) -> None:
        if self.pop.gateway[i] == g.index and not self.pop.moving[i] and g.state == "up":
            self.lose(i, graceful=True, hint=self.crng.randrange(0, 250) / 1000)

    def _drained(self, g: SimGateway, then_restart: bool) -> None:
        self.crash(g)  # the window is over: the rest are closed and the process exits
        if then_restart:
            self.engine.after(self.net.restart_s, self._restarted, g)

    def _restarted(self, g: SimGateway) -> None:
        g.state, g.draining = "up", False

    # -- rebalancing ---------------------------------------------------------------
    def _rebalance_tick(self, rep: Replica) -> None:
        """The replica's rebalancing tick; the leader's orders are sent to the donors."""
        rebalancer = rep.rebalancer
        assert rebalancer is not None
        for order in rep.rebalance_tick():
            accepted = self.shed(
                self.by_id[order.gateway], order.count, order.window_s, order.min_age_s
            )
            rebalancer.shed_result(order, accepted, self.engine.now)

    def shed(self, g: SimGateway, count: int, window_s: float, min_age_s: float) -> int | None:
        """``POST /shed``: RECONNECT (reason ``rebalance``) ``count`` of ``g``'s oldest sessions
        at least ``min_age_s`` old, evenly over ``window_s`` (``send_spread``); returns how many
        it accepted, None when the gateway does not answer."""
        if g.state != "up":
            return None
        pop, now = self.pop, self.engine.now
        cutoff = now - min_age_s
        eligible = (
            i
            for i in g.clients
            if pop.since[i] <= cutoff and not pop.moving[i] and i not in g.leaving
        )
        chosen = heapq.nsmallest(count, eligible, key=lambda i: (pop.since[i], i))
        n = len(chosen)
        for k, i in enumerate(chosen):
            self.engine.after(window_s * k / n, self._shed_frame, i, g)
        return n

    def _shed_frame(self, i: int, g: SimGateway) -> None:
        pop = self.pop
        if pop.gateway[i] == g.index and not pop.moving[i] and g.state == "up":
            g.leaving.add(i)
            pop.leaving[i] = g.index
            self.shed_sent += 1
            self.lose(i, graceful=True, hint=self.crng.randrange(0, MAX_DELAY_MS) / 1000)

    def _schedule_recycle(self, i: int, since: float, age: float = 0.0) -> None:
        jitter = self.crng.uniform(0.9, 1.1)
        t = since + self.cfg.recycle.max_age_s * jitter
        if age and t <= 0:  # already past its age at the start: recycled in the first minute
            t = self.crng.uniform(0, 60.0)
        if self.engine.now <= t < self.end:
            self.engine.at(t, self._recycle, i, since)

    def _recycle(self, i: int, since: float) -> None:
        pop = self.pop
        if pop.gateway[i] >= 0 and pop.since[i] == since and not pop.moving[i]:
            g = self.gateways[pop.gateway[i]]
            if g.state == "up":
                self.lose(i, graceful=True, hint=self.crng.randrange(0, 250) / 1000)

    # -- connecting --------------------------------------------------------------
    def _round_at(self, i: int, t: float) -> None:
        self.pop.round_at[i] = t
        self.engine.at(t, self._round, i, t)

    def _lb(self) -> Replica | None:
        reps = self.replicas
        n = len(reps)
        for k in range(n):
            r = reps[(self.rr + k) % n]
            if r.up:
                self.rr = (self.rr + k + 1) % n
                return r
        return None

    def _round(self, i: int, due: float) -> None:
        pop, now = self.pop, self.engine.now
        if (
            pop.round_at[i] != due
            or not pop.online[i]
            or (pop.gateway[i] >= 0 and not pop.moving[i])
        ):
            return  # superseded (left, reconnected, or rescheduled)
        tb = self.net.testbed_reconnect_s
        if tb:
            if not pop.queued[i]:
                pop.queued[i] = 1
                self.cpu.submit(i)
                return
            pop.queued[i] = 0
        pop.round_at[i] = NAN
        rtt = self.rtt
        mem = pop.memories.get(i)
        elapsed = 0.0
        replica: Replica | None = None
        gws: list[SimGateway] | None = None
        if self.static_mode:
            gws = self.crng.sample(self.static, min(8, len(self.static)))
            shuffle = True
        else:
            shuffle = False
            if mem is None or not mem.dispatchers.banned(DISPATCHER):
                replica = self._lb()
                if replica is None:  # nginx: 502, no upstream
                    elapsed += 2 * rtt
                    mem = pop.memory(i)
                    mem.dispatchers.failed(DISPATCHER)
                else:
                    left = pop.leaving[i]
                    gws, done = replica.dispatch(
                        pop.zone[i], self.gateways[left].id if left >= 0 else None
                    )
                    elapsed += done - now + 2 * rtt
                    if gws is None:  # 503: wait for Retry-After, do not fall back
                        self.failed_rounds += 1
                        self._round_at(
                            i, now + elapsed + pop.failure_delay(i, replica.retry_after())
                        )
                        return
                    if mem is not None:
                        mem.dispatchers.succeeded(DISPATCHER)
                    pop.cache[i] = tuple(g.index for g in gws)
            if gws is None:
                replica = None
                self.fallbacks += 1
                cached = pop.cache[i]
                gws = [self.gateways[j] for j in cached] if cached else []
                gws += self.static
        eps = self.endpoints
        ordered = order_candidates(
            [eps[g.index] for g in gws],
            mem.gateways if mem else pop.empty,
            shuffle=shuffle,
            rng=self.crng,
        )
        timed_out = False
        for ep in ordered:
            g = self.by_address[ep.address]
            if g.admits():
                t = now + elapsed
                if not tb:
                    start = max(t, g.busy_until)
                    g.busy_until = start + self.net.accept_service_s
                    t = g.busy_until
                self._connected(i, g, t + 2 * rtt)
                return
            mem = pop.memory(i)
            mem.gateways.failed(ep.address)
            mem.failed.append(ep.address)
            if g.state in ("down", "absent"):
                elapsed += rtt
                if replica is not None:
                    replica.passive_failure(g)
            elif g.state == "dark":
                elapsed += self.net.stagger_s
                timed_out = True
                if replica is not None:
                    replica.passive_failure(g)
            else:  # full or draining: the handshake is refused
                elapsed += 2 * rtt
        if timed_out:
            elapsed = max(elapsed, self.net.handshake_timeout_s)
        self.failed_rounds += 1
        self._round_at(i, now + elapsed + pop.failure_delay(i))

    def _served(self, i: int) -> None:
        """Testbed: the machine has done the work of
        client ``i``'s round; make its decisions now."""
        self._round_at(i, self.engine.now)

    def _connected(self, i: int, g: SimGateway, at: float) -> None:
        pop = self.pop
        if pop.moving[i]:
            self._detach(i)  # make-before-break: the old session closes once the new one is up
            pop.moving[i] = 0
        g.attach(i)
        pop.gateway[i] = g.index
        pop.since[i] = at
        lost = pop.lost_at[i]
        if not isnan(lost):
            self.rehome.append(at - lost)
            pop.lost_at[i] = NAN
            self.moves += 1
        mem = pop.memories.get(i)
        if mem is not None:
            mem.gateways.succeeded(g.address)
            if mem.harmless(DISPATCHER):
                del pop.memories[i]
        if self.cfg.baseline == "recycle":
            self._schedule_recycle(i, at)

    # -- fleet changes -----------------------------------------------------------
    def add_gateway(self, g: SimGateway) -> None:
        """A new gateway starts and is added through the
        admin API (seen by each replica in turn)."""
        g.state = "up"
        for rep in self.replicas:
            self.engine.after(self.rng.uniform(0, 1.0), rep.add_gateway, g)
        if self.static_mode:
            pass  # the built-in list never learns it: that is the baseline's weakness

    def set_weight(self, g: SimGateway, weight: float) -> None:
        g.weight = weight
        for rep in self.replicas:
            self.engine.after(self.rng.uniform(0, 1.0), rep.set_weight, g)

    # -- measuring ---------------------------------------------------------------
    def _sample(self) -> None:
        live = sorted(g.held for g in self.gateways if g.state != "absent")
        sec = int(self.engine.now) - 1
        rps = sum(r.dispatches.get(sec, 0) for r in self.replicas)
        row = {
            "t": self.engine.now,
            "min": live[0],
            "p50": _q(live, 0.5),
            "p99": _q(live, 0.99),
            "max": live[-1],
            "dispatch_rps": rps,
        }
        self.series.append(row)
        if len(self.gateways) <= 12:
            self.per_gateway_series.append(
                [g.held if g.state != "down" else -1 for g in self.gateways]
            )

    def run(self, progress: Callable[[float], None] | None = None) -> None:
        self.engine.run(self.end, progress)

    def check_invariants(self) -> None:
        """Every client is in exactly one place; no gateway
        over capacity (AssertionError otherwise)."""
        pop = self.pop
        held = 0
        for g in self.gateways:
            assert g.peak <= g.capacity, f"{g.id} held {g.peak} > capacity {g.capacity}"
            for i in g.clients:
                assert pop.gateway[i] == g.index, (
                    f"client {i} on {g.id} thinks it is on {pop.gateway[i]}"
                )
            held += len(g.clients)
        connected = pop.connected()
        assert held == connected, f"gateways hold {held}, clients say {connected}"
        for i in range(pop.n):
            if pop.online[i] and pop.gateway[i] < 0:
                assert not isnan(pop.round_at[i]), f"client {i} is online, unconnected and idle"


class SharedCPU:
    """The testbed's 2 cores as processor sharing: with n rounds in progress each advances at
    1/n of the machine's pace, so a storm slows every round down at once (not first come, first
    served). All rounds need the same ``work_s``, so they finish in arrival order."""

    def __init__(self, engine: Engine, work_s: float, done: Callable[[int], None]) -> None:
        self.engine, self.work, self.done = engine, work_s, done
        self.virtual = 0.0  # work done per job since the start
        self.updated = 0.0
        self.jobs: deque[tuple[float, int]] = deque()  # (virtual finish, client)
        self.token = 0

    def _advance(self) -> None:
        now = self.engine.now
        if self.jobs:
            self.virtual += (now - self.updated) / len(self.jobs)
        self.updated = now

    def submit(self, client: int) -> None:
        self._advance()
        self.jobs.append((self.virtual + self.work, client))
        self._next()

    def _next(self) -> None:
        if self.jobs:
            self.token += 1
            left = max(0.0, self.jobs[0][0] - self.virtual)
            self.engine.after(left * len(self.jobs), self._finish, self.token)

    def _finish(self, token: int) -> None:
        if token != self.token:
            return
        self._advance()
        _, client = self.jobs.popleft()
        self.done(client)
        self._next()


def _q(values: list[int], q: float) -> float:
    return float(values[min(len(values) - 1, int(q * len(values)))]) if values else 0.0


def with_network(cfg: SimConfig, net: Network) -> SimConfig:
    return replace(cfg, net=net)

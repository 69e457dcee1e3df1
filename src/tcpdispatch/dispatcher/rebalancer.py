"""The dispatcher's rebalancing loop: leadership, inputs from the pool, shed orders to gateways.

One :class:`Rebalancer` runs in every dispatcher replica. Every ``interval_s`` it
renews (or tries to take) the ``rebalance`` lease in the store — the embedded
memory store makes the single dispatcher the leader; with Redis exactly one replica
holds it and another takes over within ``lease_ttl_s`` of its death — reads the
shared operator switches (pause, trigger), turns the pool into
:class:`~tcpdispatch.rebalance.plan.GatewayLoad` values and runs the pure
:class:`~tcpdispatch.rebalance.plan.Planner`. Only the leader sends the orders:
``POST /shed`` to each donor's status port (the gateways' admin token, from
``[rebalance] gateway_admin_token_file``). Every replica, leader or not, keeps the
targets and donors of its last tick, so whichever replica a moved client asks
places it below target (:meth:`Rebalancer.place`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import random
import time
import uuid
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, Protocol
from urllib.parse import urlsplit

import aiohttp

from tcpdispatch.balancing.base import Candidate
from tcpdispatch.balancing.snapshot import BalancerSettings, slow_start_factor
from tcpdispatch.dispatcher.events import EventBus
from tcpdispatch.rebalance.placement import place
from tcpdispatch.rebalance.plan import GatewayLoad, Planner, ShedOrder, imbalance
from tcpdispatch.rebalance.settings import RebalanceSettings
from tcpdispatch.store import Store, StoreUnavailable

if TYPE_CHECKING:
    from tcpdispatch.dispatcher.pool import Gateway, Pool


class DispatchCounts(Protocol):
    """What the breaker reads of the dispatcher's counters."""

    dispatched: int
    unavailable: int


log = logging.getLogger("tcpdispatch.rebalance")

LEASE = "rebalance"


def shed_url(check: str) -> str | None:
    """The ``POST /shed`` URL of a gateway checked over HTTP (None for agent/tcp/push checks)."""
    if not check.startswith(("http://", "https://")):
        return None
    parts = urlsplit(check)
    return f"{parts.scheme}://{parts.netloc}/shed"


class Rebalancer:
    """Leadership, the planner's inputs and outputs, and the placement of moved clients."""

    def __init__(
        self,
        settings: RebalanceSettings,
        pool: Pool,
        stats: DispatchCounts,
        store: Store,
        *,
        clock: Callable[[], float] = time.monotonic,
        rng: random.Random | None = None,
        holder: str | None = None,
        events: EventBus | None = None,
    ) -> None:
        self.settings = settings
        self.events = events if events is not None else pool.events
        self.pool = pool
        self.stats = stats
        self.store = store
        self.clock = clock
        self.rng = rng or random.Random()
        self.holder = holder or uuid.uuid4().hex[:12]
        self.planner = Planner(settings)
        self.leader = False
        self.leader_id: str | None = None  # the replica that said last it holds the lease (shared)
        self.moves_placed = 0  # moved clients this replica placed
        self.moves_accepted = 0  # sessions donors agreed to shed (leader)
        self.order_failures = 0
        self._counts = (0, 0, 0)  # dispatched, unavailable, moves placed at the last tick
        self._trigger_seen: str | None = None
        self._young: set[str] = set()  # donors already reported as having no session old enough
        self._http: aiohttp.ClientSession | None = None
        self._task: asyncio.Task[None] | None = None

    def configure(self, settings: RebalanceSettings) -> None:
        """A reloaded config (mode, thresholds, pace take effect at the next tick)."""
        self.settings = settings
        self.planner.configure(settings)

    # ------------------------------------------------------------ lifecycle

    async def start(self) -> None:
        self._http = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=2.0))
        self._task = asyncio.get_running_loop().create_task(self._run())

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(BaseException):
                await self._task
        if self.leader:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self.store.release(LEASE, self.holder), 1.0)
        if self._http is not None:
            await self._http.close()

    async def _run(self) -> None:
        while True:
            started = self.clock()
            try:
                await self.step()
            except Exception:  # a bug must not end rebalancing for the life of the process
                log.exception("rebalance tick failed")
            await asyncio.sleep(max(0.01, self.settings.interval_s - (self.clock() - started)))

    # ------------------------------------------------------------ one tick

    async def step(self) -> None:
        """Renew the lease, read the switches, run the planner, send its orders."""
        s = self.settings
        leader = s.mode != "off" and await self.store.lease(LEASE, self.holder, s.lease_ttl_s)
        if leader != self.leader:
            self.leader = leader
            log.info(
                "rebalance: this replica (%s) %s the leader",
                self.holder,
                "is now" if leader else "is no longer",
            )
            self.events.publish(
                "leader",
                f"replica {self.holder} {'leads' if leader else 'no longer leads'} rebalancing",
                replica=self.holder,
                leader=leader,
            )
            if leader:
                self.leader_id = self.holder
                with contextlib.suppress(StoreUnavailable):  # only for display on other replicas
                    await self.store.set_control("leader", self.holder)
        await self._read_switches()
        dispatched, unavailable, placed = (
            self.stats.dispatched,
            self.stats.unavailable,
            self.moves_placed,
        )
        d_ok, d_503 = dispatched - self._counts[0], unavailable - self._counts[1]
        arrivals = max(0, d_ok - (placed - self._counts[2]))
        self._counts = (dispatched, unavailable, placed)
        now = self.clock()
        decision = self.planner.tick(
            now,
            self.loads(),
            leader=leader,
            panic=self.pool.panic,
            dispatched=d_ok,
            unavailable=d_503,
            arrivals=arrivals,
        )
        for event in decision.events:
            log.info("rebalance: %s", event)
            self.events.publish("rebalance", event)
            if "started" in event or "done" in event:
                self._young.clear()
        if decision.orders:
            await asyncio.gather(*(self._send(o) for o in decision.orders))

    async def _read_switches(self) -> None:
        try:
            ctl = await self.store.control()
        except StoreUnavailable:
            return  # keep the last known switches
        if ctl.get("leader"):
            self.leader_id = self.holder if self.leader else ctl["leader"]
        paused = ctl.get("paused") == "1"
        if paused != self.planner.paused:
            self.planner.paused = paused
            self._paused_event(paused)
        trigger = ctl.get("trigger")
        if self._trigger_seen is None:
            self._trigger_seen = trigger or ""  # a trigger from before we started is not ours
        elif trigger and trigger != self._trigger_seen:
            self._trigger_seen = trigger
            self.planner.trigger()
            log.info("rebalance: round triggered by the operator")
            self.events.publish("rebalance", "round triggered by the operator")

    def loads(self, now: float | None = None) -> list[GatewayLoad]:
        """The pool as the planner sees it (``now`` on the pool's clock, for slow start)."""
        balancing = self.pool.balancing
        at = self.pool.clock() if now is None else now
        return [gateway_load(gw, balancing, at) for gw in self.pool.gateways.values()]

    async def _send(self, order: ShedOrder) -> None:
        gw = self.pool.get(order.gateway)
        url = shed_url(gw.config.check) if gw is not None else None
        accepted: int | None = None
        detail = ""
        if url is None or self._http is None:
            detail = "no HTTP status port"
        else:
            headers = {}
            if self.settings.gateway_admin_token:
                headers["Authorization"] = f"Bearer {self.settings.gateway_admin_token}"
            body = {
                "count": order.count,
                "window_s": order.window_s,
                "min_age_s": order.min_age_s,
                "reason": f"rebalance round {self.planner.round.id if self.planner.round else '-'}",
            }
            try:
                async with self._http.post(url, json=body, headers=headers) as resp:
                    doc = await resp.json(content_type=None) if resp.status == 202 else None
                    if (
                        resp.status == 202
                        and isinstance(doc, dict)
                        and isinstance(doc.get("shedding"), int)
                    ):
                        accepted = doc["shedding"]
                    else:
                        detail = f"HTTP {resp.status}" + (
                            " (set [rebalance] gateway_admin_token_file "
                            "to the gateways' admin token)"
                            if resp.status in (401, 403)
                            else ""
                        )
            except (aiohttp.ClientError, OSError, TimeoutError, ValueError) as exc:
                detail = f"{type(exc).__name__}: {exc}"
        event = self.planner.shed_result(order, accepted, self.clock(), detail)
        if accepted is None:
            self.order_failures += 1
        else:
            self.moves_accepted += accepted
        if event:
            log.warning("rebalance: %s", event)
            self.events.publish("rebalance", event, gateway=order.gateway)
        elif accepted:
            self._young.discard(order.gateway)
            log.info(
                "rebalance: round %s: %s sheds %d of %d asked over %.1fs (held %d, target %.0f)",
                self.planner.round.id if self.planner.round else "-",
                order.gateway,
                accepted,
                order.count,
                order.window_s,
                order.held,
                order.target,
            )
            self.events.publish(
                "rebalance",
                f"{order.gateway} sheds {accepted} of {order.count} asked "
                f"(held {order.held}, target {order.target:.0f})",
                gateway=order.gateway,
            )
        elif order.gateway not in self._young:
            self._young.add(order.gateway)
            log.info(
                "rebalance: %s has no session older than %.0fs left to shed; waiting",
                order.gateway,
                order.min_age_s,
            )

    # ------------------------------------------------------------ placement (any replica)

    def place(self, candidates: Sequence[Candidate], leaving: str, k: int) -> list[Candidate]:
        """Gateways for a client leaving ``leaving`` (see
        :mod:`.placement`); empty: use the picker."""
        chosen = place(candidates, self.planner.goal, self.planner.donors, leaving, k, self.rng)
        if chosen:
            self.moves_placed += 1
        return chosen

    # ------------------------------------------------------------ operator control

    async def set_paused(self, paused: bool) -> None:
        """Pause or resume on every replica (a shared switch); raises StoreUnavailable."""
        await self.store.set_control("paused", "1" if paused else "0")
        if paused != self.planner.paused:
            self.planner.paused = paused
            self._paused_event(paused)

    def _paused_event(self, paused: bool) -> None:
        log.info("rebalance: %s by the operator", "paused" if paused else "resumed")
        self.events.publish(
            "rebalance",
            f"rebalancing {'paused' if paused else 'resumed'} by the operator",
            paused=paused,
        )

    async def trigger(self) -> None:
        """Start a round at the leader's next tick; raises StoreUnavailable."""
        token = uuid.uuid4().hex
        await self.store.set_control("trigger", token)
        self._trigger_seen = token
        self.planner.trigger()
        log.info("rebalance: round triggered by the operator")
        self.events.publish("rebalance", "round triggered by the operator")

    def describe(self) -> dict[str, Any]:
        """JSON for ``GET /v1/rebalance``."""
        doc = self.planner.describe(self.clock())
        doc.update(
            leader=self.leader,
            leader_replica=self.leader_id,
            replica=self.holder,
            moves_placed_here=self.moves_placed,
            moves_accepted=self.moves_accepted,
            order_failures=self.order_failures,
            settings={
                k: getattr(self.settings, k)
                for k in (
                    "interval_s",
                    "rel_threshold",
                    "abs_threshold",
                    "stop_within",
                    "moves_per_s",
                    "per_donor_per_s",
                    "min_session_age_s",
                    "settle_s",
                    "breaker_cooldown_s",
                    "max_error_rate",
                    "lost_ratio",
                    "lease_ttl_s",
                )
            },
        )
        return doc

    def imbalance(self) -> tuple[float, float]:
        return imbalance(self.planner.view, self.planner.goal)


def gateway_load(gw: Gateway, balancing: BalancerSettings, now: float) -> GatewayLoad:
    """One pool gateway as the planner sees it (``now`` on the pool's clock, for slow start)."""
    cap = gw.config.capacity if gw.config.capacity is not None else gw.reported_capacity
    limit = None if cap is None else max(0, math.floor(cap * balancing.high_water + 1e-9))
    ramp = 1.0
    if gw.health.up and gw.up_since is not None:
        ramp = slow_start_factor(now - gw.up_since, balancing)
    return GatewayLoad(
        gw.id,
        gw.load.reported,
        gw.config.weight,
        limit,
        gw.state(),
        ramp,
        shed_url(gw.config.check) is not None,
        leaving=min(gw.leaving, gw.load.reported),
        zone=gw.config.zone,
    )


__all__ = ["LEASE", "Rebalancer", "gateway_load", "shed_url"]

"""The gateway pool: membership, health, drain and load, published as immutable pickers.

Gateways come from the config file (``source="config"``), the admin API
(``"admin"``) or push registration (``"push"``). Each keeps its
``HealthState`` and its ``LoadCounter`` across picker swaps. Only changes to
what a snapshot is built from (membership, health, drain, static weight,
capacity) mark the pool dirty; rebuilds are coalesced to one per loop
iteration and also happen at the snapshot's own deadline while a gateway is in
slow start. Load (connection counts, utilization, an agent's remaining slots
or percentage) lives in the ``LoadCounter`` that pickers read live, so a load
report never rebuilds. The dispatch hot path only reads ``pool.picker``.
"""

from __future__ import annotations

import asyncio
import logging
import math
import random
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from tcpdispatch.balancing.base import Candidate, LoadCounter, Picker
from tcpdispatch.balancing.registry import get_policy, policy_options
from tcpdispatch.balancing.snapshot import BalancerSettings, GatewayView, build_candidates
from tcpdispatch.balancing.zones import ZoneCounters, ZoneMap, ZoneRouter
from tcpdispatch.config import DispatcherConfig, GatewayEntry
from tcpdispatch.dispatcher.events import EventBus
from tcpdispatch.health import CheckSpec, HealthState, ProbeResult, parse_check
from tcpdispatch.health.overload import OverloadState
from tcpdispatch.rng import default_generator
from tcpdispatch.store.base import SharedGateway

log = logging.getLogger("tcpdispatch.dispatcher.pool")

# Scheduled rebuilds may take at most about this share of the event loop: with 10,000 gateways a
# rebuild costs ~20 ms, and health changes arriving every loop turn would otherwise starve dispatch.
REBUILD_SHARE = 0.2
PACE_ABOVE_S = (
    0.002  # rebuilds cheaper than this (pools of a few hundred) run in the same loop turn
)


@dataclass(slots=True, eq=False)
class Gateway:
    """Mutable per-gateway state owned by the pool (never seen by pickers directly)."""

    config: GatewayEntry
    source: str
    health: HealthState
    load: LoadCounter = field(default_factory=LoadCounter)
    admin_drain: bool = False
    self_drain: bool = False
    up_since: float | None = None
    reported_capacity: int | None = None  # total capacity from /status (agents report load instead)
    last_ok: float | None = None
    last_detail: str = ""
    last_probe_ok: bool | None = None  # the last probe's (or heartbeat's) verdict; None before any
    last_probe_s: float | None = None  # and how long it took
    ever_up: bool = False  # came up at least once since it joined the pool
    down_since: float | None = None  # when it went down (None: up, or never up)
    said_not_up: bool = False  # "has not come up" was logged (once per joining)
    transitions: dict[str, int] = field(default_factory=lambda: {"up": 0, "down": 0})
    overload: OverloadState = field(default_factory=OverloadState)
    leaving: int = 0  # reported sessions asked to move (rebalancing) and still connected

    @property
    def id(self) -> str:
        return self.config.id

    @property
    def push(self) -> bool:
        return self.config.check == "push"

    def view(self) -> GatewayView:
        return GatewayView(
            id=self.id,
            host=self.config.host,
            port=self.config.port,
            weight=self.config.weight,
            capacity=self.config.capacity,
            reported_capacity=self.reported_capacity,
            healthy=self.health.up,
            draining=self.admin_drain or self.self_drain,
            up_since=self.up_since,
            load=self.load,
            overloaded=self.overload.over,
        )

    def state(self) -> str:
        if not self.health.up:
            return "down"
        if self.admin_drain or self.self_drain:
            return "draining"
        return "up"


class Pool:
    """All gateways of one dispatcher and the current picker over them.

    ``clock`` is monotonic seconds (slow start and up_since use it); ``rng``
    is the pickers' generator, which the dispatcher's ticket signer and C hot path
    share (default: :func:`~tcpdispatch.rng.default_generator`, seeded from the OS).
    ``on_targets`` is called with the active-check targets whenever membership or checks
    change.
    Health, panic, drain and weight changes are published to ``events`` (the
    dashboard's feed) next to their log lines.
    """

    def __init__(
        self,
        config: DispatcherConfig,
        *,
        clock: Callable[[], float] = time.monotonic,
        rng: random.Random | None = None,
        on_targets: Callable[[dict[str, CheckSpec]], None] | None = None,
        shared: bool = False,
        events: EventBus | None = None,
    ) -> None:
        self.events = events if events is not None else EventBus()
        self.gateways: dict[str, Gateway] = {}
        self.clock = clock
        self.rng = rng or default_generator()
        self.on_targets = on_targets
        self.panic = False
        self.panic_changes = 0
        self.in_rotation: frozenset[str] = frozenset()  # ids the current picker can hand out
        self.rebuilds = 0
        self.overload_changes = 0  # gateways entering or leaving overload (a metric)
        self.overload_excluded: tuple[str, ...] = ()  # left out of the last picker for overload
        # True: a shared store owns membership/weight/drain (see sync()). The file's gateways
        # are still loaded first: they seed an empty store (shared_state).
        self.shared = False
        self.zones: ZoneRouter | None = None  # per-zone pickers while [[zones]] are configured
        self.zone_counters = ZoneCounters()
        self.zone_panic: frozenset[str] = frozenset()  # zones in panic (judged on their own)
        self._zone_map = ZoneMap(())
        self._config = config
        self._policy = config.policy
        self._factory = get_policy(config.policy)
        self._settings = config.balancing
        self._health_cfg = config.health
        self._dirty = False
        self._scheduled: asyncio.Handle | None = None
        self._rebuild_cost = 0.0  # seconds the last rebuild took
        self._rebuilt_at = -math.inf  # loop time of the last rebuild
        self._deadline: asyncio.TimerHandle | None = None
        self._picker: Picker = self._new_picker(())
        self._listeners: list[Callable[[], None]] = []
        self.apply_config(config)
        self.shared = shared
        # Gateways of the first config were serving before this dispatcher started: no slow start.
        self._initial: set[str] = set(self.gateways)
        self.rebuild()

    # ---------------------------------------------------------------- reading

    @property
    def picker(self) -> Picker:
        """The current immutable picker (hot path)."""
        return self._picker

    @property
    def policy(self) -> str:
        return self._policy

    @property
    def balancing(self) -> BalancerSettings:
        """The ``[balancing]`` settings in force (high water, slow start)."""
        return self._settings

    def get(self, gateway_id: str) -> Gateway | None:
        return self.gateways.get(gateway_id)

    def targets(self) -> dict[str, CheckSpec]:
        """Active health-check targets (push gateways are excluded)."""
        return {g.id: parse_check(g.config.check) for g in self.gateways.values() if not g.push}

    def add_listener(self, fn: Callable[[], None]) -> None:
        """Called after every picker rebuild (the app caches per-gateway JSON fragments)."""
        self._listeners.append(fn)

    # ---------------------------------------------------------------- membership

    def apply_config(self, config: DispatcherConfig) -> None:
        """Bring the pool in line with a (re)loaded config; keeps health/load of unchanged gateways.

        Gateways added through the admin API or push registration survive a
        reload unless the file now defines the same id (the file wins).
        """
        self._config = config
        if config.policy != self._policy:
            self._factory = get_policy(config.policy)
            self._policy = config.policy
        self._settings = config.balancing
        self._zone_map = ZoneMap((z.name, z.cidrs) for z in config.zones)
        health_changed = config.health != self._health_cfg
        self._health_cfg = config.health
        wanted = {g.id: g for g in config.gateways} if not self.shared else {}
        for gid, gw in list(self.gateways.items()):
            if gw.source == "config" and gid not in wanted and not self.shared:
                self._remove(gid)
        for gid, gcfg in wanted.items():
            self._upsert(gcfg, "config")
        if health_changed:
            for gw in self.gateways.values():
                gw.health.rise, gw.health.fall = config.health.rise, config.health.fall
        self._targets_changed()
        self.mark_dirty()

    def add(self, gcfg: GatewayEntry, source: str = "admin") -> Gateway:
        """Add a gateway (KeyError if the id exists)."""
        if gcfg.id in self.gateways:
            raise KeyError(gcfg.id)
        gw = self._upsert(gcfg, source)
        self.events.publish(
            "member",
            f"gateway {gcfg.id} joined the pool ({source})",
            gateway=gcfg.id,
            source=source,
        )
        self._targets_changed()
        self.rebuild()
        return gw

    def remove(self, gateway_id: str) -> bool:
        self._initial.discard(gateway_id)
        if not self._remove(gateway_id):
            return False
        self.events.publish("member", f"gateway {gateway_id} left the pool", gateway=gateway_id)
        self._targets_changed()
        self.rebuild()
        return True

    def set_weight(self, gateway_id: str, weight: float) -> Gateway:
        gw = self.gateways[gateway_id]
        old = gw.config.weight
        gw.config = replace(gw.config, weight=float(weight))
        if old != gw.config.weight:
            self.events.publish(
                "weight",
                f"gateway {gateway_id} weight {old:g} -> {weight:g}",
                gateway=gateway_id,
                weight=float(weight),
                previous=old,
            )
        self.rebuild()
        return gw

    def set_zone(self, gateway_id: str, zone: str) -> Gateway:
        gw = self.gateways[gateway_id]
        gw.config = replace(gw.config, zone=zone)
        self.rebuild()
        return gw

    def set_drain(self, gateway_id: str, draining: bool) -> Gateway:
        gw = self.gateways[gateway_id]
        if gw.admin_drain and not draining and gw.health.up:
            gw.up_since = self.clock()  # ramp back up through slow start
        if gw.admin_drain != draining:
            self._drain_event(gw.id, draining, "by the operator")
        gw.admin_drain = draining
        self.rebuild()
        return gw

    def sync(self, entries: Mapping[str, SharedGateway], *, initial: bool = False) -> bool:
        """Make membership, weights and admin drain equal to a shared store's state.

        Health and load of gateways whose address and check are unchanged are
        kept. ``initial``: gateways new to this pool skip slow start (the first
        sync before serving, like the first config). Returns True if anything changed.
        """
        targets = False
        changed = False
        for gid in [g for g in self.gateways if g not in entries]:
            self._remove(gid)
            self._initial.discard(gid)
            targets = True
        for gid, entry in entries.items():
            gw = self.gateways.get(gid)
            if gw is None or gw.config != entry.config or gw.source != entry.source:
                if gw is None or (gw.config.address, gw.config.check) != (
                    entry.config.address,
                    entry.config.check,
                ):
                    targets = True
                    if initial:
                        self._initial.add(gid)
                gw = self._upsert(entry.config, entry.source)
                changed = True
            if gw.admin_drain != entry.drain:
                if gw.admin_drain and gw.health.up:
                    gw.up_since = self.clock()  # undrained elsewhere: ramp up here too
                self._drain_event(gid, entry.drain, "through the shared store")
                gw.admin_drain = entry.drain
                changed = True
        if targets:
            self._targets_changed()
        if changed or targets:
            self.rebuild()
        return changed or targets

    def _drain_event(self, gid: str, draining: bool, how: str) -> None:
        self.events.publish(
            "drain",
            f"gateway {gid} {'drained' if draining else 'undrained'} {how}",
            gateway=gid,
            draining=draining,
        )

    def shared_state(self) -> list[SharedGateway]:
        """The admin-owned state of every gateway (seeds an empty shared store)."""
        return [SharedGateway(g.config, g.source, g.admin_drain) for g in self.gateways.values()]

    def _upsert(self, gcfg: GatewayEntry, source: str) -> Gateway:
        h = self._health_cfg
        old = self.gateways.get(gcfg.id)
        if old is not None and (old.config.address, old.config.check) == (gcfg.address, gcfg.check):
            old.config = gcfg
            old.source = source
            return old
        gw = Gateway(gcfg, source, HealthState(h.rise, h.fall))
        if old is not None:  # same id, new address or check: keep drain, start health afresh
            gw.admin_drain = old.admin_drain
        self.gateways[gcfg.id] = gw
        return gw

    def _remove(self, gateway_id: str) -> bool:
        return self.gateways.pop(gateway_id, None) is not None

    def _targets_changed(self) -> None:
        if self.on_targets is not None:
            self.on_targets(self.targets())

    # ---------------------------------------------------------------- health and load

    def on_result(self, gateway_id: str, result: ProbeResult) -> None:
        """A probe (or push heartbeat) result for one gateway."""
        gw = self.gateways.get(gateway_id)
        if gw is None:
            return
        gw.last_detail = result.detail or ""
        gw.last_probe_ok, gw.last_probe_s = bool(result.ok), result.latency_s
        changed = gw.health.observe(bool(result.ok))
        now = self.clock()
        if changed:
            gw.up_since = now if gw.health.up else None
            if gw.health.up and gw.id in self._initial:
                gw.up_since = None
            self._initial.discard(gw.id)
            self._log_transition(gw, now, "probe")
        elif not gw.ever_up and not gw.said_not_up and gw.health.failures >= gw.health.fall:
            gw.said_not_up = True
            log.warning(
                "gateway %s has not come up: %d probes in a row failed (fall = %d): %s",
                gw.id,
                gw.health.failures,
                gw.health.fall,
                gw.last_detail or "no detail",
            )
            self.events.publish(
                "health",
                f"gateway {gw.id} has not come up: {gw.last_detail or 'no detail'}",
                gateway=gw.id,
                state="down",
            )
        if result.ok:
            gw.last_ok = now
            if gw.config.check.startswith("agent://"):
                self._agent_load(gw, result)
            else:
                gw.leaving = result.leaving
                if result.connections is not None:
                    gw.load.report(int(result.connections), result.utilization)
                elif result.utilization is not None:
                    gw.load.utilization = result.utilization
                cap = int(result.capacity) if result.capacity is not None else None
                if cap != gw.reported_capacity:
                    gw.reported_capacity = cap
                    changed = True
            draining = bool(result.draining)
            if draining != gw.self_drain:
                self._drain_event(gw.id, draining, "by itself (its status says so)")
                gw.self_drain = draining
                changed = True
            # Judged only while up: the first status after a stall (SIGSTOP, a long GC) reports
            # the stall's lag, which the rise/fall machine has already dealt with.
            if self._health_cfg.overload and gw.health.up and self._judge_overload(gw, result):
                changed = True
        if changed:
            self.mark_dirty()

    def _log_transition(self, gw: Gateway, now: float, how: str) -> None:
        """Log (once) and count a health change of ``gw``, with its reason."""
        h = gw.health
        checks = "heartbeats" if gw.push else "probes"
        if h.up:
            gw.transitions["up"] += 1
            if gw.ever_up:
                down_for = (
                    "" if gw.down_since is None else f", down for {now - gw.down_since:.1f} s"
                )
                log.info(
                    "gateway %s came back: %d %s in a row passed (rise = %d)%s",
                    gw.id,
                    h.successes,
                    checks,
                    h.rise,
                    down_for,
                )
                self.events.publish(
                    "health", f"gateway {gw.id} came back{down_for}", gateway=gw.id, state="up"
                )
            else:
                log.info(
                    "gateway %s is up: %d %s in a row passed (rise = %d)",
                    gw.id,
                    h.successes,
                    checks,
                    h.rise,
                )
                self.events.publish("health", f"gateway {gw.id} is up", gateway=gw.id, state="up")
            gw.ever_up = True
            gw.down_since = None
            return
        gw.transitions["down"] += 1
        gw.down_since = now
        if how == "probe":
            why = (
                f"{h.failures} probes in a row failed (fall = {h.fall}): "
                f"{gw.last_detail or 'no detail'}"
            )
        elif how == "client":
            why = f"client reports and failed probes reached fall = {h.fall}"
        else:
            why = how
        log.warning("gateway %s went down: %s", gw.id, why)
        self.events.publish(
            "health", f"gateway {gw.id} went down: {why}", gateway=gw.id, state="down"
        )

    def _judge_overload(self, gw: Gateway, result: ProbeResult) -> bool:
        """Feed one good status to the gateway's overload judge; True when its state changed."""
        # What the dispatcher measures (tick lateness, answer time) also grows when the dispatcher
        # itself or the network is slow, for every gateway at once; a gateway that measures its own
        # event loop (busy, lag) is judged by that alone.
        own = result.busy is not None or result.lag_s is not None
        latency = 0.0 if own else max(result.latency_s, result.late_s)
        if not gw.overload.observe(
            self._health_cfg.overload_thresholds, result.busy, result.lag_s, latency
        ):
            return False
        self.overload_changes += 1
        if gw.overload.over:
            log.warning(
                "gateway %s is overloaded (%s): no new clients until it recovers",
                gw.id,
                gw.overload.reason,
            )
        else:
            log.info(
                "gateway %s recovered from overload (%s): handing out again",
                gw.id,
                gw.overload.reason,
            )
        self.events.publish(
            "overload",
            f"gateway {gw.id} {'is overloaded' if gw.overload.over else 'recovered'}"
            f" ({gw.overload.reason})",
            gateway=gw.id,
            overloaded=gw.overload.over,
        )
        return True

    def _agent_load(self, gw: Gateway, result: ProbeResult) -> None:
        """Reset the load estimate from an agent reply (it carries no connection count).

        Agents report what is *left* (``maxconn:<remaining>``, ``<remaining>%``), which
        changes with every connection, so it is load, never snapshot input. With a
        configured capacity the connections follow exactly; without one the remaining
        slots (x high_water) become the counter's ``headroom`` and the tickets issued
        since this reply count against it (without the reset the issued counter would
        grow forever and the gateway would look full for good). ``N%`` also sets the
        utilization (``1 - N/100``) that the ``load`` policy reads.
        """
        cap = gw.config.capacity
        if cap is not None and result.capacity is not None:
            gw.load.report(max(0, cap - int(result.capacity)), result.utilization)
        elif cap is not None and result.weight_pct is not None:
            connections = round(cap * (100 - min(100, max(0, result.weight_pct))) / 100)
            gw.load.report(connections, result.utilization)
        elif result.capacity is not None:
            headroom = max(0, math.floor(int(result.capacity) * self._settings.high_water + 1e-9))
            gw.load.report(0, result.utilization, headroom=headroom)
        elif result.utilization is not None:
            gw.load.utilization = result.utilization

    def passive_failure(self, gateway_id: str) -> bool:
        """A client could not reach ``gateway_id``; False if unknown."""
        gw = self.gateways.get(gateway_id)
        if gw is None:
            return False
        if gw.health.passive_failure():
            gw.up_since = None
            self._log_transition(gw, self.clock(), "client")
            self.mark_dirty()
        return True

    def push_expired(self, gateway_id: str) -> None:
        """Heartbeats from a push gateway stopped for ``ttl``: down until ``rise`` new ones."""
        gw = self.gateways.get(gateway_id)
        if gw is None:
            return
        was_up = gw.health.up
        h = self._health_cfg
        gw.health = HealthState(h.rise, h.fall)
        gw.up_since = None
        gw.last_detail = "heartbeats stopped"
        if was_up:
            self._log_transition(gw, self.clock(), f"no push heartbeat for {h.ttl:g} s (ttl)")
            self.mark_dirty()

    # ---------------------------------------------------------------- rebuilding

    def mark_dirty(self) -> None:
        """Schedule a rebuild for this loop iteration (synchronous when no event loop runs).

        Rebuilds are paced so they take at most ``REBUILD_SHARE`` of the loop: after one that
        took ``c`` seconds (``c >= PACE_ABOVE_S``) the next waits until ``c / REBUILD_SHARE``
        after it (~0.1 s for 10,000 gateways); changes meanwhile are coalesced.
        """
        self._dirty = True
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            self.rebuild()
            return
        if self._scheduled is None:
            cost = self._rebuild_cost
            wait = (
                self._rebuilt_at + cost / REBUILD_SHARE - loop.time()
                if cost >= PACE_ABOVE_S
                else 0.0
            )
            self._scheduled = (
                loop.call_soon(self._run_scheduled)
                if wait <= 0
                else loop.call_later(wait, self._run_scheduled)
            )

    def _run_scheduled(self) -> None:
        self._scheduled = None
        if self._dirty:
            self.rebuild()

    def rebuild(self) -> Picker:
        """Build a new snapshot and picker now."""
        started = time.perf_counter()
        self._dirty = False
        if self._scheduled is not None:
            self._scheduled.cancel()
            self._scheduled = None
        now = self.clock()
        snap = build_candidates([g.view() for g in self.gateways.values()], now, self._settings)
        if snap.panic != self.panic:
            self.panic_changes += 1
            if snap.panic:
                # Before any probe has answered every gateway
                # is down: that is start-up, not an alarm.
                known = any(g.ever_up or g.health.failures for g in self.gateways.values())
                log.log(
                    logging.WARNING if known else logging.INFO,
                    "panic mode on: %d of %d non-draining gateways are healthy (below "
                    "panic_threshold = %g)%s; handing out all %d",
                    snap.healthy,
                    snap.serving,
                    self._settings.panic_threshold,
                    "" if known else " before the first health checks",
                    len(snap.candidates),
                )
            else:
                log.info(
                    "panic mode off: %d of %d non-draining gateways are healthy; handing out the "
                    "healthy ones only",
                    snap.healthy,
                    snap.serving,
                )
            self.events.publish(
                "panic",
                f"panic mode {'on' if snap.panic else 'off'}: {snap.healthy} of "
                f"{snap.serving} non-draining gateways are healthy",
                panic=snap.panic,
                healthy=snap.healthy,
                serving=snap.serving,
            )
        self.panic = snap.panic
        self.in_rotation = frozenset(c.id for c in snap.candidates)
        self.overload_excluded = snap.overloaded
        self._picker = self._new_picker(snap.candidates)
        self.zones = self._zone_router(now) if self._config.zones else None
        if self.zones is not None:
            self.in_rotation = frozenset(c.id for c in self.handed_out())
        self.rebuilds += 1
        self._schedule_deadline(snap.rebuild_at, now)
        for fn in self._listeners:
            fn()
        self._rebuild_cost = time.perf_counter() - started
        try:
            self._rebuilt_at = asyncio.get_running_loop().time()
        except RuntimeError:
            pass
        return self._picker

    def _zone_router(self, now: float) -> ZoneRouter:
        """One picker per zone, each over that zone's gateways alone (panic judged per zone)."""
        views: dict[str, list[GatewayView]] = {}
        for g in self.gateways.values():
            views.setdefault(g.config.zone, []).append(g.view())
        pickers = {}
        panic = set()
        for zone, zviews in views.items():
            snap = build_candidates(zviews, now, self._settings)
            pickers[zone] = (self._new_picker(snap.candidates), snap.panic)
            if snap.panic:
                panic.add(zone)
        known = any(g.ever_up or g.health.failures for g in self.gateways.values())
        for zone in sorted(panic ^ self.zone_panic):
            if zone in panic:
                log.log(
                    logging.WARNING if known else logging.INFO,
                    "zone %s is in panic: too few of its gateways are healthy (below "
                    "panic_threshold = %g); its clients go to other zones",
                    zone,
                    self._settings.panic_threshold,
                )
            else:
                log.info("zone %s left panic: enough of its gateways are healthy again", zone)
        self.zone_panic = frozenset(panic)
        cfg = self._config
        return ZoneRouter(
            pickers,
            zone_map=self._zone_map,
            declared=[z.name for z in cfg.zones],
            spill_to={z.name: z.spill_to for z in cfg.zones},
            spill_headroom=cfg.spill_headroom,
            gateway_zone={g.id: g.config.zone for g in self.gateways.values()},
            counters=self.zone_counters,
        )

    def handed_out(self) -> list[Candidate]:
        """Every candidate any current picker (pool-wide or per zone) may hand out."""
        out = list(self._picker.candidates)
        if self.zones is not None:
            seen = {c.id for c in out}
            for state in self.zones.zones.values():
                out += [c for c in state.picker.candidates if c.id not in seen]
                seen.update(c.id for c in state.picker.candidates)
        return out

    def _new_picker(self, candidates: Iterable[Candidate]) -> Picker:
        return self._factory(
            tuple(candidates), rng=self.rng, **policy_options(self._factory, self._settings)
        )

    def _schedule_deadline(self, deadline: float | None, now: float) -> None:
        if self._deadline is not None:
            self._deadline.cancel()
            self._deadline = None
        if deadline is None:
            return
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            return
        # Slow start ramps continuously; re-snapshot at least every 0.1 s while it lasts.
        self._deadline = loop.call_later(max(0.1, deadline - now), self.rebuild)

    def close(self) -> None:
        for h in (self._scheduled, self._deadline):
            if h is not None:
                h.cancel()
        self._scheduled = self._deadline = None

    # ---------------------------------------------------------------- reporting

    def describe(self, gw: Gateway) -> dict[str, Any]:
        """JSON view of one gateway for ``GET /v1/gateways``."""
        cfg = gw.config
        return {
            "id": gw.id,
            "address": cfg.address,
            "check": cfg.check,
            "weight": cfg.weight,
            "zone": cfg.zone,
            "state": gw.state(),
            "healthy": gw.health.up,
            "draining": gw.admin_drain or gw.self_drain,
            "admin_drain": gw.admin_drain,
            "source": gw.source,
            "connections": gw.load.reported,
            "issued_since_report": gw.load.issued,
            "capacity": cfg.capacity if cfg.capacity is not None else gw.reported_capacity,
            "headroom": gw.load.headroom,
            "utilization": gw.load.utilization,
            "overloaded": gw.overload.over,
            "overload_reason": gw.overload.reason,
            "up_for_s": None if gw.up_since is None else round(self.clock() - gw.up_since, 3),
            "detail": gw.last_detail,
        }

    def counts(self) -> dict[str, int]:
        out = {"up": 0, "down": 0, "draining": 0}
        for gw in self.gateways.values():
            out[gw.state()] += 1
        return out


__all__ = ["Gateway", "Pool"]

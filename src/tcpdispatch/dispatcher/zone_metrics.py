"""Zone metric families for the dispatcher's ``/metrics`` (docs/zones.md), built at scrape time."""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

if TYPE_CHECKING:
    from tcpdispatch.dispatcher.pool import Pool


def zone_summary(pool: Pool) -> dict[str, dict[str, object]]:
    """Per zone: gateways, held connections (as reported), handed-out gateways, headroom, panic and
    where its clients spill to (``None``: served at home). Empty while no zones are configured."""
    router = pool.zones
    if router is None:
        return {}
    counts: dict[str, int] = {}
    held: dict[str, int] = {}
    for gw in pool.gateways.values():
        zone = gw.config.zone
        counts[zone] = counts.get(zone, 0) + 1
        held[zone] = held.get(zone, 0) + gw.load.reported
    live = router.describe()
    out: dict[str, dict[str, object]] = {}
    for name in sorted(set(counts) | set(live) | router.declared):
        out[name] = {
            "gateways": counts.get(name, 0),
            "held": held.get(name, 0),
            **live.get(
                name,
                {
                    "in_rotation": 0,
                    "panic": False,
                    "headroom": 0.0,
                    "spilling_to": router.counters.spilling.get(name),
                },
            ),
        }
    return out


def collect(pool: Pool) -> Iterator[Metric]:
    """Nothing while zones are off; else dispatches by client and gateway zone, and per zone the
    held connections, headroom, panic and spill state."""
    if pool.zones is None:
        return
    counters = pool.zone_counters
    d = CounterMetricFamily(
        "tcpdispatch_zone_dispatched",
        "Clients with a zone handed out, by the "
        "client's zone and the chosen gateway's zone (they differ while spilling)",
        labels=["client_zone", "gateway_zone"],
    )
    for (cz, gz), n in sorted(counters.dispatched.items()):
        d.add_metric([cz, gz], n)
    yield d
    held = GaugeMetricFamily(
        "tcpdispatch_zone_held_connections",
        "Connections the zone's gateways reported",
        labels=["zone"],
    )
    room = GaugeMetricFamily(
        "tcpdispatch_zone_headroom",
        "Share of the zone's slots (capacity x "
        "high_water) still free; 1 when a gateway reports no capacity",
        labels=["zone"],
    )
    panic = GaugeMetricFamily(
        "tcpdispatch_zone_panic",
        "1 while too few of the zone's gateways are healthy (its clients go to other zones)",
        labels=["zone"],
    )
    spill = GaugeMetricFamily(
        "tcpdispatch_zone_spilling",
        "1 while the zone's clients are served from other zones",
        labels=["zone"],
    )
    for name, z in zone_summary(pool).items():
        held.add_metric([name], float(z["held"]))  # type: ignore[arg-type]  # an int
        room.add_metric([name], float(z["headroom"]))  # type: ignore[arg-type]  # a float
        panic.add_metric([name], 1.0 if z["panic"] else 0.0)
        spill.add_metric([name], 0.0 if z["spilling_to"] is None else 1.0)
    yield held
    yield room
    yield panic
    yield spill
    yield CounterMetricFamily(
        "tcpdispatch_zone_spill_changes",
        "Times a zone started or stopped spilling over",
        value=counters.spill_changes,
    )

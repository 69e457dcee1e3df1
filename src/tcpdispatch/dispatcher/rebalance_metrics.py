"""Prometheus families for rebalancing (added to the dispatcher's ``/metrics``)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

if TYPE_CHECKING:
    from tcpdispatch.dispatcher.rebalancer import Rebalancer


def collect(rb: Rebalancer) -> Iterator[Metric]:
    """Imbalance, moves, breaker and leadership of one replica's rebalancer."""
    p = rb.planner
    worst, spread = rb.imbalance()
    yield GaugeMetricFamily(
        "tcpdispatch_rebalance_imbalance",
        "Largest held/target ratio among gateways taking clients (1 = on target)",
        value=worst,
    )
    yield GaugeMetricFamily(
        "tcpdispatch_rebalance_held_max_over_mean",
        "Largest held count over the mean held count (gateways taking clients)",
        value=spread,
    )
    t = GaugeMetricFamily(
        "tcpdispatch_rebalance_target", "Target held connections per gateway", labels=["gateway"]
    )
    for gid, target in p.goal.items():
        t.add_metric([gid], target)
    yield t
    yield CounterMetricFamily(
        "tcpdispatch_rebalance_moves_requested",
        "Sessions donors agreed to shed (leader)",
        value=rb.moves_accepted,
    )
    yield CounterMetricFamily(
        "tcpdispatch_rebalance_moves_placed",
        "Moved clients this replica placed on a gateway below target",
        value=rb.moves_placed,
    )
    yield CounterMetricFamily(
        "tcpdispatch_rebalance_order_failures",
        "Shed orders a gateway did not accept",
        value=rb.order_failures,
    )
    yield GaugeMetricFamily(
        "tcpdispatch_rebalance_in_flight",
        "Moves asked for and not yet settled",
        value=p.in_flight(),
    )
    yield CounterMetricFamily("tcpdispatch_rebalance_rounds", "Rounds started", value=p.rounds)
    yield GaugeMetricFamily(
        "tcpdispatch_rebalance_breaker_open",
        "1 while the breaker holds moves back",
        value=1.0 if p.breaker.open else 0.0,
    )
    yield CounterMetricFamily(
        "tcpdispatch_rebalance_breaker_trips", "Times the breaker opened", value=p.breaker.trips
    )
    yield GaugeMetricFamily(
        "tcpdispatch_rebalance_paused",
        "1 while paused by the operator",
        value=1.0 if p.paused else 0.0,
    )
    yield GaugeMetricFamily(
        "tcpdispatch_rebalance_leader",
        "1 on the replica holding the lease",
        value=1.0 if rb.leader else 0.0,
    )

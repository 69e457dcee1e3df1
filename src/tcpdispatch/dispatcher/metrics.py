"""Prometheus exposition for the dispatcher, built at scrape time from plain counters.

The hot path only bumps ints on the service's ``stats`` (and the C accelerator its own
answer-time buckets); this collector turns them and the pool's state into
metric families when ``/metrics`` is scraped, next to ``tcpdispatch_build_info``
and the standard ``process_*`` metrics.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.exposition import CONTENT_TYPE_LATEST

from tcpdispatch.dispatcher import zone_metrics
from tcpdispatch.dispatcher.rebalance_metrics import collect as collect_rebalance
from tcpdispatch.metrics_common import (
    DISPATCH_BUCKETS,
    LatencyHistogram,
    add_process_collector,
    build_info,
    histogram_family,
)

if TYPE_CHECKING:
    from tcpdispatch.dispatcher.pool import Pool
    from tcpdispatch.dispatcher.rebalancer import Rebalancer
    from tcpdispatch.dispatcher.service import DispatchService


class _Collector:
    def __init__(self, service: DispatchService, pool: Pool, rebalance: Rebalancer | None) -> None:
        self.service, self.pool, self.rebalance = service, pool, rebalance

    def collect(self) -> Iterator[Metric]:
        service, pool = self.service, self.pool
        s = service.stats
        c = CounterMetricFamily(
            "tcpdispatch_dispatch_requests", "Dispatch requests by outcome", labels=["outcome"]
        )
        c.add_metric(["ok"], s.dispatched)
        c.add_metric(["unavailable"], s.unavailable)
        c.add_metric(["bad_request"], s.bad_request)
        yield c
        g = CounterMetricFamily(
            "tcpdispatch_dispatched",
            "Clients handed to each gateway (as primary)",
            labels=["gateway"],
        )
        for gid, n in s.per_gateway.items():
            g.add_metric([gid], n)
        yield g
        o = CounterMetricFamily(
            "tcpdispatch_http_requests",
            "Other API requests by route and status",
            labels=["route", "status"],
        )
        for (route, status), n in s.other.items():
            o.add_metric([route, str(status)], n)
        yield o
        states = GaugeMetricFamily("tcpdispatch_gateways", "Gateways by state", labels=["state"])
        for state, n in pool.counts().items():
            states.add_metric([state], n)
        yield states
        up = GaugeMetricFamily(
            "tcpdispatch_gateway_up",
            "1 while the gateway's health checks pass "
            "(what is handed out: tcpdispatch_gateway_in_rotation)",
            labels=["gateway"],
        )
        rotation = GaugeMetricFamily(
            "tcpdispatch_gateway_in_rotation",
            "1 while new clients may be "
            "handed to the gateway (healthy, or any gateway in panic; not "
            "draining; weight > 0)",
            labels=["gateway"],
        )
        conns = GaugeMetricFamily(
            "tcpdispatch_gateway_estimated_connections",
            "The dispatcher's load estimate: connections in the gateway's last "
            "report plus tickets issued for it since",
            labels=["gateway"],
        )
        changes = CounterMetricFamily(
            "tcpdispatch_gateway_health_changes",
            "Health transitions of each gateway, by new state",
            labels=["gateway", "to"],
        )
        in_rotation = pool.in_rotation
        for gw in pool.gateways.values():
            up.add_metric([gw.id], 1.0 if gw.health.up else 0.0)
            rotation.add_metric([gw.id], 1.0 if gw.id in in_rotation else 0.0)
            conns.add_metric([gw.id], gw.load.current)
            for to, n in gw.transitions.items():
                changes.add_metric([gw.id, to], n)
        yield up
        yield rotation
        yield conns
        over = GaugeMetricFamily(
            "tcpdispatch_gateway_overloaded",
            "1 while the gateway is judged overloaded (no new clients)",
            labels=["gateway"],
        )
        for gw in pool.gateways.values():
            over.add_metric([gw.id], 1.0 if gw.overload.over else 0.0)
        yield over
        yield CounterMetricFamily(
            "tcpdispatch_overload_transitions",
            "Gateways entering or leaving overload",
            value=pool.overload_changes,
        )
        yield changes
        yield GaugeMetricFamily(
            "tcpdispatch_panic",
            "1 while in panic mode (every non-draining gateway is handed out)",
            value=1.0 if pool.panic else 0.0,
        )
        yield CounterMetricFamily(
            "tcpdispatch_panic_changes",
            "Times panic mode started or ended",
            value=pool.panic_changes,
        )
        yield CounterMetricFamily(
            "tcpdispatch_picker_rebuilds", "Picker rebuilds", value=pool.rebuilds
        )
        events = pool.events  # the live dashboard's feed (docs/dashboard.md)
        ev = CounterMetricFamily(
            "tcpdispatch_events", "Operator events published, by kind", labels=["kind"]
        )
        for kind, n in events.counts.items():
            ev.add_metric([kind], n)
        yield ev
        yield GaugeMetricFamily(
            "tcpdispatch_event_streams", "Open /v1/events streams", value=len(events.subscribers)
        )
        yield CounterMetricFamily(
            "tcpdispatch_event_streams_dropped",
            "Event streams cut off for falling behind",
            value=events.dropped,
        )
        yield GaugeMetricFamily(
            "tcpdispatch_speedups",
            "1 while plain dispatches are answered in C",
            value=1.0 if service.hot_path == "c" else 0.0,
        )
        yield from zone_metrics.collect(pool)
        if self.rebalance is not None:
            yield from collect_rebalance(self.rebalance)
        answers = LatencyHistogram(DISPATCH_BUCKETS)
        answers.add(*service.answer_times())
        yield histogram_family(
            "tcpdispatch_dispatch_duration_seconds",
            "Time to build one dispatch answer (validate, pick, sign, encode; "
            "200, 400 and 503 alike), in either hot path",
            [((), answers)],
        )
        yield histogram_family(
            "tcpdispatch_health_probe_duration_seconds",
            "Duration of active health probes, by result",
            [((result,), h) for result, h in s.probes.items()],
            labels=["result"],
        )
        yield build_info()


class DispatcherMetrics:
    """The dispatcher's ``/metrics`` page: one registry, built when the router is."""

    def __init__(self, service: DispatchService, pool: Pool, rebalance: Rebalancer | None) -> None:
        self.registry = CollectorRegistry(auto_describe=False)
        self.registry.register(_Collector(service, pool, rebalance))  # type: ignore[arg-type]
        add_process_collector(self.registry)

    def render(self) -> tuple[bytes, str]:
        """The metrics page and its content type."""
        return generate_latest(self.registry), CONTENT_TYPE_LATEST

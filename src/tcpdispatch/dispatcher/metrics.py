"""Prometheus exposition for the dispatcher, built at scrape time from plain counters.

The hot path only bumps ints on ``app.stats``; this collector turns them and
the pool's state into metric families when ``/metrics`` is scraped.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.exposition import CONTENT_TYPE_LATEST

if TYPE_CHECKING:
    from tcpdispatch.dispatcher.app import DispatcherApp


class _Collector:
    def __init__(self, app: DispatcherApp) -> None:
        self.app = app

    def collect(self) -> Iterator[Metric]:
        app, pool = self.app, self.app.pool
        s = app.stats
        c = CounterMetricFamily("tcpdispatch_dispatch_requests", "Dispatch requests by outcome",
                                labels=["outcome"])
        c.add_metric(["ok"], s.dispatched)
        c.add_metric(["unavailable"], s.unavailable)
        c.add_metric(["bad_request"], s.bad_request)
        yield c
        g = CounterMetricFamily("tcpdispatch_dispatched", "Clients handed to each gateway (as primary)",
                                labels=["gateway"])
        for gid, n in s.per_gateway.items():
            g.add_metric([gid], n)
        yield g
        o = CounterMetricFamily("tcpdispatch_http_requests", "Other API requests by route and status",
                                labels=["route", "status"])
        for (route, status), n in s.other.items():
            o.add_metric([route, str(status)], n)
        yield o
        states = GaugeMetricFamily("tcpdispatch_gateways", "Gateways by state", labels=["state"])
        for state, n in pool.counts().items():
            states.add_metric([state], n)
        yield states
        up = GaugeMetricFamily("tcpdispatch_gateway_up", "1 when the gateway may be handed out",
                               labels=["gateway"])
        conns = GaugeMetricFamily("tcpdispatch_gateway_connections",
                                  "Reported connections plus tickets issued since", labels=["gateway"])
        for gw in pool.gateways.values():
            up.add_metric([gw.id], 1.0 if gw.state() == "up" else 0.0)
            conns.add_metric([gw.id], gw.load.current)
        yield up
        yield conns
        yield GaugeMetricFamily("tcpdispatch_panic", "1 while in panic mode", value=1.0 if pool.panic else 0.0)
        yield CounterMetricFamily("tcpdispatch_picker_rebuilds", "Picker rebuilds", value=pool.rebuilds)
        yield GaugeMetricFamily("tcpdispatch_speedups", "1 while plain dispatches are answered in C",
                                value=1.0 if app.hot_path == "c" else 0.0)
        if app.rebalance is not None:
            from tcpdispatch.rebalance.metrics import collect

            yield from collect(app.rebalance)


def render(app: DispatcherApp) -> tuple[bytes, str]:
    """The metrics page and its content type."""
    reg = getattr(app, "_metrics_registry", None)
    if reg is None:
        reg = CollectorRegistry(auto_describe=False)
        reg.register(_Collector(app))  # type: ignore[arg-type]
        app._metrics_registry = reg  # type: ignore[attr-defined]
    return generate_latest(reg), CONTENT_TYPE_LATEST

"""Metric pieces shared by the dispatcher and the gateway.

- :class:`LatencyHistogram`: plain bucket counters a hot path can bump for a
  fraction of a microsecond, exported as a Prometheus histogram at scrape time
  (prometheus_client's own ``Histogram`` takes a lock per observation).
- :func:`build_info`: ``tcpdispatch_build_info{version, python, accelerator} 1``.
- :func:`add_process_collector`: the standard ``process_*`` metrics (CPU, memory,
  open files, start time) of the serving process.
"""

from __future__ import annotations

import platform
from bisect import bisect_left
from collections.abc import Iterable, Sequence

from prometheus_client import CollectorRegistry, ProcessCollector
from prometheus_client.core import GaugeMetricFamily, HistogramMetricFamily

from tcpdispatch import __version__

# Answer building (pick, sign, JSON) takes microseconds; probes take milliseconds.
DISPATCH_BUCKETS = (1e-6, 2.5e-6, 5e-6, 1e-5, 2.5e-5, 5e-5, 1e-4, 2.5e-4, 5e-4, 1e-3, 1e-2)
PROBE_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)


class LatencyHistogram:
    """Counts per bucket (``value <= bound``, then +Inf) and the sum of observed seconds."""

    __slots__ = ("bounds", "counts", "total")

    def __init__(self, bounds: Sequence[float]) -> None:
        self.bounds = tuple(bounds)
        self.counts = [0] * (len(self.bounds) + 1)
        self.total = 0.0

    def observe(self, seconds: float) -> None:
        self.counts[bisect_left(self.bounds, seconds)] += 1
        self.total += seconds

    def add(self, counts: Sequence[int], total: float) -> None:
        """Merge counts kept elsewhere (the C hot path) with the same bounds."""
        for i, n in enumerate(counts):
            self.counts[i] += n
        self.total += total


def histogram_family(
    name: str,
    doc: str,
    series: Iterable[tuple[Sequence[str], LatencyHistogram]],
    labels: Sequence[str] = (),
) -> HistogramMetricFamily:
    """One histogram family; ``series`` pairs label values with a histogram."""
    fam = HistogramMetricFamily(name, doc, labels=list(labels))
    for values, h in series:
        cumulative, buckets = 0, []
        for bound, n in zip((*h.bounds, float("inf")), h.counts, strict=True):
            cumulative += n
            buckets.append(("+Inf" if bound == float("inf") else repr(bound), cumulative))
        fam.add_metric(list(values), buckets, h.total)
    return fam


def accelerator() -> str:
    """``"c"`` when the C accelerator (tcpdispatch._speedups) is built, else ``"none"``."""
    try:
        import tcpdispatch._speedups  # noqa: F401
    except ImportError:
        return "none"
    return "c"


def build_info() -> GaugeMetricFamily:
    """``tcpdispatch_build_info`` (always 1): what is running, in its labels."""
    g = GaugeMetricFamily(
        "tcpdispatch_build_info",
        "tcpdispatch version, Python version and whether "
        "the C accelerator is built (value is always 1)",
        labels=["version", "python", "accelerator"],
    )
    g.add_metric([__version__, platform.python_version(), accelerator()], 1.0)
    return g


def add_process_collector(registry: CollectorRegistry) -> None:
    """Export this process's ``process_*`` metrics (Linux /proc) through ``registry``."""
    ProcessCollector(registry=registry)

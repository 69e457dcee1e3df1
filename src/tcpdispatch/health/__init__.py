"""Health checking of gateways: pull (http / agent / tcp probes), push (heartbeat TTL), passive.

Layers, pure first:

- :mod:`.settings` — :class:`HealthSettings`, :class:`CheckSpec`, :func:`parse_check`.
- :mod:`.state` — :class:`HealthState` (rise/fall machine) and :class:`PushTracker` (TTLs).
- :mod:`.probes` — :class:`ProbeResult`, the reply parsers and one-shot :func:`probe`.
- :mod:`.overload` — :class:`OverloadState`, the hysteresis of overload protection.
- :mod:`.rawprobe` — :class:`RawProber`, polling over raw keep-alive connections.
- :mod:`.checker` — :class:`HealthChecker`, the asyncio loops that poll on a schedule.
- :mod:`.watch` — :class:`StatusWatcher` (one long-lived status stream per gateway) and
  :class:`StatusMonitor`, which watches what streams and polls the rest.

The owner (the dispatcher) wires them: ``StatusMonitor(on_result=...)`` results go to one
``HealthState`` per gateway via ``observe(result.ok)``; client reports go to
``passive_failure()``; push heartbeats go through :func:`status_to_result` and
``PushTracker.record``. See docs/health.md.
"""

from tcpdispatch.health.checker import HealthChecker, Prober
from tcpdispatch.health.probes import ProbeResult, parse_agent_reply, probe, status_to_result
from tcpdispatch.health.settings import CHECK_KINDS, CheckSpec, HealthSettings, parse_check
from tcpdispatch.health.state import HealthState, PushTracker
from tcpdispatch.health.watch import StatusMonitor, StatusWatcher

__all__ = [
    "CHECK_KINDS",
    "CheckSpec",
    "HealthChecker",
    "HealthSettings",
    "HealthState",
    "ProbeResult",
    "Prober",
    "PushTracker",
    "StatusMonitor",
    "StatusWatcher",
    "parse_agent_reply",
    "parse_check",
    "probe",
    "status_to_result",
]

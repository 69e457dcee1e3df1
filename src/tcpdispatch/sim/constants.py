"""The modelled world's constants, and where each one comes from.

Measured figures are from ``docs/benchmarks.md`` (the 2-core VM, 2026-11-28); the
rest are stated assumptions about an internet deployment, kept in one place so
docs/simulation.md can list them.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Network:
    """Latencies and service rates of the modelled network and processes."""

    client_rtt_s: float = 0.05  # assumption: mobile/home client to a data centre
    dispatch_service_s: float = 1 / 27_125  # benchmarks 1: one replica, new connection per request
    accept_service_s: float = 1 / 5_137  # benchmarks 6: connects/s of one 2-core gateway node
    heartbeat_s: float = 10.0  # dispatcher default heartbeat_s (client pings)
    missed_pongs: int = 2  # client default: a dead link is noticed after 2 missed pongs
    handshake_timeout_s: float = 5.0  # client default
    stagger_s: float = 0.25  # client default race stagger
    restart_s: float = 5.0  # assumption: a restarted gateway process is back after 5 s
    # Testbed mode (validation on this machine): every reconnect shares one machine-wide
    # queue of this many seconds per reconnect (dispatch + connect + handshake, all
    # processes on 2 cores); 0 = off, the internet model above applies.
    testbed_reconnect_s: float = 0.0


INTERNET = Network()


def testbed(reconnect_s: float) -> Network:
    """The loopback testbed of bench/failover.py: no RTT, one shared CPU queue."""
    return Network(client_rtt_s=0.0002, testbed_reconnect_s=reconnect_s)

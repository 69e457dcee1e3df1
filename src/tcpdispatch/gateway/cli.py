"""``tcpdispatch gateway``: the TCP server that holds the long connections."""

from __future__ import annotations

import argparse
from typing import Any

DESCRIPTION = """\
Run a tcpdispatch gateway node: it holds long-lived client connections, verifies the
dispatcher's tickets, and shows its load on the status port. Prints
'READY <listen> status=<status>' once listening. SIGTERM drains (clients are told to
reconnect elsewhere, spread over --drain-window), SIGINT stops at once."""


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Register the ``gateway`` subcommand."""
    p = subparsers.add_parser(
        "gateway", help="run a gateway (holds long-lived client connections)", description=DESCRIPTION,
    )
    p.add_argument("--id", required=True,
                   help="gateway id: 1-64 printable ASCII bytes, no spaces or '/' (as in the dispatcher's "
                        "config and the tickets)")
    p.add_argument("--listen", required=True, metavar="HOST:PORT", help="client listen address")
    p.add_argument("--status", required=True, metavar="HOST:PORT",
                   help="HTTP status address (GET /status, GET /metrics, POST /drain, POST /shed)")
    p.add_argument("--agent", metavar="HOST:PORT", help="HAProxy agent-check address (off if unset)")
    p.add_argument("--capacity", type=int, default=10_000, metavar="N", help="max connections on the node")
    p.add_argument("--per-ip-limit", type=int, default=0, metavar="N",
                   help="max connections per source IP (0 = off)")
    tickets = p.add_mutually_exclusive_group()
    tickets.add_argument("--secret-file", metavar="FILE",
                         help="ticket secrets, one per line (first signs, all verify)")
    tickets.add_argument("--no-ticket", action="store_true", help="accept HELLO without a ticket")
    p.add_argument("--handler", default="echo", help="echo | broadcast | package.module:Class")
    p.add_argument("--workers", type=int, default=1, metavar="N",
                   help="worker processes sharing the port (SO_REUSEPORT); a worker that dies is restarted")
    p.add_argument("--heartbeat", type=float, default=10.0, metavar="S",
                   help="client ping interval told in WELCOME (seconds)")
    p.add_argument("--idle-timeout", type=float, default=None, metavar="S",
                   help="close a connection silent this long (seconds; default 3 x --heartbeat)")
    p.add_argument("--handshake-timeout", type=float, default=5.0, metavar="S",
                   help="time from accept to a valid HELLO, whatever arrives meanwhile (seconds)")
    p.add_argument("--drain-window", type=float, default=30.0, metavar="S",
                   help="spread RECONNECTs over this long when draining (seconds)")
    p.add_argument("--max-frame", type=int, default=65536, metavar="BYTES", help="largest frame accepted")
    p.add_argument("--backlog", type=int, default=4096, metavar="N", help="listen backlog per worker")
    p.add_argument("--report-to", metavar="URL", help="push heartbeats to URL/v1/heartbeat")
    p.add_argument("--report-token-file", metavar="FILE", help="bearer token for --report-to")
    p.add_argument("--zone", metavar="NAME", help="the zone this gateway serves, reported in /status "
                   "and pushed heartbeats (docs/zones.md)")
    p.add_argument("--report-interval", type=float, default=1.0, metavar="S", help="seconds between heartbeats")
    p.add_argument("--admin-token-file", metavar="FILE",
                   help="bearer token that POST /drain and POST /shed on the status port require; without "
                        "it both answer 403 (SIGTERM still drains)")
    p.add_argument("--http-timeout", type=float, default=10.0, metavar="S",
                   help="status port: a request head must be complete this long after connect (or after the "
                        "first byte of a keep-alive request), else the connection is closed (seconds)")
    p.add_argument("--key-file", metavar="FILE",
                   help="static key file (`tcpdispatch keygen`): clients must connect encrypted "
                        "(Noise NK, docs/protocol.md section 9); SIGHUP re-reads it")
    p.add_argument("--allow-plain", action="store_true",
                   help="with --key-file: also accept plain clients on the same port (migration)")
    p.add_argument("--resume-lifetime", type=int, default=3600, metavar="S",
                   help="seconds a resumption grant stays usable (0 = no resumption)")
    p.add_argument("--advertise", metavar="HOST:PORT", help="address reported in /status (default --listen)")
    p.set_defaults(func=run)
    return p


def run(args: argparse.Namespace) -> int:
    """Validate the flags and run the node; returns the exit code."""
    from tcpdispatch.gateway.config import from_args
    from tcpdispatch.gateway.handlers import load_handler_class
    from tcpdispatch.gateway.node import run_node

    cfg = from_args(args)
    load_handler_class(cfg.handler)  # fail fast, before binding or forking
    return run_node(cfg)

"""``tcpdispatch gateway``: the TCP server that holds the long connections."""

from __future__ import annotations

import argparse
from typing import Any


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Register the ``gateway`` subcommand."""
    p = subparsers.add_parser(
        "gateway", help="run a gateway (holds long-lived client connections)",
        description="Run a tcpdispatch gateway node. Prints 'READY <listen> status=<status>' once listening.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument("--id", required=True, help="gateway id (must match the dispatcher's and the tickets')")
    p.add_argument("--listen", required=True, metavar="HOST:PORT", help="client listen address")
    p.add_argument("--status", required=True, metavar="HOST:PORT",
                   help="HTTP status address (GET /status, GET /metrics, POST /drain, POST /shed)")
    p.add_argument("--agent", metavar="HOST:PORT", help="HAProxy agent-check address (off if unset)")
    p.add_argument("--capacity", type=int, default=10_000, help="max connections on the node")
    p.add_argument("--per-ip-limit", type=int, default=0, help="max connections per source IP (0 = off)")
    tickets = p.add_mutually_exclusive_group()
    tickets.add_argument("--secret-file", help="ticket secrets, one per line (first signs, all verify)")
    tickets.add_argument("--no-ticket", action="store_true", help="accept HELLO without a ticket")
    p.add_argument("--handler", default="echo", help="echo | broadcast | package.module:Class")
    p.add_argument("--workers", type=int, default=1, help="worker processes sharing the port (SO_REUSEPORT)")
    p.add_argument("--heartbeat", type=float, default=10.0, help="client ping interval told in WELCOME (s)")
    p.add_argument("--idle-timeout", type=float, default=None,
                   help="close a connection silent this long (s); default 3 x --heartbeat")
    p.add_argument("--handshake-timeout", type=float, default=5.0, help="time allowed for a valid HELLO (s)")
    p.add_argument("--drain-window", type=float, default=30.0, help="spread RECONNECTs over this long (s)")
    p.add_argument("--max-frame", type=int, default=65536, help="largest frame accepted (bytes)")
    p.add_argument("--backlog", type=int, default=4096, help="listen backlog per worker")
    p.add_argument("--report-to", metavar="URL", help="push heartbeats to URL/v1/heartbeat")
    p.add_argument("--report-token-file", help="bearer token for --report-to")
    p.add_argument("--report-interval", type=float, default=1.0, help="seconds between heartbeats")
    p.add_argument("--admin-token-file",
                   help="bearer token required by POST /drain and POST /shed on the status port (without one POST /shed is refused; "
                        "then bind --status to a private address)")
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

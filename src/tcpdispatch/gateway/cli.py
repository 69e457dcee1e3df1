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
        "gateway",
        help="run a gateway (holds long-lived client connections)",
        description=DESCRIPTION,
    )
    from tcpdispatch.gateway.config import add_flags

    add_flags(p)  # every flag's default, range and help is declared in gateway/config.py
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

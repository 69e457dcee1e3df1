"""``tcpdispatch dispatcher --config FILE.toml [--listen HOST:PORT]``."""

from __future__ import annotations

import argparse
from pathlib import Path

from tcpdispatch.aio import parse_hostport
from tcpdispatch.errors import ConfigError


def add_parser(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser(
        "dispatcher",
        help="run the get-tcp-ip HTTP dispatcher",
        description="Serve GET /v1/dispatch and the admin API; SIGHUP reloads the config file.",
    )
    p.add_argument(
        "--config", required=True, type=Path, help="dispatcher TOML config (see docs/dispatcher.md)"
    )
    p.add_argument("--listen", metavar="HOST:PORT", help="override [dispatcher] listen")
    p.add_argument("--check-config", action="store_true", help="validate the config file and exit")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from tcpdispatch.config import load_config
    from tcpdispatch.dispatcher.server import main

    listen = None
    if args.listen:
        try:
            listen = parse_hostport(args.listen, what="--listen")
        except ValueError as exc:
            raise ConfigError(str(exc), key="--listen") from None
    if args.check_config:
        cfg = load_config(args.config)
        print(f"{args.config}: OK ({len(cfg.gateways)} gateways, policy {cfg.policy})")
        return 0
    return main(args.config, listen)

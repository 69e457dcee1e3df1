"""The ``tcpdispatch`` console script: one entry point, one subcommand per component.

Each component module exposes ``add_parser(subparsers)`` which registers its
subcommand and sets ``func`` (returning an exit code) on the parsed args.
Component modules are imported lazily so ``tcpdispatch gateway`` does not pay
for the dispatcher's imports.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys

from tcpdispatch import __version__
from tcpdispatch.errors import ConfigError

# subcommand -> module exposing add_parser(subparsers)
SUBCOMMANDS: dict[str, str] = {
    "gateway": "tcpdispatch.gateway.cli",
    "dispatcher": "tcpdispatch.dispatcher.cli",
    "client": "tcpdispatch.client.cli",
    "loadgen": "tcpdispatch.client.loadgen_cli",
    "demo": "tcpdispatch.demo",
    "secret": "tcpdispatch.secret_cli",
    "keygen": "tcpdispatch.keygen_cli",
}


def build_parser(argv: list[str]) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="tcpdispatch", description="Load balancing for long-lived TCP connections."
    )
    parser.add_argument("--version", action="version", version=f"tcpdispatch {__version__}")
    parser.add_argument("--log-level", default="info", choices=["debug", "info", "warning", "error"])
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    # Only import the module of the chosen subcommand (plus all of them for --help).
    wanted = [a for a in argv if a in SUBCOMMANDS][:1] or list(SUBCOMMANDS)
    for name, module in SUBCOMMANDS.items():
        if name in wanted:
            try:
                importlib.import_module(module).add_parser(sub)
            except ModuleNotFoundError as exc:
                if exc.name != module:
                    raise
                sub.add_parser(name, help="(not available in this build)")
        else:
            sub.add_parser(name, add_help=False)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    parser = build_parser(argv)
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=args.log_level.upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    func = getattr(args, "func", None)
    if func is None:
        parser.error(f"{args.command}: not available in this build")
    try:
        return int(func(args) or 0)
    except ConfigError as exc:
        print(f"tcpdispatch {args.command}: configuration error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130

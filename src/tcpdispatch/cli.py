"""The ``tcpdispatch`` console script: one entry point, one subcommand per component.

Each component module exposes ``add_parser(subparsers)`` which registers its
subcommand and sets ``func`` (returning an exit code) on the parsed args.
Component modules are imported lazily so ``tcpdispatch gateway`` does not pay
for the dispatcher's imports.
"""

from __future__ import annotations

import argparse
import importlib
import importlib.util
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
    "simulate": "tcpdispatch.sim.cli",
}

# Top-level modules of the `server` extra; the base install (the client SDK) lacks them.
SERVER_EXTRA = {"uvloop", "httptools", "prometheus_client", "psutil", "rich"}
SERVER_COMMANDS = {"gateway", "dispatcher", "demo"}


def _missing_server_module() -> str | None:
    """The first module of the `server` extra that is not installed, if any."""
    return next((m for m in sorted(SERVER_EXTRA) if importlib.util.find_spec(m) is None), None)


def _explain_server_extra(name: str, missing: str) -> int:
    print(
        f"tcpdispatch {name}: needs the server extra (module {missing!r} is missing); "
        "install it with: pip install 'tcpdispatch[server]'",
        file=sys.stderr,
    )
    return 2


def _needs_server_extra(sub: argparse._SubParsersAction, name: str, missing: str) -> None:
    """Register ``name`` as a command that explains which extra to install, and exits 2."""
    needs = "needs the server extra: pip install 'tcpdispatch[server]'"
    stub = sub.add_parser(name, help=f"({needs})", description=f"tcpdispatch {name} {needs}.")
    stub.set_defaults(func=lambda _args: _explain_server_extra(name, missing))


LOG_LEVELS = ("debug", "info", "warning", "error")
_LOG_LEVEL_HELP = "how much to log on stderr (also accepted after the subcommand)"


class HelpFormatter(argparse.RawDescriptionHelpFormatter):
    """The one help formatter of every subcommand.

    Descriptions keep their own line breaks (they are written as plain text, no reST);
    an option's default is appended as ``(default: X)`` when it has a real value and the
    help text does not already say what the default is.
    """

    def _get_help_string(self, action: argparse.Action) -> str | None:
        text = action.help or ""
        default = action.default
        if (
            not action.option_strings
            or "default" in text
            or default is argparse.SUPPRESS
            or default is None
            or isinstance(default, bool)
            or default == []
        ):
            return text
        return text + " (default: %(default)s)"


def build_parser(argv: list[str]) -> argparse.ArgumentParser:
    """The ``tcpdispatch`` parser; only the subcommand named in ``argv`` is imported
    (every one when none is named, e.g. for ``--help``)."""
    parser = argparse.ArgumentParser(
        prog="tcpdispatch",
        description="Load balancing for long-lived TCP connections.",
        formatter_class=HelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"tcpdispatch {__version__}")
    parser.add_argument("--log-level", default="info", choices=LOG_LEVELS, help=_LOG_LEVEL_HELP)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    wanted = [a for a in argv if a in SUBCOMMANDS][:1] or list(SUBCOMMANDS)
    missing = _missing_server_module()
    for name, module in SUBCOMMANDS.items():
        if name in wanted and name in SERVER_COMMANDS and missing:
            _needs_server_extra(sub, name, missing)
        elif name in wanted:
            try:
                importlib.import_module(module).add_parser(sub)
            except ModuleNotFoundError as exc:
                top = (exc.name or "").partition(".")[0]
                if top in SERVER_EXTRA:
                    _needs_server_extra(sub, name, top)
                elif exc.name == module:
                    sub.add_parser(name, help="(not available in this build)")
                else:
                    raise
        else:
            sub.add_parser(name, add_help=False)
    for p in sub.choices.values():
        p.formatter_class = HelpFormatter
        if p.add_help:  # a real subcommand: also take --log-level after its name
            # SUPPRESS: when not given here, the value before the subcommand (or "info") stays.
            p.add_argument(
                "--log-level", choices=LOG_LEVELS, default=argparse.SUPPRESS, help=_LOG_LEVEL_HELP
            )
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    command = next((a for a in argv if a in SUBCOMMANDS), None)
    missing = _missing_server_module()
    if command in SERVER_COMMANDS and missing and not {"-h", "--help"} & set(argv):
        return _explain_server_extra(command, missing)  # before argparse judges its flags
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

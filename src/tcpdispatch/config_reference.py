"""The reference tables of docs/configuration.md, generated from the settings' declarations.

``python -m tcpdispatch.config_reference`` prints them; ``--write docs/configuration.md``
replaces the generated part of that file (between the two markers). A test fails when
the file and the declarations disagree.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from tcpdispatch.backoff import BackoffConfig
from tcpdispatch.balancing.snapshot import BalancerSettings
from tcpdispatch.config import (
    DISPATCHER_KEYS,
    GATEWAY_KEYS,
    DispatcherConfig,
    GatewayEntry,
    StoreConfig,
)
from tcpdispatch.gateway.config import FLAGS, GatewayConfig
from tcpdispatch.health.settings import HealthSettings
from tcpdispatch.rebalance.settings import RebalanceSettings
from tcpdispatch.settings import Setting, flag, settings_of

BEGIN = (
    "<!-- BEGIN GENERATED: python -m tcpdispatch.config_reference --write docs/configuration.md -->"
)
END = "<!-- END GENERATED -->"
_UNITS = {"s": "seconds", "bytes": "bytes"}


def _declared(cls: Any) -> list[Setting]:
    return [spec for _, spec in settings_of(cls) if spec.key]


def sections() -> list[tuple[str, list[Setting]]]:
    """(title, settings) for each table: the config file's sections, then the gateway's flags."""
    return [
        ("`[dispatcher]`", [*DISPATCHER_KEYS, *_declared(DispatcherConfig)]),
        ("`[health]`", _declared(HealthSettings)),
        ("`[balancing]`", _declared(BalancerSettings)),
        (
            "`[retry]` (backoff hints sent to clients; the client SDK's `BackoffConfig`)",
            _declared(BackoffConfig),
        ),
        ("`[store]`", _declared(StoreConfig)),
        ("`[rebalance]`", _declared(RebalanceSettings)),
        (
            "`[[gateways]]` (also the body of `POST /v1/gateways`)",
            [*GATEWAY_KEYS, *_declared(GatewayEntry)],
        ),
        ("`tcpdispatch gateway` flags", [*FLAGS, *_declared(GatewayConfig)]),
    ]


def _default(spec: Setting, *, flags: bool) -> str:
    if flags and isinstance(spec.default, str):
        return f"`{spec.default}`"
    if spec.required:
        return "**required**"
    if spec.default_text or spec.default is None:
        text = spec.default_shown()
        return f"`{text}`" if text.startswith(('"', "[")) else text
    return f"`{spec.default_shown()}`"


def _allowed(spec: Setting) -> str:
    if spec.kind is str:
        if spec.choices:
            return "one of " + ", ".join(f"`{c}`" for c in spec.choices)
        return {
            "file": "a file name",
            "HOST:PORT": "`HOST:PORT`",
            "URL": "an `http(s)://` URL",
        }.get(spec.unit, "text")
    if spec.kind is list:
        return "a list of CIDR strings"
    unit = _UNITS.get(spec.unit)
    return spec.allowed() + (f", {unit}" if unit else "")


def table(specs: Iterable[Setting], *, flags: bool = False) -> str:
    """One markdown table: key (or flag), default, allowed values, meaning."""
    head = "flag" if flags else "key"
    rows = [f"| {head} | default | allowed | meaning |", "|---|---|---|---|"]
    for spec in specs:
        name = flag(spec) if flags else spec.key
        cells = (f"`{name}`", _default(spec, flags=flags), _allowed(spec), spec.help)
        rows.append("| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |")
    return "\n".join(rows)


def markdown() -> str:
    """Every reference table, each under its own heading."""
    parts = []
    for title, specs in sections():
        parts.append(
            f"### {title}\n\n{table(specs, flags=title.startswith('`tcpdispatch gateway'))}\n"
        )
    return "\n".join(parts)


def generated_part(text: str) -> str:
    """What sits between the markers of a docs file ('' without them)."""
    if BEGIN not in text or END not in text:
        return ""
    return text.split(BEGIN, 1)[1].split(END, 1)[0].strip("\n")


def write(path: Path) -> None:
    """Replace the generated part of ``path`` with :func:`markdown`."""
    text = path.read_text()
    if BEGIN not in text or END not in text:
        raise SystemExit(f"{path}: no {BEGIN!r} ... {END!r} markers")
    before, rest = text.split(BEGIN, 1)
    after = rest.split(END, 1)[1]
    path.write_text(f"{before}{BEGIN}\n\n{markdown()}\n{END}{after}")


def main(argv: list[str] | None = None) -> int:
    """Print the tables, or write them into a docs file."""
    ap = argparse.ArgumentParser(prog="python -m tcpdispatch.config_reference", description=__doc__)
    ap.add_argument("--write", metavar="FILE", type=Path, help="replace the generated part of FILE")
    args = ap.parse_args(argv)
    if args.write:
        write(args.write)
    else:
        sys.stdout.write(markdown())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""``tcpdispatch secret``: write a fresh ticket secret or admin token file."""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from tcpdispatch.tickets import generate_secret


def add_parser(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser("secret", help="write a new random secret (ticket secret or admin token) to a file")
    p.add_argument("path", help="file to create (mode 0600); refuses to overwrite")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    path = Path(args.path)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(generate_secret() + "\n")
    print(f"wrote {path}")
    return 0

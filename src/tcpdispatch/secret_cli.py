"""``tcpdispatch secret FILE``: write a fresh ticket secret or admin token file."""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path

from tcpdispatch.tickets import generate_secret

DESCRIPTION = """\
Write a new random secret (32 random bytes, URL-safe base64, one line) to FILE with mode
0600. Use it as a ticket secret (the dispatcher's secret_file and the gateways'
--secret-file) or as a bearer token (admin_token_file, --admin-token-file). An existing
FILE is left alone unless --force is given."""


def add_parser(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser(
        "secret",
        help="write a new random secret (ticket secret or admin token) to a file",
        description=DESCRIPTION,
    )
    p.add_argument(
        "path", metavar="FILE", help="file to create (mode 0600); its directory must exist"
    )
    p.add_argument(
        "--force",
        action="store_true",
        help="replace FILE if it exists (the new file is written aside, then renamed over it)",
    )
    p.set_defaults(func=run)


def write_secret(path: Path, *, force: bool = False) -> None:
    """Write a new secret to ``path`` (mode 0600); ValueError with a one-line reason on failure."""
    parent = path.parent
    if not parent.is_dir():
        raise ValueError(f"cannot create {path}: directory {parent} does not exist")
    if path.is_dir():
        raise ValueError(f"cannot create {path}: it is a directory")
    text = generate_secret() + "\n"
    try:
        if not force:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "w") as fh:
                fh.write(text)
            return
        # Write aside and rename: a reader never sees a half-written secret.
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=parent)  # mode 0600
        try:
            with os.fdopen(fd, "w") as fh:
                fh.write(text)
            os.replace(tmp, path)
        except BaseException:
            os.unlink(tmp)
            raise
    except FileExistsError:
        raise ValueError(f"{path} already exists; pass --force to replace it") from None
    except OSError as exc:
        raise ValueError(f"cannot write {path}: {exc.strerror or exc}") from None


def run(args: argparse.Namespace) -> int:
    path = Path(args.path)
    try:
        write_secret(path, force=args.force)
    except ValueError as exc:
        print(f"tcpdispatch secret: {exc}", file=sys.stderr)
        return 2
    print(f"wrote {path}")
    return 0

"""``tcpdispatch keygen``: make a gateway static key, or show the public keys of a key file."""

from __future__ import annotations

import argparse
import sys

from tcpdispatch.errors import ConfigError


def add_parser(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser(
        "keygen",
        help="write a new gateway static key (for --key-file) and print its public key",
        description="Write a new X25519 gateway key to FILE (mode 0600, never overwriting) and "
        "its public key to FILE.pub; print the public key. With --show, print the "
        "public key of every key in an existing FILE (the first is current).",
    )
    p.add_argument("path", metavar="FILE", help="key file to create (or read, with --show)")
    p.add_argument("--show", action="store_true", help="print the public keys of FILE")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from tcpdispatch.secure.keys import StaticKey, load_key_file, write_key_file

    if args.show:
        for key in load_key_file(args.path):
            print(key.public.text)
        return 0
    key = StaticKey.generate()
    try:
        write_key_file(args.path, key)
    except FileExistsError:
        raise ConfigError(
            "file exists; refusing to overwrite a key (pick a new name)", file=args.path
        ) from None
    except OSError as exc:
        print(
            f"tcpdispatch keygen: cannot write {args.path}: {exc.strerror or exc}", file=sys.stderr
        )
        return 1
    print(key.public.text)
    print(f"wrote {args.path} (private, mode 0600) and {args.path}.pub", file=sys.stderr)
    return 0

"""``tcpdispatch client``: an interactive client (stdin lines out, received DATA in).

Lines read from stdin are sent as DATA frames; every received DATA frame is
printed on stdout; status changes (connected, reconnecting, gateway changed)
go to stderr. EOF on stdin (Ctrl-D) closes the client with BYE.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
from typing import Any

from tcpdispatch.aio import run as aio_run
from tcpdispatch.client.client import Client, ClientEvent, EventKind
from tcpdispatch.client.policy import BackoffConfig
from tcpdispatch.errors import ConfigError, DispatchError
from tcpdispatch.settings import SettingError, settings_of

DESCRIPTION = """\
An interactive client: it asks the dispatcher(s) for a gateway, connects, and stays
connected (reconnecting, following RECONNECT, falling back to the cache and --fallback).
Each line read from stdin is sent as one message; every message received is printed on
stdout; status changes (connected, reconnecting, gateway changed) go to stderr. End of
input (Ctrl-D) closes the session with BYE and exits 0."""


_BACKOFF = dict(settings_of(BackoffConfig))  # --backoff-* defaults and ranges


def split_list(text: str | None) -> list[str]:
    """``"a,b , c"`` -> ``["a", "b", "c"]``; several flags may also be repeated."""
    return [p.strip() for p in (text or "").split(",") if p.strip()]


def add_common_arguments(p: argparse.ArgumentParser) -> None:
    """Options shared by ``client`` and ``loadgen``."""
    p.add_argument(
        "--dispatcher",
        action="append",
        default=[],
        metavar="URL[,URL...]",
        help="dispatcher base URL(s), tried in order (repeatable or comma-separated)",
    )
    p.add_argument(
        "--fallback",
        action="append",
        default=[],
        metavar="HOST:PORT[,...]",
        help="static gateway list used when no dispatcher answers (the direct IP list)",
    )
    p.add_argument(
        "--dispatch-timeout",
        type=float,
        default=2.0,
        metavar="S",
        help="per-request dispatcher timeout in seconds",
    )
    p.add_argument(
        "--handshake-timeout",
        type=float,
        default=5.0,
        metavar="S",
        help="HELLO->WELCOME timeout per gateway attempt in seconds",
    )
    initial, growth, jitter, longest = (
        _BACKOFF[k] for k in ("initial", "multiplier", "jitter", "max")
    )
    p.add_argument(
        "--backoff-initial",
        type=float,
        default=initial.default,
        metavar="S",
        help=f"first wait before reconnecting after a failed round, in seconds; it grows "
        f"{growth.default:g}x per failure with {jitter.default:.0%}% jitter (a dispatcher's "
        f"retry hints override it) ({initial.allowed()})",
    )
    p.add_argument(
        "--backoff-max",
        type=float,
        default=longest.default,
        metavar="S",
        help=f"longest wait between reconnect rounds, in seconds ({longest.allowed()})",
    )
    p.add_argument(
        "--encryption",
        choices=["auto", "required", "off"],
        default="auto",
        help="encrypt to gateways whose public key is known (auto), refuse the "
        "others (required: use it outside loopback), or never (off)",
    )
    p.add_argument(
        "--pin",
        action="append",
        default=[],
        metavar="ID_OR_HOST:PORT=KEY",
        help="pin a gateway's public key (repeatable); --fallback also takes KEY@HOST:PORT",
    )
    p.add_argument(
        "--ca-file",
        metavar="PEM",
        help="CA bundle that verifies https:// dispatchers (default: system store)",
    )


def security_from(args: argparse.Namespace) -> dict[str, Any]:
    """Client keyword arguments for encryption; ConfigError names a bad --pin or --ca-file."""
    from tcpdispatch.secure.keys import parse_public_key

    pins: dict[str, str] = {}
    for item in args.pin:
        name, eq, key = item.rpartition("=")
        if not eq or not name:
            raise ConfigError(f"must be ID_OR_HOST:PORT=KEY, got {item!r}", key="--pin")
        try:
            parse_public_key(key)
        except ValueError as exc:
            raise ConfigError(f"{item!r}: {exc}", key="--pin") from None
        pins[name] = key
    if args.ca_file is not None and not os.access(args.ca_file, os.R_OK):
        raise ConfigError("cannot read the CA file", key="--ca-file", file=args.ca_file)
    return {"encryption": args.encryption, "pinned_keys": pins, "ca_file": args.ca_file}


def urls_and_fallback(args: argparse.Namespace) -> tuple[list[str], list[str]]:
    dispatchers = [u for item in args.dispatcher for u in split_list(item)]
    fallback = [a for item in args.fallback for a in split_list(item)]
    for url in dispatchers:
        if not url.startswith(("http://", "https://")):
            raise ConfigError(f"not an http(s) URL: {url!r}", key="--dispatcher")
    if not dispatchers and not fallback:
        raise ConfigError(
            "give at least one --dispatcher URL or --fallback address", key="--dispatcher"
        )
    return dispatchers, fallback


def backoff_from(args: argparse.Namespace) -> BackoffConfig:
    """The backoff of ``--backoff-initial``/``--backoff-max``;
    ConfigError names a value out of range."""
    values = {}
    for name, flag in (("initial", "--backoff-initial"), ("max", "--backoff-max")):
        try:
            values[name] = _BACKOFF[name].check(getattr(args, f"backoff_{name}"))
        except SettingError as exc:
            raise ConfigError(exc.reason, key=flag) from None
    return BackoffConfig(**values).clamped()


def add_parser(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "client",
        help="interactive client: stdin lines are sent, received messages printed",
        description=DESCRIPTION,
    )
    add_common_arguments(p)
    p.add_argument(
        "--client-id", default=None, help="client id sent in HELLO and to the dispatcher"
    )
    p.add_argument(
        "--zone",
        default=None,
        metavar="NAME",
        help="the client's zone, sent to the dispatcher as a hint (docs/zones.md)",
    )
    p.add_argument(
        "--cache",
        default=None,
        metavar="FILE",
        help="file caching the last good dispatch answer (used when no dispatcher answers)",
    )
    p.add_argument(
        "--ordered-fallback",
        action="store_true",
        help="try --fallback addresses in the given order instead of at random",
    )
    p.add_argument(
        "--connect-timeout",
        type=float,
        default=None,
        metavar="S",
        help="give up (exit 1) if no gateway is reachable within S seconds",
    )
    p.add_argument(
        "--linger",
        type=float,
        default=1.0,
        metavar="S",
        help="after stdin ends, wait up to S seconds for replies (ends early once "
        "as many messages came back as were sent)",
    )
    p.set_defaults(func=run)


def _status(event: ClientEvent) -> None:
    k = event.kind
    if k is EventKind.CONNECTED:
        msg = (
            f"connected to {event.gateway} (session {event.session_id}, via {event.source}, "
            f"{(event.connect_time or 0) * 1000:.0f} ms)"
        )
    elif k is EventKind.RECONNECTING:
        msg = f"reconnecting in {event.delay:.2f}s ({event.reason})"
    elif k is EventKind.GATEWAY_CHANGED:
        msg = f"gateway changed: {event.previous} -> {event.gateway}"
    elif k is EventKind.DISCONNECTED:
        msg = f"disconnected from {event.gateway}: {event.reason}"
    elif k is EventKind.FALLBACK:
        msg = f"no dispatcher answered; using {event.reason}"
    else:
        msg = k.value
    print(f"[tcpdispatch] {msg}", file=sys.stderr, flush=True)


async def _main(args: argparse.Namespace) -> int:
    dispatchers, fallback = urls_and_fallback(args)
    try:
        client = Client(
            dispatchers,
            fallback,
            client_id=args.client_id,
            zone=args.zone,
            cache_path=args.cache,
            backoff=backoff_from(args),
            dispatch_timeout=args.dispatch_timeout,
            handshake_timeout=args.handshake_timeout,
            shuffle_fallback=not args.ordered_fallback,
            **security_from(args),
        )
    except ValueError as exc:  # a bad option value (e.g. --zone)
        print(f"tcpdispatch client: {exc}", file=sys.stderr)
        return 2
    client.add_listener(_status)
    try:
        await client.connect(args.connect_timeout)
    except DispatchError as exc:
        print(f"tcpdispatch client: {exc}", file=sys.stderr)
        await client.close()
        return 1

    received = 0

    async def printer() -> None:
        nonlocal received
        async for msg in client:
            received += 1
            sys.stdout.write(msg.decode("utf-8", "replace").rstrip("\n") + "\n")
            sys.stdout.flush()

    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    out = loop.create_task(printer())
    sent = 0
    try:
        while line := await reader.readline():
            await client.send(line.rstrip(b"\r\n"))
            sent += 1
        end = loop.time() + args.linger
        while received < sent and loop.time() < end:
            await asyncio.sleep(0.02)
    finally:
        await client.close()
        await out
    return 0


def run(args: argparse.Namespace) -> int:
    try:
        return aio_run(_main(args))
    except KeyboardInterrupt:
        return 130

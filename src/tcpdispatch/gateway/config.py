"""The gateway's one validated, frozen configuration object."""

from __future__ import annotations

import argparse
from dataclasses import dataclass

from tcpdispatch.aio import parse_hostport
from tcpdispatch.errors import ConfigError
from tcpdispatch.httputil import read_token
from tcpdispatch.ids import gateway_id_problem


@dataclass(frozen=True, slots=True)
class GatewayConfig:
    """Everything one gateway node needs; built by :func:`from_args` (CLI) or directly (tests)."""

    id: str
    listen: tuple[str, int]
    status: tuple[str, int]
    agent: tuple[str, int] | None = None
    capacity: int = 10_000
    per_ip_limit: int = 0
    secrets: tuple[bytes, ...] | None = None  # None: tickets off (--no-ticket)
    handler: str = "echo"
    workers: int = 1
    heartbeat: float = 10.0
    idle_timeout: float = 30.0
    handshake_timeout: float = 5.0
    drain_window: float = 30.0
    max_frame: int = 65536
    report_to: str | None = None
    report_token: str | None = None
    report_interval: float = 1.0
    advertise: str | None = None
    backlog: int = 4096
    admin_token: str | None = None  # required by POST /drain; without one it answers 403
    http_timeout: float = 10.0  # status port: a request head must be complete this long after connect
    key_file: str | None = None  # static key(s): encrypted connections on (docs/protocol.md §9)
    allow_plain: bool = False  # with key_file: accept plain clients too (migration)
    resume_lifetime: int = 3600  # seconds a resumption grant stays usable; 0 = no resumption
    zone: str | None = None  # reported in /status and heartbeats (docs/zones.md); None: not reported

    @property
    def address(self) -> str:
        """The address clients are told to use (``--advertise`` or the listen address)."""
        return self.advertise or f"{self.listen[0]}:{self.listen[1]}"


def _addr(text: str | None, key: str) -> tuple[str, int] | None:
    if text is None:
        return None
    try:
        return parse_hostport(text, what=key)
    except ValueError as exc:
        raise ConfigError(str(exc), key=key) from None


def _positive(value: float, key: str, *, allow_zero: bool = False) -> None:
    if value < 0 or (value == 0 and not allow_zero):
        raise ConfigError(f"must be {'>= 0' if allow_zero else '> 0'}, got {value}", key=key)


def from_args(args: argparse.Namespace) -> GatewayConfig:
    """Validate parsed CLI arguments; raises ConfigError naming the flag (and file)."""
    from tcpdispatch.tickets import load_secrets

    why = gateway_id_problem(args.id)
    if why:
        raise ConfigError(f"{why} (the dispatcher's rule for gateway ids), got {args.id!r}", key="--id")
    listen = _addr(args.listen, "--listen")
    status = _addr(args.status, "--status")
    assert listen is not None and status is not None
    agent = _addr(args.agent, "--agent")
    if args.advertise is not None:
        _addr(args.advertise, "--advertise")
    for key, value in (("--capacity", args.capacity), ("--workers", args.workers),
                       ("--heartbeat", args.heartbeat), ("--handshake-timeout", args.handshake_timeout),
                       ("--drain-window", args.drain_window), ("--report-interval", args.report_interval),
                       ("--http-timeout", args.http_timeout)):
        _positive(value, key)
    _positive(args.per_ip_limit, "--per-ip-limit", allow_zero=True)
    if args.workers > 64:
        raise ConfigError("at most 64 workers", key="--workers")
    idle = args.idle_timeout if args.idle_timeout is not None else 3 * args.heartbeat
    _positive(idle, "--idle-timeout")
    if not 64 <= args.max_frame <= 16 * 1024 * 1024:
        raise ConfigError("must be between 64 and 16777216 bytes", key="--max-frame")
    if args.no_ticket and args.secret_file:
        raise ConfigError("use either --secret-file or --no-ticket, not both", key="--no-ticket")
    if not args.no_ticket and not args.secret_file:
        raise ConfigError("a ticket secret is required (or pass --no-ticket)", key="--secret-file")
    secrets = None if args.no_ticket else tuple(load_secrets(args.secret_file))
    key_file = getattr(args, "key_file", None)
    allow_plain = bool(getattr(args, "allow_plain", False))
    resume_lifetime = getattr(args, "resume_lifetime", 3600)
    if key_file is not None:
        from tcpdispatch.secure.keys import load_key_file

        load_key_file(key_file)  # fail fast with the file and line
    elif allow_plain:
        raise ConfigError("--allow-plain only makes sense with --key-file", key="--allow-plain")
    if not 0 <= resume_lifetime <= 7 * 24 * 3600:
        raise ConfigError("must be between 0 (off) and 604800 s", key="--resume-lifetime")
    zone = getattr(args, "zone", None)
    if zone is not None and (why := gateway_id_problem(zone)):
        raise ConfigError(f"{why}, got {zone!r}", key="--zone")
    token = None
    admin_token = _read_token(args.admin_token_file) if args.admin_token_file else None
    if args.report_to:
        if not args.report_to.startswith(("http://", "https://")):
            raise ConfigError("must be an http(s):// URL", key="--report-to")
        if not args.report_token_file:
            raise ConfigError("--report-to needs --report-token-file", key="--report-token-file")
        token = _read_token(args.report_token_file)
    return GatewayConfig(
        id=args.id, listen=listen, status=status, agent=agent, capacity=args.capacity,
        per_ip_limit=args.per_ip_limit, secrets=secrets, handler=args.handler,
        workers=args.workers, heartbeat=args.heartbeat, idle_timeout=idle,
        handshake_timeout=args.handshake_timeout, drain_window=args.drain_window,
        max_frame=args.max_frame, report_to=args.report_to.rstrip("/") if args.report_to else None,
        report_token=token, report_interval=args.report_interval, advertise=args.advertise,
        backlog=args.backlog, admin_token=admin_token, http_timeout=args.http_timeout,
        key_file=key_file, allow_plain=allow_plain, resume_lifetime=resume_lifetime, zone=zone,
    )


def _read_token(path: str) -> str:
    # min_len=1: the gateway has always accepted any non-empty token (the dispatcher asks for 8).
    try:
        return read_token(path, min_len=1)
    except ValueError as exc:
        raise ConfigError(str(exc), file=path) from None

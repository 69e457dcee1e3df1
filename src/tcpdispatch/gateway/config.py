"""The gateway's one validated, frozen configuration object."""

from __future__ import annotations

import argparse
from dataclasses import dataclass

from tcpdispatch.aio import parse_hostport
from tcpdispatch.errors import ConfigError
from tcpdispatch.httputil import read_token
from tcpdispatch.ids import gateway_id_problem
from tcpdispatch.settings import Setting, SettingError, add_arguments, flag, setting, settings_of


@dataclass(frozen=True, slots=True)
class GatewayConfig:
    """Everything one gateway node needs; built by :func:`from_args` (CLI) or directly (tests).

    Each ``setting(...)`` field is also a command-line flag (``per_ip_limit`` is
    ``--per-ip-limit``), generated with its default, range and help by :func:`add_flags`.
    """

    id: str
    listen: tuple[str, int]
    status: tuple[str, int]
    agent: tuple[str, int] | None = None
    capacity: int = setting(
        10_000, ge=1, help="most connections the node holds (all workers together)"
    )
    per_ip_limit: int = setting(
        0, ge=0, help="most connections from one source IP, node-wide (0 = off)"
    )
    secrets: tuple[bytes, ...] | None = None  # None: tickets off (--no-ticket)
    handler: str = setting("echo", help="`echo`, `broadcast` or `package.module:Class`")
    workers: int = setting(
        1,
        ge=1,
        le=64,
        help="worker processes sharing the listen port (SO_REUSEPORT); "
        "a worker that dies is restarted",
    )
    heartbeat: float = setting(
        10.0, gt=0, unit="s", help="ping interval the client is told in WELCOME"
    )
    idle_timeout: float = setting(
        None,
        kind=float,
        gt=0,
        unit="s",
        default_text="3 x --heartbeat",
        help="close a session that sent no frame for this long",
    )
    handshake_timeout: float = setting(
        5.0,
        gt=0,
        unit="s",
        help="close a connection that has no valid "
        "HELLO this long after accept, whatever it sent meanwhile",
    )
    drain_window: float = setting(
        30.0, gt=0, unit="s", help="spread RECONNECTs over this window when draining, then exit"
    )
    max_frame: int = setting(
        65536, ge=64, le=16 * 1024 * 1024, unit="bytes", help="largest frame accepted"
    )
    report_to: str | None = None
    report_token: str | None = None
    report_interval: float = setting(1.0, gt=0, unit="s", help="seconds between pushed heartbeats")
    advertise: str | None = None
    backlog: int = setting(
        4096, ge=1, help="listen backlog of each worker's socket (capped by `net.core.somaxconn`)"
    )
    admin_token: str | None = None  # required by POST /drain; without one it answers 403
    http_timeout: float = setting(
        10.0,
        gt=0,
        unit="s",
        help="status port: a request head must be "
        "complete this long after connect (or after the first byte of a "
        "keep-alive request), else the connection is closed",
    )
    key_file: str | None = setting(
        None,
        unit="file",
        help="static key file (`tcpdispatch keygen`): "
        "clients must connect encrypted (Noise NK, docs/protocol.md "
        "section 9); SIGHUP re-reads it",
    )
    allow_plain: bool = setting(
        False, help="with `--key-file`: also accept plain clients on the same port (migration)"
    )
    resume_lifetime: int = setting(
        3600,
        ge=0,
        le=7 * 24 * 3600,
        unit="s",
        help="how long a resumption grant stays usable (0 = hand out none)",
    )
    zone: str | None = setting(
        None,
        unit="NAME",
        default_text="not reported",
        help="the zone this gateway serves, reported in `/status` and pushed heartbeats "
        "(docs/zones.md)",
    )

    def __post_init__(self) -> None:
        if self.idle_timeout is None:
            object.__setattr__(self, "idle_timeout", 3 * self.heartbeat)

    @property
    def address(self) -> str:
        """The address clients are told to use (``--advertise`` or the listen address)."""
        return self.advertise or f"{self.listen[0]}:{self.listen[1]}"


# Flags that are not one field each: an address split in two, a file whose content is used.
FLAGS = (
    Setting(
        None,
        "gateway id: 1-64 printable ASCII bytes without spaces or `/` (the dispatcher's rule "
        "for its config, admin API and heartbeats); tickets must name it",
        str,
        "id",
        required=True,
    ),
    Setting(None, "where clients connect", str, "listen", unit="HOST:PORT", required=True),
    Setting(
        None,
        "HTTP status address: `GET /status`, `GET /metrics`, `POST /drain`, `POST /shed`",
        str,
        "status",
        unit="HOST:PORT",
        required=True,
    ),
    Setting(
        None, "HAProxy agent-check address", str, "agent", unit="HOST:PORT", default_text="off"
    ),
    Setting(
        None,
        "ticket secrets, one per line; the first signs (dispatcher), all verify",
        str,
        "secret_file",
        unit="file",
    ),
    Setting(
        False,
        "accept a HELLO without checking its ticket (plain modes, benchmarks)",
        bool,
        "no_ticket",
    ),
    Setting(
        None,
        "push heartbeats to `URL/v1/heartbeat`",
        str,
        "report_to",
        unit="URL",
        default_text="off",
    ),
    Setting(
        None,
        "bearer token for `--report-to` (required with it)",
        str,
        "report_token_file",
        unit="file",
    ),
    Setting(
        None,
        "bearer token that `POST /drain` and `POST /shed` on the status port require; without "
        "it both answer `403` (SIGTERM still drains)",
        str,
        "admin_token_file",
        unit="file",
    ),
    Setting(
        None,
        "the address reported in `/status` and heartbeats",
        str,
        "advertise",
        unit="HOST:PORT",
        default_text="the listen address",
    ),
)
_TICKET_FLAGS = ("secret_file", "no_ticket")  # one or the other


def add_flags(parser: argparse.ArgumentParser) -> None:
    """Every flag of ``tcpdispatch gateway``, from :data:`FLAGS` and the fields of GatewayConfig."""
    plain = [spec for spec in FLAGS if spec.key not in _TICKET_FLAGS]
    add_arguments(parser, plain)
    add_arguments(
        parser.add_mutually_exclusive_group(), [spec for spec in FLAGS if spec.key in _TICKET_FLAGS]
    )
    add_arguments(parser, [spec for _, spec in settings_of(GatewayConfig)])


def _addr(text: str | None, key: str) -> tuple[str, int] | None:
    if text is None:
        return None
    try:
        return parse_hostport(text, what=key)
    except ValueError as exc:
        raise ConfigError(str(exc), key=key) from None


def from_args(args: argparse.Namespace) -> GatewayConfig:
    """Validate parsed CLI arguments; raises ConfigError naming the flag (and file)."""
    from tcpdispatch.tickets import load_secrets

    why = gateway_id_problem(args.id)
    if why:
        raise ConfigError(
            f"{why} (the dispatcher's rule for gateway ids), got {args.id!r}", key="--id"
        )
    listen = _addr(args.listen, "--listen")
    status = _addr(args.status, "--status")
    assert listen is not None and status is not None
    agent = _addr(args.agent, "--agent")
    if args.advertise is not None:
        _addr(args.advertise, "--advertise")
    values = {}
    for name, spec in settings_of(GatewayConfig):
        try:
            values[name] = spec.check(getattr(args, name, spec.default))
        except SettingError as exc:
            raise ConfigError(exc.reason, key=flag(spec)) from None
    if args.no_ticket and args.secret_file:
        raise ConfigError("use either --secret-file or --no-ticket, not both", key="--no-ticket")
    if not args.no_ticket and not args.secret_file:
        raise ConfigError("a ticket secret is required (or pass --no-ticket)", key="--secret-file")
    secrets = None if args.no_ticket else tuple(load_secrets(args.secret_file))
    if values["key_file"] is not None:
        from tcpdispatch.secure.keys import load_key_file

        load_key_file(values["key_file"])  # fail fast with the file and line
    elif values["allow_plain"]:
        raise ConfigError("--allow-plain only makes sense with --key-file", key="--allow-plain")
    zone = values["zone"]
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
        id=args.id,
        listen=listen,
        status=status,
        agent=agent,
        secrets=secrets,
        report_to=args.report_to.rstrip("/") if args.report_to else None,
        report_token=token,
        advertise=args.advertise,
        admin_token=admin_token,
        **values,
    )


def _read_token(path: str) -> str:
    try:
        return read_token(path)  # the minimum length every token of the project has (MIN_TOKEN_LEN)
    except ValueError as exc:
        raise ConfigError(str(exc), file=path) from None

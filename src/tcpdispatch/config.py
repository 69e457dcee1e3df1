"""Dispatcher configuration: one TOML file -> one frozen, validated ``DispatcherConfig``.

Every problem raises :class:`~tcpdispatch.errors.ConfigError` naming the file,
the key (``gateways[1].weight``) and the reason; unknown keys are errors too,
so a typo never silently falls back to a default. Relative paths resolve
against the directory of the config file. Each key is declared once (``setting(...)``
fields and the ``*_KEYS`` tables, see tcpdispatch/settings.py); docs/configuration.md
is generated from those declarations.
"""

from __future__ import annotations

import ipaddress
import os
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from tcpdispatch.aio import parse_hostport
from tcpdispatch.backoff import BackoffConfig
from tcpdispatch.balancing.registry import DEFAULT_POLICY, POLICIES
from tcpdispatch.balancing.snapshot import BalancerSettings
from tcpdispatch.errors import ConfigError
from tcpdispatch.health import HealthSettings, parse_check
from tcpdispatch.httputil import MIN_TOKEN_LEN, read_token
from tcpdispatch.ids import gateway_id_problem
from tcpdispatch.rebalance.settings import RebalanceSettings
from tcpdispatch.settings import Setting, SettingError, setting, settings_of

ADMIN_TOKEN_ENV = "TCPDISPATCH_ADMIN_TOKEN"
STORE_SCHEMES = ("redis://", "rediss://", "unix://")
DEFAULT_ZONE = "default"
# A zone keeps its own clients until less than this fraction of its slots is free (docs/zones.md).
DEFAULT_SPILL_HEADROOM = 0.1
_S = TypeVar("_S")


@dataclass(frozen=True, slots=True)
class GatewayEntry:
    """One gateway of the dispatcher's pool: a
    ``[[gateways]]`` entry or a POST /v1/gateways body."""

    id: str
    host: str
    port: int
    check: str  # http(s)://H:P/status | agent://H:P | tcp://H:P | push
    weight: float = setting(
        1.0,
        ge=0,
        le=1_000_000,
        help="relative share of new clients (0 keeps the gateway but gives it no new clients)",
    )
    capacity: int | None = setting(
        None,
        kind=int,
        ge=1,
        le=100_000_000,
        default_text="as reported",
        help="most connections; overrides what the gateway reports. A `tcp://` "
        "gateway that reports nothing and has no capacity has no limit",
    )
    key: str = setting(
        "",
        default_text="none",
        help="the gateway's public key (the line `tcpdispatch "
        "keygen` prints); returned in answers so clients can pin it",
    )
    zone: str = setting(
        DEFAULT_ZONE,
        help="the zone it serves (docs/zones.md); the rules of gateway ids apply to its name",
    )

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"


# [[gateways]] keys that are not one field each (``address`` becomes host and port).
GATEWAY_KEYS = (
    Setting(
        None,
        "unique; printable ASCII without spaces or `/`, at most 64 bytes; must equal the "
        "gateway's `--id` (tickets name it)",
        str,
        "id",
        required=True,
    ),
    Setting(None, "where clients connect", str, "address", unit="HOST:PORT", required=True),
    Setting(
        None,
        "`http://HOST:PORT/status` or `https://...` (gateway status JSON), `agent://HOST:PORT` "
        "(HAProxy agent-check text), `tcp://HOST:PORT` (accept only: any TCP server), or `push`",
        str,
        "check",
        default_text='"tcp://<address>"',
    ),
)


@dataclass(frozen=True, slots=True)
class ZoneConfig:
    """One ``[[zones]]`` entry: the client networks a zone serves and where it spills over to."""

    name: str
    cidrs: tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...] = ()
    spill_to: tuple[str, ...] = ()  # zones to try next, in order, when this one has no room


@dataclass(frozen=True, slots=True)
class StoreConfig:
    """``[store]``: where replicas share admin changes and push heartbeats (docs/scaling.md)."""

    url: str | None = setting(
        None,
        repr=False,
        default_text="none (in memory)",
        help="`redis://`, `rediss://` or `unix://` URL (may hold a password); none: "
        "each replica keeps its own state in memory",
    )
    prefix: str = setting(
        "tcpdispatch:", help="prefix of every key in the store (at most 100 printable characters)"
    )
    resync_interval: float = setting(
        1.0, ge=0.05, le=3600, unit="s", help="how often a replica re-reads the whole shared state"
    )
    timeout: float = setting(0.5, gt=0, le=60, unit="s", help="per store operation")

    @property
    def shared(self) -> bool:
        return self.url is not None


@dataclass(frozen=True, slots=True)
class DispatcherConfig:
    """Everything the dispatcher process needs, validated."""

    path: Path | None
    listen_host: str
    listen_port: int
    policy: str
    secrets: tuple[bytes, ...] = field(repr=False)
    ticket_lifetime: int = setting(
        60, ge=1, le=65535, unit="s", help="seconds a ticket stays valid"
    )
    admin_token: str | None = field(default=None, repr=False)
    push_token: str | None = field(default=None, repr=False)
    # None: GET /v1/gateways and /metrics are open
    read_token: str | None = field(default=None, repr=False)
    register_unknown: bool = setting(
        False, help="let push heartbeats from unknown ids add themselves to the pool"
    )
    alternates: int = setting(2, ge=0, le=16, help="K, the most alternates per answer")
    heartbeat_s: float = setting(
        10.0, gt=0, le=3600, unit="s", help="heartbeat hint sent to clients"
    )
    trusted_proxies: tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...] = ()
    max_body: int = setting(
        65536, ge=256, le=16 * 1024 * 1024, unit="bytes", help="largest accepted request body"
    )
    max_client_id: int = setting(
        128, ge=1, le=200, unit="bytes", help="longest accepted `client_id`"
    )
    retry_after_min: int = setting(
        1, ge=0, le=3600, unit="s", help="lower bound of the random `Retry-After` on `503`"
    )
    retry_after_max: int = setting(
        5, ge=0, le=3600, unit="s", help="upper bound (at least the minimum)"
    )
    header_timeout: float = setting(
        10.0,
        gt=0,
        le=3600,
        unit="s",
        help="seconds from the first byte of a "
        "request to the end of its headers; later: `408` and close",
    )
    body_timeout: float = setting(
        30.0,
        gt=0,
        le=3600,
        unit="s",
        help="seconds from the end of the headers to the end of the body; later: `408` and close",
    )
    reuse_port: bool = setting(
        False,
        help="open the listen port with `SO_REUSEPORT`, so several "
        "dispatcher processes with the same config share one port (each an "
        "independent replica: give them a `[store]`, see scaling.md)",
    )
    speedups: bool = setting(
        True,
        help="answer plain dispatch requests through the C accelerator when "
        "it is built and the policy is `p2c` or `random` (`TCPDISPATCH_SPEEDUPS=0` "
        "in the environment: `false`)",
    )
    health: HealthSettings = field(default_factory=HealthSettings)
    balancing: BalancerSettings = field(default_factory=BalancerSettings)
    retry: BackoffConfig = field(default_factory=BackoffConfig)  # hints in every answer
    gateways: tuple[GatewayEntry, ...] = ()
    store: StoreConfig = StoreConfig()
    rebalance: RebalanceSettings = field(default_factory=RebalanceSettings)
    zones: tuple[ZoneConfig, ...] = ()  # empty: zones are off, dispatch ignores gateway zones
    spill_headroom: float = setting(
        DEFAULT_SPILL_HEADROOM,
        ge=0,
        lt=1,
        help="with `[[zones]]`: a zone serves its own clients while more than this fraction of "
        "its slots is free, then spills to the next zones (docs/zones.md)",
    )

    @property
    def listen(self) -> str:
        return f"{self.listen_host}:{self.listen_port}"


# [dispatcher] keys that are not one field each: a file whose content is used, HOST:PORT split.
DISPATCHER_KEYS = (
    Setting(
        "127.0.0.1:8080",
        "HTTP address (`--listen` overrides it; a reload cannot change it)",
        str,
        "listen",
        unit="HOST:PORT",
    ),
    Setting(
        DEFAULT_POLICY,
        "balancing policy (docs/policies.md)",
        str,
        "policy",
        choices=tuple(POLICIES),
    ),
    Setting(
        None,
        "ticket secrets, one per line, the first signs (the gateways' `--secret-file`; at "
        "least 16 bytes each)",
        str,
        "secret_file",
        unit="file",
        required=True,
    ),
    Setting(
        None,
        "file holding the admin bearer token. Without it `$TCPDISPATCH_ADMIN_TOKEN` is used; "
        "without both every admin call is refused with `403` saying how to enable it",
        str,
        "admin_token_file",
        unit="file",
    ),
    Setting(
        None,
        "file holding the bearer token gateways use for `POST /v1/heartbeat` (their "
        "`--report-token-file`); with neither, heartbeats are refused with `403`",
        str,
        "push_token_file",
        unit="file",
        default_text="the admin token",
    ),
    Setting(
        None,
        "file holding a bearer token that `GET /v1/gateways[/{id}]` and `GET /metrics` then "
        "require (the admin token is accepted too); none: those stay open",
        str,
        "read_token_file",
        unit="file",
    ),
    Setting(
        (),
        'CIDRs (e.g. `["10.0.0.0/8"]`) whose `X-Forwarded-For` is believed',
        list,
        "trusted_proxies",
        default_text="[]",
    ),
)
REMOVED_KEYS = {"server": "was removed: only the built-in HTTP server remains; delete this line"}


class _Reader:
    """Typed access to one TOML table; tracks used keys so leftovers are reported as unknown."""

    def __init__(self, file: str, prefix: str, table: Any) -> None:
        self.file = file
        self.prefix = prefix
        if not isinstance(table, Mapping):
            raise self.error("", "must be a table")
        self.table = table
        self.used: set[str] = set()

    def key(self, name: str) -> str:
        return f"{self.prefix}.{name}" if self.prefix and name else self.prefix or name

    def error(self, name: str, reason: str) -> ConfigError:
        return ConfigError(reason, file=self.file, key=self.key(name) or None)

    def get(self, name: str) -> Any:
        self.used.add(name)
        return self.table.get(name)

    def has(self, name: str) -> bool:
        return name in self.table

    def value(self, spec: Setting) -> Any:
        """The checked value of ``spec`` in this table, or its default."""
        key = spec.key or ""
        v = self.get(key)
        if v is None:
            if spec.required:
                raise self.error(key, "is required")
            return spec.default
        try:
            return spec.check(v)
        except SettingError as exc:
            raise self.error(key, exc.reason) from None

    def finish(self) -> None:
        extra = sorted(set(self.table) - self.used)
        if extra:
            raise self.error(
                extra[0], "unknown key" + (f" (also: {', '.join(extra[1:])})" if extra[1:] else "")
            )


def _keys(*specs: Setting) -> dict[str, Setting]:
    return {str(spec.key): spec for spec in specs}


_DISPATCHER = _keys(*DISPATCHER_KEYS)
_GATEWAY = _keys(*GATEWAY_KEYS)


def _path(r: _Reader, spec: Setting, base: Path) -> Path | None:
    text = r.value(spec)
    if text is None:
        return None
    p = Path(text).expanduser()
    return p if p.is_absolute() else base / p


def _token(r: _Reader, spec: Setting, base: Path) -> str | None:
    """The token in the file ``spec`` names (None when the key is absent)."""
    path = _path(r, spec, base)
    if path is None:
        return None
    try:
        return read_token(path)
    except ValueError as exc:
        raise r.error(str(spec.key), str(exc)) from None


def _section(r: _Reader, cls: type[_S], **given: Any) -> _S:
    """Read a table into the settings dataclass ``cls``: each declared field is a key (checked
    against its declaration, absent: its default); ``given`` are fields the caller read itself."""
    values = dict(given)
    for name, spec in settings_of(cls):
        if spec.key and name not in given and r.has(spec.key):
            values[name] = r.value(spec)
    r.finish()
    try:
        return cls(**values)
    except SettingError as exc:  # a rule between two keys (__post_init__)
        raise r.error(exc.key if r.has(exc.key) else "", exc.reason) from None


def parse_gateway(table: Any, *, file: str = "", prefix: str = "gateway") -> GatewayEntry:
    """Validate one gateway entry (config file or admin API body)."""
    r = _Reader(file, prefix, table)
    gid = r.get("id")
    if gid is None:
        raise r.error("id", "is required")
    why = gateway_id_problem(gid)
    if why:
        raise r.error("id", f"{why}, got {gid!r}")
    addr = r.value(_GATEWAY["address"])
    try:
        host, port = parse_hostport(addr)
    except ValueError as exc:
        raise r.error("address", str(exc)) from None
    if port == 0:
        raise r.error("address", "port must not be 0")
    check = r.value(_GATEWAY["check"]) or f"tcp://{addr}"
    try:
        parse_check(check)
    except ValueError as exc:
        raise r.error("check", str(exc)) from None
    entry = _section(r, GatewayEntry, id=gid, host=host, port=port, check=check)
    if entry.key:
        from tcpdispatch.secure.keys import parse_public_key

        try:
            parse_public_key(entry.key)
        except ValueError as exc:
            raise r.error("key", f"{exc} (the line `tcpdispatch keygen` prints)") from None
    why = zone_name_problem(entry.zone)
    if why:
        raise r.error("zone", f"{why}, got {entry.zone!r}")
    return entry


def zone_name_problem(name: object) -> str | None:
    """Why ``name`` is not a usable zone name, or None (the rules of gateway ids)."""
    return gateway_id_problem(name)


def load_config(
    path: str | os.PathLike[str], *, env: Mapping[str, str] | None = None
) -> DispatcherConfig:
    """Read and validate a dispatcher config file."""
    p = Path(path)
    file = str(p)
    try:
        raw = p.read_bytes()
    except OSError as exc:
        raise ConfigError(f"cannot read config: {exc.strerror}", file=file) from None
    try:
        doc = tomllib.loads(raw.decode("utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise ConfigError(f"not valid TOML: {exc}", file=file) from None
    return parse_config(
        doc, file=file, base=p.resolve().parent, env=os.environ if env is None else env
    )


def parse_config(
    doc: Mapping[str, Any],
    *,
    file: str = "<config>",
    base: Path | None = None,
    env: Mapping[str, str] | None = None,
) -> DispatcherConfig:
    """Validate an already-parsed TOML document (``base`` resolves relative paths)."""
    base = base or Path.cwd()
    env = env or {}
    top = _Reader(file, "", doc)
    d = _Reader(file, "dispatcher", top.get("dispatcher") or {})
    for key, reason in REMOVED_KEYS.items():
        if d.has(key):
            raise d.error(key, reason)
    listen = d.value(_DISPATCHER["listen"])
    try:
        lhost, lport = parse_hostport(listen, what="listen")
    except ValueError as exc:
        raise d.error("listen", str(exc)) from None
    policy = d.value(_DISPATCHER["policy"])

    secret_path = _path(d, _DISPATCHER["secret_file"], base)
    assert secret_path is not None
    from tcpdispatch.tickets import load_secrets

    try:
        secrets = tuple(load_secrets(secret_path))
    except ConfigError as exc:
        raise d.error("secret_file", f"{exc.reason} ({secret_path})") from None

    admin_token = _token(d, _DISPATCHER["admin_token_file"], base)
    if admin_token is None and env.get(ADMIN_TOKEN_ENV, "").strip():
        admin_token = env[ADMIN_TOKEN_ENV].strip()
        if len(admin_token) < MIN_TOKEN_LEN:
            raise ConfigError(
                f"the token in ${ADMIN_TOKEN_ENV} is shorter than {MIN_TOKEN_LEN} characters",
                file=file,
                key=ADMIN_TOKEN_ENV,
            )
    push_token = _token(d, _DISPATCHER["push_token_file"], base) or admin_token
    read_token_ = _token(d, _DISPATCHER["read_token_file"], base)

    proxies_raw = d.get("trusted_proxies") or []
    if not isinstance(proxies_raw, list):
        raise d.error("trusted_proxies", "must be a list of CIDR strings")
    proxies = []
    for i, cidr in enumerate(proxies_raw):
        try:
            proxies.append(ipaddress.ip_network(cidr, strict=False))
        except (ValueError, TypeError):
            raise d.error(f"trusted_proxies[{i}]", f"not an IP network: {cidr!r}") from None

    scalars = {name: d.value(spec) for name, spec in settings_of(DispatcherConfig)}
    if scalars["retry_after_max"] < scalars["retry_after_min"]:
        raise d.error(
            "retry_after_max", f"must be >= retry_after_min ({scalars['retry_after_min']})"
        )
    d.finish()

    health = _section(_Reader(file, "health", top.get("health") or {}), HealthSettings)
    balancing = _section(_Reader(file, "balancing", top.get("balancing") or {}), BalancerSettings)
    rr = _Reader(file, "retry", top.get("retry") or {})
    retry = _section(rr, BackoffConfig)
    try:
        retry.check()
    except SettingError as exc:
        raise rr.error(exc.key, exc.reason) from None
    store = _parse_store(_Reader(file, "store", top.get("store") or {}))
    rebalance = _parse_rebalance(_Reader(file, "rebalance", top.get("rebalance") or {}), base)

    gw_raw = top.get("gateways") or []
    if not isinstance(gw_raw, list):
        raise top.error("gateways", "must be an array of tables ([[gateways]])")
    gateways: list[GatewayEntry] = []
    seen: dict[str, int] = {}
    for i, entry in enumerate(gw_raw):
        gw = parse_gateway(entry, file=file, prefix=f"gateways[{i}]")
        if gw.id in seen:
            raise ConfigError(
                f"duplicate gateway id {gw.id!r} (also gateways[{seen[gw.id]}])",
                file=file,
                key=f"gateways[{i}].id",
            )
        seen[gw.id] = i
        gateways.append(gw)
    zones = _parse_zones(top.get("zones"), file)
    top.finish()

    return DispatcherConfig(
        path=Path(file) if file != "<config>" else None,
        listen_host=lhost,
        listen_port=lport,
        policy=policy,
        secrets=secrets,
        admin_token=admin_token,
        push_token=push_token,
        read_token=read_token_,
        trusted_proxies=tuple(proxies),
        health=health,
        balancing=balancing,
        retry=retry,
        gateways=tuple(gateways),
        store=store,
        rebalance=rebalance,
        zones=zones,
        **scalars,
    )


def _parse_zones(raw: Any, file: str) -> tuple[ZoneConfig, ...]:
    """``[[zones]]``: unique names, valid networks
    (each network in one zone), known spill targets."""
    if raw is None:
        return ()
    if not isinstance(raw, list):
        raise ConfigError("must be an array of tables ([[zones]])", file=file, key="zones")
    zones: list[ZoneConfig] = []
    owner: dict[ipaddress.IPv4Network | ipaddress.IPv6Network, str] = {}
    for i, entry in enumerate(raw):
        r = _Reader(file, f"zones[{i}]", entry)
        name = r.get("name")
        if name is None:
            raise r.error("name", "is required")
        why = zone_name_problem(name)
        if why:
            raise r.error("name", f"{why}, got {name!r}")
        if any(z.name == name for z in zones):
            raise r.error("name", f"duplicate zone {name!r}")
        cidrs = []
        for j, text in enumerate(_string_list(r, "cidrs")):
            try:
                net = ipaddress.ip_network(text, strict=False)
            except ValueError:
                raise r.error(f"cidrs[{j}]", f"not an IP network: {text!r}") from None
            if net in owner:
                raise r.error(f"cidrs[{j}]", f"{net} is already in zone {owner[net]!r}")
            owner[net] = name
            cidrs.append(net)
        spill = _string_list(r, "spill_to")
        for j, target in enumerate(spill):
            if target == name or spill.index(target) != j:
                raise r.error(f"spill_to[{j}]", f"{target!r} is listed twice or is the zone itself")
        r.finish()
        zones.append(ZoneConfig(name, tuple(cidrs), tuple(spill)))
    names = {z.name for z in zones}
    for i, z in enumerate(zones):
        for j, target in enumerate(z.spill_to):
            if target not in names:
                raise ConfigError(
                    f"unknown zone {target!r}; declared zones: {', '.join(sorted(names))}",
                    file=file,
                    key=f"zones[{i}].spill_to[{j}]",
                )
    return tuple(zones)


def _string_list(r: _Reader, name: str) -> list[str]:
    v = r.get(name)
    if v is None:
        return []
    if not isinstance(v, list) or not all(isinstance(x, str) for x in v):
        raise r.error(name, f"must be a list of strings, got {v!r}")
    return list(v)


def _parse_rebalance(r: _Reader, base: Path) -> RebalanceSettings:
    """``[rebalance]``: the declared keys, the admin token read from its file."""
    if r.has("gateway_admin_token"):
        raise r.error(
            "gateway_admin_token",
            "unknown key; put the token in a file and name it in gateway_admin_token_file",
        )
    token_spec = dict(settings_of(RebalanceSettings))["gateway_admin_token"]
    return _section(r, RebalanceSettings, gateway_admin_token=_token(r, token_spec, base))


def _parse_store(r: _Reader) -> StoreConfig:
    store = _section(r, StoreConfig)
    if store.url is not None and not store.url.startswith(STORE_SCHEMES):
        raise r.error(
            "url",
            f"must start with {', '.join(STORE_SCHEMES)}, got {store.url.split(':', 1)[0]!r}...",
        )
    if len(store.prefix) > 100 or not store.prefix.isprintable():
        raise r.error("prefix", "must be at most 100 printable characters")
    return store

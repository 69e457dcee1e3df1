"""Dispatcher configuration: one TOML file -> one frozen, validated ``DispatcherConfig``.

Every problem raises :class:`~tcpdispatch.errors.ConfigError` naming the file,
the key (``gateways[1].weight``) and the reason; unknown keys are errors too,
so a typo never silently falls back to a default. Relative paths resolve
against the directory of the config file. The full key reference with
defaults is in docs/dispatcher.md.
"""

from __future__ import annotations

import ipaddress
import math
import os
import tomllib
from collections.abc import Mapping
from dataclasses import MISSING, dataclass, field, fields, replace
from pathlib import Path
from typing import Any, TypeVar

from tcpdispatch.aio import parse_hostport
from tcpdispatch.balancing.registry import DEFAULT_POLICY, POLICIES
from tcpdispatch.balancing.snapshot import BalancerSettings
from tcpdispatch.errors import ConfigError
from tcpdispatch.health import HealthSettings, parse_check
from tcpdispatch.httputil import read_token
from tcpdispatch.ids import gateway_id_problem
from tcpdispatch.rebalance.settings import MODES as REBALANCE_MODES
from tcpdispatch.rebalance.settings import RebalanceSettings

ADMIN_TOKEN_ENV = "TCPDISPATCH_ADMIN_TOKEN"
DEFAULT_ZONE = "default"
# A zone keeps its own clients until less than this fraction of its slots is free (docs/zones.md).
DEFAULT_SPILL_HEADROOM = 0.1
CHECK_KINDS = ("http://", "https://", "agent://", "tcp://", "push")
# The [health] and [balancing] sections are these dataclasses: defaults and ranges live there.
HealthConfig = HealthSettings
BalancingConfig = BalancerSettings
_S = TypeVar("_S")


@dataclass(frozen=True, slots=True)
class GatewayConfig:
    """One ``[[gateways]]`` entry (also the body of ``POST /v1/gateways``)."""

    id: str
    host: str
    port: int
    check: str  # http(s)://H:P/status | agent://H:P | tcp://H:P | push
    weight: float = 1.0
    capacity: int | None = None  # None: use what the gateway reports
    key: str = ""  # the gateway's public key (``tcpdispatch keygen``); returned in answers
    zone: str = DEFAULT_ZONE  # the zone it serves (docs/zones.md)

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"


@dataclass(frozen=True, slots=True)
class ZoneConfig:
    """One ``[[zones]]`` entry: the client networks a zone serves and where it spills over to."""

    name: str
    cidrs: tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...] = ()
    spill_to: tuple[str, ...] = ()  # zones to try next, in order, when this one has no room


@dataclass(frozen=True, slots=True)
class RetryConfig:
    """Reconnect backoff hints handed to clients in every dispatch answer."""

    initial_s: float = 1.0
    multiplier: float = 1.6
    jitter: float = 0.2
    max_s: float = 120.0


STORE_SCHEMES = ("redis://", "rediss://", "unix://")


@dataclass(frozen=True, slots=True)
class StoreConfig:
    """``[store]``: where replicas share admin changes and push heartbeats (docs/scaling.md)."""

    url: str | None = field(default=None, repr=False)  # None: embedded memory store; may hold a password
    prefix: str = "tcpdispatch:"
    resync_interval: float = 1.0
    timeout: float = 0.5

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
    ticket_lifetime: int = 60
    admin_token: str | None = field(default=None, repr=False)
    push_token: str | None = field(default=None, repr=False)
    read_token: str | None = field(default=None, repr=False)  # None: GET /v1/gateways and /metrics are open
    register_unknown: bool = False
    alternates: int = 2
    heartbeat_s: float = 10.0
    trusted_proxies: tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...] = ()
    max_body: int = 65536
    max_client_id: int = 128
    server: str = "uvloop"  # HTTP server: "uvloop" (built-in, httptools) or "granian"
    retry_after_min: int = 1
    retry_after_max: int = 5
    header_timeout: float = 10.0  # uvloop server: seconds from a request's first byte to its last header
    body_timeout: float = 30.0  # uvloop server: seconds from the end of the headers to the end of the body
    reuse_port: bool = False  # uvloop server: SO_REUSEPORT, so several dispatcher processes share the port
    speedups: bool = True  # use the C hot path (tcpdispatch._speedups) when it is built
    health: HealthSettings = field(default_factory=HealthSettings)
    balancing: BalancerSettings = field(default_factory=BalancerSettings)
    retry: RetryConfig = RetryConfig()
    gateways: tuple[GatewayConfig, ...] = ()
    store: StoreConfig = StoreConfig()
    rebalance: RebalanceSettings = field(default_factory=RebalanceSettings)
    zones: tuple[ZoneConfig, ...] = ()  # empty: zones are off, dispatch ignores gateway zones
    spill_headroom: float = DEFAULT_SPILL_HEADROOM

    @property
    def listen(self) -> str:
        return f"{self.listen_host}:{self.listen_port}"


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

    def number(self, name: str, default: float, lo: float, hi: float, *, lo_open: bool = False) -> float:
        v = self.get(name)
        if v is None:
            return default
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
            raise self.error(name, f"must be a number, got {v!r}")
        if v < lo or (lo_open and v == lo) or v > hi:
            lo_txt = f"> {lo}" if lo_open else f">= {lo}"
            raise self.error(name, f"must be {lo_txt} and <= {hi}, got {v!r}")
        return float(v)

    def integer(self, name: str, default: int | None, lo: int, hi: int) -> int | None:
        v = self.get(name)
        if v is None:
            return default
        if isinstance(v, bool) or not isinstance(v, int):
            raise self.error(name, f"must be an integer, got {v!r}")
        if not lo <= v <= hi:
            raise self.error(name, f"must be between {lo} and {hi}, got {v}")
        return v

    def string(self, name: str, default: str | None = None, *, required: bool = False) -> str | None:
        v = self.get(name)
        if v is None:
            if required:
                raise self.error(name, "is required")
            return default
        if not isinstance(v, str) or not v.strip():
            raise self.error(name, f"must be a non-empty string, got {v!r}")
        return v

    def boolean(self, name: str, default: bool) -> bool:
        v = self.get(name)
        if v is None:
            return default
        if not isinstance(v, bool):
            raise self.error(name, f"must be true or false, got {v!r}")
        return v

    def finish(self) -> None:
        extra = sorted(set(self.table) - self.used)
        if extra:
            raise self.error(extra[0], "unknown key" + (f" (also: {', '.join(extra[1:])})" if extra[1:] else ""))


def _path(r: _Reader, name: str, base: Path, *, required: bool = False) -> Path | None:
    text = r.string(name, required=required)
    if text is None:
        return None
    p = Path(text).expanduser()
    return p if p.is_absolute() else base / p


def _read_token(r: _Reader, name: str, path: Path) -> str:
    try:
        return read_token(path)
    except ValueError as exc:
        raise r.error(name, str(exc)) from None


def _section(r: _Reader, cls: type[_S]) -> _S:
    """Read a table straight into the settings dataclass ``cls``: its fields are the keys,
    its defaults the defaults, and its ``__post_init__`` checks the ranges."""
    values: dict[str, Any] = {}
    for f in fields(cls):  # type: ignore[arg-type]
        v = r.get(f.name)
        if v is None:
            continue
        default = f.default if f.default is not MISSING else None
        if isinstance(default, bool):
            if not isinstance(v, bool):
                raise r.error(f.name, f"must be true or false, got {v!r}")
        elif isinstance(default, int):
            if isinstance(v, bool) or not isinstance(v, int):
                raise r.error(f.name, f"must be an integer, got {v!r}")
        elif isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
            raise r.error(f.name, f"must be a number, got {v!r}")
        values[f.name] = float(v) if isinstance(default, float) else v
    r.finish()
    try:
        return cls(**values)
    except ValueError as exc:
        reason = str(exc)
        name = reason.split(" ", 1)[0]
        raise r.error(name if r.has(name) else "", reason) from None


def parse_gateway(table: Any, *, file: str = "", prefix: str = "gateway") -> GatewayConfig:
    """Validate one gateway entry (config file or admin API body)."""
    r = _Reader(file, prefix, table)
    gid = r.get("id")
    if gid is None:
        raise r.error("id", "is required")
    why = gateway_id_problem(gid)
    if why:
        raise r.error("id", f"{why}, got {gid!r}")
    addr = r.string("address", required=True)
    assert addr is not None
    try:
        host, port = parse_hostport(addr)
    except ValueError as exc:
        raise r.error("address", str(exc)) from None
    if port == 0:
        raise r.error("address", "port must not be 0")
    check = r.string("check", f"tcp://{addr}")
    assert check is not None
    _validate_check(r, check)
    weight = r.number("weight", 1.0, 0.0, 1_000_000.0)  # 0: keep, but hand out no new clients
    capacity = r.integer("capacity", None, 1, 100_000_000)
    key = r.string("key", "") or ""
    if key:
        from tcpdispatch.secure.keys import parse_public_key

        try:
            parse_public_key(key)
        except ValueError as exc:
            raise r.error("key", f"{exc} (the line `tcpdispatch keygen` prints)") from None
    zone = r.get("zone")
    if zone is None:
        zone = DEFAULT_ZONE
    why = zone_name_problem(zone)
    if why:
        raise r.error("zone", f"{why}, got {zone!r}")
    r.finish()
    return GatewayConfig(gid, host, port, check, weight, capacity, key, zone)


def zone_name_problem(name: object) -> str | None:
    """Why ``name`` is not a usable zone name, or None (the rules of gateway ids)."""
    return gateway_id_problem(name)


def _validate_check(r: _Reader, check: str) -> None:
    if check == "push":
        return
    if not check.startswith(CHECK_KINDS):
        raise r.error("check", "must be http(s)://HOST:PORT/PATH, agent://HOST:PORT, tcp://HOST:PORT "
                               f"or push, got {check!r}")
    try:
        parse_check(check)
    except ValueError as exc:
        raise r.error("check", str(exc)) from None


def load_config(path: str | os.PathLike[str], *, env: Mapping[str, str] | None = None) -> DispatcherConfig:
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
    return parse_config(doc, file=file, base=p.resolve().parent, env=os.environ if env is None else env)


def parse_config(
    doc: Mapping[str, Any], *, file: str = "<config>", base: Path | None = None,
    env: Mapping[str, str] | None = None,
) -> DispatcherConfig:
    """Validate an already-parsed TOML document (``base`` resolves relative paths)."""
    base = base or Path.cwd()
    env = env or {}
    top = _Reader(file, "", doc)
    d = _Reader(file, "dispatcher", top.get("dispatcher") or {})
    listen = d.string("listen", "127.0.0.1:8080")
    assert listen is not None
    try:
        lhost, lport = parse_hostport(listen, what="listen")
    except ValueError as exc:
        raise d.error("listen", str(exc)) from None
    policy = str(d.string("policy", DEFAULT_POLICY))
    if policy not in POLICIES:
        raise d.error("policy", f"unknown policy {policy!r}; choose one of {', '.join(POLICIES)}")

    secret_path = _path(d, "secret_file", base, required=True)
    assert secret_path is not None
    from tcpdispatch.tickets import load_secrets

    try:
        secrets = tuple(load_secrets(secret_path))
    except ConfigError as exc:
        raise d.error("secret_file", f"{exc.reason} ({secret_path})") from None
    lifetime = d.integer("ticket_lifetime", 60, 1, 65535)

    admin_path = _path(d, "admin_token_file", base)
    admin_token = _read_token(d, "admin_token_file", admin_path) if admin_path else None
    if admin_token is None and env.get(ADMIN_TOKEN_ENV, "").strip():
        admin_token = env[ADMIN_TOKEN_ENV].strip()
        if len(admin_token) < 8:
            raise ConfigError(f"the token in ${ADMIN_TOKEN_ENV} is shorter than 8 characters", file=file,
                              key=ADMIN_TOKEN_ENV)
    push_path = _path(d, "push_token_file", base)
    push_token = _read_token(d, "push_token_file", push_path) if push_path else admin_token
    read_path = _path(d, "read_token_file", base)
    read_token = _read_token(d, "read_token_file", read_path) if read_path else None

    proxies_raw = d.get("trusted_proxies") or []
    if not isinstance(proxies_raw, list):
        raise d.error("trusted_proxies", "must be a list of CIDR strings")
    proxies = []
    for i, cidr in enumerate(proxies_raw):
        try:
            proxies.append(ipaddress.ip_network(cidr, strict=False))
        except (ValueError, TypeError):
            raise d.error(f"trusted_proxies[{i}]", f"not an IP network: {cidr!r}") from None

    ra_min = d.integer("retry_after_min", 1, 0, 3600)
    ra_max = d.integer("retry_after_max", 5, 0, 3600)
    assert ra_min is not None and ra_max is not None
    if ra_max < ra_min:
        raise d.error("retry_after_max", f"must be >= retry_after_min ({ra_min})")
    alternates = d.integer("alternates", 2, 0, 16)
    heartbeat = d.number("heartbeat_s", 10.0, 0.0, 3600.0, lo_open=True)
    register_unknown = d.boolean("register_unknown", False)
    max_body = d.integer("max_body", 65536, 256, 16 * 1024 * 1024)
    max_client_id = d.integer("max_client_id", 128, 1, 200)
    server = d.string("server", "uvloop")
    if server not in ("uvloop", "granian"):
        raise d.error("server", f"must be \"uvloop\" or \"granian\", got {server!r}")
    header_timeout = d.number("header_timeout", 10.0, 0.0, 3600.0, lo_open=True)
    body_timeout = d.number("body_timeout", 30.0, 0.0, 3600.0, lo_open=True)
    reuse_port = d.boolean("reuse_port", False)
    if reuse_port and server != "uvloop":
        raise d.error("reuse_port", 'needs server = "uvloop"')
    speedups = d.boolean("speedups", True)
    spill_headroom = d.number("spill_headroom", DEFAULT_SPILL_HEADROOM, 0.0, 1.0)
    if spill_headroom >= 1.0:
        raise d.error("spill_headroom", "must be below 1 (1 would spill every client)")
    d.finish()

    health = _section(_Reader(file, "health", top.get("health") or {}), HealthSettings)
    balancing = _section(_Reader(file, "balancing", top.get("balancing") or {}), BalancerSettings)

    rr = _Reader(file, "retry", top.get("retry") or {})
    retry = RetryConfig(
        initial_s=rr.number("initial_s", 1.0, 0.0, 3600.0, lo_open=True),
        multiplier=rr.number("multiplier", 1.6, 1.0, 10.0),
        jitter=rr.number("jitter", 0.2, 0.0, 1.0),
        max_s=rr.number("max_s", 120.0, 0.0, 86400.0, lo_open=True),
    )
    rr.finish()

    store = _parse_store(_Reader(file, "store", top.get("store") or {}))
    rebalance = _parse_rebalance(_Reader(file, "rebalance", top.get("rebalance") or {}), base)

    gw_raw = top.get("gateways") or []
    if not isinstance(gw_raw, list):
        raise top.error("gateways", "must be an array of tables ([[gateways]])")
    gateways: list[GatewayConfig] = []
    seen: dict[str, int] = {}
    for i, entry in enumerate(gw_raw):
        gw = parse_gateway(entry, file=file, prefix=f"gateways[{i}]")
        if gw.id in seen:
            raise ConfigError(f"duplicate gateway id {gw.id!r} (also gateways[{seen[gw.id]}])", file=file, key=f"gateways[{i}].id")
        seen[gw.id] = i
        gateways.append(gw)
    zones = _parse_zones(top.get("zones"), file)
    top.finish()

    return DispatcherConfig(
        path=Path(file) if file != "<config>" else None,
        listen_host=lhost, listen_port=lport, policy=policy, secrets=secrets,
        ticket_lifetime=int(lifetime or 60), admin_token=admin_token, push_token=push_token,
        read_token=read_token,
        register_unknown=register_unknown, alternates=int(alternates or 0), heartbeat_s=heartbeat,
        trusted_proxies=tuple(proxies), max_body=int(max_body or 65536),
        max_client_id=int(max_client_id or 128), server=str(server), retry_after_min=ra_min, retry_after_max=ra_max,
        header_timeout=header_timeout, body_timeout=body_timeout, reuse_port=reuse_port,
        speedups=bool(speedups), health=health, balancing=balancing, retry=retry, gateways=tuple(gateways), store=store,
        rebalance=rebalance, zones=zones, spill_headroom=spill_headroom,
    )


def _parse_zones(raw: Any, file: str) -> tuple[ZoneConfig, ...]:
    """``[[zones]]``: unique names, valid networks (each network in one zone), known spill targets."""
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
                raise ConfigError(f"unknown zone {target!r}; declared zones: {', '.join(sorted(names))}",
                                  file=file, key=f"zones[{i}].spill_to[{j}]")
    return tuple(zones)


def _string_list(r: _Reader, name: str) -> list[str]:
    v = r.get(name)
    if v is None:
        return []
    if not isinstance(v, list) or not all(isinstance(x, str) for x in v):
        raise r.error(name, f"must be a list of strings, got {v!r}")
    return list(v)


def _parse_rebalance(r: _Reader, base: Path) -> RebalanceSettings:
    """``[rebalance]``: the numbers go through :func:`_section`'s checks, plus mode and token file."""
    if r.has("gateway_admin_token"):
        raise r.error("gateway_admin_token", "unknown key; put the token in a file and name it in "
                      "gateway_admin_token_file")
    mode = r.string("mode", "auto")
    if mode not in REBALANCE_MODES:
        raise r.error("mode", f"must be one of {', '.join(REBALANCE_MODES)}, got {mode!r}")
    token_path = _path(r, "gateway_admin_token_file", base)
    token = _read_token(r, "gateway_admin_token_file", token_path) if token_path else None
    numbers = {k: v for k, v in r.table.items() if k not in ("mode", "gateway_admin_token_file")}
    settings = _section(_Reader(r.file, "rebalance", numbers), RebalanceSettings)
    r.used.update(numbers)
    r.finish()
    return replace(settings, mode=str(mode), gateway_admin_token=token)


def _parse_store(r: _Reader) -> StoreConfig:
    url = r.string("url")
    if url is not None and not url.startswith(STORE_SCHEMES):
        raise r.error("url", f"must start with {', '.join(STORE_SCHEMES)}, got {url.split(':', 1)[0]!r}...")
    prefix = r.string("prefix", "tcpdispatch:")
    assert prefix is not None
    if len(prefix) > 100 or not prefix.isprintable():
        raise r.error("prefix", "must be at most 100 printable characters")
    store = StoreConfig(
        url=url, prefix=prefix,
        resync_interval=r.number("resync_interval", 1.0, 0.05, 3600.0),
        timeout=r.number("timeout", 0.5, 0.0, 60.0, lo_open=True),
    )
    r.finish()
    return store

"""Redis store: replicas share admin changes and push heartbeats through one Redis.

Keys (``P`` = ``[store] prefix``, default ``tcpdispatch:``):

- ``P gateways``  hash id -> JSON ``{"id","address","check","capacity","source"}``
- ``P weights``   hash id -> weight
- ``P drain``     set of admin-drained ids
- ``P version``   counter, bumped by every change
- ``P seeded``    present once the pool was written (absent: empty Redis -> seed it)
- ``P hb:<id>``   last push heartbeat of a gateway, expires after ``[health] ttl``
- ``P lease:<name>`` the replica holding a lease (the rebalancer's leader), expires after its ttl
- ``P control``   hash of shared operator switches (the rebalancer's ``paused``, ``trigger``)
- channels ``P events`` (a new version) and ``P heartbeats`` (each relayed heartbeat)

Each write is one Lua script (check, change, bump ``version``, ``PUBLISH``), so
it is atomic and costs one round trip. Every replica subscribes to both
channels and also resyncs every ``resync_interval`` (one ``MGET`` when nothing
changed), so a missed message heals. While Redis is unreachable the replica keeps
its last applied state, refuses writes with :class:`StoreUnavailable`, logs once,
and reconnects with a capped backoff; when Redis comes back empty (restarted
without persistence) the first replica to reconnect writes its last known pool back.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
import uuid
from collections.abc import Mapping
from typing import Any
from urllib.parse import urlsplit

import redis.asyncio as aioredis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import RedisError

from tcpdispatch.config import DEFAULT_ZONE, StoreConfig, parse_gateway
from tcpdispatch.errors import ConfigError
from tcpdispatch.store.base import SharedGateway, Store, StoreHooks, StoreUnavailable

log = logging.getLogger("tcpdispatch.store")

# KEYS: seeded, gateways, weights, drain, version, hb key; ARGV: channel, op, id, a
_WRITE = """
if redis.call('EXISTS', KEYS[1]) == 0 then return -1 end
local op, id = ARGV[2], ARGV[3]
if op == 'add' then
  if redis.call('HSETNX', KEYS[2], id, ARGV[4]) == 0 then return 0 end
  redis.call('HSET', KEYS[3], id, ARGV[5])
  redis.call('SREM', KEYS[4], id)
elseif op == 'remove' then
  if redis.call('HDEL', KEYS[2], id) == 0 then return 0 end
  redis.call('HDEL', KEYS[3], id)
  redis.call('SREM', KEYS[4], id)
  redis.call('DEL', KEYS[6])
else
  if redis.call('HEXISTS', KEYS[2], id) == 0 then return 0 end
  if op == 'weight' then redis.call('HSET', KEYS[3], id, ARGV[4])
  elseif op == 'zone' then
    local doc = cjson.decode(redis.call('HGET', KEYS[2], id))
    doc['zone'] = ARGV[4]
    redis.call('HSET', KEYS[2], id, cjson.encode(doc))
  elseif op == 'drain' then redis.call('SADD', KEYS[4], id)
  else redis.call('SREM', KEYS[4], id) end
end
local v = redis.call('INCR', KEYS[5])
redis.call('PUBLISH', ARGV[1], v)
return v
"""

# KEYS: seeded, gateways, weights, drain, version;
# ARGV: channel, n, then n x (id, json, weight, drain)
_SEED = """
if redis.call('SETNX', KEYS[1], '1') == 0 then return 0 end
redis.call('DEL', KEYS[2], KEYS[3], KEYS[4])
for i = 0, tonumber(ARGV[2]) - 1 do
  local b = 3 + i * 4
  redis.call('HSET', KEYS[2], ARGV[b], ARGV[b + 1])
  redis.call('HSET', KEYS[3], ARGV[b], ARGV[b + 2])
  if ARGV[b + 3] == '1' then redis.call('SADD', KEYS[4], ARGV[b]) end
end
local v = redis.call('INCR', KEYS[5])
redis.call('PUBLISH', ARGV[1], v)
return v
"""

# KEYS: lease; ARGV: holder, ttl ms. Take it when free, renew it when ours; 1 if ours afterwards.
_LEASE = """
local cur = redis.call('GET', KEYS[1])
if cur == false or cur == ARGV[1] then
  redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
  return 1
end
return 0
"""

# KEYS: lease; ARGV: holder. Delete it only if ours.
_RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""

_ERRORS = (RedisError, OSError, TimeoutError)
MAX_PENDING_HEARTBEATS = 256  # relays in flight; beyond that Redis is too slow and we drop


def _text(v: bytes | str) -> str:
    return v.decode(errors="replace") if isinstance(v, bytes) else v


def _entry_doc(e: SharedGateway) -> str:
    c = e.config
    doc = {
        "id": c.id,
        "address": c.address,
        "check": c.check,
        "capacity": c.capacity,
        "source": e.source,
    }
    if c.key:
        doc["key"] = c.key
    if c.zone != DEFAULT_ZONE:
        doc["zone"] = c.zone
    return json.dumps(doc, separators=(",", ":"))


class RedisStore(Store):
    """Shared state in Redis (see the module docstring for keys and failure behaviour)."""

    kind = "redis"
    shared = True

    def __init__(self, config: StoreConfig, *, replica_id: str | None = None) -> None:
        assert config.url is not None
        self.config = config
        p = config.prefix
        self._keys = [p + "seeded", p + "gateways", p + "weights", p + "drain", p + "version"]
        self.ch_events, self.ch_heartbeats = p + "events", p + "heartbeats"
        self.replica_id = replica_id or uuid.uuid4().hex[:12]
        parts = urlsplit(config.url)
        self.where = (
            f"{parts.hostname or parts.path}:{parts.port or 6379}" if parts.hostname else parts.path
        )
        # No client-side retries: a failure must surface at once (503, last known state).
        self._redis = aioredis.Redis.from_url(
            config.url,
            socket_timeout=config.timeout,
            socket_connect_timeout=config.timeout,
            retry=Retry(NoBackoff(), 0),
        )
        self._write = self._redis.register_script(_WRITE)
        self._seed = self._redis.register_script(_SEED)
        self._lease = self._redis.register_script(_LEASE)
        self._release = self._redis.register_script(_RELEASE)
        self._up = False
        self._outage_logged = False
        self._version: int | None = None
        self._hb_seen: dict[str, str] = {}  # gateway id -> "at" of the last heartbeat applied here
        self._hooks: StoreHooks | None = None
        self._task: asyncio.Task[None] | None = None
        self._synced: asyncio.Event | None = None
        self._pending: set[asyncio.Task[None]] = set()
        self._bad: set[str] = set()
        self.resyncs = 0  # full state loads (tests and /healthz)

    @property
    def available(self) -> bool:
        return self._up

    def describe(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "available": self._up,
            "address": self.where,
            "prefix": self.config.prefix,
            "version": self._version,
        }

    def _hb_key(self, gateway_id: str) -> str:
        return f"{self.config.prefix}hb:{gateway_id}"

    # ------------------------------------------------------------ lifecycle

    async def start(self, hooks: StoreHooks) -> None:
        """Connect, seed an empty Redis, apply its state; give up waiting after a few timeouts."""
        self._hooks = hooks
        self._synced = asyncio.Event()
        self._task = asyncio.get_running_loop().create_task(self._run())
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._synced.wait(), timeout=max(1.0, 4 * self.config.timeout))
        if not self._synced.is_set():
            log.warning(
                "redis store %s: no state yet, serving the config file's pool until it answers",
                self.where,
            )

    async def close(self) -> None:
        tasks = [t for t in (self._task, *self._pending) if t is not None]
        for t in tasks:
            t.cancel()
        for t in tasks:
            with contextlib.suppress(BaseException):
                await t
        with contextlib.suppress(Exception):
            await self._redis.aclose()

    async def _run(self) -> None:
        delay = 0.1
        while True:
            connected_before = self.resyncs
            try:
                await self._session()
            except _ERRORS as exc:
                self._set_down(exc)
            except Exception as exc:  # a bug or garbage in our keys: never let the loop die
                if not self._outage_logged:
                    log.exception("redis store %s: sync failed", self.where)
                self._set_down(exc)
            # Reconnect fast after a working session, back off while Redis stays away.
            delay = 0.1 if self.resyncs != connected_before else min(delay * 2, 1.0)
            await asyncio.sleep(delay)

    async def _session(self) -> None:
        pubsub = self._redis.pubsub()
        try:
            await pubsub.subscribe(self.ch_events, self.ch_heartbeats)
            await self._resync(force=True)
            self._set_up()
            assert self._synced is not None
            self._synced.set()
            loop = asyncio.get_running_loop()
            interval = self.config.resync_interval
            next_resync = loop.time() + interval
            while True:
                wait = max(0.0, next_resync - loop.time())
                msg = await pubsub.get_message(ignore_subscribe_messages=True, timeout=wait)
                if msg is not None:
                    await self._on_message(msg)
                if loop.time() >= next_resync:
                    await self._resync()
                    self._set_up()  # a write or relay may have failed transiently meanwhile
                    next_resync = loop.time() + interval
        finally:
            with contextlib.suppress(Exception):
                await pubsub.aclose()

    def _set_down(self, exc: BaseException) -> None:
        self._up = False
        if not self._outage_logged:
            self._outage_logged = True
            log.warning(
                "redis store %s unreachable (%s): serving from the last known state; "
                "admin writes are refused until it returns",
                self.where,
                exc or type(exc).__name__,
            )

    def _set_up(self) -> None:
        if not self._up and self._outage_logged:
            log.warning(
                "redis store %s reachable again: resynced (version %s)", self.where, self._version
            )
        self._up = True
        self._outage_logged = False

    # ------------------------------------------------------------ reading

    async def _on_message(self, msg: Mapping[str, Any]) -> None:
        channel = msg["channel"].decode()
        if channel == self.ch_events:
            try:
                version = int(msg["data"])
            except ValueError:
                version = None
            if version is None or version != self._version:
                await self._resync(force=True)
        elif channel == self.ch_heartbeats:
            self._relayed(msg["data"])

    def _relayed(self, raw: bytes | str) -> None:
        assert self._hooks is not None
        try:
            m = json.loads(raw)
            gid, at, doc = m["id"], m["at"], m["doc"]
        except (ValueError, KeyError, TypeError):
            return
        if not isinstance(gid, str) or not isinstance(doc, dict) or self._hb_seen.get(gid) == at:
            return
        self._hb_seen[gid] = at
        if m.get("from") != self.replica_id:
            self._hooks.heartbeat(gid, doc)

    async def _resync(self, *, force: bool = False) -> None:
        version, seeded = await self._redis.mget(self._keys[4], self._keys[0])
        if seeded is None:
            await self._seed_from_pool()
            force = True
        if force or version is None or int(version) != self._version:
            await self._load()
        await self._heal_heartbeats()

    async def _seed_from_pool(self) -> None:
        assert self._hooks is not None
        entries = self._hooks.snapshot()
        args: list[Any] = [self.ch_events, len(entries)]
        for e in entries:
            args += [e.config.id, _entry_doc(e), repr(e.config.weight), "1" if e.drain else "0"]
        version = await self._seed(keys=self._keys, args=args)
        if version:
            what = "the config file" if self._version is None else "this replica's last known state"
            log.warning(
                "redis store %s was empty: seeded %d gateways from %s",
                self.where,
                len(entries),
                what,
            )

    async def _load(self) -> None:
        assert self._hooks is not None
        k = self._keys
        async with self._redis.pipeline(transaction=True) as pipe:
            pipe.get(k[4])
            pipe.hgetall(k[1])
            pipe.hgetall(k[2])
            pipe.smembers(k[3])
            version, gateways, weights, drained = await pipe.execute()
        entries: dict[str, SharedGateway] = {}
        for raw_id, raw in gateways.items():
            gid = raw_id.decode("utf-8", "replace")
            try:
                doc = json.loads(raw)
                weight = weights.get(raw_id)
                spec = {
                    "id": gid,
                    "address": doc["address"],
                    "check": doc["check"],
                    "weight": float(weight) if weight is not None else 1.0,
                }
                if doc.get("capacity") is not None:
                    spec["capacity"] = doc["capacity"]
                if doc.get("key"):
                    spec["key"] = doc["key"]
                if doc.get("zone"):
                    spec["zone"] = doc["zone"]
                gcfg = parse_gateway(spec, file=f"redis {k[1]}", prefix=gid)
            except (ValueError, KeyError, TypeError, ConfigError) as exc:
                if gid not in self._bad:
                    self._bad.add(gid)
                    log.error("redis store: ignoring unreadable gateway %r: %s", gid, exc)
                continue
            entries[gid] = SharedGateway(gcfg, str(doc.get("source", "admin")), raw_id in drained)
        assert self._synced is not None
        self._version = int(version or 0)
        self._hooks.apply(entries, not self._synced.is_set())
        self.resyncs += 1

    async def _heal_heartbeats(self) -> None:
        assert self._hooks is not None
        ids = self._hooks.push_ids()
        for gid in [g for g in self._hb_seen if g not in ids]:
            del self._hb_seen[gid]
        if ids:
            for raw in await self._redis.mget([self._hb_key(g) for g in ids]):
                if raw is not None:
                    self._relayed(raw)

    # ------------------------------------------------------------ writing

    async def _op(self, op: str, gateway_id: str, *args: str) -> bool:
        if not self._up:
            raise StoreUnavailable(f"shared state store (redis at {self.where}) is unreachable")
        try:
            result = await self._write(
                keys=[*self._keys, self._hb_key(gateway_id)],
                args=[self.ch_events, op, gateway_id, *args],
            )
        except _ERRORS as exc:
            self._set_down(exc)
            raise StoreUnavailable(
                f"shared state store (redis at {self.where}) is unreachable"
            ) from None
        if result == -1:
            raise StoreUnavailable(
                f"shared state store (redis at {self.where}) was emptied; "
                "it is being reseeded, retry in a moment"
            )
        return bool(result)

    async def add(self, entry: SharedGateway) -> bool:
        return await self._op("add", entry.config.id, _entry_doc(entry), repr(entry.config.weight))

    async def remove(self, gateway_id: str) -> bool:
        return await self._op("remove", gateway_id)

    async def set_weight(self, gateway_id: str, weight: float) -> bool:
        return await self._op("weight", gateway_id, repr(float(weight)))

    async def set_zone(self, gateway_id: str, zone: str) -> bool:
        return await self._op("zone", gateway_id, zone)

    async def set_drain(self, gateway_id: str, draining: bool) -> bool:
        return await self._op("drain" if draining else "undrain", gateway_id)

    async def lease(self, name: str, holder: str, ttl: float) -> bool:
        """One script call: take the lease when free,
        renew it when ours. False while Redis is away."""
        try:
            got = await self._lease(
                keys=[f"{self.config.prefix}lease:{name}"], args=[holder, max(1, int(ttl * 1000))]
            )
        except _ERRORS:
            return False
        return bool(got)

    async def release(self, name: str, holder: str) -> None:
        with contextlib.suppress(*_ERRORS):
            await self._release(keys=[f"{self.config.prefix}lease:{name}"], args=[holder])

    async def control(self) -> dict[str, str]:
        try:
            raw = await self._redis.hgetall(self.config.prefix + "control")
        except _ERRORS:
            raise StoreUnavailable(
                f"shared state store (redis at {self.where}) is unreachable"
            ) from None
        return {_text(k): _text(v) for k, v in raw.items()}

    async def set_control(self, key: str, value: str) -> None:
        try:
            await self._redis.hset(self.config.prefix + "control", key, value)
        except _ERRORS:
            raise StoreUnavailable(
                f"shared state store (redis at {self.where}) is unreachable"
            ) from None

    def heartbeat(self, gateway_id: str, doc: Mapping[str, Any], ttl: float) -> None:
        """Store the heartbeat with a TTL and publish it; dropped while Redis is away."""
        if not self._up or len(self._pending) >= MAX_PENDING_HEARTBEATS:
            return
        at = f"{time.time():.6f}/{self.replica_id}"
        self._hb_seen[gateway_id] = at
        raw = json.dumps(
            {"from": self.replica_id, "id": gateway_id, "at": at, "doc": doc}, separators=(",", ":")
        )
        task = asyncio.get_running_loop().create_task(self._relay(gateway_id, raw, ttl))
        self._pending.add(task)
        task.add_done_callback(self._pending.discard)

    async def _relay(self, gateway_id: str, raw: str, ttl: float) -> None:
        try:
            async with self._redis.pipeline(transaction=False) as pipe:
                pipe.set(self._hb_key(gateway_id), raw, px=max(1, int(ttl * 1000)))
                pipe.publish(self.ch_heartbeats, raw)
                await pipe.execute()
        except _ERRORS as exc:
            self._set_down(exc)

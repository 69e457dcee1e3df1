"""Admin routes go through the store: 503 JSON while it is unavailable, 404/409 from its answer."""

from __future__ import annotations

import json
import random
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from dispatcher_stack import Stack, call

from tcpdispatch.config import parse_config
from tcpdispatch.dispatcher.pool import Pool
from tcpdispatch.store import SharedGateway, Store, StoreUnavailable

ADMIN = "admin-token-123"


class FakeStore(Store):
    kind = "fake"
    shared = True

    def __init__(self) -> None:
        self.up = True
        self.calls: list[tuple[str, Any]] = []
        self.beats: list[str] = []

    @property
    def available(self) -> bool:
        return self.up

    async def _do(self, op: str, arg: Any) -> bool:
        if not self.up:
            raise StoreUnavailable("shared state store (redis at x) is unreachable")
        self.calls.append((op, arg))
        return True

    async def add(self, entry: SharedGateway) -> bool:
        return await self._do("add", entry.config.id)

    async def remove(self, gateway_id: str) -> bool:
        return await self._do("remove", gateway_id)

    async def set_weight(self, gateway_id: str, weight: float) -> bool:
        return await self._do("weight", weight)

    async def set_zone(self, gateway_id: str, zone: str) -> bool:
        return await self._do("zone", zone)

    async def set_drain(self, gateway_id: str, draining: bool) -> bool:
        return await self._do("drain", draining)

    async def control(self) -> dict[str, str]:
        return {}

    async def set_control(self, key: str, value: str) -> None:
        await self._do("control", (key, value))

    def heartbeat(self, gateway_id: str, doc: Mapping[str, Any], ttl: float) -> None:
        self.beats.append(gateway_id)


def _app(tmp_path: Path) -> tuple[Stack, FakeStore]:
    (tmp_path / "s").write_text("0123456789abcdef0123\n")
    (tmp_path / "a").write_text(ADMIN)
    doc = {
        "dispatcher": {"secret_file": "s", "admin_token_file": "a", "register_unknown": True},
        "gateways": [{"id": "g1", "address": "127.0.0.1:9001"}],
    }
    cfg = parse_config(doc, file="d.toml", base=tmp_path, env={})
    store = FakeStore()
    app = Stack(cfg, Pool(cfg, rng=random.Random(1)), store=store)
    return app, store


async def _call(
    app: Stack, method: str, path: str, doc: Any = None
) -> tuple[int, dict[str, str], Any]:
    body = json.dumps(doc).encode() if doc is not None else b""
    answer = await call(
        app,
        method,
        path,
        body=body,
        token=ADMIN,
        headers=[(b"content-type", b"application/json")],
        client=("127.0.0.1", 5000),
    )
    return answer.status, answer.headers, json.loads(answer.body) if answer.body else None


async def test_admin_writes_go_through_the_store(tmp_path: Path) -> None:
    app, store = _app(tmp_path)
    assert (await _call(app, "PATCH", "/v1/gateways/g1", {"weight": 3}))[0] == 200
    assert (await _call(app, "POST", "/v1/gateways/g1/drain"))[0] == 200
    gw = {"id": "g2", "address": "127.0.0.1:9002"}
    assert (await _call(app, "POST", "/v1/gateways", gw))[0] == 201
    assert (await _call(app, "DELETE", "/v1/gateways/g2"))[0] == 200
    assert store.calls == [("weight", 3.0), ("drain", True), ("add", "g2"), ("remove", "g2")]
    assert app.pool.gateways["g1"].config.weight == 3.0


async def test_store_down_gives_503_json_and_changes_nothing(tmp_path: Path) -> None:
    app, store = _app(tmp_path)
    store.up = False
    for method, path, doc in [
        ("PATCH", "/v1/gateways/g1", {"weight": 3}),
        ("POST", "/v1/gateways/g1/drain", None),
        ("POST", "/v1/gateways/g1/undrain", None),
        ("DELETE", "/v1/gateways/g1", None),
        ("POST", "/v1/gateways", {"id": "g2", "address": "127.0.0.1:9002"}),
    ]:
        status, headers, body = await _call(app, method, path, doc)
        assert status == 503, (method, path)
        assert body["error"] == "store_unavailable" and "unreachable" in body["detail"]
        assert headers["retry-after"] == "1"
    assert set(app.pool.gateways) == {"g1"} and app.pool.gateways["g1"].config.weight == 1.0
    assert not app.pool.gateways["g1"].admin_drain
    status, _, doc = await _call(app, "GET", "/healthz")
    assert status == 200 and doc["store"] == {"kind": "fake", "available": False}


async def test_heartbeats_are_accepted_and_relayed_while_store_is_down(tmp_path: Path) -> None:
    app, store = _app(tmp_path)
    store.up = False
    hb = {
        "id": "p1",
        "state": "serving",
        "connections": 1,
        "capacity": 10,
        "address": "127.0.0.1:9100",
    }
    status, _, _ = await _call(app, "POST", "/v1/heartbeat", hb)
    assert status == 204 and "p1" in app.pool.gateways  # registered locally despite the outage
    assert store.beats == ["p1"]  # relay is the store's call (a real store drops it while down)

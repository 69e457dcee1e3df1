"""Secure by default (issue 11, security 4): every state-changing route needs a token and,
with none configured, answers 403 saying how to enable it; an optional read token guards
the routes that list gateway addresses, while dispatch and health stay open."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from .conftest import ADMIN

READ = "read-token-456"
MUTATING = [
    ("POST", "/v1/gateways", {"id": "g9", "address": "127.0.0.1:9009"}),
    ("PATCH", "/v1/gateways/g1", {"weight": 5}),
    ("DELETE", "/v1/gateways/g1", None),
    ("POST", "/v1/gateways/g1/drain", None),
    ("POST", "/v1/gateways/g1/undrain", None),
    ("POST", "/v1/reload", None),
]
LISTING = ["/v1/gateways", "/v1/gateways/g1", "/metrics"]


@pytest.mark.parametrize(("method", "path", "body"), MUTATING)
async def test_every_admin_route_is_403_with_how_to_enable_when_no_token_is_set(
    make_app: Any, call_router: Any, method: str, path: str, body: Any
) -> None:
    app = make_app()
    app.configure(replace(app.config, admin_token=None, push_token=None))
    before = {gid: app.pool.describe(g) for gid, g in app.pool.gateways.items()}
    for token in (None, ADMIN, ""):
        r = await call_router(app, method, path, json_doc=body, token=token)
        doc = r.json()
        assert r.status == 403 and doc["error"] == "forbidden", (method, path, token, doc)
        assert "admin_token_file" in doc["detail"] and "TCPDISPATCH_ADMIN_TOKEN" in doc["detail"]
    assert {gid: app.pool.describe(g) for gid, g in app.pool.gateways.items()} == before


async def test_push_heartbeats_are_403_without_a_push_token(
    make_app: Any, call_router: Any
) -> None:
    app = make_app()
    app.configure(replace(app.config, admin_token=None, push_token=None))
    r = await call_router(
        app, "POST", "/v1/heartbeat", json_doc={"id": "g1", "state": "serving"}, token=ADMIN
    )
    assert r.status == 403 and "push_token_file" in r.json()["detail"]


@pytest.fixture
def read_app(make_app: Any, tmp_path: Path) -> Any:
    (tmp_path / "read.token").write_text(READ + "\n")
    return make_app(dispatcher={"read_token_file": "read.token"})


@pytest.mark.parametrize("path", LISTING)
async def test_read_token_guards_the_listings(read_app: Any, call_router: Any, path: str) -> None:
    for token in (None, "wrong-token", READ + "x"):
        r = await call_router(read_app, "GET", path, token=token)
        assert r.status == 401 and r.json()["error"] == "unauthorized", (path, token)
        assert r.headers["www-authenticate"].startswith("Bearer")
        assert b"127.0.0.1" not in r.body
    for token in (READ, ADMIN):  # the admin token reads too
        assert (await call_router(read_app, "GET", path, token=token)).status == 200


async def test_dispatch_and_healthz_stay_open_with_a_read_token(
    read_app: Any, call_router: Any
) -> None:
    assert (await call_router(read_app, "GET", "/v1/dispatch", b"client_id=a")).status == 200
    assert (await call_router(read_app, "GET", "/healthz")).status == 200


async def test_the_read_token_does_not_administer(read_app: Any, call_router: Any) -> None:
    r = await call_router(read_app, "POST", "/v1/gateways/g1/drain", token=READ)
    assert r.status == 401 and not read_app.pool.gateways["g1"].admin_drain


async def test_without_a_read_token_the_listings_are_open(make_app: Any, call_router: Any) -> None:
    app = make_app()
    for path in LISTING:
        assert (await call_router(app, "GET", path)).status == 200


def test_read_token_file_errors_name_the_key(make_config: Any, tmp_path: Path) -> None:
    from tcpdispatch.errors import ConfigError

    (tmp_path / "short.token").write_text("abc\n")
    with pytest.raises(ConfigError) as info:
        make_config(dispatcher={"read_token_file": "short.token"})
    assert info.value.key == "dispatcher.read_token_file"

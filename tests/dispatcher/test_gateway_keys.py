"""Gateway public keys in the dispatcher: configured per gateway, returned in every answer."""

from __future__ import annotations

from typing import Any

import pytest

from tcpdispatch.client.policy import DispatchAnswer
from tcpdispatch.errors import ConfigError
from tcpdispatch.secure.keys import StaticKey

K1, K2 = StaticKey.generate().public.text, StaticKey.generate().public.text


async def test_answer_names_each_gateways_key(make_app: Any, call_router: Any) -> None:
    app = make_app(
        [
            {"id": "g1", "address": "127.0.0.1:9001", "key": K1},
            {"id": "g2", "address": "127.0.0.1:9002", "key": K2},
            {"id": "g3", "address": "127.0.0.1:9003"},  # plain gateway: no key in its entries
        ]
    )
    keys = {"g1": K1, "g2": K2, "g3": None}
    for i in range(10):
        r = await call_router(app, "GET", "/v1/dispatch", f"client_id=c{i}".encode())
        assert r.status == 200
        doc = r.json()
        for entry in [doc["gateway"], *doc["alternates"]]:
            assert entry.get("key") == keys[entry["id"]]
        answer = DispatchAnswer.from_json(doc)  # the SDK keeps them
        assert {e.id: e.key or None for e in answer.endpoints}.items() <= keys.items()


def test_bad_key_is_a_config_error_naming_the_gateway(make_config: Any) -> None:
    with pytest.raises(ConfigError, match=r"gateways\[0\]\.key|key.*43 characters"):
        make_config([{"id": "g1", "address": "127.0.0.1:9001", "key": "short"}])


def test_sdk_refuses_an_answer_with_a_malformed_key() -> None:
    from tcpdispatch.errors import DispatchError

    doc = {"gateway": {"id": "g1", "host": "h", "port": 1, "key": "x" * 43}, "ticket": "t"}
    with pytest.raises(DispatchError, match="gateway.key"):
        DispatchAnswer.from_json(doc)

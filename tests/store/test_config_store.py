"""``[store]`` config: default memory store, Redis URL validation, unknown keys."""

from __future__ import annotations

from pathlib import Path

import pytest

from tcpdispatch.config import parse_config
from tcpdispatch.errors import ConfigError
from tcpdispatch.store import MemoryStore, make_store


def _cfg(tmp_path: Path, **store: object):  # type: ignore[no-untyped-def]
    (tmp_path / "s").write_text("0123456789abcdef0123\n")
    doc: dict[str, object] = {"dispatcher": {"secret_file": "s"}}
    if store:
        doc["store"] = store
    return parse_config(doc, file="d.toml", base=tmp_path, env={})


def test_default_is_the_memory_store(tmp_path: Path) -> None:
    cfg = _cfg(tmp_path)
    assert cfg.store.url is None and not cfg.store.shared
    store = make_store(cfg.store)
    assert isinstance(store, MemoryStore) and not store.shared and store.available


def test_redis_url_and_options(tmp_path: Path) -> None:
    cfg = _cfg(
        tmp_path, url="redis://:pw@127.0.0.1:6390/2", prefix="td:", resync_interval=0.5, timeout=0.2
    )
    s = cfg.store
    assert (s.url, s.prefix, s.resync_interval, s.timeout) == (
        "redis://:pw@127.0.0.1:6390/2",
        "td:",
        0.5,
        0.2,
    )
    assert "pw" not in repr(cfg)  # the URL may carry a password


@pytest.mark.parametrize(
    ("store", "key", "reason"),
    [
        ({"url": "http://127.0.0.1:6379"}, "store.url", "must start with redis://"),
        (
            {"url": "redis://x", "resync_interval": 0},
            "store.resync_interval",
            "must be a number >= 0.05",
        ),
        ({"url": "redis://x", "timeout": 0}, "store.timeout", "must be a number > 0.0"),
        ({"url": "redis://x", "bogus": 1}, "store.bogus", "unknown key"),
    ],
)
def test_bad_store_settings_name_the_key(
    tmp_path: Path, store: dict[str, object], key: str, reason: str
) -> None:
    with pytest.raises(ConfigError) as info:
        _cfg(tmp_path, **store)
    assert info.value.key == key and reason in info.value.reason

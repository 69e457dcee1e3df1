"""The dispatcher's descriptor budget: health connections beside client connections."""

from __future__ import annotations

import resource
from typing import Any

from tcpdispatch.dispatcher.server import _descriptor_headroom


def test_warns_when_health_connections_would_take_half_the_limit(caplog: Any) -> None:
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    with caplog.at_level("WARNING", logger="tcpdispatch.dispatcher"):
        _descriptor_headroom(10)
        assert not caplog.records
        _descriptor_headroom(soft)
    assert len(caplog.records) == 1 and "file descriptors" in caplog.records[0].getMessage()
    assert (
        resource.getrlimit(resource.RLIMIT_NOFILE)[0] >= soft
    )  # raised to the hard cap, never lowered

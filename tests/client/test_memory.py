"""A closed Client must be freed by reference counting alone.

Regression test for the soak driver's RSS growth (~13 KiB per connect/close
cycle): closed clients stayed alive in reference cycles (the cancelled
heartbeat task's traceback, the session's ``on_data`` bound method, a refused
attempt's ``_Refused`` traceback). Those objects were promoted to the oldest GC
generation while the client lived, so only the rare full collection freed them.
"""

from __future__ import annotations

import asyncio
import gc
import random
import types
import weakref
from typing import Any

from aiohttp import web
from helpers import scaled

from tcpdispatch.client import Client
from tcpdispatch.errors import ErrorCode

CYCLES = 20


def _sdk_garbage(garbage: list[Any]) -> list[str]:
    """Descriptions of cyclic garbage that belongs to the client SDK."""
    found = []
    for o in garbage:
        if type(o).__module__.startswith("tcpdispatch"):
            found.append(type(o).__qualname__)
        elif isinstance(o, asyncio.Task):
            code = getattr(o.get_coro(), "cr_code", None)
            if code is not None and "tcpdispatch/client" in code.co_filename:
                found.append(f"Task {code.co_qualname}")
        elif isinstance(o, types.FrameType) and "tcpdispatch/client" in o.f_code.co_filename:
            found.append(f"frame {o.f_code.co_name}")
    return sorted(set(found))


async def test_closed_clients_are_freed_without_the_cycle_collector(fakes: Any) -> None:
    refusing = await fakes["gateway"]("g0", refuse=ErrorCode.OVERLOADED)
    good = await fakes["gateway"]("g1")
    # The primary refuses every HELLO, so each round also leaves a refused attempt behind.
    body = {
        "gateway": {"id": "g0", "host": "127.0.0.1", "port": refusing.port},
        "ticket": "t",
        "alternates": [good.json()],
        "heartbeat_s": 10,
    }
    d = await fakes["dispatcher"](lambda n: web.json_response(body))

    refs: list[weakref.ref[Any]] = []
    gc.collect()
    gc.disable()
    try:
        for i in range(CYCLES):
            c = Client([d.url], client_id=f"m{i}", rng=random.Random(i))
            await c.connect(timeout=scaled(5))
            assert c.gateway == "g1"
            await c.send(b"x")
            async with asyncio.timeout(scaled(3)):
                assert await c.receive() == b"x"
            session = c._session
            assert session is not None
            refs += [weakref.ref(c), weakref.ref(session), weakref.ref(session._proto)]
            await c.close()
            del c, session
        await asyncio.sleep(0.05)  # let cancelled tasks and closing transports finish
        alive = sum(r() is not None for r in refs)
        gc.set_debug(gc.DEBUG_SAVEALL)
        gc.collect()
        leaked = _sdk_garbage(gc.garbage)
    finally:
        gc.set_debug(0)
        gc.garbage.clear()
        gc.enable()
    assert len(refusing.hellos) == CYCLES  # the refused path was exercised every time
    assert alive == 0, f"{alive} of {len(refs)} clients/sessions/protocols outlived close()"
    assert leaked == [], f"client objects left in reference cycles: {leaked}"

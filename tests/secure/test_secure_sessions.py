"""Encrypted sessions over real loopback sockets: an in-process gateway and the SDK client."""

from __future__ import annotations

import asyncio
import random
from collections.abc import AsyncIterator, Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from helpers import async_wait_until, free_port, scaled

from tcpdispatch.client.client import Client
from tcpdispatch.client.policy import BackoffConfig
from tcpdispatch.errors import DispatchError
from tcpdispatch.gateway.config import GatewayConfig
from tcpdispatch.gateway.server import Gateway
from tcpdispatch.gateway.shm import NodeCounters
from tcpdispatch.secure.keys import StaticKey, write_key_file
from tcpdispatch.secure.resumption import ResumptionGrant

FAST = BackoffConfig(initial=0.05, multiplier=1.6, jitter=0.2, max=0.3, reset_after=60)


def key_file(tmp_path: Path, *keys: StaticKey) -> Path:
    path = tmp_path / f"gw-{random.randrange(1 << 30)}.key"
    write_key_file(path, keys[0])
    if len(keys) > 1:
        path.write_text("".join(k.private_text + "\n" for k in keys))
    return path


@pytest.fixture
async def gateways() -> AsyncIterator[Callable[..., Any]]:
    started: list[Gateway] = []

    async def start(**cfg: Any) -> Gateway:
        base = GatewayConfig(id="g1", listen=("127.0.0.1", free_port()), status=("127.0.0.1", 1))
        gw = Gateway(replace(base, **cfg), NodeCounters(1))
        await gw.start()
        started.append(gw)
        return gw

    yield start
    for gw in started:
        gw.stop()


def client(gw: Gateway, key: StaticKey | None = None, **kw: Any) -> Client:
    prefix = f"{key.public.text}@" if key is not None else ""
    kw.setdefault("encryption", "required" if key is not None else "off")
    return Client(
        fallback=[f"{prefix}127.0.0.1:{gw.cfg.listen[1]}"],
        backoff=FAST,
        report_failures=False,
        rng=random.Random(7),
        stagger=0.05,
        **kw,
    )


async def echo(c: Client, payload: bytes) -> None:
    await c.send(payload)
    assert await asyncio.wait_for(c.receive(), scaled(5)) == payload


async def test_pinned_key_session_is_encrypted_and_echoes(tmp_path: Path, gateways: Any) -> None:
    key = StaticKey.generate()
    gw = await gateways(key_file=str(key_file(tmp_path, key)))
    async with client(gw, key) as c:
        assert c._session is not None and c._session.encrypted
        await echo(c, b"x" * 65_000)  # a maximum-size frame
        await echo(c, b"hi")
    assert gw.handshakes_full == 1


async def test_wrong_pinned_key_is_refused_and_says_why(tmp_path: Path, gateways: Any) -> None:
    gw = await gateways(key_file=str(key_file(tmp_path, StaticKey.generate())))
    c = client(gw, StaticKey.generate())
    with pytest.raises(DispatchError, match="does not hold the key"):
        await c.connect(timeout=scaled(1.0))
    await c.close()
    assert c.stats.attempt_errors.get("unknown_server_key", 0) >= 1
    assert gw.counters.snapshot().rejected.get("unknown_server_key", 0) >= 1


async def test_required_encryption_refuses_a_gateway_with_no_known_key(gateways: Any) -> None:
    gw = await gateways()
    c = client(gw, None, encryption="required")
    with pytest.raises(DispatchError, match="refusing to connect in clear"):
        await c.connect(timeout=scaled(0.5))
    await c.close()
    assert not gw.conns


async def _relay(port: int, captured: bytearray, answer: Callable[[bytes], bytes] | None) -> Any:
    """A man in the middle on loopback: relays to ``port`` recording every byte, or (with
    ``answer``) replies to the client's first message itself."""

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if answer is not None:
            first = await reader.read(65536)
            captured.extend(first)
            writer.write(answer(first))
            await writer.drain()
            await reader.read(65536)
            writer.close()
            return
        up_r, up_w = await asyncio.open_connection("127.0.0.1", port)

        async def pump(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
            while data := await src.read(65536):
                captured.extend(data)
                dst.write(data)
            dst.close()

        await asyncio.gather(pump(reader, up_w), pump(up_r, writer), return_exceptions=True)

    return await asyncio.start_server(handle, "127.0.0.1", 0)


async def test_eavesdropper_sees_neither_ticket_nor_client_id_nor_data(
    tmp_path: Path, gateways: Any
) -> None:
    key = StaticKey.generate()
    gw = await gateways(key_file=str(key_file(tmp_path, key)))
    captured = bytearray()
    relay = await _relay(gw.cfg.listen[1], captured, None)
    port = relay.sockets[0].getsockname()[1]
    async with Client(
        fallback=[f"{key.public.text}@127.0.0.1:{port}"],
        client_id="alice-secret-id",
        encryption="required",
        report_failures=False,
    ) as c:
        await echo(c, b"top-secret-payload")
    relay.close()
    assert captured and b"alice-secret-id" not in captured and b"top-secret" not in captured


async def test_man_in_the_middle_presenting_another_key_is_refused(
    tmp_path: Path, gateways: Any
) -> None:
    from tcpdispatch.secure.handshake import ClientHandshake, ServerHandshake, ServerSecurity

    key, impostor = StaticKey.generate(), StaticKey.generate()
    gw = await gateways(key_file=str(key_file(tmp_path, key)))
    own = ServerSecurity((impostor,))

    def answer(first: bytes) -> bytes:
        # It cannot decrypt the client's message (sent to ``key``), so it answers with a
        # well-formed handshake of its own under ``impostor``.
        done = ServerHandshake(own).receive(ClientHandshake(impostor.public, b"").first_message())
        assert done is not None
        return done.reply

    captured = bytearray()
    mitm = await _relay(gw.cfg.listen[1], captured, answer)
    port = mitm.sockets[0].getsockname()[1]
    c = Client(
        fallback=[f"{key.public.text}@127.0.0.1:{port}"],
        encryption="required",
        report_failures=False,
        backoff=FAST,
    )
    with pytest.raises(DispatchError, match="did not prove it holds the private key"):
        await c.connect(timeout=scaled(1.0))
    await c.close()
    mitm.close()
    assert c.stats.attempt_errors.get("handshake_failed", 0) >= 1 and not c.connected


async def test_plain_and_encrypted_clients_side_by_side_during_migration(
    tmp_path: Path, gateways: Any
) -> None:
    key = StaticKey.generate()
    gw = await gateways(key_file=str(key_file(tmp_path, key)), allow_plain=True)
    async with client(gw, key) as enc, client(gw, None) as plain:
        assert enc._session is not None and enc._session.encrypted
        assert plain._session is not None and not plain._session.encrypted
        await echo(enc, b"e")
        await echo(plain, b"p")
        gw.broadcast(b"to-all")  # one frame, encrypted per connection where needed
        assert await asyncio.wait_for(enc.receive(), scaled(5)) == b"to-all"
        assert await asyncio.wait_for(plain.receive(), scaled(5)) == b"to-all"
    assert gw.handshakes_full == 1 and gw.handshakes_plain == 1
    assert gw.counters.snapshot().handshakes == {"plain": 1, "full": 1}
    from prometheus_client import generate_latest

    from tcpdispatch.gateway.status import StatusService

    status = StatusService(gw.cfg, gw.counters, on_drain=lambda: None, pids=list)
    text = generate_latest(status._registry).decode()  # type: ignore[arg-type]
    assert 'tcpdispatch_gateway_handshakes_total{gateway="g1",kind="full"} 1.0' in text


async def test_plain_client_refused_once_migration_is_over(tmp_path: Path, gateways: Any) -> None:
    gw = await gateways(key_file=str(key_file(tmp_path, StaticKey.generate())))
    c = client(gw, None)
    with pytest.raises(DispatchError, match="accepts encrypted connections only"):
        await c.connect(timeout=scaled(0.5))
    await c.close()


async def _drop_sessions(gw: Gateway) -> None:
    for p in list(gw.conns.values()):
        p._transport.abort()


async def test_reconnect_resumes_and_a_forged_grant_falls_back_to_a_full_handshake(
    tmp_path: Path, gateways: Any
) -> None:
    key = StaticKey.generate()
    gw = await gateways(key_file=str(key_file(tmp_path, key)))
    async with client(gw, key) as c:
        assert c.grants is not None and len(c.grants) == 1
        await _drop_sessions(gw)
        await async_wait_until(lambda: gw.handshakes_resumed == 1 and c.connected, timeout=5)
        assert c._session is not None and c._session.resumed
        await echo(c, b"after resume")
        # A grant that does not verify (here: a wrong PSK) is refused and the same
        # attempt falls back to a full handshake.
        grant = c.grants.take(key.public, 0.0)
        assert grant is not None
        c.grants.put(ResumptionGrant(grant.server_key, grant.id, bytes(32), grant.expires_at))
        await _drop_sessions(gw)
        await async_wait_until(lambda: gw.handshakes_full == 2 and c.connected, timeout=5)
        assert c._session is not None and not c._session.resumed
        assert gw.counters.snapshot().rejected.get("resume_rejected") == 1
        assert gw.counters.snapshot().handshakes == {"full": 2, "resumed": 1}
        await echo(c, b"after fallback")


async def test_key_reload_keeps_sessions_and_rotates(tmp_path: Path, gateways: Any) -> None:
    old, new = StaticKey.generate(), StaticKey.generate()
    path = key_file(tmp_path, old)
    gw = await gateways(key_file=str(path))
    async with client(gw, old) as held:
        path.write_text(f"{new.private_text}\n{old.private_text}\n")  # rotation: new first
        assert gw.reload_keys()
        async with client(gw, new) as fresh, client(gw, old) as pinned_old:
            await echo(fresh, b"new")
            await echo(pinned_old, b"old still accepted")
        path.write_text(f"{new.private_text}\n")  # the old key retired
        assert gw.reload_keys()
        late = client(gw, old, resumption=False)
        with pytest.raises(DispatchError, match="does not hold the key"):
            await late.connect(timeout=scaled(0.5))
        await late.close()
        path.write_text("not a key\n")
        assert not gw.reload_keys()  # a bad file keeps the current keys
        await echo(held, b"the held session never noticed")
    assert gw.security is not None and gw.security.current.id == new.id


def test_bad_client_settings_are_refused_at_construction(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="ca_file"):
        Client(["https://127.0.0.1:1"], ca_file=str(tmp_path / "missing.pem"))
    with pytest.raises(ValueError, match="pinned_keys"):
        Client(fallback=["127.0.0.1:1"], pinned_keys={"g1": "short"})
    with pytest.raises(ValueError, match="encryption"):
        Client(fallback=["127.0.0.1:1"], encryption="maybe")
    with pytest.raises(ValueError, match="not a gateway public key"):
        Client(fallback=["nokey@127.0.0.1:1"])

"""Harness for the fault-injection tests: a small real system and a fleet of echoing SDK clients.

* :class:`System` starts ``tcpdispatch gateway`` and ``tcpdispatch dispatcher``
  processes with the harness (all at once, then waits for every READY line),
  optionally a gateway inside a network namespace.
* :class:`Fleet` holds N :class:`tcpdispatch.client.Client` objects. Each client
  sends numbered messages ``<client id>:<seq>`` to an echo gateway and checks that
  every number comes back to it, and only to it. Frames written into a socket
  whose peer died are gone with the socket (the SDK cannot know whether the
  gateway read them), so the fleet acts like an application with at-least-once
  delivery: a message not yet echoed is sent again once its client is on a new
  session (or after ``rto`` seconds without an echo). ``resent`` counts those.
* Every process runs with ``--log-level debug``; at teardown the logs of every
  process are searched for the ticket secret and the admin token.
"""

from __future__ import annotations

import asyncio
import os
import random
import secrets
import subprocess
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from harness import (
    GatewayHandle,
    Proc,
    RealDispatcher,
    launch_dispatcher,
    scaled,
    start_gateway,
    wait_until,
    write_dispatcher_config,
)
from helpers import REQUIRE_INTEGRATION

from tcpdispatch.client import Client, ClientEvent, EventKind

GATEWAY_HEARTBEAT = (
    "0.5"  # clients ping every 0.5 s and give up after MISSED_PONGS silent intervals
)
MISSED_PONGS = 3
SECTIONS = {
    "health": {"interval": 0.2, "timeout": 0.4, "rise": 2, "fall": 2},
    # Fast client backoff hints so a test does not wait out production's 1 s x 1.6^n.
    "retry": {"initial_s": 0.2, "multiplier": 1.6, "jitter": 0.2, "max_s": 2.0},
    "balancing": {"slow_start_s": 0},
}


Gw = GatewayHandle  # one gateway process; ``check`` is what the dispatcher probes
Disp = RealDispatcher  # one dispatcher process, restartable on the same port and config


class System:
    """Gateways and dispatchers of one test; processes die with the ``procs`` fixture."""

    def __init__(self, procs: Callable[..., Proc], workdir: Path) -> None:
        self._procs = procs
        self.workdir = workdir
        self.secret = secrets.token_urlsafe(24)
        self.admin_token = secrets.token_urlsafe(18)
        self.secret_file = workdir / "ticket.secret"
        self.secret_file.write_text(self.secret + "\n")
        self.token_file = workdir / "admin.token"
        self.token_file.write_text(self.admin_token + "\n")
        self.gateways: dict[str, Gw] = {}
        self.dispatchers: list[Disp] = []
        self.all_procs: list[Proc] = []

    def _start(self, args: list[str], name: str) -> Proc:
        p = self._procs(args, name=name)
        self.all_procs.append(p)
        return p

    def gateway(
        self,
        gid: str,
        *extra: str,
        host: str = "127.0.0.1",
        netns: str | None = None,
        tickets: bool = True,
    ) -> Gw:
        """Start a gateway (echo handler, fast heartbeats); does not wait for READY."""
        gw = start_gateway(
            self._start,
            gid,
            "--heartbeat",
            GATEWAY_HEARTBEAT,
            "--idle-timeout",
            "5",
            *extra,
            *([] if tickets else ["--no-ticket"]),
            wait=False,
            host=host,
            log_level="debug",
            secret_file=self.secret_file,
            prefix=("ip", "netns", "exec", netns) if netns else (),
            port_host="127.0.0.1",
        )
        self.gateways[gid] = gw
        return gw

    def dispatcher(
        self,
        gateways: list[Gw],
        *,
        dispatcher: dict[str, Any] | None = None,
        sections: dict[str, dict[str, Any]] | None = None,
    ) -> Disp:
        """Start a dispatcher over ``gateways`` (each checked at ``gw.check``); no waiting.
        ``dispatcher``: more [dispatcher] keys; ``sections`` replace or add to :data:`SECTIONS`."""
        port, config = write_dispatcher_config(
            self.workdir,
            [g.entry(weight=False) for g in gateways],
            secret_file=self.secret_file,
            admin_token_file=self.token_file,
            dispatcher=dispatcher,
            sections={**SECTIONS, **(sections or {})},
        )
        d = launch_dispatcher(
            self._start, port, config, log_level="debug", name=f"dispatcher-{port}"
        )
        self.dispatchers.append(d)
        return d

    def wait_ready(self, timeout: float = 30.0) -> None:
        """Every started process printed READY, and every dispatcher has all its gateways up."""

        def ready() -> bool:
            for p in self.all_procs:
                if p.popen.poll() is not None and "READY" not in p.output():
                    raise AssertionError(f"{p.args[-1]} exited early:\n{p.output()[-3000:]}")
            return all("READY" in p.output() for p in self.all_procs if p.popen.poll() is None)

        wait_until(ready, timeout, 0.05, what="READY from every process")
        for d in self.dispatchers:
            wait_until(
                lambda d=d: all(s == "up" for s in d.states().values()),
                timeout,
                0.05,
                what="every gateway up at the dispatcher",
            )

    def assert_no_secrets_logged(self) -> None:
        for p in self.all_procs:
            out = p.output()
            for name, value in (("ticket secret", self.secret), ("admin token", self.admin_token)):
                assert value not in out, f"{name} appears in the log of {' '.join(p.args[:8])}"


@pytest.fixture
def system(procs: Callable[..., Proc], tmp_path: Path) -> Iterator[System]:
    s = System(procs, tmp_path)
    yield s
    s.assert_no_secrets_logged()


# ---------------------------------------------------------------------------- the client fleet


@dataclass
class Member:
    """One SDK client and its message bookkeeping."""

    client: Client
    sent: dict[int, tuple[str | None, float]] = field(
        default_factory=dict
    )  # seq -> (session, time)
    acked: set[int] = field(default_factory=set)
    duplicates: int = 0
    foreign: int = 0  # payloads that were not ours: must stay 0
    resent: int = 0
    next_seq: int = 0
    events: list[ClientEvent] = field(default_factory=list)

    @property
    def id(self) -> str:
        return self.client.client_id

    def connected_sources(self) -> list[str]:
        return [e.source for e in self.events if e.kind is EventKind.CONNECTED]


class Fleet:
    """N echoing clients sharing one HTTP session; see the module docstring."""

    def __init__(
        self,
        n: int,
        dispatchers: list[str],
        *,
        fallback: list[str] | None = None,
        cache_dir: Path | None = None,
        prefix: str = "c",
        rto: float = 4.0,
        seed: int = 1,
        **client_kw: Any,
    ) -> None:
        self.n = n
        self.dispatchers = dispatchers
        self.fallback = fallback or []
        self.cache_dir = cache_dir
        self.prefix = prefix
        self.rto = rto
        self.rng = random.Random(seed)
        self.client_kw = {
            "missed_pongs": MISSED_PONGS,
            "dispatch_timeout": 1.0,
            "handshake_timeout": 2.0,
            **client_kw,
        }
        self.members: list[Member] = []
        self._tasks: list[asyncio.Task[None]] = []
        self._http: aiohttp.ClientSession | None = None

    async def start(self, timeout: float = 20.0, concurrency: int = 20) -> None:
        """Connect every client (at most ``concurrency`` handshakes at once)."""
        self._http = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=concurrency))
        sem = asyncio.Semaphore(concurrency)

        async def one(i: int) -> None:
            cid = f"{self.prefix}{i}"
            cache = str(self.cache_dir / f"{cid}.json") if self.cache_dir else None
            member = Member(
                Client(
                    self.dispatchers,
                    self.fallback,
                    client_id=cid,
                    cache_path=cache,
                    http=self._http,
                    rng=random.Random(self.rng.random()),
                    **self.client_kw,
                )
            )
            member.client.add_listener(member.events.append)
            self.members.append(member)
            async with sem:
                await member.client.connect(timeout=scaled(timeout))
            self._tasks.append(asyncio.get_running_loop().create_task(self._receive(member)))

        await asyncio.gather(*(one(i) for i in range(self.n)))

    async def _receive(self, m: Member) -> None:
        async for payload in m.client:
            cid, _, seq = payload.decode().rpartition(":")
            if cid != m.id:
                m.foreign += 1
            elif int(seq) in m.acked:
                m.duplicates += 1
            else:
                m.acked.add(int(seq))

    async def send(self, k: int) -> None:
        """Each client sends ``k`` new numbered messages (queued by the SDK while reconnecting)."""
        for m in self.members:
            for _ in range(k):
                seq = m.next_seq
                m.next_seq += 1
                m.sent[seq] = (m.client.session_id, time.monotonic())
                await m.client.send(f"{m.id}:{seq}".encode())

    def unacked(self) -> int:
        return sum(len(m.sent) - len(m.acked) for m in self.members)

    async def settle(self, timeout: float = 20.0) -> None:
        """Wait until every client is connected and every message came back (resending as
        needed)."""
        deadline = time.monotonic() + scaled(timeout)
        while True:
            now = time.monotonic()
            for m in self.members:
                cur = m.client.session_id
                if cur is None:
                    continue
                for seq, (on, at) in list(m.sent.items()):
                    if seq in m.acked:
                        continue
                    if on is None:  # queued while disconnected: the SDK flushes it onto a session
                        if m.client.pending == 0:
                            m.sent[seq] = (cur, at)
                        continue
                    if on != cur or now - at > self.rto:
                        m.sent[seq] = (cur, now)
                        m.resent += 1
                        await m.client.send(f"{m.id}:{seq}".encode())
            if all(m.client.connected for m in self.members) and self.unacked() == 0:
                break
            if now > deadline:
                lost = {
                    m.id: sorted(set(m.sent) - m.acked)[:5]
                    for m in self.members
                    if set(m.sent) - m.acked
                }
                down = [m.id for m in self.members if not m.client.connected]
                raise AssertionError(
                    f"after {timeout}s: {len(down)} clients disconnected {down[:5]}, "
                    f"{self.unacked()} messages unanswered {dict(list(lost.items())[:5])}"
                )
            await asyncio.sleep(0.05)
        assert sum(m.foreign for m in self.members) == 0, (
            "a client received another client's message"
        )

    async def exchange(self, k: int = 3, timeout: float = 20.0) -> None:
        await self.send(k)
        await self.settle(timeout)

    def by_gateway(self) -> Counter[str | None]:
        return Counter(m.client.gateway for m in self.members)

    def on(self, gid: str) -> list[Member]:
        return [m for m in self.members if m.client.gateway == gid]

    def reconnects(self) -> int:
        return sum(m.client.stats.reconnects for m in self.members)

    def resent(self) -> int:
        return sum(m.resent for m in self.members)

    async def close(self) -> None:
        await asyncio.gather(*(m.client.close() for m in self.members), return_exceptions=True)
        for t in self._tasks:
            t.cancel()
        if self._http is not None:
            await self._http.close()


@pytest.fixture
async def fleets() -> Any:
    """``fleets(n, dispatchers, ...)`` -> started-later :class:`Fleet`; all closed at teardown."""
    made: list[Fleet] = []

    def make(*args: Any, **kw: Any) -> Fleet:
        f = Fleet(*args, **kw)
        made.append(f)
        return f

    yield make
    for f in made:
        await f.close()


# ---------------------------------------------------------------------------- network namespace


def _run(*cmd: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(list(cmd), capture_output=True, text=True, timeout=10, check=False)


@dataclass
class NetNS:
    """A namespace joined to the root namespace by a veth pair (host side .1, namespace side .2)."""

    name: str
    host_if: str
    host_ip: str
    ns_ip: str

    def iptables(self, *args: str) -> None:
        r = _run("ip", "netns", "exec", self.name, "iptables", *args)
        assert r.returncode == 0, f"iptables {' '.join(args)}: {r.stderr}"

    def black_hole(self) -> None:
        """Drop every packet in and out of the namespace: no RST, no ICMP, just silence."""
        self.iptables("-A", "INPUT", "-j", "DROP")
        self.iptables("-A", "OUTPUT", "-j", "DROP")

    def restore(self) -> None:
        self.iptables("-F")


def _netns_unavailable(reason: str) -> None:
    pytest.skip(f"network namespaces unavailable here: {reason}")


@pytest.fixture
def netns() -> Iterator[NetNS]:
    """A fresh namespace + veth pair; skipped without CAP_NET_ADMIN, required when the privilege
    exists and TCPDISPATCH_REQUIRE_INTEGRATION=1. Everything is removed at teardown, even on
    failure."""
    import shutil

    if os.geteuid() != 0 or shutil.which("ip") is None:
        _netns_unavailable("needs root and iproute2 (`ip netns add`)")
    tag = secrets.token_hex(3)
    name, host_if, ns_if = f"tdf{tag}", f"tdh{tag}", f"tdn{tag}"
    r = _run("ip", "netns", "add", name)
    if r.returncode != 0:
        _netns_unavailable(f"`ip netns add` failed: {r.stderr.strip()}")
    created_link = False
    try:
        if shutil.which("iptables") is None:
            msg = "iptables is not installed (Debian package iptables)"
            pytest.fail(msg) if REQUIRE_INTEGRATION else pytest.skip(msg)
        used = _run("ip", "-4", "-o", "addr").stdout
        octet = next(o for o in random.sample(range(1, 255), 254) if f"10.213.{o}." not in used)
        host_ip, ns_ip = f"10.213.{octet}.1", f"10.213.{octet}.2"
        steps = [
            ("ip", "link", "add", host_if, "type", "veth", "peer", "name", ns_if),
            ("ip", "link", "set", ns_if, "netns", name),
            ("ip", "addr", "add", f"{host_ip}/30", "dev", host_if),
            ("ip", "link", "set", host_if, "up"),
            ("ip", "netns", "exec", name, "ip", "addr", "add", f"{ns_ip}/30", "dev", ns_if),
            ("ip", "netns", "exec", name, "ip", "link", "set", ns_if, "up"),
            ("ip", "netns", "exec", name, "ip", "link", "set", "lo", "up"),
        ]
        for step in steps:
            res = _run(*step)
            if res.returncode != 0:
                msg = f"{' '.join(step)} failed: {res.stderr.strip()}"
                pytest.fail(msg) if REQUIRE_INTEGRATION else pytest.skip(msg)
            created_link = True
        yield NetNS(name, host_if, host_ip, ns_ip)
    finally:
        # Kill what runs inside (only processes this test started there), then remove link and
        # namespace.
        for pid in _run("ip", "netns", "pids", name).stdout.split():
            try:
                os.kill(int(pid), 9)
            except (ProcessLookupError, ValueError):
                pass
        if created_link:
            _run("ip", "link", "del", host_if)
        _run("ip", "netns", "del", name)

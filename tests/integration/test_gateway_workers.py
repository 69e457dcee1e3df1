"""``--workers 2``: node totals, node-wide capacity, per-IP limit and ticket replay guard,
drain of every worker."""

from __future__ import annotations

import asyncio
import os
import signal
import time
from pathlib import Path
from typing import Any

import psutil
import pytest
from harness import ProbeClient, start_gateway
from helpers import wait_until

from tcpdispatch.errors import ErrorCode
from tcpdispatch.protocol import Error, Reconnect, Welcome
from tcpdispatch.tickets import TicketSigner

pytestmark = pytest.mark.integration


async def test_two_workers_act_as_one_node(procs: Any, admin_token_file: Path) -> None:
    gw = start_gateway(
        procs,
        "g1",
        "--workers",
        "2",
        "--capacity",
        "24",
        "--per-ip-limit",
        "12",
        "--drain-window",
        "1.5",
        agent=True,
        admin_token_file=admin_token_file,
    )
    clients: list[ProbeClient] = []
    for src in ("127.0.0.1", "127.0.0.2"):
        for i in range(12):
            c = await gw.client(src)
            assert isinstance(await c.hello(client_id=f"{src}-{i}"), Welcome)
            clients.append(c)
    st = gw.status()
    assert st["workers"] == 2 and st["connections"] == 24 and st["accepted"] == 24
    # SO_REUSEPORT spread them: both workers hold some (24 coin flips all alike: p = 1.2e-7)
    assert len(st["worker_connections"]) == 2 and all(n > 0 for n in st["worker_connections"])
    assert sum(st["worker_connections"]) == 24
    assert 'tcpdispatch_gateway_connections{gateway="g1"} 24.0' in gw.metrics()
    assert gw.agent() == "up 0% maxconn:0\n"
    # node-wide limits, whichever worker the kernel picks
    over = await gw.client("127.0.0.1")
    answer = await over.recv()
    assert isinstance(answer, Error) and answer.code in (ErrorCode.IP_LIMIT, ErrorCode.OVERLOADED)
    for _ in range(3):
        full = await gw.client("127.0.0.3")
        answer = await full.recv()
        assert isinstance(answer, Error) and answer.code == ErrorCode.OVERLOADED
    await clients.pop().close()
    wait_until(lambda: gw.status()["connections"] == 23, what="23 connections")
    assert gw.agent() == "up 4% maxconn:1\n"
    # drain: the supervisor tells every worker; all clients get RECONNECT; every process exits
    assert gw.drain() == 202
    assert gw.status()["state"] == "draining"
    for c in clients:
        assert isinstance(await c.recv(timeout=5), Reconnect)
        await c.close()
    t0 = time.monotonic()
    assert gw.proc.wait(timeout=10) == 0
    assert time.monotonic() - t0 < 5


async def test_a_ticket_opens_one_session_per_node_not_per_worker(
    procs: Any, secret_file: Path
) -> None:
    """Two connections with one ticket, landing on different workers: one WELCOME, one REPLAYED."""
    gw = start_gateway(procs, "g1", "--workers", "2", secret_file=secret_file)
    signer = TicketSigner(secret_file.read_text().strip().encode())
    for attempt in range(20):  # the kernel picks the worker; 2**-20 to miss the spread every time
        pair: list[ProbeClient] = []
        where: list[int] = []
        for n, src in enumerate(("127.0.0.2", "127.0.0.3"), 1):
            before = gw.status()["worker_connections"]
            pair.append(await gw.client(src))
            wait_until(lambda n=n: gw.status()["connections"] == n, what=f"{n} connections")  # type: ignore[misc]
            after = gw.status()["worker_connections"]
            where += [w for w in range(2) if after[w] > before[w]]
        if where[0] != where[1]:
            break
        for c in pair:
            await c.close()
        wait_until(lambda: gw.status()["connections"] == 0, what="connections closed")
    else:
        raise AssertionError("20 connection pairs all landed on one worker")
    ticket = signer.issue(["g1"], "alice")
    answers = await asyncio.gather(*(c.hello(ticket, "alice") for c in pair))
    welcomes = [a for a in answers if isinstance(a, Welcome)]
    errors = [a for a in answers if isinstance(a, Error)]
    assert len(welcomes) == 1 and len(errors) == 1, answers
    assert errors[0].code == ErrorCode.TICKET_REPLAYED
    assert gw.status()["rejected"] == {"ticket_replayed": 1}
    # a fresh ticket still opens a session on either worker
    again = await gw.client("127.0.0.4")
    assert isinstance(await again.hello(signer.issue(["g1"], "alice"), "alice"), Welcome)


async def test_a_killed_worker_is_restarted_and_status_tells_the_truth(procs: Any) -> None:
    """SIGKILL one of two workers: /status reports 1 live worker, then the supervisor restarts it
    (logged once with the signal, counted), and the node serves on both workers again."""
    gw = start_gateway(procs, "g1", "--workers", "2", "--capacity", "20", "--drain-window", "1")
    st = gw.status()
    assert st["workers"] == 2 and st["worker_restarts"] == 0
    pids = [p.pid for p in psutil.Process(gw.proc.pid).children()]
    assert len(pids) == 2, pids
    victim = pids[0]
    os.kill(victim, signal.SIGKILL)
    # the death is seen (and reported) before the restart (backoff 0.5 s)
    wait_until(lambda: gw.status()["workers"] == 1, timeout=2, interval=0.02, what="1 live worker")
    st = wait_until(
        lambda: (s := gw.status())["workers"] == 2 and s, timeout=10, what="worker restarted"
    )
    assert st["worker_restarts"] == 1 and st["workers_configured"] == 2
    now = [p.pid for p in psutil.Process(gw.proc.pid).children()]
    assert victim not in now and len(now) == 2
    metrics = gw.metrics()
    assert 'tcpdispatch_gateway_worker_restarts_total{gateway="g1"} 1.0' in metrics
    assert 'tcpdispatch_gateway_workers{gateway="g1"} 2.0' in metrics
    log = gw.proc.output()
    assert log.count("killed by signal SIGKILL") == 1 and log.count(" restarted (pid ") == 1, log
    slot = int(log.split("killed by signal SIGKILL")[0].rsplit("worker ", 1)[1].split()[0])
    # "live" means listening: the restarted worker takes its share of new connections at once
    clients = [await gw.client() for _ in range(20)]
    for i, c in enumerate(clients):
        assert isinstance(await c.hello(client_id=f"c{i}"), Welcome)

    def all_counted() -> list[int] | None:
        per = gw.status()["worker_connections"]
        return per if sum(per) == 20 else None

    per_worker = wait_until(all_counted, what="20 connections")
    assert per_worker[slot] > 0, per_worker  # 20 coin flips all alike: p = 2e-6
    # the restarted worker holds no copy of the supervisor's sockets: SIGTERM still ends the node
    gw.proc.signal(signal.SIGTERM)
    for c in clients:
        assert isinstance(await c.recv(timeout=5), Reconnect)
        await c.close()
    assert gw.proc.wait(timeout=10) == 0

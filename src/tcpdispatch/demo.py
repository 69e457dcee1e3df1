"""``tcpdispatch demo``: the whole system on loopback, acting out a short script.

One dispatcher, three gateways weighted 1:2:3 and a few hundred clients run
for about a minute, with a live table of connections per gateway. Then:

1. a gateway is killed (SIGKILL): its clients fail over to the others;
2. a gateway is drained: it tells its clients to reconnect, spread over its
   drain window, and exits;
3. a new gateway is added through the admin API: new clients go there;
4. the dispatcher rebalances the clients already held: the new gateway fills to its
   weight share, paced, while every message keeps being echoed (docs/rebalancing.md).

After each step every client sends one message and must get its echo back, so
"nothing lost" is checked, not assumed. Narration lines are printed once, above
the live table (rich prints them there while the table redraws); the table's
last frame is drawn before the teardown, so it shows the final state. With
``--json`` the last line is a JSON summary (``DEMO SUMMARY {...}``). The exit
code is 0 only when every check passed; otherwise the work directory with every
process's log is kept and its path printed. The dispatcher's live dashboard
(``/ui/``, docs/dashboard.md) is printed when it is up; with ``--linger`` the whole
system keeps running after the script, clients included, until Ctrl-C.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import signal
import sys
import time
from collections import Counter
from dataclasses import asdict, dataclass, field
from typing import Any

import aiohttp
from rich.console import Console, Group
from rich.live import Live
from rich.table import Table
from rich.text import Text

from tcpdispatch.aio import run as aio_run
from tcpdispatch.client import Client
from tcpdispatch.client.policy import BackoffConfig
from tcpdispatch.cluster import Cluster


@dataclass
class StepResult:
    name: str
    ok: bool
    seconds: float
    detail: str


@dataclass
class Summary:
    clients: int = 0
    connected: int = 0
    messages_sent: int = 0
    messages_echoed: int = 0
    steps: list[StepResult] = field(default_factory=list)
    final_shares: dict[str, int] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return (
            self.connected == self.clients
            and self.messages_echoed == self.messages_sent
            and len(self.steps) == 6
            and all(s.ok for s in self.steps)
        )


class DemoClient:
    """One SDK client plus the bookkeeping to prove its messages come back."""

    def __init__(self, client: Client) -> None:
        self.client = client
        self.echoed: set[str] = set()
        self.sent: list[str] = []
        self.reader: asyncio.Task[None] | None = None

    async def read_loop(self) -> None:
        async for message in self.client:
            self.echoed.add(message.decode(errors="replace"))

    async def check(self, tag: str) -> None:
        token = f"{self.client.client_id}:{tag}"
        self.sent.append(token)
        await self.client.send(token.encode())


class Demo:
    def __init__(
        self, clients: int, console: Console, live: bool, pace: float = 3.0, linger: bool = False
    ) -> None:
        self.n_clients = clients
        self.pace = pace
        self.linger = linger
        self.console = console
        self.live_enabled = live
        self.cluster = Cluster.temporary()
        self.clients: list[DemoClient] = []
        self.summary = Summary()
        self.log: list[str] = []
        self.statuses: dict[str, dict[str, Any] | None] = {}
        self.pool: dict[str, dict[str, Any]] = {}
        self.rebalance: dict[str, Any] = {}
        self.http: aiohttp.ClientSession | None = None
        self.client_http: aiohttp.ClientSession | None = None

    # -- narration and the live table ------------------------------------------
    def say(self, text: str) -> None:
        """Narrate once: while the live table runs, rich prints the line above it."""
        line = f"[{time.strftime('%H:%M:%S')}] {text}"
        self.log.append(line)
        self.console.print(line, highlight=False)

    def render(self) -> Group:
        table = Table(title="tcpdispatch demo: connections per gateway", expand=False)
        for col in ("gateway", "address", "weight", "state", "connections", "target", ""):
            table.add_column(col)
        targets = {g["id"]: g for g in self.rebalance.get("gateways", [])}
        total = sum((s or {}).get("connections", 0) for s in self.statuses.values()) or 1
        for gid, gw in self.cluster.gateways.items():
            st = self.statuses.get(gid)
            entry = self.pool.get(gid, {})
            if st is None:
                code = gw.proc.popen.poll()
                state = (
                    ("[red]killed[/red]" if code and code < 0 else "[dim]exited[/dim]")
                    if code is not None
                    else "[yellow]no answer[/yellow]"
                )
                conns = 0
            else:
                state = (
                    "[yellow]draining[/yellow]"
                    if st.get("state") == "draining"
                    else "[green]serving[/green]"
                )
                conns = int(st.get("connections", 0))
            if entry and not entry.get("healthy", True) and gw.proc.alive:
                state += " (down)"
            bar = "█" * round(40 * conns / total)
            rb = targets.get(gid, {})
            target = (
                f"{rb['target']:.0f}" + (f" ({rb['role']})" if rb.get("role", "-") != "-" else "")
                if rb.get("target")
                else "-"
            )
            table.add_row(
                gid, gw.address, str(entry.get("weight", gw.weight)), state, str(conns), target, bar
            )
        connected = sum(1 for c in self.clients if c.client.connected)
        rb_state = ""
        if self.rebalance:
            r = self.rebalance
            rb_state = (
                f"   rebalance: {'round ' + str(r['round']['id']) if r.get('round') else 'idle'}, "
                f"{r.get('moves_requested', 0)} moves, breaker {r['breaker']['state']}"
            )
        footer = Text(f"clients connected: {connected}/{len(self.clients)}{rb_state}", style="bold")
        return Group(table, footer)  # the narration scrolls above the live table, once

    async def refresh(self) -> None:
        assert self.http is not None
        for gid in self.cluster.gateways:
            self.statuses[gid] = await self.cluster.gateway_status(self.http, gid)
        try:
            self.pool = await self.cluster.pool(self.http)
            self.rebalance = await self.cluster.rebalance(self.http)
        except (TimeoutError, aiohttp.ClientError, ValueError, KeyError):
            pass

    async def ticker(self, live: Live | None) -> None:
        while True:
            await self.refresh()
            if live is not None:
                live.update(self.render())
            await asyncio.sleep(0.3)

    # -- helpers ---------------------------------------------------------------
    def shares(self) -> Counter[str]:
        return Counter(c.client.gateway or "-" for c in self.clients if c.client.connected)

    async def wait_all_connected(self, timeout: float, avoid: str | None = None) -> float:
        """Seconds until every client is connected (and none to ``avoid``); raises on timeout."""
        start = time.monotonic()
        while True:
            if all(c.client.connected and c.client.gateway != avoid for c in self.clients):
                return time.monotonic() - start
            if time.monotonic() - start > timeout:
                missing = sum(
                    1 for c in self.clients if not c.client.connected or c.client.gateway == avoid
                )
                raise TimeoutError(
                    f"{missing} of {len(self.clients)} clients not connected"
                    f"{f' away from {avoid}' if avoid else ''} within {timeout:g}s"
                )
            await asyncio.sleep(0.05)

    async def add_clients(self, count: int, rate: float) -> None:
        assert self.client_http is not None
        start = len(self.clients)
        for i in range(start, start + count):
            client = Client(
                dispatchers=[self.cluster.dispatcher_url],
                client_id=f"demo-{i:04d}",
                http=self.client_http,
                backoff=BackoffConfig(initial=0.5, max=5.0),
            )
            dc = DemoClient(client)
            self.clients.append(dc)
            await client.connect(timeout=15)
            dc.reader = asyncio.get_running_loop().create_task(dc.read_loop())
            await asyncio.sleep(1 / rate)

    async def verify_messages(self, tag: str, timeout: float = 10.0) -> tuple[int, int]:
        """Every client sends ``tag``; returns (sent,
        echoed) once all came back or at the deadline."""
        for c in self.clients:
            await c.check(tag)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if all(t in c.echoed for c in self.clients for t in c.sent):
                break
            await asyncio.sleep(0.05)
        sent = sum(len(c.sent) for c in self.clients)
        echoed = sum(sum(1 for t in c.sent if t in c.echoed) for c in self.clients)
        return sent, echoed

    async def step(self, name: str, ok: bool, seconds: float, detail: str) -> None:
        """Record a step's outcome, then pause so a person can read the table."""
        self.summary.steps.append(StepResult(name, ok, round(seconds, 2), detail))
        self.say(("✔ " if ok else "✘ ") + f"{name}: {detail}")
        await asyncio.sleep(self.pace)

    def fmt_shares(self) -> str:
        s = self.shares()
        return ", ".join(f"{g}={s[g]}" for g in sorted(s))

    # -- the script --------------------------------------------------------------
    async def run(self) -> Summary:
        cl = self.cluster
        async with (
            aiohttp.ClientSession() as self.http,
            aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=50)) as self.client_http,
        ):
            live = (
                Live(self.render(), console=self.console, refresh_per_second=4)
                if self.live_enabled
                else None
            )
            if live is not None:
                live.start()
            ticker = asyncio.get_running_loop().create_task(self.ticker(live))
            try:
                await self.script()
                if self.linger:
                    await self.linger_until_stopped()
            finally:
                ticker.cancel()
                # The last frame shows the state the script ended in, drawn before the teardown.
                with contextlib.suppress(Exception):
                    await self.refresh()
                if live is not None:
                    live.update(self.render())
                    live.stop()
                else:
                    self.console.print(self.render())
                for c in self.clients:
                    if c.reader is not None:
                        c.reader.cancel()
                    await c.client.close()
                cl.stop()
        return self.summary

    async def linger_until_stopped(self) -> None:
        """``--linger``: leave everything running (clients,
        table, dashboard) until Ctrl-C or SIGTERM."""
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        self.say(
            f"the system keeps running: dashboard {self.cluster.dispatcher_url}/ui/ "
            f"(admin token in {self.cluster.token_file}); press Ctrl-C to stop"
        )
        try:
            await stop.wait()
        finally:
            for sig in (signal.SIGINT, signal.SIGTERM):
                loop.remove_signal_handler(sig)
        self.say("stopping")

    async def rebalance_step(self) -> None:
        """g4 fills to its weight share of the clients already held (g1:g4 = 1:3), paced."""
        t = time.monotonic()
        total = len(self.clients)
        goal = {"g1": total / 4, "g4": 3 * total / 4}
        self.say(
            f"rebalancing the held clients: g1 should keep {goal['g1']:.0f}, g4 reach "
            f"{goal['g4']:.0f}; now {self.fmt_shares()}"
        )
        curve: list[int] = []
        tag = 0
        while time.monotonic() - t < 40:
            shares = self.shares()
            curve.append(shares["g4"])
            if all(abs(shares[g] - n) <= max(2, 0.05 * n) for g, n in goal.items()):
                break
            if len(curve) % 4 == 0:  # keep talking while clients move
                tag += 1
                for c in self.clients:
                    await c.check(f"moving-{tag}")
            await asyncio.sleep(0.5)
        sent, echoed = await self.verify_messages("after-rebalance")
        shares = self.shares()
        balanced = all(abs(shares[g] - n) <= max(2, 0.05 * n) for g, n in goal.items())
        moves = self.rebalance.get("moves_requested", 0)
        await self.step(
            "rebalance",
            balanced and echoed == sent,
            time.monotonic() - t,
            f"g4 filled {' '.join(map(str, curve[::2]))} -> shares {self.fmt_shares()} "
            f"({moves} moves asked for); messages {echoed}/{sent} echoed",
        )

    async def script(self) -> None:
        cl = self.cluster
        t0 = time.monotonic()
        self.say("starting 3 gateways (weights 1:2:3) and a dispatcher on loopback")
        for gid, weight in (("g1", 1), ("g2", 2), ("g3", 3)):
            cl.start_gateway_admin(gid, weight, "--drain-window", "8", "--heartbeat", "2")
        # Small thresholds and a modest pace, so a few hundred clients visibly move.
        cl.start_dispatcher(
            "p2c",
            sections={
                "rebalance": cl.rebalance_section(
                    abs_threshold=5,
                    rel_threshold=0.1,
                    moves_per_s=max(20, self.n_clients // 10),
                    per_donor_per_s=max(20, self.n_clients // 10),
                    min_session_age_s=3,
                    interval_s=0.5,
                    settle_s=1.5,
                    breaker_cooldown_s=3,
                )
            },
        )
        await cl.wait_ready()
        self.say(
            f"ready in {time.monotonic() - t0:.1f}s; dispatcher at {cl.dispatcher_url}; "
            f"logs in {cl.workdir}"
        )
        self.say(
            f"live dashboard: {cl.dispatcher_url}/ui/ (actions "
            f"take the admin token in {cl.token_file})"
        )

        n = self.n_clients
        self.say(f"connecting {n} clients through the dispatcher")
        t = time.monotonic()
        await self.add_clients(n, rate=150)
        await self.wait_all_connected(10)
        sent, echoed = await self.verify_messages("start")
        await self.step(
            "connect",
            echoed == sent,
            time.monotonic() - t,
            f"{n} clients connected in {time.monotonic() - t:.1f}s, shares {self.fmt_shares()} "
            f"(weights 1:2:3 -> expected about {n // 6}/{n // 3}/{n // 2})",
        )

        victim = "g2"
        moved = self.shares()[victim]
        self.say(f"killing {victim} with SIGKILL: its {moved} clients must fail over")
        t = time.monotonic()
        cl.gateways[victim].proc.signal(signal.SIGKILL)
        took = await self.wait_all_connected(20, avoid=victim)
        sent, echoed = await self.verify_messages("after-kill")
        await self.step(
            "kill",
            echoed == sent,
            time.monotonic() - t,
            f"all {len(self.clients)} clients connected again {took:.1f}s after the kill; "
            f"messages {echoed}/{sent} echoed; shares {self.fmt_shares()}",
        )

        drained = "g3"
        before = self.shares()[drained]
        self.say(f"draining {drained}: it sends RECONNECT to its {before} clients spread over 8s")
        t = time.monotonic()
        await cl.drain_gateway(self.http, drained)  # type: ignore[arg-type]
        curve: list[int] = []
        while cl.gateways[drained].proc.alive and time.monotonic() - t < 15:
            curve.append(self.shares()[drained])
            await asyncio.sleep(0.5)
        took = await self.wait_all_connected(10, avoid=drained)
        gradual = len(curve) >= 6 and curve[len(curve) // 2] not in (0, before)
        sent, echoed = await self.verify_messages("after-drain")
        await self.step(
            "drain",
            echoed == sent and gradual,
            time.monotonic() - t,
            f"{before} clients moved off {drained} gradually ({' '.join(map(str, curve[::2]))}); "
            f"messages {echoed}/{sent} echoed; shares {self.fmt_shares()}",
        )

        self.say("adding gateway g4 (weight 3) through the admin API")
        t = time.monotonic()
        gw4 = cl.start_gateway_admin("g4", 3, "--heartbeat", "2")
        status = await cl.admin(
            self.http,  # type: ignore[arg-type]
            "POST",
            "/v1/gateways",
            {
                "id": "g4",
                "address": gw4.address,
                "check": gw4.status_url,
                "weight": 3,
            },
        )
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            pool = await cl.pool(self.http)  # type: ignore[arg-type]
            if pool.get("g4", {}).get("healthy"):
                break
            await asyncio.sleep(0.1)
        newcomers = max(n // 3, 10)
        self.say(f"g4 is up (admin API answered {status}); connecting {newcomers} new clients")
        first_new = len(self.clients)
        await self.add_clients(newcomers, rate=150)
        await self.wait_all_connected(10)
        on_g4 = sum(1 for c in self.clients[first_new:] if c.client.gateway == "g4")
        await self.step(
            "add",
            status in (200, 201) and on_g4 > newcomers // 2,
            time.monotonic() - t,
            f"{on_g4} of {newcomers} new clients went to the new, empty gateway g4",
        )

        await self.rebalance_step()

        t = time.monotonic()
        sent, echoed = await self.verify_messages("final")
        self.summary.clients = len(self.clients)
        self.summary.connected = sum(1 for c in self.clients if c.client.connected)
        self.summary.messages_sent, self.summary.messages_echoed = sent, echoed
        self.summary.final_shares = dict(self.shares())
        await self.step(
            "verify",
            echoed == sent and self.summary.connected == self.summary.clients,
            time.monotonic() - t,
            f"{self.summary.connected}/{self.summary.clients} clients connected, "
            f"{echoed}/{sent} messages echoed, none lost",
        )


DESCRIPTION = """\
Run the whole system on loopback for about a minute: one dispatcher, three gateways
weighted 1:2:3 and a few hundred clients, with a live table of connections per gateway.
Then a gateway is killed, one is drained and a new one is added through the admin API;
after each step every client's message must come back. Needs no Redis and no nginx.
The dispatcher's live dashboard is at the /ui/ address printed once it is up; --linger
keeps everything running after the script until Ctrl-C.
Exit code 0 when every check passed; otherwise the logs are kept and their directory
printed."""


def add_parser(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser(
        "demo", help="run the whole system on loopback for about a minute", description=DESCRIPTION
    )
    p.add_argument(
        "--clients",
        type=int,
        default=300,
        metavar="N",
        help="clients to connect first (at least 12)",
    )
    p.add_argument(
        "--no-live",
        action="store_true",
        help="plain narration and one final table instead of the live table",
    )
    p.add_argument(
        "--pace", type=float, default=3.0, metavar="S", help="seconds to pause after each step"
    )
    p.add_argument(
        "--json",
        action="store_true",
        help="end with a one-line JSON summary ('DEMO SUMMARY {...}') for scripts",
    )
    p.add_argument(
        "--linger",
        action="store_true",
        help="after the script, keep the system running (with its dashboard at /ui/) until Ctrl-C",
    )
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    console = Console()
    live = console.is_terminal and not args.no_live
    demo = Demo(
        max(args.clients, 12), console, live, max(args.pace, 0.0), getattr(args, "linger", False)
    )
    started = time.monotonic()
    error: BaseException | None = None
    try:
        summary = aio_run(demo.run())
    except KeyboardInterrupt:
        demo.cluster.close()
        return 130
    except Exception as exc:  # noqa: BLE001 - report, keep the logs, fail
        error, summary = exc, demo.summary
    ok = error is None and summary.ok
    workdir = demo.cluster.workdir
    demo.cluster.close(keep_logs=not ok)
    if args.json:
        payload = asdict(summary) | {
            "ok": ok,
            "seconds": round(time.monotonic() - started, 1),
            "workdir": str(workdir),
            "logs_kept": not ok,
            "error": None if error is None else str(error) or type(error).__name__,
        }
        print("DEMO SUMMARY " + json.dumps(payload), flush=True)
    if ok:
        console.print("[green]demo finished: every step passed[/green]")
        return 0
    failed = [s.name for s in summary.steps if not s.ok]
    why = (
        f"{type(error).__name__}: {error}"
        if error is not None
        else f"failed steps: {', '.join(failed)}"
        if failed
        else "not every check passed"
    )
    console.print(f"[red]demo failed ({why})[/red]", highlight=False, soft_wrap=True)
    console.print(f"logs kept in {workdir}", highlight=False, soft_wrap=True)
    return 1


if __name__ == "__main__":  # pragma: no cover
    sys.exit(run(argparse.Namespace(clients=300, no_live=False, pace=3.0, json=False)))

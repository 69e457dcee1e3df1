"""Scenario 8, encryption: what encrypted gateway connections cost, side by side in one run.

Four ways for a client to reach a gateway, measured on the same machine in the same run:

* ``plain`` — the plain protocol (HELLO -> WELCOME);
* ``noise full`` — ``Noise_NK_25519_ChaChaPoly_SHA256`` with the HELLO in its first message;
* ``noise resumed`` — ``Noise_NNpsk0_25519_ChaChaPoly_SHA256`` with the grant of the
  previous handshake;
* ``haproxy tls`` — HAProxy (``mode tcp``, ``bind ... ssl``, TLS 1.3, ECDSA P-256)
  terminating TLS in front of the plain gateway: what a user would otherwise deploy. Also
  ``haproxy tls resumed`` (the client offers the previous TLS session).

Measured:

1. Gateway-side CPU per handshake: the gateway's (and HAProxy's) user + system CPU time
   (psutil) over K sequential handshakes made by a separate client process (connect,
   handshake, WELCOME, close), divided by K. TCP accept and close are in every figure.
2. RSS per idle connection: a fresh gateway (``--workers W``, at most ~17,000
   connections per worker) holds N connections opened by several client processes
   (at most 19,000 each, bound to 127.0.0.x sources); (node RSS after - before) / N,
   plain and encrypted each on their own gateway. HAProxy's figure needs two descriptors
   per connection in one process, so it is measured at ``haproxy_connections``.
3. Failover with encryption: scenario 4 (10,000 loadgen clients over three gateways,
   the busiest SIGKILLed) with every gateway on ``--key-file`` (one fleet key, so
   resumption grants are valid at the survivors), the keys in the dispatcher's answers
   and the clients on ``--encryption required``.
"""

from __future__ import annotations

import asyncio
import datetime
import math
import multiprocessing
import os
import signal
import socket
import ssl
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from bench.common import (
    TCPDISPATCH,
    GatewayHandle,
    ProcGroup,
    binary,
    free_port,
    headline,
    run_as_script,
    start_dispatcher,
    start_gateway,
    wait_until,
    write_result,
)
from bench.failover import Sampler, finish_loadgen
from tcpdispatch.secure.keys import StaticKey, write_key_file

NAME = "secure"
TARGETS = {"rss_kib": 4.0, "full_us": 200.0, "resumed_us": 60.0, "failover_s": 5.0}
PER_WORKER = 17_000
PER_CLIENT_PROCESS = 19_000
PER_SOURCE_IP = 12_000
IP_BIND_ADDRESS_NO_PORT = 24


# -- a client process ------------------------------------------------------------------------
def _hello_bytes(client_id: str) -> bytes:
    from tcpdispatch.protocol import Hello, encode

    return encode(Hello("", client_id))


def _recv_welcome_plain(sock: socket.socket) -> bool:
    from tcpdispatch.protocol import Connection, Hello, Role, Welcome

    conn = Connection(Role.CLIENT)
    conn.send(Hello("", "hs"))  # the bytes were sent by the caller; this only sets the state
    conn.data_to_send()
    while True:
        data = sock.recv(65536)
        if not data:
            return False
        for f in conn.receive_data(data):
            return isinstance(f, Welcome)


def _handshakes(mode: str, port: int, count: int, pub: str, out: Any) -> None:
    """Make ``count`` sequential handshakes of ``mode``; send back how many succeeded."""
    from tcpdispatch.secure.handshake import ClientHandshake
    from tcpdispatch.secure.keys import parse_public_key

    key = parse_public_key(pub)
    hello = _hello_bytes("hs")
    grant = None
    ctx: ssl.SSLContext | None = None
    session = None
    if mode.startswith("haproxy"):
        ctx = ssl.create_default_context(cafile=os.environ["BENCH_CA"])
        ctx.minimum_version = ssl.TLSVersion.TLSv1_3
    ok = 0
    for _ in range(count):
        sock = socket.create_connection(("127.0.0.1", port), timeout=10)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        try:
            if mode == "plain":
                sock.sendall(hello)
                ok += _recv_welcome_plain(sock)
            elif mode.startswith("haproxy"):
                assert ctx is not None
                tls = ctx.wrap_socket(
                    sock,
                    server_hostname="localhost",
                    session=session if mode == "haproxy_resumed" else None,
                )
                tls.sendall(hello)
                ok += _recv_welcome_plain(tls)  # type: ignore[arg-type]
                session = tls.session
                sock = tls
            else:
                hs = ClientHandshake(key, hello, grant if mode == "noise_resumed" else None)
                sock.sendall(hs.first_message())
                done = None
                while done is None:
                    data = sock.recv(65536)
                    if not data:
                        break
                    done = hs.receive(data)
                if done is not None:
                    grant = done.grant
                    ok += 1
        except (OSError, ValueError) as exc:
            print(f"handshake ({mode}) failed: {exc}", file=sys.stderr)
        finally:
            sock.close()
    out.send(ok)


def _cpu(pids: list[int]) -> float:
    import psutil

    total = 0.0
    for pid in pids:
        try:
            procs = [psutil.Process(pid), *psutil.Process(pid).children(recursive=True)]
        except psutil.NoSuchProcess:
            continue
        for p in procs:
            t = p.cpu_times()
            total += t.user + t.system
    return total


def _measure(mode: str, port: int, count: int, pub: str, pids: list[int]) -> dict[str, Any]:
    ctx = multiprocessing.get_context("fork")
    # Warm up (imports, first grant, TLS session), outside the measured window.
    _run_client(ctx, mode, port, min(50, count), pub)
    # The processes' own idle CPU (sweeps, status sampling) over the window is subtracted.
    i0, s0 = _cpu(pids), time.monotonic()
    time.sleep(2.0)
    idle_rate = (_cpu(pids) - i0) / (time.monotonic() - s0)
    c0, t0 = _cpu(pids), time.monotonic()
    ok = _run_client(ctx, mode, port, count, pub)
    c1, t1 = _cpu(pids), time.monotonic()
    busy = max(0.0, (c1 - c0) - idle_rate * (t1 - t0))
    return {
        "handshakes": ok,
        "cpu_us": round(busy / max(ok, 1) * 1e6, 1),
        "per_s": round(ok / (t1 - t0), 1),
        "idle_cores": round(idle_rate, 4),
    }


def handshake_only(count: int, rounds: int = 10) -> dict[str, float]:
    """Server-side CPU of the handshake computation alone, in this process (no sockets):
    our Noise responder for NK and NNpsk0, and Python's ssl (TLS 1.3, ECDSA P-256) over
    memory BIOs, the in-process TLS the issue measured at 418 us.

    The three are interleaved in ``rounds`` rounds of ``count`` handshakes each and each
    figure is its best round: on a shared machine the minimum is the estimate least
    inflated by other processes, and interleaving exposes all three to the same load.
    """
    from tcpdispatch.protocol import Hello, encode
    from tcpdispatch.secure.handshake import ClientHandshake, ServerHandshake, ServerSecurity

    key = StaticKey.generate()
    sec = ServerSecurity((key,))
    hello = encode(Hello("v1.ticket-for-bench", "bench-client"))
    with tempfile.TemporaryDirectory(prefix="tcpdsuite-ssl-") as tmp:
        ca, both = _tls_files(Path(tmp))
        sctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        sctx.minimum_version = ssl.TLSVersion.TLSv1_3
        sctx.load_cert_chain(both)
        cctx = ssl.create_default_context(cafile=str(ca))
    best = {"noise_full_us": 1e9, "noise_resumed_us": 1e9, "python_ssl_tls13_us": 1e9}
    for _ in range(rounds):
        clients = [ClientHandshake(key.public, hello) for _ in range(count)]
        firsts = [c.first_message() for c in clients]
        t0 = time.process_time()
        replies = [ServerHandshake(sec).receive(m) for m in firsts]
        full = time.process_time() - t0
        resumed = []
        for c, d in zip(clients, replies, strict=True):
            assert d is not None
            got = c.receive(d.reply)
            assert got is not None and got.grant is not None
            resumed.append(ClientHandshake(key.public, hello, got.grant).first_message())
        t0 = time.process_time()
        for m in resumed:
            ServerHandshake(sec).receive(m)
        res = time.process_time() - t0
        tls = _python_ssl_us(sctx, cctx, count)
        for k, v in (
            ("noise_full_us", full / count * 1e6),
            ("noise_resumed_us", res / count * 1e6),
            ("python_ssl_tls13_us", tls),
        ):
            best[k] = min(best[k], round(v, 1))
    return best


def _python_ssl_us(sctx: ssl.SSLContext, cctx: ssl.SSLContext, count: int) -> float:
    spent = 0.0
    for _ in range(count):
        ci, co, si, so = ssl.MemoryBIO(), ssl.MemoryBIO(), ssl.MemoryBIO(), ssl.MemoryBIO()
        c = cctx.wrap_bio(ci, co, server_hostname="localhost")
        srv = sctx.wrap_bio(si, so, server_side=True)
        for side in (c, srv, c, srv):
            t0 = time.process_time()
            try:
                side.do_handshake()
            except ssl.SSLWantReadError:
                pass
            if side is srv:
                spent += time.process_time() - t0
                ci.write(so.read())
            else:
                si.write(co.read())
    return spent / count * 1e6


def _run_client(ctx: Any, mode: str, port: int, count: int, pub: str) -> int:
    r, w = ctx.Pipe(duplex=False)
    p = ctx.Process(target=_handshakes, args=(mode, port, count, pub, w))
    p.start()
    ok = r.recv() if r.poll(120 + count * 0.05) else 0
    p.join(10)
    if p.exitcode is None:
        p.kill()
    return int(ok)


def _tls_files(work: Path) -> tuple[Path, Path]:
    """A CA and a localhost certificate + key in one PEM (HAProxy's ``crt``)."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    now = datetime.datetime.now(datetime.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "bench CA")])
    ca = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(1)
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")]))
        .issuer_name(ca_name)
        .public_key(key.public_key())
        .serial_number(2)
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName("localhost")]), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    ca_pem, both = work / "ca.pem", work / "haproxy.pem"
    ca_pem.write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    both.write_bytes(
        cert.public_bytes(serialization.Encoding.PEM)
        + key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return ca_pem, both


def _haproxy(group: ProcGroup, work: Path, backend_port: int, pem: Path, maxconn: int) -> int:
    front = free_port()
    cfg = work / "haproxy-tls.cfg"
    cfg.write_text(
        "\n".join(
            [
                "global",
                f"    maxconn {maxconn}",
                "    nbthread 1",
                "    ssl-default-bind-options ssl-min-ver TLSv1.3",
                "defaults",
                "    mode tcp",
                "    timeout connect 2s",
                "    timeout client 600s",
                "    timeout server 600s",
                f"    maxconn {maxconn}",
                "frontend fe",
                f"    bind 127.0.0.1:{front} ssl crt {pem} backlog 4096",
                "    default_backend gw",
                "backend gw",
                f"    server g1 127.0.0.1:{backend_port}",
                "",
            ]
        )
    )
    proc = group([binary("haproxy", "/usr/sbin/haproxy"), "-db", "-f", str(cfg)], name="haproxy")

    def up() -> bool:
        try:
            socket.create_connection(("127.0.0.1", front), timeout=0.5).close()
            return True
        except OSError:
            return False

    wait_until(up, 10, 0.05, "haproxy listening")
    assert proc.alive, proc.output()
    return front


def handshake_cpu(work: Path, quick: bool) -> dict[str, Any]:
    count = 100 if quick else 3000
    key = StaticKey.generate()
    write_key_file(work / "hs.key", key)
    ca, pem = _tls_files(work)
    os.environ["BENCH_CA"] = str(ca)
    group = ProcGroup(work)
    try:
        gw = start_gateway(group, "hs", "--key-file", str(work / "hs.key"), "--allow-plain")
        front = _haproxy(group, work, gw.port, pem, 4000)
        hap_pid = group.procs[-1].popen.pid
        out: dict[str, Any] = {}
        for mode in ("plain", "noise_full", "noise_resumed"):
            out[mode] = _measure(mode, gw.port, count, key.public.text, [gw.proc.popen.pid])
        for mode in ("haproxy_tls", "haproxy_resumed"):
            out[mode] = _measure(mode, front, count, key.public.text, [gw.proc.popen.pid, hap_pid])
        return out
    finally:
        group.stop()


# -- idle connections and their memory -------------------------------------------------------
def _idle_client(
    port: int, count: int, sources: list[str], pub: str | None, out: Any, stop: Any
) -> None:
    from tcpdispatch import aio
    from tcpdispatch.protocol import Connection, Hello, Role, Welcome
    from tcpdispatch.secure.handshake import ClientHandshake
    from tcpdispatch.secure.keys import parse_public_key

    key = parse_public_key(pub) if pub else None

    class Idle(asyncio.Protocol):
        def __init__(self, done: asyncio.Future[bool]) -> None:
            self.done = done
            self.conn = Connection(Role.CLIENT)
            self.hs: ClientHandshake | None = None
            self.tr: Any = None

        def connection_made(self, transport: Any) -> None:
            self.transport = transport

        def data_received(self, data: bytes) -> None:
            try:
                if self.hs is not None:
                    got = self.hs.receive(data)
                    if got is None:
                        return
                    self.hs, self.tr, data = None, got.transport, got.plaintext
                elif self.tr is not None:
                    data = self.tr.decrypt(data)
                frames = self.conn.receive_data(data) if data else []
            except Exception:  # noqa: BLE001
                frames = []
                if not self.done.done():
                    self.done.set_result(False)
            for f in frames:
                if isinstance(f, Welcome) and not self.done.done():
                    self.done.set_result(True)

        def connection_lost(self, exc: Exception | None) -> None:
            if not self.done.done():
                self.done.set_result(False)

    async def main() -> None:
        loop = asyncio.get_running_loop()
        sem = asyncio.Semaphore(100)
        ok = failed = 0
        held: list[Any] = []

        async def one(i: int) -> None:
            nonlocal ok, failed
            async with sem:
                sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
                try:
                    sock.setsockopt(socket.IPPROTO_IP, IP_BIND_ADDRESS_NO_PORT, 1)
                    sock.setblocking(False)
                    sock.bind((sources[i % len(sources)], 0))
                    await asyncio.wait_for(loop.sock_connect(sock, ("127.0.0.1", port)), 60)
                    done: asyncio.Future[bool] = loop.create_future()
                    t, p = await loop.create_connection(lambda: Idle(done), sock=sock)
                    p.conn.send(Hello("", f"idle-{i}"))
                    hello = p.conn.data_to_send()
                    if key is not None:
                        p.hs = ClientHandshake(key, hello)
                        t.write(p.hs.first_message())
                    else:
                        t.write(hello)
                    if await asyncio.wait_for(done, 60):
                        ok += 1
                        held.append(t)
                    else:
                        failed += 1
                        t.close()
                except (TimeoutError, OSError):
                    failed += 1
                    sock.close()

        tasks = [loop.create_task(one(i)) for i in range(count)]
        await asyncio.gather(*tasks)
        out.send((ok, failed))
        await loop.run_in_executor(None, stop.recv)
        for t in held:
            t.abort()

    aio.run(main())


def _node_rss(pid: int) -> int:
    import psutil

    root = psutil.Process(pid)
    return sum(p.memory_info().rss for p in [root, *root.children(recursive=True)])


def idle_rss(work: Path, n: int, encrypted: bool, behind_haproxy: bool = False) -> dict[str, Any]:
    """Open ``n`` idle connections; the gateway's (and HAProxy's) RSS growth per connection."""
    key = StaticKey.generate()
    write_key_file(work / f"rss-{encrypted}-{behind_haproxy}.key", key)
    workers = max(1, math.ceil(n / PER_WORKER))
    args = [
        "--workers",
        str(workers),
        "--capacity",
        str(n + 1000),
        "--idle-timeout",
        "3600",
        "--handshake-timeout",
        "120",
        "--backlog",
        "8192",
    ]
    if encrypted:
        args += ["--key-file", str(work / f"rss-{encrypted}-{behind_haproxy}.key")]
    group = ProcGroup(work)
    ctx = multiprocessing.get_context("fork")
    children: list[Any] = []
    try:
        gw = start_gateway(group, "rss", *args)
        pids = [gw.proc.popen.pid]
        port = gw.port
        if behind_haproxy:
            _, pem = _tls_files(work)
            port = _haproxy(group, work, gw.port, pem, n + 100)
            pids.append(group.procs[-1].popen.pid)
            os.environ["BENCH_CA"] = str(work / "ca.pem")
        time.sleep(1.5)
        base = sum(_node_rss(p) for p in pids)
        clients = max(1, math.ceil(n / PER_CLIENT_PROCESS))
        sources = [f"127.0.0.{2 + i}" for i in range(max(1, math.ceil(n / PER_SOURCE_IP)))]
        share = [n // clients + (1 if i < n % clients else 0) for i in range(clients)]
        pipes = []
        t0 = time.monotonic()
        for count in share:
            up_r, up_w = ctx.Pipe(duplex=False)
            stop_r, stop_w = ctx.Pipe(duplex=False)
            pub = key.public.text if encrypted else None
            target = _tls_idle_client if behind_haproxy else _idle_client
            p = ctx.Process(target=target, args=(port, count, sources, pub, up_w, stop_r))
            p.start()
            children.append(p)
            pipes.append((up_r, stop_w))
        ok = failed = 0
        for up_r, _ in pipes:
            if up_r.poll(600):
                a, b = up_r.recv()
                ok, failed = ok + a, failed + b
        elapsed = time.monotonic() - t0
        time.sleep(2.0)
        rss = sum(_node_rss(p) for p in pids)
        for _, stop_w in pipes:
            stop_w.send("stop")
        return {
            "connections": ok,
            "failed": failed,
            "workers": workers,
            "client_processes": clients,
            "connect_s": round(elapsed, 1),
            "rss_mib": round(rss / 2**20, 1),
            "baseline_mib": round(base / 2**20, 1),
            "kib_per_connection": round((rss - base) / max(ok, 1) / 1024, 2),
        }
    finally:
        for p in children:
            p.join(timeout=10)
            if p.exitcode is None:
                p.kill()
        group.stop()


def _tls_idle_client(
    port: int, count: int, sources: list[str], pub: str | None, out: Any, stop: Any
) -> None:
    """Idle plain-protocol clients over TLS (through HAProxy)."""
    from tcpdispatch import aio
    from tcpdispatch.protocol import Connection, Hello, Role, Welcome

    ctx = ssl.create_default_context(cafile=os.environ["BENCH_CA"])

    class Idle(asyncio.Protocol):
        def __init__(self, done: asyncio.Future[bool]) -> None:
            self.done = done
            self.conn = Connection(Role.CLIENT)

        def data_received(self, data: bytes) -> None:
            try:
                frames = self.conn.receive_data(data)
            except Exception:  # noqa: BLE001
                frames = []
            for f in frames:
                if isinstance(f, Welcome) and not self.done.done():
                    self.done.set_result(True)

        def connection_lost(self, exc: Exception | None) -> None:
            if not self.done.done():
                self.done.set_result(False)

    async def main() -> None:
        loop = asyncio.get_running_loop()
        sem = asyncio.Semaphore(50)
        ok = failed = 0
        held: list[Any] = []

        async def one(i: int) -> None:
            nonlocal ok, failed
            async with sem:
                try:
                    done: asyncio.Future[bool] = loop.create_future()
                    t, p = await asyncio.wait_for(
                        loop.create_connection(
                            lambda: Idle(done),
                            "127.0.0.1",
                            port,
                            ssl=ctx,
                            server_hostname="localhost",
                            local_addr=(sources[i % len(sources)], 0),
                        ),
                        60,
                    )
                    p.conn.send(Hello("", f"tls-{i}"))
                    t.write(p.conn.data_to_send())
                    if await asyncio.wait_for(done, 60):
                        ok += 1
                        held.append(t)
                    else:
                        failed += 1
                        t.close()
                except (TimeoutError, OSError, ssl.SSLError) as exc:
                    if not failed:
                        print(f"TLS idle client: {exc!r}", file=sys.stderr)
                    failed += 1

        await asyncio.gather(*(one(i) for i in range(count)))
        out.send((ok, failed))
        await loop.run_in_executor(None, stop.recv)
        for t in held:
            t.abort()

    aio.run(main())


# -- failover with encryption ------------------------------------------------------------------
def failover(work: Path, quick: bool, encrypted: bool = True) -> dict[str, Any]:
    """Scenario 4 with (or, as the reference in the same run, without) encryption."""
    n, cap, procs, rate = (300, 200, 1, 600.0) if quick else (10_000, 6000, 8, 1000.0)
    # ``after`` bounds how long we watch the moved clients come back; a long window
    # reports the real time even when it is over the target.
    settle, after = (1.0, 3.0) if quick else (4.0, 30.0)
    secret = work / "ticket.secret"
    secret.write_text("bench-secret-0123456789abcdef\n")
    key = StaticKey.generate()  # one fleet key: grants from one gateway resume at the others
    write_key_file(work / "fleet.key", key)
    keyed = ["--key-file", str(work / "fleet.key")] if encrypted else []
    group = ProcGroup(work)
    sampler: Sampler | None = None
    lg = None
    try:
        gws = [
            start_gateway(group, f"g{i}", "--capacity", str(cap), *keyed, secret_file=secret)
            for i in (1, 2, 3)
        ]
        url = _dispatcher(group, work, gws, secret, key.public.text if encrypted else "")
        sampler = Sampler(gws)
        sampler.start()
        # Connecting 10,000 clients through full handshakes is bounded by the clients' CPU
        # on a shared 2-core machine, so the ramp gets a generous bound; the loadgen runs
        # until told to stop (SIGTERM: its workers report and exit).
        ramp_bound = 60.0 if quick else 600.0
        with open(work / "loadgen.json", "wb") as out, open(work / "loadgen.err", "wb") as err:
            lg = subprocess.Popen(
                [
                    *TCPDISPATCH,
                    "--log-level",
                    "warning",
                    "loadgen",
                    "--dispatcher",
                    url,
                    "--clients",
                    str(n),
                    "--rate",
                    str(rate),
                    "--duration",
                    f"{ramp_bound + settle + after + 60:.0f}",
                    "--processes",
                    str(procs),
                    "--encryption",
                    "required" if encrypted else "off",
                    "--json",
                ],
                stdout=out,
                stderr=err,
                start_new_session=True,
            )
        t_start = time.monotonic()
        wait_until(
            lambda: sum(sampler.latest().values()) >= n,
            ramp_bound,
            0.2,
            f"{n} encrypted clients connected",
        )
        ramp_s = time.monotonic() - t_start
        time.sleep(settle)
        before = sampler.latest()
        victim = max(gws, key=lambda g: before[g.id])
        t_kill = time.time()
        victim.signal(signal.SIGKILL)
        time.sleep(after)
        os.kill(lg.pid, signal.SIGTERM)
        summary = finish_loadgen(lg, work, 60 + n / 1000)
    finally:
        if sampler is not None:
            sampler.stop()
        if lg is not None and lg.poll() is None:
            os.killpg(lg.pid, signal.SIGKILL)
            lg.wait()
        group.stop()
    moved = before[victim.id]
    back = sorted(b - t_kill for a, b in summary.get("reconnect_pairs", []) if a >= t_kill - 1)

    def at(q: float) -> float | None:
        k = int(q * moved + 0.999) - 1
        return round(back[k], 3) if 0 <= k < len(back) else None

    return {
        "clients": n,
        "connect_all_s": round(ramp_s, 1),
        "moved_clients": moved,
        "reconnected": len(back),
        "time_to_pct_s": {"50": at(0.5), "99": at(0.99), "100": at(1.0)},
        "unrepaired": summary.get("unrepaired"),
        "loadgen_errors": summary.get("errors"),
    }


def _dispatcher(
    group: ProcGroup, work: Path, gws: list[GatewayHandle], secret: Path, pub: str
) -> str:
    entries = [{**g.entry(weight=False), **({"key": pub} if pub else {})} for g in gws]
    return start_dispatcher(group, work, entries, secret).url


# -- the scenario --------------------------------------------------------------------------
def run(quick: bool) -> dict[str, Any]:
    n = 500 if quick else 100_000
    n_haproxy = 200 if quick else 9000  # two descriptors per connection in one process
    res: dict[str, Any] = {"quick": quick}
    with tempfile.TemporaryDirectory(prefix="tcpdsuite-sec-") as tmp:
        work = Path(tmp)
        (work / "hs").mkdir()
        res["handshake"] = handshake_cpu(work / "hs", quick)
        res["handshake_only"] = handshake_only(50 if quick else 200, 3 if quick else 10)
        print(f"   handshake computation only: {res['handshake_only']}", flush=True)
        print(f"   handshakes: {res['handshake']}", flush=True)
        res["rss"] = {}
        for label, enc, hap, count in (
            ("plain", False, False, n),
            ("noise", True, False, n),
            ("haproxy_tls", False, True, n_haproxy),
        ):
            sub = work / f"rss-{label}"
            sub.mkdir()
            res["rss"][label] = idle_rss(sub, count, enc, hap)
            print(f"   idle {label}: {res['rss'][label]}", flush=True)
        for label, enc in (("failover_plain", False), ("failover", True)):
            sub = work / label
            sub.mkdir()
            res[label] = failover(sub, quick, enc)
            print(f"   {label}: {res[label]}", flush=True)
    hs, rss, fo = res["handshake"], res["rss"], res["failover"]
    t100 = fo["time_to_pct_s"]["100"]
    res["met"] = {
        "rss": rss["noise"]["kib_per_connection"] <= TARGETS["rss_kib"]
        and rss["noise"]["connections"] == n,
        "full": hs["noise_full"]["cpu_us"] <= TARGETS["full_us"],
        "resumed": hs["noise_resumed"]["cpu_us"] <= TARGETS["resumed_us"],
        "failover": t100 is not None and t100 <= TARGETS["failover_s"] and not fo["unrepaired"],
    }
    text = (
        f"gateway CPU/handshake: plain {hs['plain']['cpu_us']} us, noise full "
        f"{hs['noise_full']['cpu_us']} us, resumed {hs['noise_resumed']['cpu_us']} us, "
        f"haproxy TLS {hs['haproxy_tls']['cpu_us']} us; RSS/idle conn at {n:,}: plain "
        f"{rss['plain']['kib_per_connection']} KiB, noise {rss['noise']['kib_per_connection']} "
        f"KiB; encrypted failover of {fo['moved_clients']:,}: 100 % in {t100} s"
    )
    headline(NAME, text)
    res |= {"headline": text, "ok": all(res["met"].values())}
    write_result(NAME, quick, res)
    return res


def table(r: dict[str, Any]) -> str:
    hs, rss, fo = r["handshake"], r["rss"], r["failover"]
    t = fo["time_to_pct_s"]
    rows = [
        "### 8. Encryption (Noise) vs plain vs HAProxy TLS\n",
        (
            "Gateway-side CPU per handshake (sequential handshakes from another process; TCP "
            "accept and close included; for HAProxy, HAProxy + gateway):\n"
        ),
        "| mode | CPU per handshake | handshakes/s (one client) | target |",
        "|---|---|---|---|",
    ]
    names = {
        "plain": "plain",
        "noise_full": "Noise NK (full)",
        "noise_resumed": "Noise NNpsk0 (resumed)",
        "haproxy_tls": "HAProxy TLS 1.3 (full)",
        "haproxy_resumed": "HAProxy TLS 1.3 (resumed)",
    }
    tgt = {
        "noise_full": f"<= {TARGETS['full_us']:g} us",
        "noise_resumed": f"<= {TARGETS['resumed_us']:g} us",
    }
    for k, label in names.items():
        rows.append(f"| {label} | {hs[k]['cpu_us']} us | {hs[k]['per_s']} | {tgt.get(k, '')} |")
    only = r.get("handshake_only")
    if only:
        rows += [
            "",
            (
                "The handshake computation alone, in one process (no sockets; the gateway's "
                "half only; best of 10 interleaved rounds of 200):\n"
            ),
            ("| Noise NK (full) | Noise NNpsk0 (resumed) | Python ssl TLS 1.3 (ECDSA P-256) |"),
            "|---|---|---|",
            (
                f"| {only['noise_full_us']} us | {only['noise_resumed_us']} us | "
                f"{only['python_ssl_tls13_us']} us |"
            ),
        ]
    rows += [
        "",
        "RSS per idle connection (node RSS growth / connections):\n",
        "| mode | connections | workers | KiB per connection | connect time | target |",
        "|---|---|---|---|---|---|",
    ]
    for k, label in (
        ("plain", "plain"),
        ("noise", "Noise (encrypted)"),
        ("haproxy_tls", "HAProxy TLS + plain gateway"),
    ):
        x = rss[k]
        rows.append(
            f"| {label} | {x['connections']:,} | {x['workers']} | {x['kib_per_connection']} | "
            f"{x['connect_s']} s | {'<= 4 KiB' if k == 'noise' else ''} |"
        )
    ref = r.get("failover_plain")
    if ref:
        rt = ref["time_to_pct_s"]
        rows += [
            "",
            (
                f"Failover without encryption in the same run (reference): "
                f"{ref['moved_clients']:,} moved, 50 % back in {rt['50']} s, 99 % in "
                f"{rt['99']} s, 100 % in {rt['100']} s; all {ref['clients']:,} connected in "
                f"{ref.get('connect_all_s')} s; still disconnected: {ref['unrepaired']}."
            ),
        ]
    rows += [
        "",
        (
            f"Failover with encryption: {fo['clients']:,} clients (all connected in "
            f"{fo.get('connect_all_s')} s), {fo['moved_clients']:,} on the "
            f"killed gateway, {fo.get('reconnected', 0):,} back within the "
            f"{fo.get('watched_s', 30)} s watched: "
            f"50 % back in {t['50']} s, 99 % in {t['99']} s, 100 % in {t['100']} s "
            f"(target <= {TARGETS['failover_s']:g} s); still disconnected: {fo['unrepaired']}."
        ),
        "",
        "Targets met: "
        + ", ".join(f"{k} {'yes' if v else 'no'}" for k, v in r["met"].items())
        + "\n",
    ]
    return "\n".join(rows)


if __name__ == "__main__":
    run_as_script(run)

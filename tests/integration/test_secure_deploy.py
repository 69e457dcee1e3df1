"""Encryption end to end with real processes: nginx terminating HTTPS for the dispatcher
(deploy/nginx/dispatcher-https.conf, with a CA made here), an encrypted gateway whose key
comes in the answer, and key rotation by SIGHUP without dropping sessions."""

from __future__ import annotations

import asyncio
import datetime
import ipaddress
import signal
from collections.abc import Callable
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from harness import start_dispatcher, start_gateway
from helpers import Proc, free_port, require_binary, scaled, wait_until

from tcpdispatch.client.client import Client
from tcpdispatch.errors import DispatchError
from tcpdispatch.secure.keys import StaticKey, write_key_file

pytestmark = pytest.mark.integration
DEPLOY = Path(__file__).resolve().parents[2] / "deploy" / "nginx" / "dispatcher-https.conf"


def make_ca_and_cert(d: Path) -> tuple[Path, Path, Path]:
    """A throw-away CA and a server certificate for localhost / 127.0.0.1 signed by it."""
    now = datetime.datetime.now(datetime.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "tcpdispatch test CA")])
    ca = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
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
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
            ),
            critical=False,
        )
        .sign(ca_key, hashes.SHA256())
    )
    paths = d / "ca.pem", d / "dispatch.crt", d / "dispatch.key"
    paths[0].write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    paths[1].write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    paths[2].write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return paths


def nginx_conf(tmp: Path, dispatcher_port: int, port: int, crt: Path, key: Path) -> str:
    """The shipped deploy file, with this test's addresses and paths, inside a main config."""
    text = DEPLOY.read_text()
    subs = {
        "    server 10.0.1.11:8080": f"    server 127.0.0.1:{dispatcher_port}",
        "    server 10.0.1.12:8080 max_fails=1 fail_timeout=5s;\n": "",
        "listen 80;": f"listen 127.0.0.1:{free_port()};",
        "listen 443 ssl;": f"listen 127.0.0.1:{port} ssl;",
        "/etc/tcpdispatch/tls/dispatch.crt": str(crt),
        "/etc/tcpdispatch/tls/dispatch.key": str(key),
    }
    for old, new in subs.items():
        assert old in text, f"deploy file no longer contains {old!r}"
        text = text.replace(old, new)
    temps = "\n".join(
        f"    {k}_temp_path {tmp}/nginx-{k};"
        for k in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")
    )
    return (
        f"daemon off;\nworker_processes 1;\npid {tmp}/nginx.pid;\n"
        f"error_log {tmp}/nginx-error.log warn;\nevents {{ worker_connections 256; }}\n"
        f"http {{\n{temps}\n{text}\n}}\n"
    )


def test_sdk_over_https_nginx_gets_the_gateway_key_and_connects_encrypted(
    tmp_path: Path,
    procs: Callable[..., Proc],
    secret_file: Path,
) -> None:
    nginx = require_binary("nginx")
    key = StaticKey.generate()
    write_key_file(tmp_path / "g1.key", key)
    gw = start_gateway(procs, "g1", "--key-file", str(tmp_path / "g1.key"), secret_file=secret_file)
    disp = start_dispatcher(
        procs,
        tmp_path,
        [{**gw.entry(weight=False), "key": key.public.text}],
        secret_file,
        timeout=15,
    )
    dport = disp.port
    ca, crt, tls_key = make_ca_and_cert(tmp_path)
    port = free_port()
    (tmp_path / "nginx.conf").write_text(nginx_conf(tmp_path, dport, port, crt, tls_key))
    proc = procs([nginx, "-c", str(tmp_path / "nginx.conf"), "-p", str(tmp_path)], name="nginx")
    url = f"https://localhost:{port}"

    async def scenario() -> None:
        async with Client(
            [url], ca_file=str(ca), encryption="required", report_failures=False
        ) as c:
            assert c.gateway == "g1" and c._session is not None and c._session.encrypted
            await c.send(b"over noise")
            assert await asyncio.wait_for(c.receive(), scaled(5)) == b"over noise"
        # Without our CA the dispatcher's certificate does not verify: no answer is used.
        c = Client([url], encryption="required", report_failures=False)
        with pytest.raises(DispatchError, match="certificate"):
            await c.connect(timeout=scaled(1.5))
        await c.close()
        assert c.stats.dispatch_errors.get("connect", 0) >= 1

    def answered() -> bool:
        return proc.popen.poll() is None and (tmp_path / "nginx.pid").exists()

    wait_until(answered, 10, 0.05, what="nginx up")
    asyncio.run(scenario())


def test_sighup_rotates_keys_without_dropping_sessions(
    tmp_path: Path,
    procs: Callable[..., Proc],
) -> None:
    old, new = StaticKey.generate(), StaticKey.generate()
    path = tmp_path / "g1.key"
    write_key_file(path, old)
    gw = start_gateway(procs, "g1", "--key-file", str(path), "--workers", "2")

    def client(key: StaticKey) -> Client:
        return Client(
            fallback=[f"{key.public.text}@{gw.address}"],
            encryption="required",
            report_failures=False,
            resumption=False,
        )

    async def scenario() -> None:
        held = [client(old) for _ in range(4)]  # over both workers
        for c in held:
            await c.connect(timeout=scaled(5))
        path.write_text(f"{new.private_text}\n{old.private_text}\n")
        gw.proc.popen.send_signal(signal.SIGHUP)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + scaled(5)
        while True:  # each worker reloads on its own: poll until new handshakes see the key
            fresh = client(new)
            try:
                await fresh.connect(timeout=scaled(0.5))
                break
            except DispatchError:
                assert loop.time() < deadline, "the new key was never accepted"
            finally:
                await fresh.close()
        for i, c in enumerate(held):
            assert c.connected and c.stats.reconnects == 0
            await c.send(b"still here %d" % i)
            assert await asyncio.wait_for(c.receive(), scaled(5)) == b"still here %d" % i
            await c.close()

    asyncio.run(scenario())
    assert gw.proc.popen.poll() is None
    assert "keys reloaded" in gw.proc.output()

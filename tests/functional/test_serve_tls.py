"""`acar serve` terminating TLS, and its mTLS listener for ID-card login (api.server), over real handshakes.

In this process (EdgeServer and EdgeHttpProtocol on loopback with a small application that echoes its scope): the
versions and suites served, what the handshake of the mTLS listener accepts and refuses, and the ASGI TLS
extension. As the real `acar serve` process: HTTPS on the main port, the mTLS port beside it (one application,
one lifespan; with --workers 2 too), the start refused for a key that does not match its certificate.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import datetime as dt
import hashlib
import html
import ipaddress
import json
import os
import re
import secrets
import signal
import ssl
import subprocess
import time
import warnings
from collections.abc import AsyncIterator, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urljoin, urlsplit

import httpx
import jwt
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from pydantic import ValidationError
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from api.deps import Services
from api.server import EdgeServer, ServeConfig, TlsListeners, bind_socket
from api.settings import Settings
from tests.functional.helpers import ACAR, InProcessAcar, acar_json, run_acar, tls_client_context
from tests.idcard_pki import CARD_POLICY, Card, IdCardPki, idcard_pki, key_usage
from tests.local_http import free_port
from tests.passkey_tools import events

NOW = dt.datetime.now(dt.UTC)
ACR_HIGH = Settings().acr_high
TLS13_SUITES = {0x1301, 0x1302, 0x1303}  # RFC 8446 appendix B.4
TLS12_SUITES = {0xC02B, 0xC02F, 0xC02C, 0xC030, 0xCCA9, 0xCCA8}  # ECDHE AEAD (RFC 5289, RFC 7905)


# --- a generated PKI: the server's certificate, an ID-card root and issuing CA with cards, a stranger CA ---------

@dataclass(frozen=True)
class Issued:
    certificate: x509.Certificate
    key: ec.EllipticCurvePrivateKey

    @property
    def pem(self) -> str:
        return self.certificate.public_bytes(serialization.Encoding.PEM).decode()

    @property
    def der(self) -> bytes:
        return self.certificate.public_bytes(serialization.Encoding.DER)

    def key_pem(self) -> bytes:
        return self.key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                      serialization.NoEncryption())


def _issue(subject: x509.Name, issuer: Issued | None, *, ca: bool, key_usage: dict[str, bool] | None = None,
           client_auth: bool = False, server_names: tuple[str, ...] = (), days: tuple[int, int] = (-1, 30),
           ) -> Issued:
    key = ec.generate_private_key(ec.SECP256R1())
    usage = dict.fromkeys(("digital_signature", "content_commitment", "key_encipherment", "data_encipherment",
                           "key_agreement", "key_cert_sign", "crl_sign", "encipher_only", "decipher_only"), False)
    usage.update(key_usage or ({"key_cert_sign": True, "crl_sign": True} if ca else {"digital_signature": True}))
    builder = (x509.CertificateBuilder().subject_name(subject)
               .issuer_name(issuer.certificate.subject if issuer else subject).public_key(key.public_key())
               .serial_number(x509.random_serial_number())
               .not_valid_before(NOW + dt.timedelta(days=days[0])).not_valid_after(NOW + dt.timedelta(days=days[1]))
               .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
               .add_extension(x509.KeyUsage(**usage), critical=True)
               .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False))
    if issuer is not None:
        builder = builder.add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(issuer.key.public_key()), critical=False)
    if client_auth:
        builder = builder.add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
    if server_names:
        names: list[x509.GeneralName] = [x509.DNSName(n) for n in server_names if not n[0].isdigit()]
        names += [x509.IPAddress(ipaddress.ip_address(n)) for n in server_names if n[0].isdigit()]
        builder = builder.add_extension(x509.SubjectAlternativeName(names), critical=False)
        builder = builder.add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
    return Issued(builder.sign(issuer.key if issuer else key, hashes.SHA256()), key)


def _name(common_name: str, *, serial: str | None = None) -> x509.Name:
    attributes = [x509.NameAttribute(NameOID.COUNTRY_NAME, "AZ"),
                  x509.NameAttribute(NameOID.COMMON_NAME, common_name)]
    if serial:
        attributes += [x509.NameAttribute(NameOID.SURNAME, "MƏMMƏDOVA"),
                       x509.NameAttribute(NameOID.GIVEN_NAME, "AYSEL"),
                       x509.NameAttribute(NameOID.SERIAL_NUMBER, serial)]
    return x509.Name(attributes)


@dataclass(frozen=True)
class World:
    directory: Path
    server_ca: Issued
    server: Issued
    card_root: Issued
    card_issuing: Issued
    card: Issued
    card_no_signature: Issued
    card_expired: Issued
    stranger_card: Issued

    def write(self, name: str, data: bytes | str) -> Path:
        path = self.directory / name
        path.write_bytes(data.encode() if isinstance(data, str) else data)
        return path

    @property
    def server_files(self) -> tuple[Path, Path]:
        return self.directory / "server.pem", self.directory / "server.key"

    def client(self, card: Issued | Card | None = None, *, chain: tuple[x509.Certificate, ...] = (),
               versions: tuple[ssl.TLSVersion, ssl.TLSVersion] | None = None) -> ssl.SSLContext:
        """A client context trusting the server's CA, presenting `card` (and `chain` after it) when asked."""
        certificate = None
        if card is not None:
            name = f"card-{card.certificate.serial_number}"
            pem = b"".join(c.public_bytes(serialization.Encoding.PEM) for c in (card.certificate, *chain))
            key = card.key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                         serialization.NoEncryption())
            certificate = (self.write(f"{name}.pem", pem), self.write(f"{name}.key", key))
        return tls_client_context(self.directory / "server-ca.pem", certificate, versions=versions)


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> World:
    server_ca = _issue(_name("Test TLS CA"), None, ca=True)
    server = _issue(_name("localhost"), server_ca, ca=False, server_names=("localhost", "127.0.0.1"))
    card_root = _issue(_name("Test ID-card Root CA"), None, ca=True, days=(-10, 3650))
    card_issuing = _issue(_name("Test ID-card Issuing CA"), card_root, ca=True, days=(-10, 1825))
    stranger_root = _issue(_name("Stranger CA"), None, ca=True)
    world = World(
        directory=tmp_path_factory.mktemp("tls"), server_ca=server_ca, server=server, card_root=card_root,
        card_issuing=card_issuing,
        card=_issue(_name("MƏMMƏDOVA,AYSEL,5ABC12D", serial="PNOAZ-5ABC12D"), card_issuing, ca=False,
                    client_auth=True),
        # keyAgreement without digitalSignature: OpenSSL's "SSL client" purpose accepts it (the application may not)
        card_no_signature=_issue(_name("NO SIGNATURE", serial="PNOAZ-7NOSIGN"), card_issuing, ca=False,
                                 key_usage={"key_agreement": True}, client_auth=True),
        card_expired=_issue(_name("EXPIRED", serial="PNOAZ-6EXPIRD"), card_issuing, ca=False, client_auth=True,
                            days=(-30, -1)),
        stranger_card=_issue(_name("STRANGER", serial="PNOAZ-9STRANG"), stranger_root, ca=False, client_auth=True),
    )
    world.write("server-ca.pem", server_ca.pem)
    world.write("server.pem", server.pem + server_ca.pem)
    world.write("server.key", server.key_pem())
    world.write("card-anchors.pem", card_root.pem)
    world.write("card-intermediates.pem", card_issuing.pem)
    return world


# --- EdgeServer in this process, with an application that echoes what its scope carries -----------------------

REACHED: list[str] = []
"""The path of every request the echo application answered."""
EOF_IN_HANDSHAKE = ("UNEXPECTED_EOF_WHILE_READING", "TLS/SSL connection has been closed (EOF)")
"""How the ssl module reports a TLS 1.2 handshake the server cut (EOF before the handshake ended): SSLEOFError with
OpenSSL 3's reason in later CPython 3.11 releases (3.11.7), SSLZeroReturnError's text in Debian 12's 3.11.2. Either
way the client got no alert and no certificate to complain about: the server refused."""
CUT_IN_HANDSHAKE = (*EOF_IN_HANDSHAKE, "Connection reset by peer")
"""How a client sees a handshake the server refused: asyncio's SSL transport aborts the connection without
flushing the alert (TLS 1.2: EOF in the handshake; TLS 1.3: the client's side had completed, so a reset on read)."""


async def _echo(request: Request) -> JSONResponse:
    REACHED.append(request.url.path)
    extensions = request.scope.get("extensions") or {}
    return JSONResponse({"has_tls": "tls" in extensions, "tls": extensions.get("tls"), "scheme": request.url.scheme})


@contextlib.asynccontextmanager
async def _edge(world: World, *, tls: bool = True, mtls: bool = True, header_timeout: float = 5.0,
                ) -> AsyncIterator[tuple[int, int | None]]:
    """EdgeServer on loopback: (main port, mTLS port); the ID-card anchors are the card root and issuing CA."""
    sockets = [bind_socket("127.0.0.1", 0)]
    if tls and mtls:
        sockets.append(bind_socket("127.0.0.1", 0))
    ports = [int(s.getsockname()[1]) for s in sockets]
    cert, key = world.server_files
    listeners = TlsListeners(cert, key, ports[1] if len(ports) > 1 else None,
                             (world.card_root.der, world.card_issuing.der))
    config = ServeConfig(Starlette(routes=[Route("/echo", _echo)]), header_timeout=header_timeout,
                         tls=listeners if tls else None, http="api.server:EdgeHttpProtocol", log_config=None,
                         lifespan="off")
    server = EdgeServer(config)
    for sock in sockets:
        sock.listen()  # connections wait in the backlog until the server runs
    task = asyncio.create_task(server.serve(sockets=sockets))
    try:
        yield ports[0], ports[1] if len(ports) > 1 else None
    finally:
        server.should_exit = True
        await task
        for sock in sockets:
            sock.close()


async def _echoed(url: str, context: ssl.SSLContext | None = None) -> dict[str, object]:
    async with httpx.AsyncClient(verify=context or False, timeout=5) as client:
        r = await client.get(url + "/echo")
    assert r.status_code == 200
    echoed: dict[str, object] = r.json()
    return echoed


def _eof_in_handshake(reasons: str) -> bool:
    return any(eof in reasons for eof in EOF_IN_HANDSHAKE)


async def _refused(url: str, context: ssl.SSLContext | None = None) -> str:
    """Why a request failed without reaching the application (the chain of causes: httpx wraps the ssl errors)."""
    reached = len(REACHED)
    with pytest.raises(httpx.TransportError) as caught:
        await _echoed(url, context)
    assert len(REACHED) == reached
    error: BaseException | None = caught.value
    reasons = []
    while error is not None:
        reasons.append(f"{type(error).__name__}: {error}")
        error = error.__cause__ or error.__context__
    return " / ".join(reasons)


@pytest.mark.nodb
async def test_the_main_listener_speaks_tls_13_and_12_only_and_asks_for_no_certificate(world: World) -> None:
    async with _edge(world) as (port, _):
        base = f"https://localhost:{port}"
        # a client holding a card is not asked for it on the main listener
        echoed = await _echoed(base, world.client(world.card, chain=(world.card_issuing.certificate,)))
        assert echoed["has_tls"] and echoed["scheme"] == "https"
        tls = echoed["tls"]
        assert isinstance(tls, dict) and tls["client_cert_chain"] == [] and tls["tls_version"] == 0x0304
        assert tls["cipher_suite"] in TLS13_SUITES
        # TLS 1.2: an ECDHE AEAD suite, reported by its IANA number
        tls12 = (ssl.TLSVersion.TLSv1_2, ssl.TLSVersion.TLSv1_2)
        tls = (await _echoed(base, world.client(versions=tls12)))["tls"]
        assert isinstance(tls, dict) and tls["tls_version"] == 0x0303 and tls["cipher_suite"] in TLS12_SUITES
        # TLS 1.2 with a CBC suite only, and TLS 1.1: refused by the server (alert from its handshake)
        cbc = world.client(versions=tls12)
        cbc.set_ciphers("ECDHE-ECDSA-AES128-SHA256")
        assert _eof_in_handshake(await _refused(base, cbc))
        with warnings.catch_warnings():  # a TLS 1.1 client is the point here
            warnings.simplefilter("ignore", DeprecationWarning)
            old = world.client(versions=(ssl.TLSVersion.TLSv1_1, ssl.TLSVersion.TLSv1_1))
        old.set_ciphers("DEFAULT:@SECLEVEL=0")
        assert _eof_in_handshake(await _refused(base, old))
        # plain HTTP to the TLS port gets no answer
        assert "disconnected without sending a response" in await _refused(f"http://127.0.0.1:{port}")


@pytest.mark.nodb
async def test_the_mtls_listener_hands_the_presented_card_to_the_application(world: World) -> None:
    async with _edge(world) as (_, mtls_port):
        base = f"https://localhost:{mtls_port}"
        # no card: the connection is served, the chain is empty
        tls = (await _echoed(base, world.client()))["tls"]
        assert isinstance(tls, dict) and tls["client_cert_chain"] == []
        # a card of the configured issuing CA, sent alone or with its intermediate: its PEM reaches the scope
        for chain in ((), (world.card_issuing.certificate,)):
            tls = (await _echoed(base, world.client(world.card, chain=chain)))["tls"]
            assert isinstance(tls, dict) and tls["client_cert_chain"] == [world.card.pem]
            assert tls["tls_version"] == 0x0304 and tls["cipher_suite"] in TLS13_SUITES
        tls12 = (ssl.TLSVersion.TLSv1_2, ssl.TLSVersion.TLSv1_2)
        tls = (await _echoed(base, world.client(world.card, versions=tls12)))["tls"]
        assert isinstance(tls, dict) and tls["client_cert_chain"] == [world.card.pem] and tls["tls_version"] == 0x0303
        # OpenSSL's handshake accepts a card without digitalSignature (keyAgreement satisfies its "SSL client"
        # purpose): the application must check the key usage itself (api.server's module docstring)
        tls = (await _echoed(base, world.client(world.card_no_signature)))["tls"]
        assert isinstance(tls, dict) and tls["client_cert_chain"] == [world.card_no_signature.pem]


@pytest.mark.nodb
async def test_the_mtls_handshake_refuses_a_card_of_an_unknown_ca_and_an_expired_one(world: World) -> None:
    async with _edge(world) as (_, mtls_port):
        base = f"https://localhost:{mtls_port}"
        for card in (world.stranger_card, world.card_expired):
            for versions in ((ssl.TLSVersion.TLSv1_3, ssl.TLSVersion.TLSv1_3),
                             (ssl.TLSVersion.TLSv1_2, ssl.TLSVersion.TLSv1_2)):
                # TLS 1.2: the handshake is cut; TLS 1.3: the client's side completes before the server checks the
                # certificate, so the reset comes on the first read. Either way no request reaches the application.
                reason = await _refused(base, world.client(card, versions=versions))
                assert any(cut in reason for cut in CUT_IN_HANDSHAKE), reason
        # the same listener serves the good card (the refusals were the certificates')
        assert (await _echoed(base, world.client(world.card)))["has_tls"]


@pytest.mark.nodb
async def test_a_stalled_handshake_is_cut_at_the_header_deadline(world: World) -> None:
    """The header deadline starts once the handshake is done; the handshake has its own (the same, on the main
    listener): a client that opens a connection and never sends its ClientHello is dropped."""
    async with _edge(world, header_timeout=0.5) as (port, _):
        loop = asyncio.get_running_loop()
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        started = loop.time()
        assert await asyncio.wait_for(reader.read(), timeout=5) == b""
        writer.close()
    assert 0.4 < loop.time() - started < 3


@pytest.mark.nodb
async def test_plain_http_requests_get_no_tls_extension(world: World) -> None:
    async with _edge(world, tls=False) as (port, _):
        echoed = await _echoed(f"http://127.0.0.1:{port}")
    assert echoed == {"has_tls": False, "tls": None, "scheme": "http"}


# --- the real `acar serve` ---------------------------------------------------------------------------------------

class TlsServer:
    """`acar serve` over TLS with its mTLS listener, in its own process group (as helpers.Server)."""

    def __init__(self, env: Mapping[str, str], world: World, log_path: Path, *, workers: int = 1) -> None:
        self.port, self.mtls_port = free_port(), free_port()
        self.base, self.mtls_base = f"https://localhost:{self.port}", f"https://localhost:{self.mtls_port}"
        self.world = world
        self.log_path = log_path
        self._out = open(log_path, "wb")  # noqa: SIM115 - closed in stop()
        cert, key = world.server_files
        self.env = {**env, "ACAR_ISSUER": self.base, "ACAR_TLS_CERT_FILE": str(cert), "ACAR_TLS_KEY_FILE": str(key),
                    "ACAR_MTLS_PORT": str(self.mtls_port)}
        self.proc = subprocess.Popen([ACAR, "serve", "--port", str(self.port), "--workers", str(workers)],
                                     env=self.env, stdout=self._out, stderr=self._out, start_new_session=True)

    def wait_ready(self, timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(f"server exited early with {self.proc.returncode}: {self.log()}")
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(self.base + "/readyz", verify=self.world.client(), timeout=2).status_code == 200:
                    return
            time.sleep(0.1)
        raise AssertionError(f"server not ready within {timeout}s: {self.log()}")

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")[-3000:]

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
        self._out.close()
        return self.proc.returncode


@contextlib.contextmanager
def _acar_serve(env: Mapping[str, str], world: World, log_path: Path, *, workers: int = 1) -> Iterator[TlsServer]:
    server = TlsServer(env, world, log_path, workers=workers)
    try:
        server.wait_ready()
        yield server
    finally:
        code = server.stop()
    assert code == 0, server.log()


def _built_in_card(env: Mapping[str, str], world: World) -> Issued:
    """An authentication certificate of the built-in CA (what the mTLS listener trusts in development when no
    ID-card anchors are configured), for a key of this test."""
    key = ec.generate_private_key(ec.SECP256R1())
    public = world.write("built-in-card.pub", key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo))
    issued = json.loads(run_acar(env, "cert", "issue", "--profile", "authentication", "--fin", "5ABC12D",
                                 "--given-name", "Aysel", "--surname", "Məmmədova", "--public-key", str(public),
                                 "--json").stdout)
    return Issued(x509.load_pem_x509_certificate(issued["certificate_pem"].encode()), key)


@pytest.mark.one_pass("sqlite")  # the server process, not the database: tests/conftest.py
@pytest.mark.parametrize("workers", [1, 2])
def test_acar_serve_speaks_https_and_opens_the_mtls_listener(cli_env: dict[str, str], world: World,
                                                             tmp_path: Path, workers: int) -> None:
    run_acar(cli_env, "init")
    card = _built_in_card(cli_env, world)
    with _acar_serve(cli_env, world, tmp_path / "server.log", workers=workers) as server:
        r = httpx.get(server.base + "/pki/ca/issuing.crt", verify=world.client())  # served over HTTPS too
        issuing = x509.load_der_x509_certificate(r.content)
        assert httpx.get(server.base + "/healthz", verify=world.client()).status_code == 200
        assert httpx.get(server.mtls_base + "/healthz", verify=world.client()).status_code == 200
        # a card of the built-in CA with its issuing CA: the handshake accepts it
        r = httpx.get(server.mtls_base + "/healthz", verify=world.client(card, chain=(issuing,)))
        assert r.status_code == 200
        # the listener serves the ID-card login only: a page is sent to the issuer, any other request refused
        r = httpx.get(server.mtls_base + "/account?x=1", verify=world.client())
        assert (r.status_code, r.headers["location"]) == (303, server.base + "/account?x=1")
        r = httpx.post(server.mtls_base + "/token", verify=world.client(), data={"grant_type": "x"})
        assert (r.status_code, r.headers["content-type"]) == (404, "application/problem+json")
        assert httpx.get(server.base + "/account", verify=world.client()).status_code != 303  # the main port serves
        # a card of a CA the listener does not trust: refused in the handshake
        tls12 = (ssl.TLSVersion.TLSv1_2, ssl.TLSVersion.TLSv1_2)
        with pytest.raises(httpx.ConnectError, match="|".join(map(re.escape, EOF_IN_HANDSHAKE))):  # cut in handshake
            httpx.get(server.mtls_base + "/healthz", verify=world.client(world.stranger_card, versions=tls12))
        with pytest.raises(httpx.TransportError):  # TLS 1.3: cut before any answer
            httpx.get(server.mtls_base + "/healthz", verify=world.client(world.stranger_card))
        # plain HTTP on the TLS port: no answer
        with pytest.raises(httpx.TransportError):
            httpx.get(f"http://127.0.0.1:{server.port}/healthz", timeout=5)


@pytest.mark.nodb
def test_the_mtls_public_url(world: World) -> None:
    cert, key = world.server_files
    tls = {"tls_cert_file": cert, "tls_key_file": key}
    assert Settings(**tls).resolved_mtls_public_url is None
    assert Settings(**tls, mtls_port=8443).resolved_mtls_public_url == "https://localhost:8443"
    assert Settings(**tls, issuer="https://login.gov.az", mtls_port=443).resolved_mtls_public_url == (
        "https://login.gov.az")
    assert Settings(**tls, issuer="https://login.gov.az", mtls_port=8443,
                    mtls_public_url="https://login.gov.az:9443/").resolved_mtls_public_url == "https://login.gov.az:9443"
    # behind a proxy that terminates the client's TLS (no listener here), the proxy's port on the issuer's host
    proxied = Settings(issuer="https://login.gov.az", mtls_public_url="https://login.gov.az:8443")
    assert proxied.resolved_mtls_public_url == "https://login.gov.az:8443"
    # another host never gets the browser's host-only cookies (the pending request's binding): every login would
    # expire, so the setting is refused
    for other in ("https://card.login.gov.az", "https://gov.az:8443"):
        with pytest.raises(ValidationError, match="must be on the issuer's host login.gov.az"):
            Settings(issuer="https://login.gov.az", mtls_public_url=other)
    for wrong in ("http://card.login.gov.az", "https://card.login.gov.az/path", "https://user@card.login.gov.az"):
        with pytest.raises(ValidationError, match="is not an https origin"):
            Settings(mtls_public_url=wrong)


def test_acar_serve_refuses_tls_settings_that_cannot_work(acar: InProcessAcar, world: World) -> None:
    cert, _ = world.server_files
    other = world.write("other.key", world.card.key_pem())
    port = str(free_port())
    refused = acar("serve", "--port", port, check=False,
                   env={**acar.env, "ACAR_TLS_CERT_FILE": str(cert), "ACAR_TLS_KEY_FILE": str(other)})
    assert refused.returncode == 1 and "ACAR_TLS_CERT_FILE" in refused.stderr and "ACAR_TLS_KEY_FILE" in refused.stderr
    refused = acar("serve", "--port", port, check=False, env={**acar.env, "ACAR_MTLS_PORT": str(free_port())})
    assert refused.returncode == 1
    assert "ACAR_MTLS_PORT needs ACAR_TLS_CERT_FILE and ACAR_TLS_KEY_FILE" in refused.stderr
    refused = acar("serve", "--port", port, check=False, env={**acar.env, "ACAR_TLS_CERT_FILE": str(cert)})
    assert refused.returncode == 1 and "must be set together" in refused.stderr
    refused = acar("serve", "--port", port, check=False, env={**acar.env, "ACAR_TLS_CERT_FILE": str(cert),
                                                              "ACAR_TLS_KEY_FILE": str(world.directory / "none")})
    assert refused.returncode == 1 and "ACAR_TLS_KEY_FILE" in refused.stderr and "no such file" in refused.stderr
    # the mTLS listener with nothing to verify cards against (no anchors; no built-in CA before `acar init`)
    tls = {**acar.env, "ACAR_TLS_CERT_FILE": str(cert), "ACAR_TLS_KEY_FILE": str(world.server_files[1])}
    refused = acar("serve", "--port", port, check=False, env={**tls, "ACAR_MTLS_PORT": str(free_port())})
    assert refused.returncode == 1 and "ACAR_MTLS_PORT needs ID-card trust anchors" in refused.stderr
    refused = acar("serve", "--port", port, check=False, env={**tls, "ACAR_MTLS_PORT": port})
    assert refused.returncode == 1 and "ACAR_MTLS_PORT must differ from --port" in refused.stderr


# --- ID-card login over the real mTLS handshake, through the real `acar serve` ------------------------------------

FIN = "5ABC123"
REDIRECT_URI = "https://agency.example/cb"
HIGH_AMR = ["hwk", "mfa", "pin", "sc"]
_FORM = re.compile(r'<form method="post" action="([^"]+)" id="idcard-tls-form"[^>]*>\s*'
                   r'<input type="hidden" name="csrf_token" value="([^"]+)">')
_HIDDEN_CSRF = re.compile(r'name="csrf_token" value="([^"]+)"')
AZ = json.loads((Path(__file__).parents[2] / "api" / "locales" / "az.json").read_text(encoding="utf-8"))
"""The Azerbaijani messages (helper "front"'s translations): what a refusal page says in az."""


@pytest.fixture(scope="module")
def card_pki(tmp_path_factory: pytest.TempPathFactory) -> Iterator[IdCardPki]:
    """The generated national ID-card PKI with its real `openssl ocsp` responder (tests.idcard_pki)."""
    with idcard_pki(tmp_path_factory.mktemp("idcard")) as built:
        yield built


@dataclass
class CardSignIn:
    """An authorization request at level high walked up to the login page, in one browser-like client."""

    browser: httpx.AsyncClient
    verifier: str
    state: str
    pending_id: str
    action: str  # the login page's mutual-TLS form's action
    csrf: str

    def mtls_url(self, server: TlsServer) -> str:
        """Where that form must post (the contract of issue 15): POST /idcard/tls/{pending_id} on the mTLS
        listener's origin, ACAR_MTLS_PUBLIC_URL (here its default, the issuer's host on ACAR_MTLS_PORT)."""
        return f"{server.mtls_base}/idcard/tls/{self.pending_id}"


async def _to_login_page(server: TlsServer, browser: httpx.AsyncClient, client_id: str) -> CardSignIn:
    """GET /authorize (acr high, PKCE) and the login page it leads to: the mutual-TLS form's action and token."""
    verifier, state = secrets.token_urlsafe(48), secrets.token_urlsafe(8)
    challenge = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).rstrip(b"=").decode()
    r = await browser.get(server.base + "/authorize", params={
        "client_id": client_id, "redirect_uri": REDIRECT_URI, "response_type": "code", "scope": "openid",
        "state": state, "nonce": secrets.token_urlsafe(8), "code_challenge": challenge,
        "code_challenge_method": "S256", "acr_values": ACR_HIGH})
    assert r.status_code == 303, r.text
    login_page = urljoin(server.base, r.headers["location"])
    assert login_page.startswith(server.base + "/interaction/"), login_page
    page = await browser.get(login_page)
    assert page.status_code == 200, page.text
    form = _FORM.search(page.text)
    assert form is not None, page.text
    return CardSignIn(browser, verifier, state, urlsplit(login_page).path.split("/")[2],
                      html.unescape(form.group(1)), html.unescape(form.group(2)))


async def _id_token(server: TlsServer, sign_in: CardSignIn, consent_url: str, client_id: str, secret: str,
                    ) -> dict[str, Any]:
    """Consent, the redirect with the code, /token (client_secret_basic), and the ID token's verified claims."""
    browser = sign_in.browser
    page = await browser.get(consent_url)
    found = _HIDDEN_CSRF.search(page.text)
    assert page.status_code == 200 and found is not None, page.text
    r = await browser.post(consent_url, data={"csrf_token": html.unescape(found.group(1)), "decision": "allow"})
    assert r.status_code == 303 and r.headers["location"].startswith(REDIRECT_URI + "?"), r.text
    query = parse_qs(urlsplit(r.headers["location"]).query)
    assert query["state"] == [sign_in.state]
    r = await browser.post(server.base + "/token", auth=(client_id, secret), data={
        "grant_type": "authorization_code", "code": query["code"][0], "redirect_uri": REDIRECT_URI,
        "code_verifier": sign_in.verifier})
    assert r.status_code == 200, r.text
    token = r.json()["id_token"]
    keys = {k.key_id: k for k in jwt.PyJWKSet.from_dict((await browser.get(server.base + "/jwks.json")).json()).keys}
    header = jwt.get_unverified_header(token)
    claims: dict[str, Any] = jwt.decode(token, key=keys[header["kid"]].key, algorithms=["ES256"], audience=client_id,
                                        issuer=server.base, options={"require": ["exp", "iat", "sub", "acr", "amr"]})
    return claims


@pytest.mark.one_pass("sqlite")  # the server process, not the database: tests/conftest.py
async def test_idcard_login_over_the_mtls_listener(cli_env: dict[str, str], services: Services, world: World,
                                                   card_pki: IdCardPki, tmp_path: Path) -> None:
    """The login page's mutual-TLS form posted to the mTLS listener with the card in the handshake: a code and an ID
    token at level high (amr sc, hwk). Cards the handshake accepts but the application must refuse (revoked: OCSP
    says so; keyAgreement without digitalSignature) get the translated refusal page, and their audit events."""
    trust = card_pki.write_trust(tmp_path)
    env = {**cli_env, "ACAR_IDCARD_TRUST_ANCHORS": json.dumps([str(trust.anchors)]),
           "ACAR_IDCARD_INTERMEDIATES": json.dumps([str(trust.intermediates)]),
           "ACAR_IDCARD_REQUIRED_POLICIES": json.dumps([CARD_POLICY])}
    run_acar(env, "init")
    run_acar(env, "person", "add", "--fin", FIN, "--given-name", "Aygün", "--family-name", "Məmmədova")
    client = acar_json(env, "client", "add", "--name", "Agency portal", "--redirect-uri", REDIRECT_URI,
                       "--scope", "openid")
    client_id, secret = client["client_id"], client["client_secret"]
    card = card_pki.card(fin=FIN)
    revoked = card_pki.revoked_card(fin=FIN)
    no_signature = card_pki.card(fin=FIN, usage=key_usage(key_agreement=True))
    with _acar_serve(env, world, tmp_path / "server.log") as server:
        # one browser for both origins (cookies are per host, not per port), holding the card: the main listener
        # never asks for it, the mTLS listener does
        async with httpx.AsyncClient(verify=world.client(card), timeout=30) as browser:
            sign_in = await _to_login_page(server, browser, client_id)
            actions = [(sign_in.action, sign_in.mtls_url(server))]
            r = await browser.post(sign_in.mtls_url(server), data={"csrf_token": sign_in.csrf})
            assert r.status_code == 303, r.text
            assert r.headers["location"].startswith(server.base + "/interaction/")  # consent, back on the issuer
            claims = await _id_token(server, sign_in, r.headers["location"], client_id, secret)
        assert claims["acr"] == ACR_HIGH and sorted(claims["amr"]) == HIGH_AMR
        [succeeded] = await events(services, "login.card.succeeded")
        assert succeeded.detail["method"] == "idcard-tls"
        assert succeeded.detail["fingerprint"] == card.fingerprint and succeeded.detail["revocation"] == "good"
        # accepted by the handshake, refused by the application, in the language the browser asks for
        for refused_card, code in ((revoked, "certificate_revoked"), (no_signature, "certificate_wrong_usage")):
            async with httpx.AsyncClient(verify=world.client(refused_card), timeout=30,
                                         headers={"Accept-Language": "az"}) as browser:
                sign_in = await _to_login_page(server, browser, client_id)
                actions.append((sign_in.action, sign_in.mtls_url(server)))
                r = await browser.post(sign_in.mtls_url(server), data={"csrf_token": sign_in.csrf})
            assert r.status_code == 403 and r.headers["content-type"].startswith("text/html"), r.text
            assert AZ[f"card.error.{code}"] in html.unescape(r.text) and "set-cookie" not in r.headers
    refusals = [(e.detail["method"], e.detail["code"], e.detail.get("fingerprint"))
                for e in await events(services, "login.card.refused")]
    assert refusals == [("idcard-tls", "certificate_revoked", revoked.fingerprint),
                        ("idcard-tls", "certificate_wrong_usage", no_signature.fingerprint)]
    # checked last, so that the walk above runs whatever the page says: the login page's form posts there
    for action, expected in actions:
        assert action == expected, "the login page's mutual-TLS form posts elsewhere"

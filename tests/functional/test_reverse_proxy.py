"""deploy/nginx.conf in front of a real `acar serve`, and the invariants of deploy/compose.yaml.

The shipped nginx.conf runs under Debian's nginx (a throwaway prefix, the file wrapped in a main context of the
test's own) with only its listen ports, the file paths under /run/ and the upstream replaced (NginxProxy: each
replacement must match exactly once, so the file tested is the file shipped). In front of `acar serve` on loopback,
with the generated national ID-card PKI and its real `openssl ocsp` responder (tests.idcard_pki): discovery over
HTTPS with the issuer's https URL, an ID-card login by TLS client certificate forwarded by nginx as
X-SSL-Client-Cert, cards nginx passes on and Açar refuses (revoked, of an unknown CA), a client that sends that
header itself (through nginx, or straight to Açar) refused, TLS 1.1 and TLS 1.2 without AEAD refused.
`docker compose` itself needs a Docker daemon, which the test machines lack: the compose file is checked as YAML
(test_compose_invariants), and its healthcheck commands are run against the processes above.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import html
import ipaddress
import json
import os
import re
import secrets
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import time
import warnings
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, quote, urljoin, urlsplit

import httpx
import jwt
import pytest
import yaml
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from api.deps import Services
from tests.functional.helpers import InProcessAcar, Server, tls_client_context
from tests.idcard_pki import CARD_POLICY, Card, IdCardPki, idcard_pki
from tests.local_http import free_port
from tests.passkey_tools import events

DEPLOY = Path(__file__).parents[2] / "deploy"
NGINX_CONF = DEPLOY / "nginx.conf"
COMPOSE = DEPLOY / "compose.yaml"
HEADER = "X-SSL-Client-Cert"
FIN = "5ABC123"
REDIRECT_URI = "https://agency.example/cb"
ACR_HIGH = "http://eidas.europa.eu/LoA/high"
HIGH_AMR = ["hwk", "mfa", "pin", "sc"]
STRANGER = "127.0.0.3"
"""The source address of a client that talks to Açar directly (loopback, but not the trusted proxy's 127.0.0.1)."""
_FORM = re.compile(r'<form method="post" action="([^"]+)" id="idcard-tls-form"[^>]*>\s*'
                   r'<input type="hidden" name="csrf_token" value="([^"]+)">')
_HIDDEN_CSRF = re.compile(r'name="csrf_token" value="([^"]+)"')


def nginx_binary() -> str:
    """Debian's nginx (`make test` installs it): missing, the test fails, it never skips."""
    found = shutil.which("nginx") or next((p for p in ("/usr/sbin/nginx",) if Path(p).is_file()), None)
    if found is None:
        pytest.fail("nginx is required (apt-get install nginx; `make test` installs it as root)", pytrace=False)
    return found


# --- the server's TLS certificate ---------------------------------------------------------------------------------

@dataclass(frozen=True)
class ServerTls:
    directory: Path

    @property
    def ca(self) -> Path:
        return self.directory / "server-ca.pem"

    @property
    def chain(self) -> Path:
        return self.directory / "tls-chain.pem"

    @property
    def key(self) -> Path:
        return self.directory / "tls.key"

    def client(self, card: Card | None = None, *, versions: tuple[ssl.TLSVersion, ssl.TLSVersion] | None = None,
               ) -> ssl.SSLContext:
        """A client context trusting the server's CA, presenting `card` when asked for a certificate."""
        certificate = None if card is None else card.write(self.directory, f"card-{card.serial_number}")
        return tls_client_context(self.ca, certificate, versions=versions)


def _server_tls(directory: Path) -> ServerTls:
    """A CA and a certificate for localhost and 127.0.0.1 (EC P-256), written as the compose file's files."""
    now = dt.datetime.now(dt.UTC)
    ca_key, key = ec.generate_private_key(ec.SECP256R1()), ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "Test TLS CA")])
    ca = (x509.CertificateBuilder().subject_name(ca_name).issuer_name(ca_name).public_key(ca_key.public_key())
          .serial_number(x509.random_serial_number()).not_valid_before(now - dt.timedelta(days=1))
          .not_valid_after(now + dt.timedelta(days=30))
          .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
          .add_extension(x509.KeyUsage(digital_signature=False, content_commitment=False, key_encipherment=False,
                                       data_encipherment=False, key_agreement=False, key_cert_sign=True,
                                       crl_sign=True, encipher_only=False, decipher_only=False), critical=True)
          .sign(ca_key, hashes.SHA256()))
    leaf = (x509.CertificateBuilder().subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")]))
            .issuer_name(ca_name).public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(days=1)).not_valid_after(now + dt.timedelta(days=30))
            .add_extension(x509.SubjectAlternativeName([x509.DNSName("localhost"),
                                                        x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
                           critical=False)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
            .sign(ca_key, hashes.SHA256()))
    tls = ServerTls(directory)
    pem = serialization.Encoding.PEM
    tls.ca.write_bytes(ca.public_bytes(pem))
    tls.chain.write_bytes(leaf.public_bytes(pem) + ca.public_bytes(pem))
    tls.key.write_bytes(key.private_bytes(pem, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))
    return tls


# --- nginx running deploy/nginx.conf ------------------------------------------------------------------------------

@dataclass(frozen=True)
class NginxPorts:
    https: int
    mtls: int
    http: int


def nginx_config(shipped: str, *, ports: NginxPorts, upstream: str, files: Mapping[str, Path]) -> str:
    """deploy/nginx.conf with the listen ports bound on loopback, the upstream and the /run/ paths replaced; each
    replacement must match exactly once, so a change of the shipped file cannot slip past its test."""
    replacements = {
        "listen 443 ssl default_server;": f"listen 127.0.0.1:{ports.https} ssl default_server;",
        "listen 8443 ssl default_server;": f"listen 127.0.0.1:{ports.mtls} ssl default_server;",
        "listen 80 default_server;": f"listen 127.0.0.1:{ports.http} default_server;",
        "server serve:8000 ": f"server {upstream} ",
        **{f" {path};": f" {files[path]};" for path in files},
    }
    for old, new in replacements.items():
        count = shipped.count(old)
        assert count == 1, f"deploy/nginx.conf holds {old!r} {count} times, the test replaces it once"
        shipped = shipped.replace(old, new)
    leftover = re.findall(r"/run/\S+", shipped)
    assert not leftover, f"paths of the container the test does not provide: {leftover}"
    return shipped


class NginxProxy:
    """Debian's nginx in the foreground on a prefix of its own, serving deploy/nginx.conf (nginx_config)."""

    def __init__(self, directory: Path, tls: ServerTls, ca_names: Path, upstream: str) -> None:
        self.directory = directory
        self.ports = NginxPorts(free_port(), free_port(), free_port())
        site = directory / "acar.conf"
        site.write_text(nginx_config(NGINX_CONF.read_text(), ports=self.ports, upstream=upstream, files={
            "/run/configs/tls-chain.pem": tls.chain, "/run/secrets/tls_key": tls.key,
            "/run/configs/idcard-ca-names.pem": ca_names}))
        temp = "\n".join(f"    {kind}_temp_path {directory / kind};" for kind in (
            "client_body", "proxy", "fastcgi", "uwsgi", "scgi"))
        user = "user root root;\n" if os.geteuid() == 0 else ""  # root: workers keep the prefix's permissions
        self.conf = directory / "nginx.conf"
        self.conf.write_text(
            f"{user}worker_processes 1;\npid {directory / 'nginx.pid'};\nerror_log {directory / 'error.log'} info;\n"
            f"events {{ worker_connections 256; }}\n"
            f"http {{\n    access_log {directory / 'access.log'};\n{temp}\n    include {site};\n}}\n")
        self.command = [nginx_binary(), "-p", str(directory), "-c", str(self.conf), "-e", str(directory / "error.log")]
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def https(self) -> str:
        return f"https://localhost:{self.ports.https}"

    @property
    def mtls(self) -> str:
        return f"https://localhost:{self.ports.mtls}"

    @property
    def http(self) -> str:
        return f"http://127.0.0.1:{self.ports.http}"

    def check(self) -> str:
        """`nginx -t`: the configuration's syntax and files; its output (warnings included)."""
        done = subprocess.run([*self.command, "-t"], capture_output=True, text=True, timeout=30, check=False)
        assert done.returncode == 0, done.stderr
        return done.stderr

    def start(self) -> None:
        self.proc = subprocess.Popen([*self.command, "-g", "daemon off;"], stdout=subprocess.DEVNULL,
                                     stderr=subprocess.DEVNULL, start_new_session=True)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(f"nginx exited with {self.proc.returncode}: {self.log()}")
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", self.ports.mtls), timeout=1):
                return
            time.sleep(0.05)
        raise AssertionError(f"nginx did not listen within 30 s: {self.log()}")

    def log(self) -> str:
        path = self.directory / "error.log"
        return path.read_text(errors="replace")[-3000:] if path.exists() else ""

    def stop(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.send_signal(signal.SIGQUIT)  # graceful shutdown
        try:
            self.proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()


@contextlib.contextmanager
def running(proxy: NginxProxy) -> Iterator[NginxProxy]:
    proxy.start()
    try:
        yield proxy
    finally:
        proxy.stop()


@pytest.fixture(scope="module")
def card_pki(tmp_path_factory: pytest.TempPathFactory) -> Iterator[IdCardPki]:
    with idcard_pki(tmp_path_factory.mktemp("idcard")) as built:
        yield built


@pytest.fixture(scope="module")
def server_tls(tmp_path_factory: pytest.TempPathFactory) -> ServerTls:
    return _server_tls(tmp_path_factory.mktemp("tls"))


def _ca_names(pki: IdCardPki, directory: Path) -> Path:
    """The ID-card CAs nginx names in its CertificateRequest (what compose's idcard-ca-names.pem holds)."""
    trust = pki.write_trust(directory)
    path = directory / "idcard-ca-names.pem"
    path.write_bytes(trust.anchors.read_bytes() + trust.intermediates.read_bytes())
    return path


def compose_healthcheck(service: str, port: int, *, default_port: int) -> list[str]:
    """The compose file's healthcheck command of `service`, aimed at `port` instead of the container's own."""
    test = _compose()["services"][service]["healthcheck"]["test"]
    assert test[0] == "CMD"
    command = [str(part) for part in test[1:]]
    if command[0] == "python":
        command[0] = sys.executable
    aimed = [part.replace(f"127.0.0.1:{default_port}", f"127.0.0.1:{port}")
             .replace(f"127.0.0.1/{default_port}", f"127.0.0.1/{port}") for part in command]
    assert aimed != command, f"the {service} healthcheck names no 127.0.0.1 port {default_port}"
    return aimed


# --- TLS at nginx -------------------------------------------------------------------------------------------------

def _handshake(port: int, context: ssl.SSLContext) -> tuple[str | None, tuple[str, str, int] | None]:
    with socket.create_connection(("127.0.0.1", port), timeout=10) as raw, \
            context.wrap_socket(raw, server_hostname="localhost") as tls:
        return tls.version(), tls.cipher()


def _acceptable_ca_names(port: int) -> str:
    """What `openssl s_client` reports of the server's CertificateRequest (the CA names, or that none was sent)."""
    done = subprocess.run(["openssl", "s_client", "-connect", f"127.0.0.1:{port}", "-servername", "localhost",
                           "-tls1_2"], input="", capture_output=True, text=True, timeout=30, check=False)
    return done.stdout


@pytest.mark.nodb
def test_nginx_speaks_tls_12_and_13_with_aead_only(server_tls: ServerTls, card_pki: IdCardPki, tmp_path: Path
                                                   ) -> None:
    proxy = NginxProxy(tmp_path, server_tls, _ca_names(card_pki, tmp_path), upstream=f"127.0.0.1:{free_port()}")
    assert "warn" not in proxy.check()  # no deprecated or ignored directive in the shipped file
    with running(proxy):
        for port in (proxy.ports.https, proxy.ports.mtls):
            assert _handshake(port, server_tls.client()) [0] == "TLSv1.3"
            tls12 = (ssl.TLSVersion.TLSv1_2, ssl.TLSVersion.TLSv1_2)
            version, cipher = _handshake(port, server_tls.client(versions=tls12))
            assert version == "TLSv1.2" and cipher is not None and ("GCM" in cipher[0] or "CHACHA20" in cipher[0])
            # TLS 1.2 with a CBC suite only: no suite in common
            cbc = server_tls.client(versions=tls12)
            cbc.set_ciphers("ECDHE-ECDSA-AES128-SHA256:ECDHE-ECDSA-AES128-SHA")
            with pytest.raises(ssl.SSLError, match="HANDSHAKE_FAILURE|NO_SHARED_CIPHER"):
                _handshake(port, cbc)
            # TLS 1.1 (RFC 8996 deprecates it): refused by nginx, whatever suites the client offers
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", DeprecationWarning)
                old = server_tls.client(versions=(ssl.TLSVersion.TLSv1_1, ssl.TLSVersion.TLSv1_1))
            old.set_ciphers("DEFAULT:@SECLEVEL=0")
            with pytest.raises(ssl.SSLError, match="PROTOCOL_VERSION|UNSUPPORTED_PROTOCOL|NO_PROTOCOLS"):
                _handshake(port, old)
        # the compose file's healthcheck of the proxy passes against it
        check = subprocess.run(compose_healthcheck("proxy", proxy.ports.http, default_port=80), timeout=30, check=False)
        assert check.returncode == 0
        # only the ID-card listener asks for a client certificate, naming the ID-card CAs
        assert "No client certificate CA names sent" in _acceptable_ca_names(proxy.ports.https)
        names = _acceptable_ca_names(proxy.ports.mtls)
        issuing = card_pki.issuing_certificate.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value
        assert "Acceptable client certificate CA names" in names and str(issuing) in names, names


# --- Açar behind nginx ----------------------------------------------------------------------------------------------

@dataclass
class SignIn:
    """An authorization request at level high walked up to the login page, in one browser-like client."""

    browser: httpx.AsyncClient
    verifier: str
    state: str
    pending_id: str
    action: str  # the login page's mutual-TLS form's action
    csrf: str


async def _to_login_page(issuer: str, browser: httpx.AsyncClient, client_id: str) -> SignIn:
    import base64
    import hashlib

    verifier, state = secrets.token_urlsafe(48), secrets.token_urlsafe(8)
    challenge = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).rstrip(b"=").decode()
    r = await browser.get(issuer + "/authorize", params={
        "client_id": client_id, "redirect_uri": REDIRECT_URI, "response_type": "code", "scope": "openid",
        "state": state, "nonce": secrets.token_urlsafe(8), "code_challenge": challenge,
        "code_challenge_method": "S256", "acr_values": ACR_HIGH})
    assert r.status_code == 303, r.text
    login_page = urljoin(issuer, r.headers["location"])
    assert login_page.startswith(issuer + "/interaction/"), login_page
    page = await browser.get(login_page)
    assert page.status_code == 200, page.text
    form = _FORM.search(page.text)
    assert form is not None, page.text
    return SignIn(browser, verifier, state, urlsplit(login_page).path.split("/")[2], html.unescape(form.group(1)),
                  html.unescape(form.group(2)))


async def _id_token(issuer: str, sign_in: SignIn, consent_url: str, client_id: str, secret: str) -> dict[str, Any]:
    """Consent, the redirect with the code, /token, and the ID token's verified claims: all through nginx."""
    browser = sign_in.browser
    page = await browser.get(consent_url)
    found = _HIDDEN_CSRF.search(page.text)
    assert page.status_code == 200 and found is not None, page.text
    r = await browser.post(consent_url, data={"csrf_token": html.unescape(found.group(1)), "decision": "allow"})
    assert r.status_code == 303 and r.headers["location"].startswith(REDIRECT_URI + "?"), r.text
    query = parse_qs(urlsplit(r.headers["location"]).query)
    assert query["state"] == [sign_in.state]
    r = await browser.post(issuer + "/token", auth=(client_id, secret), data={
        "grant_type": "authorization_code", "code": query["code"][0], "redirect_uri": REDIRECT_URI,
        "code_verifier": sign_in.verifier})
    assert r.status_code == 200, r.text
    token = r.json()["id_token"]
    keys = {k.key_id: k for k in jwt.PyJWKSet.from_dict((await browser.get(issuer + "/jwks.json")).json()).keys}
    claims: dict[str, Any] = jwt.decode(token, key=keys[jwt.get_unverified_header(token)["kid"]].key,
                                        algorithms=["ES256"], audience=client_id, issuer=issuer,
                                        options={"require": ["exp", "iat", "sub", "acr", "amr"]})
    return claims


def _cookie_header(browser: httpx.AsyncClient) -> str:
    return "; ".join(f"{cookie.name}={cookie.value}" for cookie in browser.cookies.jar)


async def _refusal_codes(services: Services) -> list[str]:
    return [str(event.detail["code"]) for event in await events(services, "login.card.refused")]


@pytest.mark.one_pass("sqlite")  # the server process, not the database: tests/conftest.py
async def test_acar_behind_nginx_discovery_and_idcard_login(acar: InProcessAcar, services: Services,
                                                            server_tls: ServerTls, card_pki: IdCardPki,
                                                            tmp_path: Path) -> None:
    """Açar on plain HTTP behind the shipped nginx.conf, configured as compose.yaml configures it (issuer https,
    ACAR_TRUSTED_PROXIES the proxy's address, ACAR_IDCARD_CLIENT_CERT_HEADER, ACAR_MTLS_PUBLIC_URL the proxy's
    :8443): discovery and the PKI's http URLs through nginx; the card's certificate, presented to nginx in the TLS
    handshake, logs in at level high; the same header sent by a client (to nginx or straight to Açar) is refused."""
    proxy_dir = tmp_path / "nginx"
    proxy_dir.mkdir()
    acar_port = free_port()
    proxy = NginxProxy(proxy_dir, server_tls, _ca_names(card_pki, proxy_dir), upstream=f"127.0.0.1:{acar_port}")
    trust = card_pki.write_trust(tmp_path)
    env = {**acar.env, "ACAR_ISSUER": proxy.https, "ACAR_MTLS_PUBLIC_URL": proxy.mtls,
           "ACAR_TRUSTED_PROXIES": json.dumps(["127.0.0.1/32"]), "ACAR_IDCARD_CLIENT_CERT_HEADER": HEADER,
           "ACAR_IDCARD_TRUST_ANCHORS": json.dumps([str(trust.anchors)]),
           "ACAR_IDCARD_INTERMEDIATES": json.dumps([str(trust.intermediates)]),
           "ACAR_IDCARD_REQUIRED_POLICIES": json.dumps([CARD_POLICY])}
    acar("init", env=env)
    acar("person", "add", "--fin", FIN, "--given-name", "Aygün", "--family-name", "Məmmədova", env=env)
    client = acar.json("client", "add", "--name", "Agency portal", "--redirect-uri", REDIRECT_URI, "--scope", "openid",
                       env=env)
    client_id, secret = client["client_id"], client["client_secret"]
    card = card_pki.card(fin=FIN)
    server = Server(env, port=acar_port, log_path=tmp_path / "server.log")
    try:
        server.wait_ready()
        # the compose file's healthcheck of serve passes against it
        check = await asyncio.to_thread(subprocess.run, compose_healthcheck("serve", acar_port, default_port=8000),
                                        timeout=60, check=False)
        assert check.returncode == 0
        with running(proxy):
            async with httpx.AsyncClient(verify=server_tls.client(), timeout=30) as visitor:
                # discovery over HTTPS through nginx, naming the https issuer
                r = await visitor.get(proxy.https + "/.well-known/openid-configuration")
                assert r.status_code == 200, r.text
                assert r.json()["issuer"] == proxy.https and r.json()["token_endpoint"] == proxy.https + "/token"
                assert r.headers["strict-transport-security"].startswith("max-age=")
                assert re.fullmatch(r"[0-9a-f]{32}", r.headers["x-request-id"])  # nginx's $request_id, kept
                assert (await visitor.get(proxy.https + "/metrics")).status_code == 404
                # plain http: the PKI's URLs (CRL, OCSP and CA URLs in certificates) served, the rest sent to https
                r = await visitor.get(proxy.http + "/pki/ca/root.crt")
                assert r.status_code == 200 and r.headers["content-type"] == "application/pkix-cert"
                r = await visitor.get(proxy.http + "/.well-known/openid-configuration")
                assert r.status_code == 301 and r.headers["location"].startswith("https://")
                # the ID-card listener: a page asked for there belongs to the issuer, anything else is not served
                r = await visitor.get(proxy.mtls + "/account")
                assert (r.status_code, r.headers["location"]) == (303, "https://localhost/account")
                assert (await visitor.post(proxy.mtls + "/token")).status_code == 404

            # the login: the card presented to nginx in the handshake of :8443, forwarded as the header
            async with httpx.AsyncClient(verify=server_tls.client(card), timeout=30) as browser:
                sign_in = await _to_login_page(proxy.https, browser, client_id)
                assert sign_in.action == f"{proxy.mtls}/idcard/tls/{sign_in.pending_id}"  # the form posts to nginx
                r = await browser.post(sign_in.action, data={"csrf_token": sign_in.csrf})
                assert r.status_code == 303, r.text
                assert r.headers["location"].startswith(proxy.https + "/interaction/")  # consent, on the issuer
                claims = await _id_token(proxy.https, sign_in, r.headers["location"], client_id, secret)
            assert claims["acr"] == ACR_HIGH and sorted(claims["amr"]) == HIGH_AMR
            [succeeded] = await events(services, "login.card.succeeded")
            assert succeeded.detail["method"] == "idcard-tls" and succeeded.detail["fingerprint"] == card.fingerprint

            # cards nginx lets through (optional_no_ca: it checks only that the client holds the key) and Açar then
            # refuses, with its translated page: revoked (the OCSP responder says so), of a CA it does not trust
            for refused_card in (card_pki.revoked_card(fin=FIN), card_pki.unknown_ca_card(fin=FIN)):
                async with httpx.AsyncClient(verify=server_tls.client(refused_card), timeout=30) as browser:
                    sign_in = await _to_login_page(proxy.https, browser, client_id)
                    r = await browser.post(sign_in.action, data={"csrf_token": sign_in.csrf})
                assert r.status_code == 403 and "set-cookie" not in r.headers, r.text

            # a browser without a card that writes the header itself: nginx replaces it with its own (empty: no
            # certificate in this handshake), on the ID-card listener and on the issuer's
            forged = {HEADER: quote(card.pem)}
            async with httpx.AsyncClient(verify=server_tls.client(), timeout=30) as browser:
                for base in (proxy.mtls, proxy.https):
                    sign_in = await _to_login_page(proxy.https, browser, client_id)
                    r = await browser.post(f"{base}/idcard/tls/{sign_in.pending_id}", headers=forged,
                                           data={"csrf_token": sign_in.csrf})
                    assert r.status_code == 400 and "set-cookie" not in r.headers, r.text
                # straight to Açar, from an address that is not the proxy's, with the browser's cookies
                sign_in = await _to_login_page(proxy.https, browser, client_id)
                direct = httpx.AsyncHTTPTransport(local_address=STRANGER)
                async with httpx.AsyncClient(transport=direct, timeout=30) as stranger:
                    r = await stranger.post(f"{server.base}/idcard/tls/{sign_in.pending_id}",
                                            data={"csrf_token": sign_in.csrf},
                                            headers={**forged, "Cookie": _cookie_header(browser),
                                                     "X-Forwarded-For": "127.0.0.1"})
                assert r.status_code == 403 and "set-cookie" not in r.headers, r.text
            assert await _refusal_codes(services) == ["certificate_revoked", "certificate_untrusted",
                                                      "certificate_missing", "certificate_missing",
                                                      "forwarded_certificate_refused"]
            [ignored] = await events(services, "login.card.forwarded_header_ignored")
            assert ignored.detail == {"peer": STRANGER, "header": HEADER.lower()}
            assert len(await events(services, "login.card.succeeded")) == 1
    finally:
        code = server.stop(signal.SIGINT)
    assert code == 0, server.log()


# --- deploy/compose.yaml --------------------------------------------------------------------------------------------

SECRET_NAME = re.compile(r"PASSWORD|SECRET|SALT|TOKEN|PIN|KEY|DATABASE_URL|CREDENTIAL", re.IGNORECASE)
URL_WITH_PASSWORD = re.compile(r"://[^/@\s:]+:[^/@\s]+@")


def _compose() -> dict[str, Any]:
    loaded = yaml.safe_load(COMPOSE.read_text())
    assert isinstance(loaded, dict)
    return loaded


@pytest.mark.nodb
def test_compose_invariants() -> None:
    """deploy/compose.yaml (no Docker daemon here to run `docker compose config`): two serve replicas and a worker
    of the project's image, a migration before them, healthchecks, secrets as files and never values in an
    environment listing, the nginx.conf it mounts the one tested above, and Açar's proxy settings matching it."""
    compose = _compose()
    services: dict[str, Any] = compose["services"]
    assert {"serve", "worker", "migrate", "postgres", "redis", "proxy"} <= set(services)
    serve, worker, proxy = services["serve"], services["worker"], services["proxy"]

    # the Açar services: one image built from the project's Dockerfile, `acar start serve|worker`
    for name in ("serve", "worker", "migrate"):
        build = services[name]["build"]
        assert (COMPOSE.parent / build["context"] / build["dockerfile"]).resolve() == DEPLOY.parent / "Dockerfile"
        assert services[name]["image"] == serve["image"]
    # the image's entrypoint is `acar start`; serve listens on every interface of its container, where nginx reaches it
    in_container = ["serve", "--host", "0.0.0.0", "--port", "8000"]  # noqa: S104 - the container's interfaces
    assert serve["command"] == in_container and serve["deploy"]["replicas"] == 2
    assert worker["command"] == ["worker"] and worker.get("deploy", {}).get("replicas", 1) == 1
    for name in ("serve", "worker"):
        assert services[name]["depends_on"]["migrate"] == {"condition": "service_completed_successfully"}
    # healthchecks: every long-running service has one; serve's is Açar's readiness probe
    for name, service in services.items():
        if name != "migrate":
            assert service["healthcheck"]["test"], name
    assert "http://127.0.0.1:8000/readyz" in " ".join(serve["healthcheck"]["test"])

    # secrets: files only; each *_FILE setting names a secret the service mounts; no secret-looking value anywhere
    # in an environment listing (environment variables show in `docker inspect`)
    declared = compose["secrets"]
    assert all(set(spec) == {"file"} for spec in declared.values()), declared
    assert {"database_url", "master_key", "pairwise_salt", "postgres_password", "tls_key"} <= set(declared)
    for name, service in services.items():
        environment = service.get("environment", {})
        assert isinstance(environment, dict), f"{name}: environment as a mapping"
        mounted = set(service.get("secrets", []))
        for variable, value in environment.items():
            text = str(value)
            assert not URL_WITH_PASSWORD.search(text), f"{name}: {variable} holds a password"
            if SECRET_NAME.search(variable):
                assert variable.endswith("_FILE"), f"{name}: {variable} is a secret's value, not a file"
            if variable.endswith("_FILE") and text.startswith("/run/secrets/"):
                assert text.removeprefix("/run/secrets/") in mounted, f"{name}: {variable} names no mounted secret"
    acar_env = serve["environment"]
    assert acar_env == worker["environment"] == services["migrate"]["environment"]
    assert acar_env["ACAR_ENV"] == "production"
    assert {"ACAR_DATABASE_URL_FILE", "ACAR_MASTER_KEY_FILE", "ACAR_PAIRWISE_SALT_FILE"} <= set(acar_env)
    assert "ACAR_DATABASE_URL" not in acar_env and "ACAR_PAIRWISE_SALT" not in acar_env
    assert services["postgres"]["environment"]["POSTGRES_PASSWORD_FILE"] == "/run/secrets/postgres_password"
    # shared rate limits on the compose Redis
    assert acar_env["ACAR_RATE_LIMIT_STORAGE"] == "redis://redis:6379/0"

    # the proxy: the nginx.conf it mounts is deploy/nginx.conf, the file the tests above run
    configs = {c["target"]: compose["configs"][c["source"]]["file"] for c in proxy["configs"]}
    assert (COMPOSE.parent / configs["/etc/nginx/conf.d/default.conf"]).resolve() == NGINX_CONF
    shipped = NGINX_CONF.read_text()
    for path in re.findall(r"(/run/(?:configs|secrets)/\S+);", shipped):  # every file nginx reads is mounted
        assert path in configs or path.removeprefix("/run/secrets/") in proxy["secrets"], path
    # its address is the one trusted proxy, the header it sets the one Açar reads, its :8443 the mTLS URL
    address = proxy["networks"]["backend"]["ipv4_address"]
    assert json.loads(acar_env["ACAR_TRUSTED_PROXIES"]) == [f"{address}/32"]
    assert f"proxy_set_header {acar_env['ACAR_IDCARD_CLIENT_CERT_HEADER']} $ssl_client_escaped_cert;" in shipped
    assert acar_env["ACAR_MTLS_PUBLIC_URL"] == "https://${ACAR_HOST}:8443" and "8443:8443" in proxy["ports"]
    assert "listen 8443 ssl" in shipped and "server serve:8000 " in shipped and "8000" in serve["expose"]

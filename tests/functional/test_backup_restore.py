"""Backup and restore of a running instance (docs/deployment.md, "Backup and restore"), with real processes only.

Instance A (`acar init` + `acar serve` on a throwaway PostgreSQL database and data dir) gets a person with a passkey
(enrolled with an activation code through the software authenticator), a relying party's access, refresh and ID
tokens from a passkey login, a certificate from `acar cert issue` and a PDF sealed by the signing API. It is backed
up while it serves: `pg_dump -Fc` of its database and a copy of its data dir (the master key file). A is stopped;
an empty database B gets `pg_restore`, an empty data dir gets the master key back, and `acar serve` starts on them
with the same issuer. There, A's tokens verify against B's JWKS and introspect active, the refresh token refreshes,
the same passkey credential logs in, the certificate's OCSP status is good (checked by `openssl ocsp`) and the CRL
lists nothing new, the sealed PDF validates TOTAL-PASSED, and `acar audit verify` finds the trail intact.

Restored without its master key, B refuses to start with one line naming ACAR_MASTER_KEY_FILE and the id of the
master key the restored database's keys are sealed with.
"""

from __future__ import annotations

import asyncio
import base64
import re
import secrets
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlencode, urlsplit

import asyncpg
import httpx
import jwt as pyjwt
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from sqlalchemy.engine import make_url

from keys.software import MasterKey
from tests.functional.helpers import ACAR, InProcessAcar, Server, acar_env
from tests.local_http import free_port
from tests.oidc_tools import hidden, pkce_pair
from tests.pki_tools import openssl
from tests.signing_tools import minimal_pdf
from tests.webauthn_authenticator import SoftwareAuthenticator, enroll_with_code, passkey_login

pytestmark = pytest.mark.postgresql

ISSUER = "http://localhost:8000"
"""The issuer of both instances (B takes over A's name); the servers listen on free loopback ports."""
FIN = "5ABCD12"
REDIRECT_URI = "https://rp.example/cb"
API = "/api/v1/signing-requests"
PG_BIN = Path("/usr/lib/postgresql/15/bin")
"""pg_dump and pg_restore of Debian's postgresql-client-15, the server's major version (a newer pg_dump also works;
an older one refuses a newer server)."""


def _libpq(url: str) -> str:
    """The libpq URL (pg_dump, pg_restore, asyncpg) of a SQLAlchemy URL."""
    return make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)


def _pg_tool(name: str) -> str:
    path = PG_BIN / name
    found = str(path) if path.is_file() else shutil.which(name)
    if found is None:
        pytest.fail(f"{name} is required (Debian's postgresql-client-15)", pytrace=False)
    return found


def _run(*args: str) -> str:
    proc = subprocess.run(args, capture_output=True, text=True, timeout=120, check=False)
    assert proc.returncode == 0, f"{' '.join(args)} failed ({proc.returncode}): {proc.stderr}"
    return proc.stdout


async def _admin(url: str, statement: str) -> None:
    connection = await asyncpg.connect(_libpq(make_url(url).set(database="postgres").render_as_string(
        hide_password=False)))
    try:
        await connection.execute(statement)
    finally:
        await connection.close()


@pytest.fixture
def empty_database(pg_base_url: str) -> Iterator[str]:
    """An empty PostgreSQL database (no schema: restore creates it), dropped afterwards."""
    name = f"acar_restore_{secrets.token_hex(6)}"
    try:
        asyncio.run(_admin(pg_base_url, f'CREATE DATABASE "{name}"'))
    except (OSError, asyncpg.PostgresError, TimeoutError) as exc:
        pytest.fail(f"PostgreSQL is required and is not usable at {pg_base_url}: {exc}", pytrace=False)
    try:
        yield make_url(pg_base_url).set(database=name).render_as_string(hide_password=False)
    finally:
        asyncio.run(_admin(pg_base_url, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


def _env(database_url: str, data_dir: Path) -> dict[str, str]:
    # the master key file is left at its default place, the data dir: backing up the data dir is backing it up
    return acar_env({"ACAR_DATABASE_URL": database_url, "ACAR_DATA_DIR": str(data_dir), "ACAR_ISSUER": ISSUER,
                     "ACAR_KEY_CACHE_SECONDS": "0", "ACAR_AUDIT_SEAL_SECONDS": "1", "ACAR_ACCESS_LOG": "false"})


# --- a citizen's browser on a real server: enrollment, passkey login, consent --------------------------------

async def _enroll(base: str, code: str, authenticator: SoftwareAuthenticator) -> None:
    async with httpx.AsyncClient(base_url=base, timeout=30) as browser:
        r = await enroll_with_code(browser, code, authenticator)
        assert r.status_code == 201, r.text


async def _passkey_code(base: str, client_id: str, authenticator: SoftwareAuthenticator, challenge: str) -> str:
    """The code flow up to the code: /authorize, the login page, a passkey login, consent if asked."""
    state = secrets.token_urlsafe(8)
    query = urlencode({"client_id": client_id, "redirect_uri": REDIRECT_URI, "response_type": "code",
                       "scope": "openid profile offline_access", "prompt": "consent", "nonce": "n-backup",
                       "state": state, "code_challenge": challenge, "code_challenge_method": "S256"})
    async with httpx.AsyncClient(base_url=base, timeout=30) as browser:
        r = await browser.get("/authorize?" + query)
        assert r.status_code == 303 and r.headers["location"].startswith("/interaction/"), r.text
        location = r.headers["location"]
        page = await browser.get(location)
        found = re.search(r'data-csrf="([^"]+)"', page.text)
        assert page.status_code == 200 and found is not None, page.text[:500]
        r = await passkey_login(browser, location.split("/")[2], found.group(1), authenticator)
        assert r.status_code == 200, r.text
        target = r.json()["redirect"]
        for _ in range(3):
            if not target.startswith("/interaction/"):
                break
            page = await browser.get(target)
            assert page.status_code == 200, page.text[:500]
            r = await browser.post(target, data={"csrf_token": hidden(page.text, "csrf_token"), "decision": "allow"})
            assert r.status_code == 303, r.text[:500]
            target = r.headers["location"]
    query_back = {k: v[0] for k, v in parse_qs(urlsplit(target).query).items()}
    assert target.startswith(REDIRECT_URI) and query_back["state"] == state, target
    return query_back["code"]


def _tokens(base: str, rp: dict[str, Any], authenticator: SoftwareAuthenticator) -> dict[str, Any]:
    verifier, challenge = pkce_pair()
    code = asyncio.run(_passkey_code(base, rp["client_id"], authenticator, challenge))
    r = httpx.post(base + "/token", auth=(rp["client_id"], rp["client_secret"]), data={
        "grant_type": "authorization_code", "code": code, "redirect_uri": REDIRECT_URI, "code_verifier": verifier})
    assert r.status_code == 200, r.text
    return dict(r.json())


def _verify(token: str, jwks: dict[str, Any], audience: str) -> dict[str, Any]:
    """A JWT checked independently of Açar: its kid in the JWK Set, the signature, iss, aud and exp."""
    header = pyjwt.get_unverified_header(token)
    key = {k.key_id: k for k in pyjwt.PyJWKSet.from_dict(jwks).keys}[header["kid"]]
    return dict(pyjwt.decode(token, key=key.key, algorithms=["ES256", "RS256", "EdDSA"], audience=audience,
                             issuer=ISSUER, options={"require": ["exp", "iat", "iss", "aud", "sub"]}))


# --- the state A leaves behind ---------------------------------------------------------------------------------

def _seal(base: str, agency: dict[str, Any]) -> bytes:
    """A PDF sealed at B-LTA by an agency through the signing API (the server's in-process worker signs)."""
    token = httpx.post(base + "/token", data={"grant_type": "client_credentials"},
                       auth=(agency["client_id"], agency["client_secret"])).json()["access_token"]
    headers = {"Authorization": f"Bearer {token}"}
    pdf = minimal_pdf(1, "Bəyannamə")
    r = httpx.post(base + API, headers=headers, timeout=30, json={"mode": "seal", "level": "B-LTA", "documents": [
        {"filename": "beyanname.pdf", "content": base64.b64encode(pdf).decode()}]})
    assert r.status_code == 201, r.text
    deadline = time.monotonic() + 120
    while (state := httpx.get(f"{base}{API}/{r.json()['id']}", headers=headers).json())["state"] != "completed":
        assert state["state"] in ("approved", "signing") and time.monotonic() < deadline, state
        time.sleep(0.1)
    signed = httpx.get(f"{base}{API}/{state['id']}/documents/1", headers=headers).content
    assert signed.startswith(pdf)
    return signed


def _certificate(acar: InProcessAcar, tmp_path: Path) -> tuple[Path, Path, Path]:
    """A natural person's signing certificate from `acar cert issue`: (certificate, issuing CA, root) as PEM files."""
    public = ec.generate_private_key(ec.SECP256R1()).public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    (tmp_path / "subject.pub").write_bytes(public)
    issued = acar.json("cert", "issue", "--profile", "natural-person-signing", "--fin", FIN, "--given-name",
                       "Aysel", "--surname", "Məmmədova", "--public-key", str(tmp_path / "subject.pub"))
    paths = (tmp_path / "cert.pem", tmp_path / "issuing.pem", tmp_path / "root.pem")
    for path, pem in zip(paths, [issued["certificate_pem"], *issued["chain_pem"]], strict=True):
        path.write_text(pem)
    return paths


def _ocsp(base: str, cert: Path, issuing: Path, root: Path) -> str:
    """`openssl ocsp`: the responder's answer for `cert`, its signature verified up to `root`."""
    proc = openssl("ocsp", "-issuer", str(issuing), "-cert", str(cert), "-url", base + "/pki/ocsp",
                   "-CAfile", str(root))
    return proc.stdout + proc.stderr


def _crl(base: str, issuing: Path) -> x509.CertificateRevocationList:
    r = httpx.get(base + "/pki/crl/issuing.crl")
    assert r.status_code == 200, r.text
    crl = x509.load_der_x509_crl(r.content)
    issuer_key = x509.load_pem_x509_certificate(issuing.read_bytes()).public_key()
    assert crl.is_signature_valid(issuer_key)  # type: ignore[arg-type]
    return crl


def _refuses_to_start(env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    """A real `acar serve` that must stop at once: bounded, so that a server that starts anyway fails the test."""
    try:
        return subprocess.run([ACAR, "serve", "--port", str(free_port())], env=env, capture_output=True, text=True,
                              timeout=60, check=False)
    except subprocess.TimeoutExpired:
        pytest.fail("acar serve started without its master key")


def _checkpoints(report: dict[str, Any]) -> int:
    """The signed checkpoints `acar audit verify --json` checked, over every chain."""
    assert report["intact"] is True, report
    return sum(int(chain["checkpoints"]) for chain in report["chains"])


def _first_checkpoints(acar: InProcessAcar, timeout: float = 30.0) -> int:
    """The checkpoints once the running server's sealer has made its first (ACAR_AUDIT_SEAL_SECONDS=1: its first
    pass comes one interval after the start, which the steps before may not have taken)."""
    deadline = time.monotonic() + timeout
    while (count := _checkpoints(acar.json("audit", "verify"))) == 0:
        assert time.monotonic() < deadline, f"no audit checkpoint within {timeout} s"
        time.sleep(0.2)
    return count


def test_backup_of_a_running_instance_restores_into_an_empty_one(
        pg_database_url: str, empty_database: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    data_a, data_b, backup = tmp_path / "data-a", tmp_path / "data-b", tmp_path / "backup"
    env_a = _env(pg_database_url, data_a)
    acar = InProcessAcar(env_a, monkeypatch, capsys)  # the commands in this process; the servers are processes
    init = acar.json("init")
    assert init["master_key_created"]
    acar.json("person", "add", "--fin", FIN, "--given-name", "Aysel", "--family-name", "Məmmədova",
              "--birthdate", "1990-05-17")
    code = acar.json("enroll-code", "--fin", FIN)["code"]
    rp = acar.json("client", "add", "--name", "Agency portal", "--redirect-uri", REDIRECT_URI,
                   "--scope", "openid", "--scope", "profile", "--scope", "offline_access")
    agency = acar.json("client", "add", "--name", "Tax system", "--grant-type", "client_credentials",
                       "--scope", "signing")
    acar.json("seal", "assign", agency["client_id"], "--voen", "1234567891", "--organization", "Vergilər")
    cert, issuing, root = _certificate(acar, tmp_path)
    authenticator = SoftwareAuthenticator(origin=ISSUER)

    a = Server(env_a, log_path=tmp_path / "a.log")
    try:
        a.wait_ready()
        asyncio.run(_enroll(a.base, code, authenticator))
        tokens = _tokens(a.base, rp, authenticator)
        jwks_a = httpx.get(a.base + "/jwks.json").json()
        claims = _verify(tokens["access_token"], jwks_a, ISSUER)
        assert _verify(tokens["id_token"], jwks_a, rp["client_id"])["nonce"] == "n-backup"
        signed = _seal(a.base, agency)
        assert f"{cert}: good" in _ocsp(a.base, cert, issuing, root)
        crl_before = _crl(a.base, issuing)
        checkpoints = _first_checkpoints(acar)  # A seals its events every second: its first pass done

        # the backup, taken while A serves: a consistent snapshot of the database and a copy of the data dir
        backup.mkdir()
        _run(_pg_tool("pg_dump"), "--format=custom", "--file", str(backup / "acar.dump"), _libpq(pg_database_url))
        shutil.copytree(data_a, backup / "data")
        assert httpx.get(a.base + "/readyz").status_code == 200
    finally:
        a.stop()
    # all the data dir holds (PostgreSQL) besides metrics/, the running processes' Prometheus counters (api.metrics),
    # which a restore does not need
    assert sorted(p.name for p in data_a.iterdir() if p.name != "metrics") == ["master.key"]
    master_id = MasterKey.from_file(backup / "data" / "master.key").key_id

    # the restore, on "another machine": an empty database and an empty data dir
    env_b = _env(empty_database, data_b)
    _run(_pg_tool("pg_restore"), "--exit-on-error", "--no-owner", "--single-transaction", "--dbname",
         _libpq(empty_database), str(backup / "acar.dump"))
    data_b.mkdir(mode=0o700)

    # without the master key file B refuses to start (so do a signing worker, and `acar init`, which would otherwise
    # make a new key), in one line naming the file and the key it must hold
    missing = (f"acar: error: ACAR_MASTER_KEY_FILE: {data_b / 'master.key'} does not exist, but the database holds "
               f"keys sealed with master key {master_id}; restore that file\n")
    refused = _refuses_to_start(env_b)
    assert (refused.returncode, refused.stderr) == (1, missing)
    for command in ("init", "worker"):
        refused_here = acar(command, check=False, env=env_b)
        assert (refused_here.returncode, refused_here.stderr) == (1, missing), command
    assert not (data_b / "master.key").exists()  # nothing was generated in its place

    shutil.copy2(backup / "data" / "master.key", data_b / "master.key")
    assert acar.json("migrate", env=env_b)["schema"] == init["schema"]  # a later version would migrate here
    b = Server(env_b, log_path=tmp_path / "b.log")
    try:
        b.wait_ready()
        jwks_b = httpx.get(b.base + "/jwks.json").json()
        assert jwks_b == jwks_a
        assert _verify(tokens["access_token"], jwks_b, ISSUER) == claims
        _verify(tokens["id_token"], jwks_b, rp["client_id"])
        r = httpx.post(b.base + "/introspect", data={"token": tokens["access_token"]},
                       auth=(rp["client_id"], rp["client_secret"]))
        assert r.status_code == 200 and r.json()["active"] is True and r.json()["sub"] == claims["sub"], r.text
        r = httpx.post(b.base + "/token", auth=(rp["client_id"], rp["client_secret"]),
                       data={"grant_type": "refresh_token", "refresh_token": tokens["refresh_token"]})
        assert r.status_code == 200, r.text
        assert _verify(r.json()["access_token"], jwks_b, ISSUER)["sub"] == claims["sub"]

        again = _tokens(b.base, rp, authenticator)  # the same credential of the same authenticator
        assert _verify(again["id_token"], jwks_b, rp["client_id"])["sub"] == claims["sub"]

        answer = _ocsp(b.base, cert, issuing, root)
        assert "Response verify OK" in answer and f"{cert}: good" in answer, answer
        assert list(_crl(b.base, issuing)) == list(crl_before) == []  # nothing revoked, before or after

        r = httpx.post(b.base + "/api/v1/validations", content=signed, timeout=60,
                       headers={"Content-Type": "application/pdf"})
        assert r.status_code == 200, r.text
        assert r.json()["all_passed"] is True, r.text
        assert [s["indication"] for s in r.json()["signatures"]] == ["TOTAL-PASSED", "TOTAL-PASSED"]

        audit = acar.json("audit", "verify", env=env_b)
        assert audit["intact"] is True and _checkpoints(audit) >= checkpoints >= 1, audit  # A's signatures verify
    finally:
        b.stop()

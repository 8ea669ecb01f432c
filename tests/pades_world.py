"""The signing world of the PAdES tests, shared by the signing and validation tests: Açar's own PKI (CA, OCSP
responder, TSA on the test database) served on loopback for independent tools, a PAdES engine and a signer,
and the independent checks (qpdf --check, poppler's pdfsig with an NSS database trusting the test root).

`world` and `pki_port` are fixtures of every test (tests/conftest.py loads this module as a plugin); a module
using `world` overrides `settings` with `world_settings` (see tests/unit/signing/test_pades.py)."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import shutil
import urllib.parse
from collections.abc import AsyncIterator, Awaitable
from dataclasses import dataclass
from io import BytesIO
from pathlib import Path
from typing import Any

import pytest
from asn1crypto import x509
from cryptography import x509 as cx509
from cryptography.hazmat.primitives.serialization import Encoding

from api.deps import Services
from api.settings import Settings
from keys.profiles import LegalPerson, NaturalPerson, Profile
from signing.core.levels import PadesLevel
from signing.core.pades import PadesEngine, SignatureOptions, SigningCredentials
from signing.core.revocation import ValidationDataSource
from signing.core.timestamps import ServiceTimeStamper
from tests.local_http import QuietHandler, free_port, serving
from tests.pki_tools import PERSON, initialize_pki

SEAL = LegalPerson.create(voen="1234567891", organization="Vergilər Nazirliyi")
TOOLS = ("pdfsig", "pdffonts", "certutil", "qpdf", "openssl")


# --- the PKI on loopback -----------------------------------------------------------------------------------------


@pytest.fixture
def pki_port() -> int:
    return free_port()


def world_settings(settings: Settings, pki_port: int) -> Settings:
    """The PKI URLs in every certificate (OCSP, CRL, caIssuers) point at the loopback server of `world`: a test
    module using `world` overrides `settings` with this (a plugin fixture named `settings` would apply to all)."""
    settings.issuer = f"http://127.0.0.1:{pki_port}"
    return settings


def _pki_handler(services: Services, loop: asyncio.AbstractEventLoop, hits: list[str]) -> type[QuietHandler]:
    """/pki/ocsp, /pki/crl/NAME.crl, /pki/ca/NAME.crt and /tsa answered by the services on the test's event loop
    (what api/routes/pki.py and tsa.py serve), for pdfsig and for the external-TSA client."""

    def run(coroutine: Awaitable[Any]) -> Any:
        return asyncio.run_coroutine_threadsafe(coroutine, loop).result(30)  # type: ignore[arg-type]

    class Handler(QuietHandler):
        def do_POST(self) -> None:  # noqa: N802 - BaseHTTPRequestHandler's name
            hits.append("POST " + self.path)
            body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
            if self.path == "/pki/ocsp":
                self.reply(run(services.pki.ocsp(body)).der, "application/ocsp-response")
            elif self.path == "/tsa":
                self.reply(run(services.tsa.timestamp(body, actor="test-http")).der, "application/timestamp-reply")
            else:
                self.reply(b"", "text/plain", 404)

        def do_GET(self) -> None:  # noqa: N802 - BaseHTTPRequestHandler's name
            hits.append("GET " + self.path)
            if self.path.startswith("/pki/ocsp/"):
                der = base64.b64decode(urllib.parse.unquote(self.path.removeprefix("/pki/ocsp/")))
                self.reply(run(services.pki.ocsp(der)).der, "application/ocsp-response")
            elif self.path.startswith("/pki/crl/"):
                name = self.path.removeprefix("/pki/crl/").removesuffix(".crl")
                self.reply(run(services.pki.crl(name)), "application/pkix-crl")
            elif self.path.startswith("/pki/ca/"):
                name = self.path.removeprefix("/pki/ca/").removesuffix(".crt")
                self.reply(run(services.pki.ca_certificate(name)), "application/pkix-cert")
            else:
                self.reply(b"", "text/plain", 404)

    return Handler


@dataclass
class World:
    services: Services
    engine: PadesEngine
    timestamper: ServiceTimeStamper
    validation: ValidationDataSource
    root: x509.Certificate
    issuing: x509.Certificate
    signer: SigningCredentials
    directory: Path
    tsa_url: str
    hits: list[str]

    async def credentials(self, profile: Profile, subject: NaturalPerson | LegalPerson,
                          days: int | None = None) -> SigningCredentials:
        """A fresh P-256 software key (keys' software store) with a certificate of the issuing CA."""
        async with self.services.sessions() as session, session.begin():
            handle = await self.services.key_store.generate(session, "EC-P256", purpose="signing", label="test")
            # pyHanko's signers (imported here) register a qcStatements spec in asn1crypto: keys.profiles must
            # issue qualified certificates all the same (it once failed with AttributeError)
            row = await self.services.pki.ca.issue(session, profile=profile, subject=subject, days=days,
                                                   public_key=handle.public_key(), actor="test")
        return SigningCredentials(handle=handle, certificate=x509.Certificate.load(row.der), chain=(self.issuing,))

    async def sign(self, pdf: bytes, level: PadesLevel, credentials: SigningCredentials | None = None,
                   engine: PadesEngine | None = None, **options: Any) -> bytes:
        out = BytesIO()
        result = await (engine or self.engine).sign(
            BytesIO(pdf), out, credentials or self.signer, SignatureOptions(level=level, **options), actor="signer")
        signed = out.getvalue()
        assert result.sha256 == hashlib.sha256(signed).hexdigest()
        assert result.level is level
        assert signed.startswith(pdf), "an incremental update keeps the input bytes"
        return signed


@pytest.fixture
async def world(services: Services, pki_port: int, tmp_path: Path) -> AsyncIterator[World]:
    missing = [tool for tool in TOOLS if shutil.which(tool) is None]
    if missing:
        pytest.fail(f"missing tools {missing}: install poppler-utils, libnss3-tools, qpdf, openssl (make system-deps)",
                    pytrace=False)
    await services.audit_log.start()  # the TSA's audit events are group-committed (api.app starts it)
    pki = await initialize_pki(services)
    root = x509.Certificate.load(await pki.ca_certificate("root"))
    issuing = x509.Certificate.load(await pki.ca_certificate("issuing"))
    timestamper = ServiceTimeStamper(services.tsa)
    validation = ValidationDataSource(trust_roots=[root], local=pki)
    hits: list[str] = []
    with serving(_pki_handler(services, asyncio.get_running_loop(), hits), pki_port):
        world = World(services=services, engine=PadesEngine(timestamper=timestamper, validation=validation),
                      timestamper=timestamper, validation=validation, root=root, issuing=issuing,
                      signer=None,  # type: ignore[arg-type]  # set just below
                      directory=tmp_path, tsa_url=f"http://127.0.0.1:{pki_port}/tsa", hits=hits)
        world.signer = await world.credentials(Profile.NATURAL_PERSON_SIGNING, PERSON, days=30)
        write_pem(tmp_path / "root.pem", root)
        write_pem(tmp_path / "issuing.pem", issuing)
        try:
            yield world
        finally:
            await validation.close()


def write_pem(path: Path, certificate: x509.Certificate) -> Path:
    path.write_bytes(cx509.load_der_x509_certificate(certificate.dump()).public_bytes(Encoding.PEM))
    return path


# --- the independent checks --------------------------------------------------------------------------------------


async def run_tool(*args: str | Path, check: bool = True) -> str:
    """A tool as a subprocess without blocking the event loop (pdfsig's OCSP requests are answered on it)."""
    proc = await asyncio.create_subprocess_exec(*map(str, args), stdout=asyncio.subprocess.PIPE,
                                                stderr=asyncio.subprocess.PIPE)
    stdout, stderr = await asyncio.wait_for(proc.communicate(), 60)
    text = stdout.decode(errors="replace") + stderr.decode(errors="replace")
    if check and proc.returncode != 0:
        raise AssertionError(f"{' '.join(map(str, args))} failed ({proc.returncode}): {text}")
    return text


async def qpdf_check(world: World, pdf: bytes) -> None:
    path = world.directory / "check.pdf"
    path.write_bytes(pdf)
    out = await run_tool("qpdf", "--check", path)
    assert "No syntax or stream encoding errors found" in out, out


async def pdfsig(world: World, pdf: bytes) -> list[dict[str, str]]:
    """pdfsig's verdict per signature, with an NSS database that trusts the test root (and nothing else)."""
    nss = world.directory / "nss"
    if not nss.exists():
        nss.mkdir()
        await run_tool("certutil", "-N", "-d", f"sql:{nss}", "--empty-password")
        await run_tool("certutil", "-A", "-d", f"sql:{nss}", "-n", "acar-test-root", "-t", "CT,C,C",
                   "-i", world.directory / "root.pem")
    path = world.directory / "pdfsig.pdf"
    path.write_bytes(pdf)
    out = await run_tool("pdfsig", "-nssdir", f"sql:{nss}", path)
    signatures: list[dict[str, str]] = []
    for line in out.splitlines():
        if line.startswith("Signature #"):
            signatures.append({})
        elif line.strip().startswith("- ") and ":" in line and signatures:
            key, _, value = line.strip()[2:].partition(":")
            signatures[-1][key.strip()] = value.strip()
    return signatures



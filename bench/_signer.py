"""What the signing and validation benchmarks share: a throwaway Açar (data directory, migrated database, master
key), its built-in PKI as `acar init` makes it (root, issuing CA, OCSP responder, TSA) and one person's software
signing key (ECDSA P-256) certified by it for signatures (natural-person signing profile, nonRepudiation).

Imported as `_signer` by the scripts (bench/ is first on sys.path when they run)."""

from __future__ import annotations

import asyncio
import tempfile
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

from asn1crypto import x509 as asn1_x509

from api import migrate
from api.deps import Services, build_services
from api.settings import Settings
from keys.profiles import NaturalPerson, Profile
from keys.software import MasterKey
from signing.core.pades import SigningCredentials


@dataclass
class SigningWorld:
    services: Services
    credentials: SigningCredentials
    root: asn1_x509.Certificate
    issuing: asn1_x509.Certificate
    data: Path
    database_url: str


@asynccontextmanager
async def signing_world(url: str, *, prefix: str, purpose: str = "signing") -> AsyncIterator[SigningWorld]:
    """The world on `url` ("" is SQLite in the throwaway data directory), the audit group commit running (the TSA's
    events go through it, as in `acar serve`); closed and deleted afterwards."""
    with tempfile.TemporaryDirectory(prefix=prefix) as tmp:
        data = Path(tmp)
        url = url or f"sqlite+aiosqlite:///{data / 'acar.sqlite3'}"
        await asyncio.to_thread(migrate.upgrade, url)
        MasterKey.create_file(data / "master.key")
        settings = Settings(env="development", issuer="http://localhost:8000", data_dir=data, database_url=url,
                            master_key_file=data / "master.key", access_log=False, log_level="WARNING",
                            housekeeping_seconds=3600)
        services = build_services(settings)
        await services.audit_log.start()
        try:
            async with services.sessions() as session, session.begin():
                await services.pki.initialize(session, actor="bench", create_hierarchy=True)
                handle = await services.key_store.generate(session, "EC-P256", purpose=purpose, label="bench")
                subject = NaturalPerson.create(fin="5ABC12D", given_name="Bench", surname="Signer")
                row = await services.pki.ca.issue(session, profile=Profile.NATURAL_PERSON_SIGNING,
                                                  subject=subject, public_key=handle.public_key(), actor="bench")
            root = asn1_x509.Certificate.load(await services.pki.ca_certificate("root"))
            issuing = asn1_x509.Certificate.load(await services.pki.ca_certificate("issuing"))
            credentials = SigningCredentials(handle=handle, certificate=asn1_x509.Certificate.load(row.der),
                                             chain=(issuing,))
            yield SigningWorld(services=services, credentials=credentials, root=root, issuing=issuing, data=data,
                               database_url=url)
        finally:
            await services.close()

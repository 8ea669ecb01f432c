"""Agencies' electronic seals: registered by an officer, sealed with through keys/ (issue 13, "Keys").

An agency client's seal names the legal person (ETSI EN 319 412-3: organizationName, organizationIdentifier
"NTRAZ-<VÖEN>") and has its own key in the configured key store (EC P-256, software or PKCS#11) certified by the
built-in CA with the legal-person-seal profile (keys.profiles.Profile.LEGAL_PERSON_SEAL). `assign_seal` (the
officer's `acar seal assign`) creates the key and certificate, or keeps them when the seal's legal person is
unchanged and its certificate still usable; `SealCredentials` gives the worker the key, certificate and chain
(keys.ca.CertificateAuthorityService.certified_key_of), cached for a few seconds.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from keys.ca import CertificateAuthorityService
from keys.errors import KeysError
from keys.interfaces import KeyStore
from keys.profiles import LegalPerson, Profile
from signing.core.errors import SealUnusable
from signing.core.interfaces import Seal
from signing.core.pades import SigningCredentials
from signing.sql.models import AgencySeal
from signing.sql.signers import certified_or_new
from storage.audit import record_event
from storage.base import utcnow

SEAL_KEY_PURPOSE = "seal"


@dataclass(frozen=True, slots=True)
class AssignedSeal:
    seal: Seal
    serial: str
    created_key: bool


async def assign_seal(session: AsyncSession, *, ca: CertificateAuthorityService, store: KeyStore, client_id: str,
                      voen: str, organization: str, actor: str, days: int | None = None) -> AssignedSeal:
    """Register (or change) a client's seal in the caller's ORM unit of work; a new key and certificate unless the
    legal person is unchanged and its certificate can still seal (then they are kept)."""
    subject = LegalPerson.create(voen=voen, organization=organization)
    row = await session.get(AgencySeal, client_id)
    now = utcnow()
    same = row is not None and (row.voen, row.organization) == (subject.voen, subject.organization)
    key = await certified_or_new(session, ca=ca, store=store, key_id=row.key_id if row is not None and same else None,
                                 profile=Profile.LEGAL_PERSON_SEAL, subject=subject, purpose=SEAL_KEY_PURPOSE,
                                 label=f"seal:{client_id}", actor=actor, days=days)
    if not key.created:
        return AssignedSeal(Seal(client_id, subject.voen, subject.organization, key.key_id), key.serial, False)
    if row is None:
        row = AgencySeal(client_id=client_id, voen=subject.voen, organization=subject.organization,
                         key_id=key.key_id, created_at=now, updated_at=now)
        session.add(row)
    else:
        row.voen, row.organization, row.key_id, row.updated_at = (subject.voen, subject.organization, key.key_id,
                                                                  now)
    await session.flush()
    record_event(session, "signing.seal.assigned", actor=actor, subject=client_id,
                 detail={"voen": subject.voen, "organization": subject.organization, "key_id": key.key_id,
                         "serial": key.serial})
    return AssignedSeal(Seal(client_id, subject.voen, subject.organization, key.key_id), key.serial, True)


class SealCredentials:
    """The key, certificate and chain of a seal key (signing.core.jobs.CredentialSource), each kept `ttl_seconds`
    so a revoked certificate stops sealing within that time on every node."""

    def __init__(self, sessions: async_sessionmaker[AsyncSession], ca: CertificateAuthorityService, *,
                 ttl_seconds: float, clock: Callable[[], float] = time.monotonic) -> None:
        self._sessions = sessions
        self._ca = ca
        self._ttl = ttl_seconds
        self._clock = clock
        self._cache: dict[str, tuple[float, SigningCredentials]] = {}

    async def credentials(self, key_id: str) -> SigningCredentials:
        cached = self._cache.get(key_id)
        if cached is not None and cached[0] > self._clock():
            return cached[1]
        try:
            async with self._sessions() as session:
                certified = await self._ca.certified_key_of(session, key_id=key_id)
        except KeysError as exc:
            if exc.status_code >= 500:
                raise  # the key store or the database: transient, retried by the worker
            raise SealUnusable(f"the seal cannot sign: {exc.detail}") from None
        credentials = SigningCredentials.of(certified)
        self._cache[key_id] = (self._clock() + self._ttl, credentials)
        return credentials

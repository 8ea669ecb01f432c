"""A person's own signing key: created on the first signature the person approves, reused after that.

Issue 13, "Keys": each person's signing key lives in keys/ (the software store or PKCS#11), created on first use,
with a natural-person-signing certificate from the built-in CA (ETSI EN 319 412-2: serialNumber "PNOAZ-<FIN>",
keyUsage nonRepudiation). The key is generated inside the configured key store and never leaves it; the person
controls its use only through an approval bound to the documents (signing.core.approval), so the key is used
under the person's sole control in the sense of CEN EN 419 241-1 (server signing, SCAL2).

A new key and certificate are made when the person has none, when the recorded name changed (a certificate names
the person as the registry does now), or when the certificate can no longer sign (revoked, expired, its key
destroyed): `keys.ca.CertificateAuthorityService.certified_key_of` decides that, as it does for seals.
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy.ext.asyncio import AsyncSession

from keys.ca import CertificateAuthorityService
from keys.errors import KeysError
from keys.interfaces import KeyStore, KeyType
from keys.profiles import NaturalPerson, Profile
from signing.sql.models import SignerKey
from storage.audit import record_event
from storage.base import utcnow

SIGNER_KEY_TYPE: KeyType = "EC-P256"
SIGNER_KEY_PURPOSE = "signature"


@dataclass(frozen=True, slots=True)
class SignerKeyOf:
    """The key a person signs with, and whether it was made just now."""

    fin: str
    key_id: str
    serial: str
    created_key: bool


async def signer_key(session: AsyncSession, *, ca: CertificateAuthorityService, store: KeyStore,
                     person: NaturalPerson, actor: str, days: int | None = None) -> SignerKeyOf:
    """The person's signing key in the caller's ORM unit of work: the recorded one while its certificate can sign
    and still names the person as given, else a new key with a new certificate (audited as
    signing.signer_key.created)."""
    row = await session.get(SignerKey, person.fin, with_for_update=True)
    if row is not None and (row.given_name, row.surname) == (person.given_name, person.surname):
        try:
            certified = await ca.certified_key_of(session, key_id=row.key_id)
        except KeysError:
            pass  # revoked, expired or its key destroyed: a new key and certificate below
        else:
            return SignerKeyOf(person.fin, row.key_id, certified.serial_hex, created_key=False)
    handle = await store.generate(session, SIGNER_KEY_TYPE, purpose=SIGNER_KEY_PURPOSE,
                                  label=f"signer:{person.fin}")
    issued = await ca.issue(session, profile=Profile.NATURAL_PERSON_SIGNING, subject=person,
                            public_key=handle.public_key(), days=days, actor=actor, key_id=handle.key_id)
    now = utcnow()
    if row is None:
        session.add(SignerKey(fin=person.fin, key_id=handle.key_id, given_name=person.given_name,
                              surname=person.surname, created_at=now, updated_at=now))
    else:
        row.key_id, row.given_name, row.surname, row.updated_at = (handle.key_id, person.given_name, person.surname,
                                                                   now)
    await session.flush()
    record_event(session, "signing.signer_key.created", actor=actor, subject=person.fin,
                 detail={"key_id": handle.key_id, "serial": issued.serial_hex})
    return SignerKeyOf(person.fin, handle.key_id, issued.serial_hex, created_key=True)

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
from keys.profiles import LegalPerson, NaturalPerson, Profile
from signing.sql.models import SignerKey
from storage.audit import record_event
from storage.base import utcnow

KEY_TYPE: KeyType = "EC-P256"
"""Seals' and persons' signing keys: ECDSA on P-256 (a suite ETSI TS 119 312 lists for signatures)."""
SIGNER_KEY_PURPOSE = "signature"


@dataclass(frozen=True, slots=True)
class CertifiedKeyId:
    """A key in the key store that a certificate of the built-in CA certifies, and whether both were made now."""

    key_id: str
    serial: str
    created: bool


async def certified_or_new(session: AsyncSession, *, ca: CertificateAuthorityService, store: KeyStore,
                           key_id: str | None, profile: Profile, subject: NaturalPerson | LegalPerson,
                           purpose: str, label: str, actor: str, days: int | None = None) -> CertifiedKeyId:
    """`key_id` while a certificate of it can still sign (keys.ca.CertificateAuthorityService.certified_key_of:
    not revoked, not expired, the key not destroyed), else a new EC P-256 key generated in the key store and
    certified with `profile` for `subject`: what a seal and a person's signing key each keep. The caller passes
    None for `key_id` when the subject changed, so the certificate names it as it is now."""
    if key_id is not None:
        try:
            certified = await ca.certified_key_of(session, key_id=key_id)
        except KeysError:
            pass  # revoked, expired or its key destroyed: a new key and certificate below
        else:
            return CertifiedKeyId(key_id, certified.serial_hex, created=False)
    handle = await store.generate(session, KEY_TYPE, purpose=purpose, label=label[:128])
    issued = await ca.issue(session, profile=profile, subject=subject, public_key=handle.public_key(), days=days,
                            key_id=handle.key_id, actor=actor)
    return CertifiedKeyId(handle.key_id, issued.serial_hex, created=True)


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
    same = row is not None and (row.given_name, row.surname) == (person.given_name, person.surname)
    key = await certified_or_new(session, ca=ca, store=store, key_id=row.key_id if row is not None and same else None,
                                 profile=Profile.NATURAL_PERSON_SIGNING, subject=person, purpose=SIGNER_KEY_PURPOSE,
                                 label=f"signer:{person.fin}", actor=actor, days=days)
    if not key.created:
        return SignerKeyOf(person.fin, key.key_id, key.serial, created_key=False)
    now = utcnow()
    if row is None:
        session.add(SignerKey(fin=person.fin, key_id=key.key_id, given_name=person.given_name,
                              surname=person.surname, created_at=now, updated_at=now))
    else:
        row.key_id, row.given_name, row.surname, row.updated_at = (key.key_id, person.given_name, person.surname,
                                                                   now)
    await session.flush()
    record_event(session, "signing.signer_key.created", actor=actor, subject=person.fin,
                 detail={"key_id": key.key_id, "serial": key.serial})
    return SignerKeyOf(person.fin, key.key_id, key.serial, created_key=True)

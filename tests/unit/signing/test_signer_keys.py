"""A person's own signing key (signing.sql.signers): made on first use, reused, replaced when it cannot sign."""

from __future__ import annotations

from asn1crypto import x509
from sqlalchemy import func, select

from api.deps import Services
from keys.models import StoredKey
from keys.profiles import NaturalPerson
from signing.sql.signers import signer_key
from storage.audit import AuditEvent
from tests.signing_tools import prepared

PERSON = NaturalPerson.create(fin="5ABC12D", given_name="Aysel", surname="Məmmədova")


async def _key(services: Services, person: NaturalPerson = PERSON) -> tuple[str, bool]:
    async with services.sessions() as session, session.begin():
        made = await signer_key(session, ca=services.pki.ca, store=services.key_store, person=person, actor="test")
    return made.key_id, made.created_key


async def test_a_person_s_key_is_made_once_and_certified_for_signing(initialized: Services) -> None:
    await prepared(initialized)
    key_id, created = await _key(initialized)
    again, created_again = await _key(initialized)
    assert created and not created_again and again == key_id
    async with initialized.sessions() as session:
        certified = await initialized.pki.ca.certified_key_of(session, key_id=key_id)
        events = (await session.execute(select(func.count()).select_from(AuditEvent)
                                        .where(AuditEvent.event_type == "signing.signer_key.created"))).scalar_one()
        stored = await session.get(StoredKey, key_id)
    assert events == 1 and stored is not None and stored.purpose == "signature"
    certificate: x509.Certificate = certified.certificate
    subject = certificate.subject.native
    assert subject["serial_number"] == "PNOAZ-5ABC12D" and subject["surname"] == "Məmmədova"
    assert certificate.key_usage_value.native == {"non_repudiation"}  # ETSI EN 319 412-2: contentCommitment only


async def test_a_revoked_certificate_or_a_new_name_gives_a_new_key(initialized: Services) -> None:
    await prepared(initialized)
    key_id, _ = await _key(initialized)
    async with initialized.sessions() as session, session.begin():
        serial = (await initialized.pki.ca.certified_key_of(session, key_id=key_id)).serial_hex
    async with initialized.sessions() as session, session.begin():
        await initialized.pki.ca.revoke(session, serial, "keyCompromise", actor="test")
    replaced, created = await _key(initialized)
    assert created and replaced != key_id
    renamed = NaturalPerson.create(fin=PERSON.fin, given_name=PERSON.given_name, surname="Əliyeva")
    third, created = await _key(initialized, renamed)
    assert created and third != replaced
    async with initialized.sessions() as session:
        certified = await initialized.pki.ca.certified_key_of(session, key_id=third)
    assert certified.certificate.subject.native["surname"] == "Əliyeva"

"""Legal entities' signing configurations (issue 16, "Business signing"): how their representatives' signatures
are made, kept in signing's own table `signing_entities` (the entity and its mandates are the registry's, idp).

- seal form: the entity's seal, a key in the configured key store certified by the built-in CA with the
  legal-person-seal profile (ETSI EN 319 412-3: organizationName, organizationIdentifier "NTRAZ-<VÖEN>";
  keys.profiles.Profile.LEGAL_PERSON_SEAL), made by `configure_entity` as `acar seal assign` makes an agency's,
  and kept while the name is unchanged and its certificate can still seal;
- person form: the representative's own signing certificate (signing.sql.signers), the representation claimed in
  the signature (signing.core.pades.ClaimedRole); no key of the entity's.

Audited signing.entity.configured in the caller's unit of work.
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy.ext.asyncio import AsyncSession

from keys.ca import CertificateAuthorityService
from keys.interfaces import KeyStore
from keys.profiles import LegalPerson, Profile
from signing.core.interfaces import EntityForm, SigningEntity
from signing.sql.models import SigningEntity as SigningEntityRow
from signing.sql.signers import certified_or_new
from storage.audit import record_event
from storage.base import utcnow

ENTITY_SEAL_PURPOSE = "seal"


@dataclass(frozen=True, slots=True)
class ConfiguredEntity:
    entity: SigningEntity
    serial: str | None
    """The seal certificate's serial (seal form)."""
    created_key: bool


async def configure_entity(session: AsyncSession, *, ca: CertificateAuthorityService, store: KeyStore, voen: str,
                           form: EntityForm, organization: str, actor: str,
                           days: int | None = None) -> ConfiguredEntity:
    """Set (or change) an entity's signing configuration in the caller's ORM unit of work; in seal form a seal key
    and certificate (new unless the organization is unchanged and the certificate still usable). `voen` is the
    registry's, checked by the caller (api/)."""
    subject = LegalPerson.create(voen=voen, organization=organization)
    row = await session.get(SigningEntityRow, subject.voen, with_for_update=True)
    now = utcnow()
    key_id: str | None = None
    serial: str | None = None
    created = False
    if form is EntityForm.SEAL:
        same = row is not None and row.organization == subject.organization and row.key_id is not None
        key = await certified_or_new(session, ca=ca, store=store, key_id=row.key_id if row is not None and same
                                     else None, profile=Profile.LEGAL_PERSON_SEAL, subject=subject,
                                     purpose=ENTITY_SEAL_PURPOSE, label=f"entity-seal:{subject.voen}", actor=actor,
                                     days=days)
        key_id, serial, created = key.key_id, key.serial, key.created
    if row is None:
        row = SigningEntityRow(voen=subject.voen, form=form.value, organization=subject.organization, key_id=key_id,
                               created_at=now, updated_at=now)
        session.add(row)
    else:
        row.form, row.organization, row.key_id, row.updated_at = form.value, subject.organization, key_id, now
    await session.flush()
    record_event(session, "signing.entity.configured", actor=actor, subject=subject.voen, detail={
        "voen": subject.voen, "form": form.value, "organization": subject.organization, "key_id": key_id,
        "serial": serial, "new_key": created})
    return ConfiguredEntity(SigningEntity(subject.voen, form, subject.organization, key_id), serial, created)


async def entity_configuration(session: AsyncSession, voen: str) -> SigningEntity | None:
    row = await session.get(SigningEntityRow, voen)
    if row is None:
        return None
    return SigningEntity(voen=row.voen, form=EntityForm(row.form), organization=row.organization, key_id=row.key_id)

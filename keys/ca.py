"""The built-in CA hierarchy: a self-signed root and an issuing CA, their keys in the configured key store.

- Development: `ensure_hierarchy` creates both CAs. Production: `import_ca` takes the certificates and
  keys made by the operator's offline ceremony (a PEM key into the software store, or a key pair already on
  the HSM adopted by label), after checking the certificate is a CA certificate of the right issuer and that
  the key is the one it certifies (the key signs a challenge the certificate's public key verifies).
- Offline root: the root may be imported as a certificate alone; its key stays with the ceremony. The service
  then never signs for the root: root CRLs are signed offline and imported (keys.pki), and revoking anything
  the root issued here is refused (`CAKeyOffline`), because only a root CRL can publish it. An imported root
  CRL that lists a certificate recorded here as issued by the root (the issuing CA) marks it revoked.
- A CA whose certificate is revoked, expired or not yet valid issues nothing (`CAUnusable`).
- The issuing CA issues subscriber certificates (keys.profiles, after ETSI EN 319 412) and the certificates
  of our own OCSP responder (RFC 6960 section 4.2.2.2) and time-stamp authority (RFC 3161 section 2.3).
- Every issued certificate carries authorityKeyIdentifier and subjectKeyIdentifier (RFC 5280 sections
  4.2.1.1-4.2.1.2), authorityInfoAccess with the OCSP and caIssuers URLs (section 4.2.2.1) and a CRL
  distribution point (section 4.2.1.13), all under the PKI base URL (`PkiUrls`): plain http, as ETSI EN 319
  412-2 GEN-4.3.11-4 requires for the CRL distribution point (the objects are signed; an https fetch would
  itself need revocation checking of the web server's certificate, RFC 5280 section 8).
- The OCSP responder's own certificate has no AIA OCSP pointer: it carries id-pkix-ocsp-nocheck (RFC 6960
  section 4.2.2.2.1), and a pointer to the responder it certifies would send a validator that checks it anyway
  into a loop (pyhanko-certvalidator refuses it: "Recursion detected in OCSP responder authorisation check").
  Its CRL distribution point stays, so a validator that ignores nocheck still finds its status.
- Serial numbers are random 159-bit numbers (RFC 5280 section 4.1.2.2 and keys.x509).
- Revocation (RFC 5280 section 5.3.1 reasons) locks the issuing CA's row, so concurrent revocations on
  several nodes publish CRLs with increasing numbers one after the other (keys.pki publishes them).
- The CA row lock (`lock_ca`) is SELECT ... FOR UPDATE on PostgreSQL. SQLite has no row locks and ignores
  FOR UPDATE; there the lock is a no-op UPDATE of the row, which takes the database's single write lock at
  once (waiting up to busy_timeout, storage.engine) so that everything read after it is current and no
  other writer interleaves until the transaction ends. Take it before reading what it protects.
- OCSP responder and TSA keys are renewed with a new key and certificate under the issuing CA's row lock,
  so nodes running housekeeping at once renew once. A superseded service key is destroyed through the
  key store (ETSI EN 319 421, end of the TSU key life cycle: the key is destroyed, not merely unused) once its
  replacement has been current for `superseded_key_grace` (a day by default): far longer than any node
  keeps a service key cached (keys.pki `cache_seconds`, keys.tsa `refresh_seconds`: ACAR_KEY_CACHE_SECONDS,
  seconds; PkiService refuses a grace not above its cache time) or a request is in flight, so no node still
  signs with it. Keys of expired or revoked service certificates go the same way once a replacement exists.

Every creation, import, issuance and revocation is an audit event in the caller's unit of work.
"""

from __future__ import annotations

import datetime as dt
import secrets
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Final

from asn1crypto import x509
from cryptography import x509 as cx509
from cryptography.exceptions import InvalidSignature
from cryptography.exceptions import UnsupportedAlgorithm as CryptographyUnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, padding, rsa
from cryptography.hazmat.primitives.asymmetric.types import PublicKeyTypes
from cryptography.hazmat.primitives.serialization import Encoding
from cryptography.x509.oid import NameOID
from sqlalchemy import or_, select, true, update
from sqlalchemy.ext.asyncio import AsyncSession

from keys.crl import VerifiedCrl, parse_reason
from keys.errors import (
    AlreadyRevoked,
    CAKeyOffline,
    CANotInitialized,
    CAUnusable,
    CertificateNotFound,
    CertificateUnusable,
    InvalidCertificateRequest,
    KeysError,
)
from keys.interfaces import KeyHandle, KeyStore, KeyType
from keys.models import CertificateAuthority, IssuedCertificate, StoredKey
from keys.profiles import (
    SERVICE_PROFILES,
    SUBSCRIBER_PROFILES,
    CertificatePolicy,
    Profile,
    ServiceSubject,
    Subject,
    check_subject,
    profile_extensions,
)
from keys.x509 import (
    assemble_certificate,
    certificate_public_key,
    check_subject_key,
    key_identifier,
    parse_serial,
    public_key_info,
    random_serial,
    same_public_key,
    serial_to_hex,
    signature_scheme,
    to_pem,
    x509_time,
)
from storage.audit import record_event
from storage.base import utcnow

ROOT: Final = "root"
ISSUING: Final = "issuing"
CA_NAMES: Final = (ROOT, ISSUING)

ROOT_VALIDITY: Final = dt.timedelta(days=7305)  # 20 years
ISSUING_VALIDITY: Final = dt.timedelta(days=3652)  # 10 years
SUBSCRIBER_DEFAULT_DAYS: Final = 365
SUBSCRIBER_MAX_DAYS: Final = 1095
SERVICE_VALIDITY: Final[dict[Profile, dt.timedelta]] = {
    # short-lived: with id-pkix-ocsp-nocheck nobody checks the responder certificate (RFC 6960 4.2.2.2.1)
    Profile.OCSP_RESPONDER: dt.timedelta(days=90),
    Profile.TSA: dt.timedelta(days=1096),
}
SERVICE_RENEWAL_FRACTION: Final = 3
"""A service certificate is renewed (new key, new certificate) once less than 1/3 of its validity remains."""
SUPERSEDED_KEY_GRACE: Final = dt.timedelta(days=1)
"""How long a renewed service certificate has been current before the key it replaced is destroyed."""

_SERVICE_LABELS: Final = {
    Profile.OCSP_RESPONDER: ("ocsp", "OCSP Responder"),
    Profile.TSA: ("tsa", "Time-Stamping Authority"),
}


@dataclass(frozen=True, slots=True)
class PkiUrls:
    """Where the service publishes its PKI objects: under the PKI base URL (ACAR_PKI_BASE_URL, by default the
    issuer's host over http; api.settings)."""

    base: str

    @property
    def ocsp(self) -> str:
        return f"{self.base}/pki/ocsp"

    def ca_certificate(self, name: str) -> str:
        return f"{self.base}/pki/ca/{name}.crt"

    def crl(self, name: str) -> str:
        return f"{self.base}/pki/crl/{name}.crl"


@dataclass(frozen=True, slots=True)
class LoadedCA:
    """A CA ready to sign: its name, key handle and certificate."""

    name: str
    handle: KeyHandle
    certificate: x509.Certificate


@dataclass(frozen=True, slots=True)
class CertifiedKey:
    """A service key with its certificate: what the OCSP responder and the TSA sign with.

    `chain` holds the certificates between `certificate` and the root (the issuing CA), not the root itself.
    """

    handle: KeyHandle
    certificate: x509.Certificate
    chain: tuple[x509.Certificate, ...]
    serial_hex: str


def _uri(url: str) -> x509.GeneralName:
    return x509.GeneralName(name="uniform_resource_identifier", value=url)


_NAME_LABELS: Final = {
    NameOID.SERIAL_NUMBER: "serialNumber", NameOID.GIVEN_NAME: "givenName", NameOID.SURNAME: "surname",
    NameOID.ORGANIZATION_IDENTIFIER: "organizationIdentifier",
}


def subject_text(der: bytes) -> str:
    """The certificate's subject as an RFC 4514 string, with readable names for the ETSI attributes."""
    return cx509.load_der_x509_certificate(der).subject.rfc4514_string(_NAME_LABELS)


def _load_cryptography(der: bytes, what: str) -> cx509.Certificate:
    try:
        return cx509.load_der_x509_certificate(der)
    except ValueError as exc:
        raise InvalidCertificateRequest(f"{what} is not a DER or PEM X.509 certificate: {exc}") from None


def certificate_der(data: bytes) -> bytes:
    """The DER of a certificate given as PEM or DER."""
    if data.lstrip().startswith(b"-----"):
        try:
            return cx509.load_pem_x509_certificate(data).public_bytes(Encoding.DER)
        except ValueError as exc:
            raise InvalidCertificateRequest(f"the certificate is not a PEM X.509 certificate: {exc}") from None
    return _load_cryptography(data, "the certificate").public_bytes(Encoding.DER)


async def _verify_possession(handle: KeyHandle, public_key: PublicKeyTypes) -> None:
    """The handle's key signs a fresh challenge that the certificate's public key verifies."""
    challenge = secrets.token_bytes(32)
    signature = await handle.sign(challenge, "sha256")
    try:
        if isinstance(public_key, ec.EllipticCurvePublicKey):
            public_key.verify(signature, challenge, ec.ECDSA(hashes.SHA256()))
        elif isinstance(public_key, rsa.RSAPublicKey):
            public_key.verify(signature, challenge, padding.PKCS1v15(), hashes.SHA256())
        elif isinstance(public_key, ed25519.Ed25519PublicKey):
            public_key.verify(signature, challenge)
        else:
            raise InvalidCertificateRequest(f"unsupported CA key type {type(public_key).__name__}")
    except InvalidSignature:
        raise InvalidCertificateRequest(
            "the key does not match the certificate (its signature does not verify)") from None


class CertificateAuthorityService:
    """Creates, imports and uses the CA hierarchy (see module docstring). Flushes, never commits."""

    def __init__(
        self,
        store: KeyStore,
        *,
        urls: PkiUrls,
        policy: CertificatePolicy,
        organization: str = "Açar",
        ca_key_type: KeyType = "EC-P384",
        service_key_type: KeyType = "EC-P256",
        superseded_key_grace: dt.timedelta = SUPERSEDED_KEY_GRACE,
        clock: Callable[[], dt.datetime] = utcnow,
    ) -> None:
        signature_scheme(ca_key_type)  # refuse a key type we cannot sign X.509 with, at construction
        signature_scheme(service_key_type)
        if superseded_key_grace <= dt.timedelta(0):
            raise ValueError("superseded_key_grace must be positive")
        self.superseded_key_grace = superseded_key_grace
        self._store = store
        self.urls = urls
        self.policy = policy
        self.organization = organization
        self.ca_key_type: KeyType = ca_key_type
        self.service_key_type: KeyType = service_key_type
        self._clock = clock

    def _now(self) -> dt.datetime:
        return self._clock().astimezone(dt.UTC).replace(microsecond=0)

    # --- the CAs ---------------------------------------------------------------------------------------------

    async def ca_row(self, session: AsyncSession, name: str, *, for_update: bool = False) -> CertificateAuthority:
        """The CA's row, locked for the rest of the transaction when asked (see `lock_ca`), or CANotInitialized."""
        if name not in CA_NAMES:
            raise CertificateNotFound(f"no CA named {name!r} (known: {', '.join(CA_NAMES)})")
        statement = select(CertificateAuthority).where(CertificateAuthority.name == name)
        if for_update:
            await self.lock_ca(session, name)
            statement = statement.with_for_update().execution_options(populate_existing=True)
        row = (await session.execute(statement)).scalars().first()
        if row is None:
            raise CANotInitialized(f"the {name} CA does not exist yet (run `acar init` or `acar ca import`)")
        return row

    @staticmethod
    async def lock_ca(session: AsyncSession, name: str) -> None:
        """Serialize writers of this CA across nodes until the transaction ends (module docstring).

        PostgreSQL: `ca_row` adds FOR UPDATE to its SELECT. SQLite: a no-op UPDATE of the row takes the
        database write lock now; pysqlite opens the transaction at this first write, so the reads after it see
        the newest committed state (a lock taken after an earlier write in the same transaction is held already).
        """
        if session.get_bind().dialect.name == "sqlite":
            await session.execute(
                update(CertificateAuthority).where(CertificateAuthority.name == name)
                .values(name=CertificateAuthority.name).execution_options(synchronize_session=False))

    async def load_ca(self, session: AsyncSession, name: str, *, for_update: bool = False) -> LoadedCA:
        """The CA with its key handle; CAKeyOffline when its key is kept offline (an imported root)."""
        row = await self.ca_row(session, name, for_update=for_update)
        if row.key_id is None:
            raise CAKeyOffline(f"the {name} CA key is offline (not in the key store); the service cannot sign "
                               f"for the {name} CA")
        handle = await self._store.load(session, row.key_id)
        return LoadedCA(name, handle, x509.Certificate.load(row.certificate_der))

    async def key_offline(self, session: AsyncSession, name: str) -> bool:
        """True when the CA exists and its key is not in the key store (its CRLs are signed offline)."""
        row = await self.ca_row(session, name)
        return row.key_id is None

    async def exists(self, session: AsyncSession, name: str) -> bool:
        result = await session.execute(select(CertificateAuthority.name).where(CertificateAuthority.name == name))
        return result.first() is not None

    async def ensure_hierarchy(self, session: AsyncSession, *, actor: str) -> list[str]:
        """Create the root and the issuing CA where missing (development); return the names created."""
        created: list[str] = []
        now = self._now()
        if not await self.exists(session, ROOT):
            handle = await self._store.generate(session, self.ca_key_type, purpose="ca", label="ca-root")
            subject = ServiceSubject(self.organization, f"{self.organization} Root CA")
            tbs = self._tbs(
                serial=random_serial(), issuer_name=subject.name(), subject_name=subject.name(),
                spki=public_key_info(handle.public_key()), not_before=now, not_after=now + ROOT_VALIDITY,
                extensions=profile_extensions(Profile.ROOT_CA, policy=self.policy),
                issuer_key_id=None, links_of=None, profile=Profile.ROOT_CA,
            )
            cert = await assemble_certificate(handle, tbs)
            session.add(CertificateAuthority(name=ROOT, parent=None, key_id=handle.key_id,
                                             certificate_der=bytes(cert.dump()), created_at=now))
            await session.flush()
            record_event(session, "ca.created", actor=actor, subject=ROOT,
                         detail={"serial": serial_to_hex(cert.serial_number), "key_id": handle.key_id,
                                 "key_type": handle.key_type})
            created.append(ROOT)
        if not await self.exists(session, ISSUING):
            root = await self.load_ca(session, ROOT)
            handle = await self._store.generate(session, self.ca_key_type, purpose="ca", label="ca-issuing")
            subject = ServiceSubject(self.organization, f"{self.organization} Issuing CA")
            not_after = min(now + ISSUING_VALIDITY, root.certificate.not_valid_after)
            row = await self._issue(session, root, Profile.ISSUING_CA, subject, handle.public_key(),
                                    not_before=now, not_after=not_after, key_id=handle.key_id, actor=actor)
            session.add(CertificateAuthority(name=ISSUING, parent=ROOT, key_id=handle.key_id,
                                             certificate_der=row.der, created_at=now))
            await session.flush()
            record_event(session, "ca.created", actor=actor, subject=ISSUING,
                         detail={"serial": row.serial_hex, "key_id": handle.key_id, "key_type": handle.key_type})
            created.append(ISSUING)
        return created

    async def check_import(self, session: AsyncSession, name: str, certificate: bytes) -> bytes:
        """Check a CA certificate for import before any key is touched; return its DER.

        root: self-signed (the signature verifies with its own key). issuing: signed by our root. Both: a CA
        certificate (basicConstraints cA) whose keyUsage allows keyCertSign and cRLSign, valid now.
        """
        if name not in CA_NAMES:
            raise InvalidCertificateRequest(f"--name must be one of {', '.join(CA_NAMES)} (got {name!r})")
        if await self.exists(session, name):
            raise InvalidCertificateRequest(f"the {name} CA already exists; it is not replaced")
        der = certificate_der(certificate)
        cert = _load_cryptography(der, "the certificate")
        try:
            basic = cert.extensions.get_extension_for_class(cx509.BasicConstraints).value
            usage = cert.extensions.get_extension_for_class(cx509.KeyUsage).value
        except cx509.ExtensionNotFound as exc:
            raise InvalidCertificateRequest(f"not a CA certificate: {exc}") from None
        if not basic.ca:
            raise InvalidCertificateRequest("not a CA certificate: basicConstraints cA is false")
        if not (usage.key_cert_sign and usage.crl_sign):
            raise InvalidCertificateRequest("the CA certificate's keyUsage must allow keyCertSign and cRLSign")
        now = self._now()
        if not cert.not_valid_before_utc <= now < cert.not_valid_after_utc:
            raise InvalidCertificateRequest("the CA certificate is not valid now")
        try:
            cert.public_key()
        except (ValueError, CryptographyUnsupportedAlgorithm) as exc:
            raise InvalidCertificateRequest(f"the CA certificate's public key is not supported: {exc}") from None
        if name == ROOT:
            issuer = cert
        else:
            if not await self.exists(session, ROOT):
                raise InvalidCertificateRequest("import the root CA before the issuing CA")
            root_row = await self.ca_row(session, ROOT)
            issuer = cx509.load_der_x509_certificate(root_row.certificate_der)
        try:
            cert.verify_directly_issued_by(issuer)
        except (ValueError, TypeError, InvalidSignature):
            what = "self-signed" if name == ROOT else "issued by our root CA"
            raise InvalidCertificateRequest(f"the {name} certificate is not {what}") from None
        return der

    async def import_ca(self, session: AsyncSession, name: str, certificate: bytes, handle: KeyHandle | None, *,
                        actor: str) -> CertificateAuthority:
        """Record an imported CA: the certificate (checked by `check_import`) and the key it certifies.

        Without a handle the root is imported offline: its certificate only (see the module docstring).
        """
        der = await self.check_import(session, name, certificate)
        parsed = x509.Certificate.load(der)
        if handle is None:
            if name != ROOT:
                raise InvalidCertificateRequest(
                    f"the {name} CA needs its key (--key or --pkcs11-label): only the root CA may stay offline")
        else:
            certified = certificate_public_key(parsed)
            if not same_public_key(certified, handle.public_key()):
                raise InvalidCertificateRequest(f"the key does not match the {name} certificate's public key")
            await _verify_possession(handle, certified)
            signature_scheme(handle.key_type)
        key_id = handle.key_id if handle is not None else None
        now = self._now()
        row = CertificateAuthority(name=name, parent=None if name == ROOT else ROOT, key_id=key_id,
                                   certificate_der=der, created_at=now)
        session.add(row)
        if name == ISSUING:
            session.add(IssuedCertificate(
                issuer_ca=ROOT, serial_hex=serial_to_hex(parsed.serial_number), profile=Profile.ISSUING_CA.value,
                subject=subject_text(der), der=der,
                not_before=parsed.not_valid_before, not_after=parsed.not_valid_after, key_id=key_id,
                created_at=now))
        await session.flush()
        record_event(session, "ca.imported", actor=actor, subject=name,
                     detail={"serial": serial_to_hex(parsed.serial_number), "key_id": key_id,
                             "key_type": handle.key_type if handle is not None else None,
                             "backend": self._store.backend if handle is not None else None,
                             "key_offline": handle is None})
        return row

    # --- issuance --------------------------------------------------------------------------------------------

    def _tbs(self, *, serial: int, issuer_name: x509.Name, subject_name: x509.Name, spki: Any,
             not_before: dt.datetime, not_after: dt.datetime, extensions: list[x509.Extension],
             issuer_key_id: bytes | None, links_of: str | None, profile: Profile) -> x509.TbsCertificate:
        """A v3 TBSCertificate with the key identifiers and, for certificates a CA issues, AIA and CRL DP."""
        all_extensions = [*extensions, {"extn_id": "key_identifier", "critical": False,
                                        "extn_value": key_identifier(spki)}]
        if issuer_key_id is not None:
            all_extensions.append({"extn_id": "authority_key_identifier", "critical": False,
                                   "extn_value": {"key_identifier": issuer_key_id}})
        if links_of is not None:  # the issuing CA's name: where its certificate, CRL and OCSP responder live
            access: list[dict[str, Any]] = []
            # our OCSP responder answers for the issuing CA's certificates only, and never about itself
            if links_of == ISSUING and profile is not Profile.OCSP_RESPONDER:
                access.append({"access_method": "ocsp", "access_location": _uri(self.urls.ocsp)})
            access.append({"access_method": "ca_issuers", "access_location": _uri(self.urls.ca_certificate(links_of))})
            all_extensions += [
                {"extn_id": "authority_information_access", "critical": False, "extn_value": access},
                {"extn_id": "crl_distribution_points", "critical": False,
                 "extn_value": [{"distribution_point": {"full_name": [_uri(self.urls.crl(links_of))]}}]},
            ]
        return x509.TbsCertificate({
            "version": "v3",
            "serial_number": serial,
            "issuer": issuer_name,
            "validity": {"not_before": x509_time(not_before), "not_after": x509_time(not_after)},
            "subject": subject_name,
            "subject_public_key_info": spki,
            "extensions": all_extensions,
        })

    async def _issue(self, session: AsyncSession, ca: LoadedCA, profile: Profile, subject: Subject,
                     public_key: PublicKeyTypes, *, not_before: dt.datetime, not_after: dt.datetime,
                     key_id: str | None, actor: str) -> IssuedCertificate:
        check_subject(profile, subject)
        await self.check_usable(session, ca)
        issuer = ca.certificate
        if not_after > issuer.not_valid_after:
            raise InvalidCertificateRequest(
                f"the certificate would outlive the {ca.name} CA (valid until {issuer.not_valid_after:%Y-%m-%d})")
        serial = random_serial()
        tbs = self._tbs(
            serial=serial, issuer_name=issuer.subject, subject_name=subject.name(), spki=public_key_info(public_key),
            not_before=not_before, not_after=not_after,
            extensions=profile_extensions(profile, policy=self.policy),
            issuer_key_id=issuer.key_identifier or key_identifier(issuer.public_key), links_of=ca.name,
            profile=profile,
        )
        der = bytes((await assemble_certificate(ca.handle, tbs)).dump())
        serial_hex = serial_to_hex(serial)
        row = IssuedCertificate(
            issuer_ca=ca.name, serial_hex=serial_hex, profile=profile.value,
            subject=subject_text(der), der=der,
            not_before=not_before, not_after=not_after, key_id=key_id, created_at=self._now(),
        )
        session.add(row)
        await session.flush()
        record_event(session, "certificate.issued", actor=actor, subject=serial_hex,
                     detail={"issuer": ca.name, "profile": profile.value, "subject": row.subject,
                             "not_after": not_after.isoformat()})
        return row

    async def check_usable(self, session: AsyncSession, ca: LoadedCA) -> None:
        """CAUnusable unless the CA certificate is valid now and not revoked by its issuer (RFC 5280 6.1.3)."""
        await self._check_ca_certificate(session, ca.name, ca.certificate)

    async def _check_ca_certificate(self, session: AsyncSession, name: str, certificate: x509.Certificate) -> None:
        now = self._now()
        if now < certificate.not_valid_before:
            raise CAUnusable(f"the {name} CA certificate is not valid before "
                             f"{certificate.not_valid_before:%Y-%m-%d %H:%M:%S}Z; it issues nothing yet")
        if now >= certificate.not_valid_after:
            raise CAUnusable(f"the {name} CA certificate expired at "
                             f"{certificate.not_valid_after:%Y-%m-%d %H:%M:%S}Z; it issues nothing")
        if name == ROOT:
            return
        recorded = (await session.execute(
            select(IssuedCertificate.revoked_at, IssuedCertificate.revocation_reason)
            .where(IssuedCertificate.issuer_ca == ROOT,
                   IssuedCertificate.serial_hex == serial_to_hex(certificate.serial_number)))).first()
        if recorded is not None and recorded.revoked_at is not None:
            raise CAUnusable(f"the {name} CA certificate was revoked at {recorded.revoked_at:%Y-%m-%d %H:%M:%S}Z "
                             f"({recorded.revocation_reason}); it issues nothing")

    async def issue(self, session: AsyncSession, *, profile: Profile, subject: Subject, public_key: PublicKeyTypes,
                    days: int | None = None, key_id: str | None = None, actor: str) -> IssuedCertificate:
        """Issue a subscriber certificate from the issuing CA (profiles in keys.profiles).

        `key_id` names the key in this key store that the certificate certifies, when the subscriber's key is kept
        here (an agency's seal key, a person's signing key): it is recorded on the certificate, so
        `certified_key_of(key_id=...)` finds it. It must be the key of `public_key` (InvalidCertificateRequest
        otherwise; KeyNotFound when the store has no such key): a certificate never names a key it does not
        certify. Without it the key is the subscriber's own (a passkey's attestation, a CSR).
        """
        if profile not in SUBSCRIBER_PROFILES:
            raise InvalidCertificateRequest(
                f"profile {profile.value} is not issued on request (use one of "
                f"{', '.join(p.value for p in SUBSCRIBER_PROFILES)})")
        days = SUBSCRIBER_DEFAULT_DAYS if days is None else days
        if not 1 <= days <= SUBSCRIBER_MAX_DAYS:
            raise InvalidCertificateRequest(f"the validity must be 1 to {SUBSCRIBER_MAX_DAYS} days (got {days})")
        check_subject_key(public_key)
        if key_id is not None:
            handle = await self._store.load(session, key_id)
            if not same_public_key(handle.public_key(), public_key):
                raise InvalidCertificateRequest(f"key {key_id} is not the public key to be certified")
        ca = await self.load_ca(session, ISSUING)
        now = self._now()
        return await self._issue(session, ca, profile, subject, public_key, not_before=now,
                                 not_after=now + dt.timedelta(days=days), key_id=key_id, actor=actor)

    async def _newest_service_certificate(self, session: AsyncSession, profile: Profile) -> IssuedCertificate | None:
        now = self._now()
        result = await session.execute(
            select(IssuedCertificate)
            .where(IssuedCertificate.issuer_ca == ISSUING, IssuedCertificate.profile == profile.value,
                   IssuedCertificate.revoked_at.is_(None), IssuedCertificate.key_id.is_not(None),
                   IssuedCertificate.not_before <= now, IssuedCertificate.not_after > now)
            .order_by(IssuedCertificate.not_after.desc(), IssuedCertificate.id.desc())
            .limit(1))
        return result.scalars().first()

    async def _renewals_due(self, session: AsyncSession) -> list[Profile]:
        """The service profiles without a certificate or with less than 1/3 of its validity left.

        A certificate that already ends with the issuing CA is not due: a renewal could not outlive it (it is
        capped at the CA's notAfter), so renewing would only mint a new key on every run.
        """
        now = self._now()
        ca_not_after: dt.datetime | None = None
        due = []
        for profile in SERVICE_PROFILES:
            current = await self._newest_service_certificate(session, profile)
            if current is None:
                due.append(profile)
                continue
            if current.not_after - now > SERVICE_VALIDITY[profile] / SERVICE_RENEWAL_FRACTION:
                continue
            if ca_not_after is None:
                ca_not_after = (await self.load_ca(session, ISSUING)).certificate.not_valid_after
            if current.not_after < ca_not_after:
                due.append(profile)
        return due

    async def _superseded(self, session: AsyncSession) -> list[tuple[IssuedCertificate, IssuedCertificate]]:
        """(superseded certificate, its replacement) for every service key still in the key store whose
        replacement has been current for `superseded_key_grace`: renewed, expired or revoked ones alike."""
        now = self._now()
        found = []
        for profile in SERVICE_PROFILES:
            current = await self._newest_service_certificate(session, profile)
            if current is None or now - current.not_before < self.superseded_key_grace:
                continue
            rows = (await session.execute(
                select(IssuedCertificate)
                .join(StoredKey, StoredKey.id == IssuedCertificate.key_id)
                .where(IssuedCertificate.issuer_ca == ISSUING, IssuedCertificate.profile == profile.value,
                       IssuedCertificate.id != current.id, IssuedCertificate.key_id != current.key_id,
                       StoredKey.backend == self._store.backend, StoredKey.destroyed_at.is_(None))
                .order_by(IssuedCertificate.id))).scalars().all()
            found += [(row, current) for row in rows]
        return found

    async def service_work_due(self, session: AsyncSession) -> bool:
        """Whether `ensure_service_certificates` or `destroy_superseded_keys` has anything to do (no lock)."""
        return bool(await self._renewals_due(session) or await self._superseded(session))

    async def ensure_service_certificates(self, session: AsyncSession, *, actor: str) -> list[IssuedCertificate]:
        """Give the OCSP responder and the TSA a key and certificate, and renew them before they run out.

        Runs under the issuing CA's row lock and decides after taking it, so concurrent runs renew once.
        """
        ca = await self.load_ca(session, ISSUING, for_update=True)
        created: list[IssuedCertificate] = []
        due = await self._renewals_due(session)
        if due:
            await self.check_usable(session, ca)  # before a key is made that no certificate would hold
        for profile in due:
            validity = SERVICE_VALIDITY[profile]
            now = self._now()
            purpose, title = _SERVICE_LABELS[profile]
            handle = await self._store.generate(session, self.service_key_type, purpose=purpose, label=purpose)
            subject = ServiceSubject(self.organization, f"{self.organization} {title}")
            not_after = min(now + validity, ca.certificate.not_valid_after)
            created.append(await self._issue(session, ca, profile, subject, handle.public_key(), not_before=now,
                                             not_after=not_after, key_id=handle.key_id, actor=actor))
        return created

    async def destroy_superseded_keys(self, session: AsyncSession, *, actor: str) -> list[str]:
        """Destroy the keys of superseded OCSP responder and TSA certificates (module docstring); return
        "profile:serial" of each. Under the issuing CA's row lock, so concurrent runs destroy each key once."""
        await self.ca_row(session, ISSUING, for_update=True)
        destroyed = []
        for row, replacement in await self._superseded(session):
            if row.key_id is None:
                continue
            await self._store.destroy(session, row.key_id)
            record_event(session, "service_key.destroyed", actor=actor, subject=row.key_id,
                         detail={"profile": row.profile, "serial": row.serial_hex,
                                 "superseded_by": replacement.serial_hex})
            destroyed.append(f"{row.profile}:{row.serial_hex}")
        return destroyed

    async def certified_key(self, session: AsyncSession, profile: Profile) -> CertifiedKey:
        """The newest valid key and certificate of a service profile (OCSP responder or TSA), with its chain."""
        if profile not in SERVICE_PROFILES:
            raise InvalidCertificateRequest(f"{profile.value} is not a service profile")
        row = await self._newest_service_certificate(session, profile)
        if row is None or row.key_id is None:
            raise CANotInitialized(f"no valid {profile.value} certificate (run `acar init`)")
        handle = await self._store.load(session, row.key_id)
        issuing = await self.ca_row(session, ISSUING)
        return CertifiedKey(handle=handle, certificate=x509.Certificate.load(row.der),
                            chain=(x509.Certificate.load(issuing.certificate_der),), serial_hex=row.serial_hex)

    async def certified_key_of(self, session: AsyncSession, *, key_id: str | None = None,
                               serial: str | None = None) -> CertifiedKey:
        """The key an issued certificate certifies, with that certificate and its chain, found by the key's id or
        by the certificate's serial (hex, any common notation): what signing/ signs with.

        Give exactly one of `key_id` and `serial`. By key id, the newest certificate of the key that is usable now
        is taken. Refused, since a signature made under it would not validate (RFC 5280 section 6.1.3): a
        certificate that is revoked, expired or not yet valid (CertificateUnusable), or whose issuing CA is
        (CAUnusable). A certificate of a key that is not in the key store (a subscriber's own key) or an unknown
        key id or serial is CertificateNotFound; a key destroyed since is KeyNotFound (from the key store).
        """
        if (key_id is None) == (serial is None):
            raise InvalidCertificateRequest("look a certified key up by its key id or by a serial, not both")
        if serial is not None:
            row = await self.get(session, serial)
        else:
            rows = (await session.execute(
                select(IssuedCertificate).where(IssuedCertificate.key_id == key_id)
                .order_by(IssuedCertificate.not_after.desc(), IssuedCertificate.id.desc()))).scalars().all()
            if not rows:
                raise CertificateNotFound(f"no certificate issued by this CA certifies key {key_id}")
            row = next((r for r in rows if self._certificate_problem(r) is None), rows[0])
        certified = row.key_id
        if certified is None:
            raise CertificateNotFound(f"certificate {row.serial_hex} certifies a key that is not in the key store")
        problem = self._certificate_problem(row)
        if problem is not None:
            raise CertificateUnusable(f"certificate {row.serial_hex} {problem}")
        issuer = await self.ca_row(session, row.issuer_ca)
        issuer_certificate = x509.Certificate.load(issuer.certificate_der)
        await self._check_ca_certificate(session, issuer.name, issuer_certificate)
        certificate = x509.Certificate.load(row.der)
        handle = await self._store.load(session, certified)
        if not same_public_key(handle.public_key(), certificate_public_key(certificate)):
            raise KeysError(f"certificate {row.serial_hex} does not certify its recorded key {certified}")
        chain = () if issuer.name == ROOT else (issuer_certificate,)  # up to, not including, the root
        return CertifiedKey(handle=handle, certificate=certificate, chain=chain, serial_hex=row.serial_hex)

    def _certificate_problem(self, row: IssuedCertificate) -> str | None:
        """Why an issued certificate must not be signed with now, or None."""
        now = self._now()
        if row.revoked_at is not None:
            return f"was revoked at {row.revoked_at:%Y-%m-%d %H:%M:%S}Z ({row.revocation_reason})"
        if now < row.not_before:
            return f"is not valid before {row.not_before:%Y-%m-%d %H:%M:%S}Z"
        if now >= row.not_after:
            return f"expired at {row.not_after:%Y-%m-%d %H:%M:%S}Z"
        return None

    # --- lookup and revocation -------------------------------------------------------------------------------

    async def get(self, session: AsyncSession, serial: str) -> IssuedCertificate:
        """The certificate with this serial (hex, any common notation), or CertificateNotFound."""
        serial_hex = parse_serial(serial)
        rows = (await session.execute(
            select(IssuedCertificate).where(IssuedCertificate.serial_hex == serial_hex))).scalars().all()
        if not rows:
            raise CertificateNotFound(f"no certificate with serial {serial_hex} was issued by this CA")
        if len(rows) > 1:  # two CAs drew the same 158 random bits: never expected, but not guessed either
            raise KeysError(f"serial {serial_hex} is ambiguous: issued by {', '.join(r.issuer_ca for r in rows)}")
        return rows[0]

    async def revoke(self, session: AsyncSession, serial: str, reason: str, *, actor: str) -> IssuedCertificate:
        """Mark a certificate revoked (RFC 5280 section 5.3.1 reason); the caller publishes the new CRL.

        The issuer CA's row is locked first, so revocations and CRL numbers of one CA are serialized. A
        certificate of a CA whose key is offline (the root's: the issuing CA) is refused with CAKeyOffline and
        nothing changes: only a CRL signed offline can publish its revocation (`acar crl import`).
        """
        reason_name = parse_reason(reason)
        found = await self.get(session, serial)
        if await self.key_offline(session, found.issuer_ca):
            name = found.issuer_ca
            raise CAKeyOffline(f"the {name} CA key is offline; revoke by publishing a {name} CRL signed offline")
        await self.ca_row(session, found.issuer_ca, for_update=True)
        await session.refresh(found)  # re-read under the lock: another node may have revoked it meanwhile
        if found.revoked_at is not None:
            raise AlreadyRevoked(
                f"certificate {found.serial_hex} was revoked at {found.revoked_at.isoformat()} "
                f"({found.revocation_reason})")
        found.revoked_at = self._now()
        found.revocation_reason = reason_name
        await session.flush()
        record_event(session, "certificate.revoked", actor=actor, subject=found.serial_hex,
                     detail={"issuer": found.issuer_ca, "reason": reason_name, "profile": found.profile,
                             "subject": found.subject})
        return found


    async def apply_crl(self, session: AsyncSession, ca_name: str, crl: VerifiedCrl, *, actor: str) -> list[str]:
        """Mark revoked what an imported CRL of the CA lists among the certificates recorded as issued by it
        (for the offline root: the issuing CA), with the CRL's date and reason; return their serials."""
        listed = {serial_to_hex(entry.serial): entry for entry in crl.revoked}
        # certificateHold is the one reason a later CRL may lift (RFC 5280 section 5.3.1): a held
        # certificate the new complete CRL no longer lists is released again
        held = (await session.execute(
            select(IssuedCertificate).where(IssuedCertificate.issuer_ca == ca_name,
                                            IssuedCertificate.revocation_reason == "certificateHold",
                                            IssuedCertificate.serial_hex.not_in(listed) if listed else true()))
                ).scalars().all()
        for row in held:
            row.revoked_at = None
            row.revocation_reason = None
            record_event(session, "certificate.released", actor=actor, subject=row.serial_hex,
                         detail={"issuer": ca_name, "profile": row.profile, "crl_number": crl.number})
        rows = (await session.execute(
            select(IssuedCertificate).where(IssuedCertificate.issuer_ca == ca_name,
                                            IssuedCertificate.serial_hex.in_(listed),
                                            or_(IssuedCertificate.revoked_at.is_(None),  # newly revoked, or a hold
                                                IssuedCertificate.revocation_reason == "certificateHold"))
        )).scalars().all() if listed else []
        rows = [row for row in rows if row.revocation_reason != listed[row.serial_hex].reason]
        for row in rows:
            entry = listed[row.serial_hex]
            row.revoked_at = entry.revoked_at
            row.revocation_reason = entry.reason
            record_event(session, "certificate.revoked", actor=actor, subject=row.serial_hex,
                         detail={"issuer": ca_name, "reason": entry.reason, "profile": row.profile,
                                 "subject": row.subject, "crl_number": crl.number})
        await session.flush()
        return [row.serial_hex for row in rows]


def certificate_pem(row: IssuedCertificate | CertificateAuthority) -> str:
    """The PEM of a stored certificate."""
    der = row.der if isinstance(row, IssuedCertificate) else row.certificate_der
    return to_pem(der)

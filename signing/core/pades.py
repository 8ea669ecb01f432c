"""The PAdES engine: PAdES baseline signatures B-B, B-T, B-LT and B-LTA on pyHanko, keys behind `KeyHandle.sign`.

- ETSI EN 319 142-1 section 5.1 / ISO 32000-2 section 12.8.3.4: the signature dictionary has SubFilter
  ETSI.CAdES.detached; its /Contents is a CMS SignedData (RFC 5652) over the ByteRange, detached, whose signed
  attributes hold content-type, message-digest and signing-certificate-v2 (ETSI EN 319 122-1 section 5.2.2,
  RFC 5035), and no signing-time attribute: the claimed signing time is the dictionary's /M entry (ETSI EN
  319 142-1 section 5.2.1, "the signing-time attribute shall not be present").
- Signing for a legal entity with one's own certificate (issue 16): the representation is a claimed role in the
  signer-attributes-v2 signed attribute (ETSI EN 319 122-1 section 5.2.6.1, required by ETSI EN 319 142-1 section
  5.2.3 as the CAdES form of a PAdES signer's attributes): an X.501 role attribute (id-at-role, RoleSyntax of
  RFC 5755 section 4.4.5) whose roleName is a directoryName naming the entity (organizationName and
  organizationIdentifier NTRAZ-<VÖEN>, as a seal certificate of ETSI EN 319 412-3 would) and the title
  "Representative". It is a claim of the signer, not certified: the mandate behind it is in Açar's audit trail.
- Section 5.3 (B-T): a signature time-stamp (RFC 3161 token over the signature value) in the unsigned attributes.
- Section 5.4 (B-LT): the signer's and the TSA's certificate chains and their OCSP responses / CRLs in the DSS,
  fetched after the signature time-stamp (so the revocation data postdates the time the signature is proven to
  have existed at), in an incremental update of its own.
- Section 5.5 (B-LTA): a document time-stamp (SubFilter ETSI.RFC3161) over the revision holding the DSS.

Decisions, so a reader sees them at one place:
- The private key signs only through `await KeyHandle.sign(data, hash_name)` (`KeyHandleSigner`): ECDSA
  signatures come DER-encoded, RSA is PKCS#1 v1.5 (keys.interfaces), with the digest of keys.x509's table
  for the key type (P-256 -> SHA-256, P-384 -> SHA-384, RSA -> SHA-256). pyHanko's size-estimating dry run gets
  a placeholder of the longest signature, never a second signature. Ed25519 keys are refused: PAdES with EdDSA
  needs ISO 32002 and PDF 2.0, which would change the document's version.
- Every signature is an incremental update (ISO 32000-1 section 7.5.6): the bytes of the input, and so every
  earlier signature, stay as they were. The PDF version is never raised: the header cannot change in an
  incremental update, and the writer here ignores pyHanko's requests to set the catalog's /Version (the ESIC
  developer extension is still declared); a PDF/A input keeps its header, version and XMP metadata (pyHanko's
  rewrite of the XMP packet and Info dictionary on each update is switched off: a signature does not modify
  the document's content, and the packet of a PDF/A file stays exactly as its producer wrote it).
- Nothing is written to `output` until the whole signature (with its DSS and document time-stamp) is done:
  any failure leaves `output` untouched, and raises a SigningError subclass (signing.core.errors).
- One time-stamp client and one validation-data source for the engine's life (issue 13: never one per
  signature); a validation context per signature (signing.core.revocation).
"""

from __future__ import annotations

import datetime as dt
import hashlib
import io
import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO, Final, Protocol

from asn1crypto import algos, cms, x509
from pyhanko.pdf_utils.font.opentype import GlyphAccumulator, GlyphAccumulatorFactory
from pyhanko.pdf_utils.incremental_writer import IncrementalPdfFileWriter
from pyhanko.pdf_utils.layout import AxisAlignment, InnerScaling, Margins, SimpleBoxLayoutRule
from pyhanko.pdf_utils.misc import PdfError
from pyhanko.pdf_utils.reader import PdfFileReader
from pyhanko.pdf_utils.text import TextBoxStyle
from pyhanko.sign.ades.api import CAdESSignedAttrSpec, SignerAttrSpec
from pyhanko.sign.fields import SigFieldSpec, SigSeedSubFilter, enumerate_sig_fields
from pyhanko.sign.general import SigningError as PyHankoSigningError
from pyhanko.sign.signers import PdfSignatureMetadata, PdfSigner, PdfTimeStamper, Signer
from pyhanko.sign.signers.pdf_signer import PdfSigningSession
from pyhanko.sign.timestamps import TimeStamper, TimestampRequestError
from pyhanko.sign.validation.dss import DocumentSecurityStore
from pyhanko.sign.validation.pdf_embedded import EmbeddedPdfSignature
from pyhanko.stamp import TextStampStyle
from pyhanko_certvalidator import CertificateValidator
from pyhanko_certvalidator.errors import (
    InsufficientRevinfoError,
    PathBuildingError,
    PathValidationError,
    RevokedError,
    ValidationError,
)
from pyhanko_certvalidator.path import ValidationPath
from pyhanko_certvalidator.registry import SimpleCertificateStore

from keys.interfaces import HashName, KeyHandle, KeyType
from keys.x509 import SIGNATURE_ALGORITHMS, certificate_public_key, same_public_key
from signing.core.errors import (
    AppearanceUnavailable,
    DocumentNotSignable,
    InvalidSignatureOptions,
    SignerCertificateRevoked,
    SignerCredentialsUnusable,
    SigningError,
    TimestampUnavailable,
    ValidationDataUnavailable,
)
from signing.core.levels import DEFAULT_LEVEL, PadesLevel
from signing.core.revocation import ValidationDataSource
from signing.core.timestamps import acting_as

SIGNER_KEY_USAGE: Final = frozenset({"non_repudiation"})
"""Key usage the signer's certificate must carry: ETSI EN 319 412-2 section 4.3.2 (and 412-3 for seals) gives
certificates for electronic signatures and seals nonRepudiation (contentCommitment)."""

TSA_KEY_PURPOSE: Final = frozenset({"time_stamping"})
"""Extended key usage of a TSA certificate (RFC 3161 section 2.3)."""

FIELD_PREFIX: Final = "Signature"
"""Fresh signature fields are named Signature1, Signature2, ... (the first name not in the document)."""

DOCUMENT_TIMESTAMP_PREFIX: Final = "DocumentTimestamp"
"""Fresh document time-stamp fields (B-LTA) are named DocumentTimestamp1, ..."""

DEFAULT_APPEARANCE_FONT: Final = Path("/usr/share/fonts/truetype/noto/NotoSansMono-Regular.ttf")
"""The font of visible signatures (Debian fonts-noto-mono): it has the Azerbaijani (Ə ə İ ı Ş ş Ğ ğ), Russian and
English letters and is embedded as a subset with a ToUnicode map, so the appearance stays valid PDF/A (ISO 19005-2
section 6.2.11). pyHanko 0.38 writes glyph widths in font units, right only for fonts of 1000 units per em (as
this one): a 2048-unit TrueType font such as DejaVu Sans is drawn letter-spaced."""

APPEARANCE_TEXT: Final = "İmzalayan / Signed by: %(signer)s\nTarix / Date: %(ts)s"
"""The text of a visible signature: the signer's common name and the claimed signing time (UTC)."""

# The longest signature value per key type, what pyHanko's dry run reserves room for: a DER ECDSA-Sig-Value
# (RFC 5480 / RFC 3279) of two INTEGERs with a leading zero each, an RSA signature of the modulus length.
_PLACEHOLDER_LENGTHS: Final[dict[KeyType, int]] = {"EC-P256": 72, "EC-P384": 104, "RSA-2048": 256, "RSA-3072": 384}
_SIZE_MEMORY: Final = 4096  # signing certificates whose /Contents size is remembered (forgotten all at once beyond)
_FIELD_NAME = re.compile(r"^[^.\x00-\x1f]{1,127}$")  # ISO 32000-1 12.7.3.2: a partial name holds no period


@dataclass(frozen=True, slots=True)
class SigningCredentials:
    """A signing key and its certificate (keys.ca.CertifiedKey has the same shape; `of` builds from one).

    `chain` holds the issuing CA(s) up to, not including, the root.
    """

    handle: KeyHandle
    certificate: x509.Certificate
    chain: tuple[x509.Certificate, ...]

    @classmethod
    def of(cls, certified: _Certified) -> SigningCredentials:
        return cls(handle=certified.handle, certificate=certified.certificate, chain=tuple(certified.chain))


class _Certified(Protocol):
    @property
    def handle(self) -> KeyHandle: ...

    @property
    def certificate(self) -> x509.Certificate: ...

    @property
    def chain(self) -> Sequence[x509.Certificate]: ...


@dataclass(frozen=True, slots=True)
class VisibleSignature:
    """Where the signature's appearance goes: a 1-based page and a box (x1, y1, x2, y2) in user-space points."""

    page: int
    box: tuple[float, float, float, float]


REPRESENTATIVE_TITLE: Final = "Representative"
"""The title in a claimed role's entity name (ClaimedRole)."""


@dataclass(frozen=True, slots=True)
class ClaimedRole:
    """The signer acts for a legal entity: a claimed role in signer-attributes-v2 (module docstring)."""

    voen: str
    organization: str

    def entity_name(self) -> x509.Name:
        """The entity as ETSI EN 319 412-3 names a legal person (organizationIdentifier NTRAZ-<VÖEN>)."""
        return x509.Name.build({"country_name": "AZ", "organization_name": self.organization,
                                "organization_identifier": f"NTRAZ-{self.voen}", "title": REPRESENTATIVE_TITLE})

    def attribute(self) -> cms.AttCertAttribute:
        """id-at-role (2.5.4.72) with RoleSyntax { roleName directoryName } (RFC 5755 section 4.4.5)."""
        role = cms.RoleSyntax({"role_name": x509.GeneralName(name="directory_name", value=self.entity_name())})
        return cms.AttCertAttribute({"type": "role", "values": [role]})


@dataclass(frozen=True, slots=True)
class SignatureOptions:
    """What one signature looks like: its level, reason, location, optional appearance and field name, and the
    role claimed for a legal entity (none: the signer signs in their own name)."""

    level: PadesLevel = DEFAULT_LEVEL
    reason: str | None = None
    location: str | None = None
    visible: VisibleSignature | None = None
    field_name: str | None = None  # default: a fresh field name not yet in the document
    claimed_role: ClaimedRole | None = None


@dataclass(frozen=True, slots=True)
class SignatureResult:
    """What a signature produced: its level, field, claimed signing time and the SHA-256 (hex) of the output."""

    level: PadesLevel
    field_name: str
    signing_time: dt.datetime
    sha256: str


class KeyHandleSigner(Signer):
    """A pyHanko `Signer` whose raw signatures come from `KeyHandle.sign` (see module docstring)."""

    def __init__(self, credentials: SigningCredentials) -> None:
        handle = credentials.handle
        scheme = SIGNATURE_ALGORITHMS.get(handle.key_type)
        if scheme is None or handle.key_type not in _PLACEHOLDER_LENGTHS:
            raise SignerCredentialsUnusable(
                f"a {handle.key_type} key cannot make a PAdES signature here (EC P-256/P-384 or RSA only)")
        try:
            certified = certificate_public_key(credentials.certificate)
        except ValueError as exc:
            raise SignerCredentialsUnusable(f"the signer's certificate has no readable public key: {exc}") from None
        if not same_public_key(certified, handle.public_key()):
            raise SignerCredentialsUnusable(f"the signer's certificate does not certify key {handle.key_id}")
        self.hash_name: HashName = scheme[0]
        self.certificate_digest = hashlib.sha256(credentials.certificate.dump()).digest()
        self._handle = handle
        self._placeholder = bytes(_PLACEHOLDER_LENGTHS[handle.key_type])
        super().__init__(
            signing_cert=credentials.certificate,
            cert_registry=SimpleCertificateStore.from_certs([credentials.certificate, *credentials.chain]),  # type: ignore[no-untyped-call]  # unannotated in pyHanko
            signature_mechanism=algos.SignedDigestAlgorithm({"algorithm": scheme[1]}),
            embed_roots=False,  # the root is the verifier's trust anchor, never taken from the signature
        )

    async def async_sign_raw(self, data: bytes, digest_algorithm: str, dry_run: bool = False) -> bytes:
        if digest_algorithm != self.hash_name:
            raise SignerCredentialsUnusable(
                f"the signature digest is {self.hash_name} for this key, not {digest_algorithm}")
        if dry_run:  # pyHanko sizing the /Contents placeholder: no signature is made
            return self._placeholder
        return await self._handle.sign(data, self.hash_name)


class _SameVersionWriter(IncrementalPdfFileWriter):
    """An incremental writer that changes neither the document's PDF version nor its metadata (module docstring).

    pyHanko asks for /Version 1.7 in the catalog when it declares the ESIC extension (ETSI.CAdES.detached on a
    PDF older than 1.7); the request is declined so the document's version and conformance claim stay. pyHanko
    also rewrites the XMP packet (re-serialised, with a new ModifyDate and Producer) and the Info dictionary on
    every write: skipped (`_update_meta`, pyHanko 0.38's metadata hook), so a PDF/A's XMP stays byte for byte
    (ISO 19005-2 section 6.6.2: XMP and Info must agree; neither is touched, so they still do).
    """

    def ensure_output_version(self, version: tuple[int, int]) -> None:
        return None

    def _update_meta(self) -> None:
        return None


class _PadesSigner(PdfSigner):
    """pyHanko's PdfSigner with the engine's clock as the claimed signing time (/M, ISO 32000-1 12.8.1) and the
    engine's memory of /Contents sizes.

    pyHanko sizes the /Contents placeholder by building a whole dummy CMS first (with the time-stamper's dummy
    token), which costs as much as the real one. The size depends only on the certificates and on whether a
    time-stamp is embedded (pyHanko's estimate keeps a 50% margin for the token's variable parts), so it is
    estimated once per signing certificate and level kind, and remembered in `sizes`.
    """

    def __init__(self, *args: Any, signing_time: dt.datetime, sizes: dict[tuple[bytes, bool], int],
                 size_key: tuple[bytes, bool], **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._signing_time = signing_time
        self._sizes = sizes
        self._size_key = size_key

    def init_signing_session(self, pdf_out: Any, existing_fields_only: bool = False) -> PdfSigningSession:
        session = super().init_signing_session(pdf_out, existing_fields_only=existing_fields_only)
        session.system_time = self._signing_time
        estimate = session.estimate_signature_container_size
        sizes, key = self._sizes, self._size_key

        async def remembered_estimate(validation_info: Any, tight: bool = False) -> int:
            size = sizes.get(key)
            if size is None:
                size = int(await estimate(validation_info, tight=tight))
                if len(sizes) >= _SIZE_MEMORY:
                    sizes.clear()
                sizes[key] = size
            return size

        session.estimate_signature_container_size = remembered_estimate  # type: ignore[method-assign]
        return session


class _InMemoryFont(GlyphAccumulatorFactory):
    """pyHanko's embedding font engine, fed from the font's bytes read once, on first use.

    pyHanko's own factory opens the font file for every appearance and never closes it (a file descriptor per
    visible signature); this one reads the file once and hands each appearance its own in-memory copy (the engine
    subsets the font it is given, destructively).
    """

    _data: bytes | None = None

    def create_font_engine(self, writer: Any, obj_stream: Any = None) -> GlyphAccumulator:
        if self._data is None:
            object.__setattr__(self, "_data", Path(self.font_file).read_bytes())  # a frozen dataclass
        assert self._data is not None  # noqa: S101 - just read
        if obj_stream is None and writer.stream_xrefs and self.create_objstream_if_needed:
            obj_stream = writer.prepare_object_stream()
        return GlyphAccumulator(
            writer=writer, font_handle=io.BytesIO(self._data), font_size=self.font_size,
            ot_script_tag=self.ot_script_tag, ot_language_tag=self.ot_language_tag,
            writing_direction=self.writing_direction, bcp47_lang_code=self.bcp47_lang_code, obj_stream=obj_stream)


def utcnow() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


class PadesEngine:
    """Signs PDFs at the PAdES baseline levels (see module docstring).

    `timestamper` is the one time-stamp client (signing.core.timestamps) B-T and above use, or None when no TSA
    is configured (then only B-B can be made); `validation` is the validation-data source B-LT and B-LTA fetch
    certificates and revocation data from (signing.core.revocation), or None (then B-LT and B-LTA are refused).
    """

    def __init__(self, *, timestamper: TimeStamper | None, validation: ValidationDataSource | None,
                 clock: Callable[[], dt.datetime] = utcnow,
                 signer_key_usage: Iterable[str] = SIGNER_KEY_USAGE,
                 appearance_font: Path = DEFAULT_APPEARANCE_FONT) -> None:
        self._timestamper = timestamper
        self._validation = validation
        self._appearance_font = appearance_font
        # pyHanko's default appearance draws in an unembedded Courier (not PDF/A, and no Azerbaijani letters) over
        # its own logo: replaced by the text above in an embedded font, no background art, a thin border
        self._stamp_style = TextStampStyle(
            stamp_text=APPEARANCE_TEXT, text_box_style=TextBoxStyle(font=_InMemoryFont(str(appearance_font))),
            background=None, border_width=1, timestamp_format="%Y-%m-%d %H:%M:%S UTC",
            inner_content_layout=SimpleBoxLayoutRule(  # the text shrinks to fit a small box, never overflows it
                x_align=AxisAlignment.ALIGN_MIN, y_align=AxisAlignment.ALIGN_MID, margins=Margins(4, 4, 4, 4),
                inner_content_scaling=InnerScaling.SHRINK_TO_FIT))
        self._clock = clock
        self._signer_key_usage = set(signer_key_usage)
        self._sizes: dict[tuple[bytes, bool], int] = {}

    async def sign(self, source: BinaryIO, output: BinaryIO, credentials: SigningCredentials,
                   options: SignatureOptions, *, actor: str) -> SignatureResult:
        """Sign the PDF in `source` at `options.level` and write the signed PDF to `output` (see module docstring).

        `actor` is who the signature is made for (the signer's or agency's audit name): the time-stamps are
        audited under it. Raises a SigningError subclass and writes nothing when the signature cannot be made.
        """
        level = options.level
        if level.timestamped and self._timestamper is None:
            raise TimestampUnavailable(f"a {level} signature needs a time-stamp authority and none is configured")
        if level.long_term and self._validation is None:
            raise ValidationDataUnavailable(f"a {level} signature needs validation data and no source is configured")
        signer = KeyHandleSigner(credentials)
        signing_time = self._clock().astimezone(dt.UTC).replace(microsecond=0)  # /M has whole seconds
        self._check_validity(credentials.certificate, signing_time)
        buffer = io.BytesIO()
        with acting_as(actor):
            try:
                field_name = await self._signature(source, buffer, signer, options, signing_time)
                if level.long_term:
                    await self._validation_data(buffer, field_name, credentials)
                if level.archival:
                    await self._document_timestamp(buffer)
            except SigningError:
                raise
            except TimestampRequestError as exc:
                raise TimestampUnavailable(f"no time-stamp was granted: {exc}") from exc
            except (PdfError, PyHankoSigningError) as exc:
                raise DocumentNotSignable(f"pyHanko cannot sign this document: {exc}") from exc
        signed = buffer.getbuffer()
        output.write(signed)
        return SignatureResult(level=level, field_name=field_name, signing_time=signing_time,
                               sha256=hashlib.sha256(signed).hexdigest())

    async def sign_batch(self, documents: Sequence[tuple[BinaryIO, BinaryIO]], credentials: SigningCredentials,
                         options: SignatureOptions, *, actor: str) -> list[SignatureResult]:
        """Sign several documents with one key and the same options, one after the other (issue 13: a batch is
        approved once; each document is still its own signature)."""
        return [await self.sign(source, output, credentials, options, actor=actor) for source, output in documents]

    # --- the steps ---------------------------------------------------------------------------------------------

    @staticmethod
    def _check_validity(certificate: x509.Certificate, at: dt.datetime) -> None:
        """RFC 5280 section 4.1.2.5: a certificate outside its validity period makes no signature."""
        if not certificate.not_valid_before <= at <= certificate.not_valid_after:
            raise SignerCredentialsUnusable(
                f"the signer's certificate is not valid at {at.isoformat()} (valid "
                f"{certificate.not_valid_before.isoformat()} to {certificate.not_valid_after.isoformat()})")

    async def _signature(self, source: BinaryIO, buffer: io.BytesIO, signer: KeyHandleSigner,
                         options: SignatureOptions, signing_time: dt.datetime, *, retry: bool = True) -> str:
        """B-B (and with a time-stamper, B-T): the CAdES-detached signature in an incremental update."""
        source.seek(0)
        writer = _SameVersionWriter(source)
        field_name = _field_name(writer.prev, options.field_name, FIELD_PREFIX)
        field_spec = None
        if options.visible is not None:
            field_spec = _visible_field(writer.prev, field_name, options.visible)
            if not self._appearance_font.is_file():
                raise AppearanceUnavailable(f"the appearance font {self._appearance_font} is not installed")
        meta = PdfSignatureMetadata(
            field_name=field_name,
            md_algorithm=signer.hash_name,
            reason=options.reason,
            location=options.location,
            subfilter=SigSeedSubFilter.PADES,  # ETSI.CAdES.detached
            embed_validation_info=False,  # B-LT data is fetched after the signature time-stamp (_validation_data)
            use_pades_lta=False,
            validation_context=None,
            cades_signed_attr_spec=_signed_attributes(options.claimed_role),
        )
        role_digest = b"" if options.claimed_role is None else \
            hashlib.sha256(options.claimed_role.attribute().dump()).digest()
        size_key = (signer.certificate_digest + role_digest, options.level.timestamped)
        pdf_signer = _PadesSigner(meta, signer, timestamper=self._timestamper if options.level.timestamped else None,
                                  new_field_spec=field_spec, stamp_style=self._stamp_style,
                                  signing_time=signing_time, sizes=self._sizes,
                                  size_key=size_key)
        try:
            await pdf_signer.async_sign_pdf(writer, output=buffer)
        except PyHankoSigningError:
            if self._sizes.pop(size_key, None) is None or not retry:
                raise
            # the remembered size was too small (a longer time-stamp token than before): estimate afresh, once
            buffer.seek(0)
            buffer.truncate()
            return await self._signature(source, buffer, signer, options, signing_time, retry=False)
        return field_name

    async def _validation_data(self, buffer: io.BytesIO, field_name: str, credentials: SigningCredentials) -> None:
        """B-LT: validate the signer's and the TSA's certificates now (after the signature time-stamp), fetching
        their revocation data, and store paths, OCSP responses and CRLs in the DSS (ETSI EN 319 142-1 5.4)."""
        assert self._validation is not None  # noqa: S101 - sign() checked it
        buffer.seek(0)
        signature = _embedded_signature(PdfFileReader(buffer), field_name)
        tsa_certificate, token_certificates = _timestamp_signer(signature)
        context = self._validation.context(other_certs=[*credentials.chain, *token_certificates])
        signer_path = await _validate(
            CertificateValidator(credentials.certificate, intermediate_certs=list(credentials.chain),
                                 validation_context=context),
            key_usage=self._signer_key_usage, what="signer's")
        tsa_path = await _validate(
            CertificateValidator(tsa_certificate, intermediate_certs=token_certificates,
                                 validation_context=context),
            key_usage=set(), extended_key_usage=set(TSA_KEY_PURPOSE), what="TSA's")
        buffer.seek(0)
        writer = _SameVersionWriter(buffer)
        DocumentSecurityStore.supply_dss_in_writer(writer, None, paths=[signer_path, tsa_path],
                                                   validation_context=context, embed_roots=True)
        writer.write_in_place()  # type: ignore[no-untyped-call]  # unannotated in pyHanko

    async def _document_timestamp(self, buffer: io.BytesIO) -> None:
        """B-LTA: a document time-stamp over the revision with the DSS (ETSI EN 319 142-1 section 5.5)."""
        assert self._timestamper is not None  # noqa: S101 - sign() checked it
        buffer.seek(0)
        writer = _SameVersionWriter(buffer)
        name = _field_name(writer.prev, None, DOCUMENT_TIMESTAMP_PREFIX)
        stamper = PdfTimeStamper(self._timestamper, field_name=name)
        await stamper.async_timestamp_pdf(writer, "sha256", validation_context=None, in_place=True)


# --- helpers -------------------------------------------------------------------------------------------------


def _signed_attributes(role: ClaimedRole | None) -> CAdESSignedAttrSpec | None:
    """signer-attributes-v2 with the claimed role (ETSI EN 319 122-1 section 5.2.6.1), or no CAdES extras."""
    if role is None:
        return None
    return CAdESSignedAttrSpec(signer_attributes=SignerAttrSpec(claimed_attrs=[role.attribute()], certified_attrs=[]))


def _field_name(reader: PdfFileReader, wanted: str | None, prefix: str) -> str:
    """The field to sign: `wanted` when it is a usable name (an empty signature field, or none of that name),
    else the first `prefix`N not in the document."""
    try:
        existing = {name: filled for name, filled, _ in _signature_fields(reader)}
    except (PdfError, KeyError, TypeError, ValueError) as exc:
        raise DocumentNotSignable(f"the document's form fields cannot be read: {exc}") from exc
    if wanted is not None:
        if not _FIELD_NAME.match(wanted):
            raise InvalidSignatureOptions("a field name is 1 to 127 characters, without periods or control characters")
        if existing.get(wanted):
            raise InvalidSignatureOptions(f"the signature field {wanted!r} is already signed")
        return wanted
    n = 1
    while f"{prefix}{n}" in existing:
        n += 1
    return f"{prefix}{n}"


def _signature_fields(reader: PdfFileReader) -> Iterable[tuple[str, bool, Any]]:
    for name, value, ref in enumerate_sig_fields(reader, filled_status=None):
        yield name, value is not None, ref


def _visible_field(reader: PdfFileReader, field_name: str, visible: VisibleSignature) -> SigFieldSpec:
    """A new signature field with a widget on `visible.page` at `visible.box` (ISO 32000-1 section 12.7.4.5)."""
    try:
        pages = int(reader.root["/Pages"]["/Count"])
    except (KeyError, TypeError, ValueError) as exc:
        raise DocumentNotSignable(f"the document's page count cannot be read: {exc}") from exc
    if not 1 <= visible.page <= pages:
        raise InvalidSignatureOptions(f"the visible signature is on page {visible.page}, the document has {pages}")
    x1, y1, x2, y2 = visible.box
    if not (x2 > x1 and y2 > y1):
        raise InvalidSignatureOptions("the visible signature box must have x2 > x1 and y2 > y1")
    return SigFieldSpec(sig_field_name=field_name, on_page=visible.page - 1,
                        box=(round(x1), round(y1), round(x2), round(y2)))


def _embedded_signature(reader: PdfFileReader, field_name: str) -> EmbeddedPdfSignature:
    for signature in reader.embedded_regular_signatures:
        if signature.field_name == field_name:
            found: EmbeddedPdfSignature = signature
            return found
    raise DocumentNotSignable(f"the signature {field_name!r} just made is not in the output")  # pragma: no cover


def _timestamp_signer(signature: EmbeddedPdfSignature) -> tuple[x509.Certificate, list[x509.Certificate]]:
    """The TSA certificate of the signature time-stamp (RFC 3161 token in the unsigned attributes, ETSI EN
    319 122-1 section 5.3) and the other certificates the token carries."""
    token: cms.ContentInfo | None = None
    for attribute in signature.signer_info["unsigned_attrs"] or ():
        if attribute["type"].native == "signature_time_stamp_token":
            token = attribute["values"][0]
    if token is None:
        raise TimestampUnavailable("the signature has no signature time-stamp to build B-LT on")
    signed_data = token["content"]
    certificates = [c.chosen for c in signed_data["certificates"] if c.name == "certificate"]
    sid = signed_data["signer_infos"][0]["sid"].chosen
    for certificate in certificates:
        if isinstance(sid, cms.IssuerAndSerialNumber) and certificate.issuer == sid["issuer"] and \
                certificate.serial_number == sid["serial_number"].native:
            return certificate, [c for c in certificates if c is not certificate]
        if not isinstance(sid, cms.IssuerAndSerialNumber) and certificate.key_identifier == sid.native:
            return certificate, [c for c in certificates if c is not certificate]
    raise TimestampUnavailable("the signature time-stamp does not carry its TSA certificate")


async def _validate(validator: CertificateValidator, *, key_usage: set[str], what: str,
                    extended_key_usage: set[str] | None = None) -> ValidationPath:
    """Validate a certificate path now (RFC 5280 section 6), revocation hard-fail; map failures to SigningErrors."""
    try:
        path: ValidationPath = await validator.async_validate_usage(key_usage, extended_key_usage)  # type: ignore[no-untyped-call]  # unannotated in pyHanko
    except RevokedError as exc:
        raise SignerCertificateRevoked(f"the {what} certificate is revoked: {exc}") from exc
    except InsufficientRevinfoError as exc:
        raise ValidationDataUnavailable(f"no revocation data for the {what} certificate: {exc}") from exc
    except (PathBuildingError, PathValidationError, ValidationError) as exc:
        raise SignerCredentialsUnusable(f"the {what} certificate does not validate: {exc}") from exc
    return path


"""Attestation trust: which authenticator models may reach level high, and the roots their attestation must chain
to (WebAuthn Level 2 section 6.5 attestation, 7.1 steps 20-22 trustworthiness; FIDO Metadata Service v3.0).

Two sources, either or both:
- explicit root certificates (a PEM bundle, ACAR_WEBAUTHN_ATTESTATION_ROOTS_FILE), trusted for every model;
- a FIDO Metadata Service BLOB (MDS3: a JWS whose x5c header chain must validate to a configured MDS root,
  ACAR_WEBAUTHN_MDS_ROOT_FILE), read from a file (ACAR_WEBAUTHN_MDS_BLOB_FILE, nothing is downloaded). Each
  entry gives a model's (AAGUID's) attestationRootCertificates and statusReports.

Security decisions, in one place:
- A chain is trusted only when it validates (py_webauthn's validate_certificate_chain, OpenSSL, validity at the
  current time) to one of the roots for the credential's AAGUID; the root's SHA-256 fingerprint is recorded on the
  credential so that each login re-checks it against the trust of that moment (a root withdrawn from the bundle
  or the BLOB no longer gives high).
- A model with any status report in COMPROMISED_STATUSES (FIDO MDS3 section 3.1.4 AuthenticatorStatus: revoked,
  user-verification bypass, attestation or user key compromise) is not trusted, whatever a later report says:
  the authenticator's firmware version is not known here, so an "update available" does not clear it.
- A BLOB is refused (and logged; the last good one stays in force) when its signature or its x5c chain does not
  verify, when its nextUpdate date has passed, when it is not JSON of the MDS3 shape, or when its serial number
  `no` is not greater than the one in force (FIDO MDS3 section 3.2, rollback). A last good BLOB whose nextUpdate
  has since passed stays in force, with one warning: its statuses are the newest known.
- The CRLs of the BLOB's signing chain are not fetched (no network): the MDS root file is the operator's choice.
- ACAR_WEBAUTHN_AAGUID_ALLOWLIST, when not empty, further restricts high to the listed models.
"""

from __future__ import annotations

import base64
import binascii
import datetime as dt
import hashlib
import json
import logging
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature
from webauthn.helpers import validate_certificate_chain
from webauthn.helpers.exceptions import InvalidCertificateChain

from idp.core.errors import IdpError

log = logging.getLogger("acar.webauthn")

COMPROMISED_STATUSES = frozenset({
    "REVOKED", "USER_VERIFICATION_BYPASS", "ATTESTATION_KEY_COMPROMISE", "USER_KEY_REMOTE_COMPROMISE",
    "USER_KEY_PHYSICAL_COMPROMISE"})
"""FIDO MDS3 AuthenticatorStatus values that exclude a model from level high."""
BLOB_ALGORITHMS = ("ES256", "RS256")
"""The JWS algorithms of an MDS3 BLOB accepted here (FIDO MDS3 section 3.1.7 names ES256 and RS256)."""
FIDO_AAGUID_EXTENSION = x509.ObjectIdentifier("1.3.6.1.4.1.45724.1.1.4")
"""id-fido-gen-ce-aaguid (WebAuthn Level 2 section 8.2.1): when the attestation certificate carries it, it must
name the AAGUID of the authenticator data."""
MAX_BLOB_BYTES = 64 * 1024 * 1024


class AttestationConfigError(IdpError):
    """A configured trust file is missing or not what it must be; the message names the setting (`acar serve`
    stops with it)."""

    code = "attestation_configuration"
    title = "Attestation trust is misconfigured"
    status_code = 500


class MetadataRefused(Exception):
    """A FIDO Metadata Service BLOB that is not used; the message says why."""


def fingerprint(der: bytes) -> str:
    """How a root certificate is named on a credential: the SHA-256 of its DER, hex."""
    return hashlib.sha256(der).hexdigest()


@dataclass(frozen=True, slots=True)
class Root:
    """A trusted root certificate: PEM (for py_webauthn) and its fingerprint."""

    pem: bytes
    fingerprint: str

    @classmethod
    def of(cls, certificate: x509.Certificate) -> Root:
        der = certificate.public_bytes(serialization.Encoding.DER)
        return cls(certificate.public_bytes(serialization.Encoding.PEM), fingerprint(der))


@dataclass(frozen=True, slots=True)
class MetadataEntry:
    """One model of a verified BLOB: its attestation roots and the statuses of its status reports."""

    aaguid: str
    roots: tuple[Root, ...]
    statuses: tuple[str, ...]

    @property
    def compromised(self) -> bool:
        return any(s in COMPROMISED_STATUSES for s in self.statuses)


@dataclass(frozen=True, slots=True)
class MetadataBlob:
    """A FIDO MDS3 BLOB whose signature and chain verified; only `verify_metadata_blob` makes one."""

    number: int
    next_update: dt.date
    entries: Mapping[str, MetadataEntry]
    digest: str


def _b64url(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _verify_jws_signature(public: Any, alg: str, signing_input: bytes, signature: bytes) -> None:
    """RFC 7515 section 5.2 with the RFC 7518 section 3.3/3.4 algorithm named by the header."""
    try:
        if alg == "ES256" and isinstance(public, ec.EllipticCurvePublicKey) and len(signature) == 64:
            der = encode_dss_signature(int.from_bytes(signature[:32], "big"), int.from_bytes(signature[32:], "big"))
            public.verify(der, signing_input, ec.ECDSA(hashes.SHA256()))
        elif alg == "RS256" and isinstance(public, rsa.RSAPublicKey):
            public.verify(signature, signing_input, padding.PKCS1v15(), hashes.SHA256())
        else:
            raise MetadataRefused(f"the signing certificate's key does not fit algorithm {alg}")
    except InvalidSignature:
        raise MetadataRefused("the BLOB's signature does not verify") from None


def verify_metadata_blob(blob: bytes, *, roots: Sequence[bytes], today: dt.date) -> MetadataBlob:
    """Verify an MDS3 BLOB (FIDO Metadata Service v3.0 section 3.2, processing rules 3-5) and return its entries.

    `roots` are the PEM certificates of the Metadata Service; raises MetadataRefused on any failure."""
    if len(blob) > MAX_BLOB_BYTES:
        raise MetadataRefused("the BLOB is larger than 64 MiB")
    parts = blob.strip().split(b".")
    if len(parts) != 3 or not all(parts):
        raise MetadataRefused("the BLOB is not a compact JWS")
    try:
        header = json.loads(_b64url(parts[0].decode("ascii")))
        payload = json.loads(_b64url(parts[1].decode("ascii")))
        signature = _b64url(parts[2].decode("ascii"))
    except (ValueError, UnicodeDecodeError, RecursionError, binascii.Error):
        raise MetadataRefused("the BLOB's header or payload is not base64url JSON") from None
    if not isinstance(header, dict) or not isinstance(payload, dict):
        raise MetadataRefused("the BLOB's header and payload must be JSON objects")
    alg = header.get("alg")
    if alg not in BLOB_ALGORITHMS:
        raise MetadataRefused(f"the BLOB's algorithm {alg!r} is not accepted")
    if "crit" in header:
        raise MetadataRefused("critical header parameters are not supported")
    x5c = header.get("x5c")
    if not isinstance(x5c, list) or not x5c or not all(isinstance(c, str) for c in x5c):
        raise MetadataRefused("the BLOB has no x5c certificate chain (x5u is not fetched)")
    try:
        chain = [base64.b64decode(c, validate=True) for c in x5c]
        leaf = x509.load_der_x509_certificate(chain[0])
    except (ValueError, binascii.Error):
        raise MetadataRefused("the BLOB's x5c is not a chain of base64 DER certificates") from None
    try:
        validate_certificate_chain(x5c=chain, pem_root_certs_bytes=list(roots))
    except InvalidCertificateChain:
        raise MetadataRefused("the BLOB's signing certificate does not chain to the configured MDS root") from None
    _verify_jws_signature(leaf.public_key(), alg, parts[0] + b"." + parts[1], signature)
    return _parse_payload(payload, today, hashlib.sha256(blob.strip()).hexdigest())


def _parse_payload(payload: Mapping[str, Any], today: dt.date, digest: str) -> MetadataBlob:
    number, next_update, entries = payload.get("no"), payload.get("nextUpdate"), payload.get("entries")
    if isinstance(number, bool) or not isinstance(number, int) or not isinstance(entries, list):
        raise MetadataRefused("the BLOB's payload lacks its serial number or entries")
    try:
        next_date = dt.date.fromisoformat(str(next_update))
    except ValueError:
        raise MetadataRefused("the BLOB's nextUpdate is not a date") from None
    if next_date < today:
        raise MetadataRefused(f"the BLOB's nextUpdate {next_date.isoformat()} has passed")
    parsed: dict[str, MetadataEntry] = {}
    for entry in entries:
        aaguid = entry.get("aaguid") if isinstance(entry, dict) else None
        if not isinstance(aaguid, str):
            continue  # U2F and UAF entries name no AAGUID: they cannot be passkeys
        statement = entry.get("metadataStatement")
        roots: list[Root] = []
        for text in (statement or {}).get("attestationRootCertificates") or []:
            try:
                roots.append(Root.of(x509.load_der_x509_certificate(base64.b64decode(text, validate=True))))
            except (ValueError, TypeError, binascii.Error):
                raise MetadataRefused(f"entry {aaguid}: an attestation root certificate is not base64 DER") from None
        statuses = tuple(str(r.get("status")) for r in entry.get("statusReports") or [] if isinstance(r, dict))
        parsed[aaguid.lower()] = MetadataEntry(aaguid.lower(), tuple(roots), statuses)
    return MetadataBlob(number=number, next_update=next_date, entries=parsed, digest=digest)


@dataclass(frozen=True, slots=True)
class TrustAnchors:
    """The attestation trust in force at one moment (an immutable snapshot)."""

    explicit: tuple[Root, ...] = ()
    blob: MetadataBlob | None = None
    allowlist: frozenset[str] = frozenset()

    @property
    def configured(self) -> bool:
        """Whether any model can be attested at all (registration then asks for "direct" attestation)."""
        return bool(self.explicit) or self.blob is not None

    def roots_for(self, aaguid: str) -> tuple[Root, ...]:
        """The roots a model's attestation may chain to: none when it is not allow-listed or is compromised."""
        aaguid = aaguid.lower()
        if self.allowlist and aaguid not in self.allowlist:
            return ()
        entry = self.blob.entries.get(aaguid) if self.blob is not None else None
        if entry is not None and entry.compromised:
            return ()
        return self.explicit + (entry.roots if entry is not None else ())

    def trusts(self, aaguid: str, root: str | None) -> bool:
        """Whether a credential attested under root fingerprint `root` still reaches high (checked at login)."""
        return root is not None and any(r.fingerprint == root for r in self.roots_for(aaguid))

    def attestation_root(self, aaguid: str, x5c: Sequence[bytes]) -> str | None:
        """The fingerprint of the root an attestation chain validates to, or None (WebAuthn Level 2 section 7.1
        step 22: self attestation, none and unknown roots are not trustworthy). The leaf must name the same AAGUID
        when it carries id-fido-gen-ce-aaguid (section 8.2.1)."""
        if not x5c:
            return None
        try:
            leaf = x509.load_der_x509_certificate(x5c[0])
        except ValueError:
            return None
        if not _aaguid_matches(leaf, aaguid):
            return None
        for root in self.roots_for(aaguid):
            try:
                validate_certificate_chain(x5c=list(x5c), pem_root_certs_bytes=[root.pem])
            except InvalidCertificateChain:
                continue
            return root.fingerprint
        return None


def _aaguid_matches(leaf: x509.Certificate, aaguid: str) -> bool:
    try:
        extension = leaf.extensions.get_extension_for_oid(FIDO_AAGUID_EXTENSION).value
    except x509.ExtensionNotFound:
        return True
    value = extension.value if isinstance(extension, x509.UnrecognizedExtension) else b""
    return value[:2] == b"\x04\x10" and value[2:] == bytes.fromhex(aaguid.replace("-", ""))


def load_roots(path: Path, setting: str) -> tuple[Root, ...]:
    """A PEM bundle of root certificates; AttestationConfigError naming `setting` when unreadable or empty."""
    try:
        certificates = x509.load_pem_x509_certificates(path.read_bytes())
    except OSError as exc:
        raise AttestationConfigError(f"{setting}: cannot read {path}: {exc.strerror}") from None
    except ValueError:
        raise AttestationConfigError(f"{setting}: {path} is not a PEM bundle of certificates") from None
    return tuple(Root.of(c) for c in certificates)


@dataclass(slots=True)
class _BlobFile:
    path: Path
    roots: tuple[Root, ...]
    seen: tuple[int, int] | None = None
    """(mtime_ns, size) of the file when last read."""
    stale_warned: int | None = field(default=None)
    """The serial number of the BLOB last warned about as stale (one warning per BLOB)."""


class AttestationTrust:
    """The trust in force, with the MDS BLOB file re-read by `refresh` (housekeeping) when it changes.

    `current()` is a snapshot; `refresh()` replaces it whole (one assignment), so readers never see half a BLOB.
    """

    def __init__(self, *, explicit: Iterable[Root] = (), blob_file: Path | None = None,
                 mds_roots: Iterable[Root] = (), allowlist: Iterable[str] = (),
                 clock: Callable[[], dt.datetime] = lambda: dt.datetime.now(dt.UTC)) -> None:
        self._clock = clock
        self._blob = _BlobFile(blob_file, tuple(mds_roots)) if blob_file is not None else None
        self._current = TrustAnchors(tuple(explicit), None, frozenset(a.lower() for a in allowlist))
        self.refresh()

    def current(self) -> TrustAnchors:
        return self._current

    def refresh(self) -> bool:
        """Re-read the BLOB file when its modification time or size changed; True when a new BLOB took force.

        A refused BLOB is logged (webauthn.mds_refused, with the reason) and the last good one kept."""
        source = self._blob
        if source is None:
            return False
        try:
            stat = source.path.stat()
        except OSError as exc:
            self._refused(source, f"cannot read the file: {exc.strerror}", None)
            return False
        seen = (stat.st_mtime_ns, stat.st_size)
        if seen == source.seen:
            self._warn_stale(source)
            return False
        source.seen = seen
        blob = self._read(source)
        if blob is None:
            return False
        self._current = TrustAnchors(self._current.explicit, blob, self._current.allowlist)
        log.info("webauthn.mds_loaded", extra={"file": str(source.path), "no": blob.number,
                                               "next_update": blob.next_update.isoformat(),
                                               "entries": len(blob.entries)})
        return True

    def _read(self, source: _BlobFile) -> MetadataBlob | None:
        """The file's BLOB when it verifies and is newer than the one in force; None (logged when refused)."""
        try:
            data = source.path.read_bytes()
            blob = verify_metadata_blob(data, roots=[r.pem for r in source.roots], today=self._clock().date())
        except OSError as exc:
            self._refused(source, f"cannot read the file: {exc.strerror}", None)
            return None
        except MetadataRefused as exc:
            self._refused(source, str(exc), None)
            return None
        previous = self._current.blob
        if previous is not None and blob.digest == previous.digest:
            return None
        if previous is not None and blob.number <= previous.number:
            self._refused(source, f"serial number {blob.number} is not newer than {previous.number}", blob.number)
            return None
        return blob

    def _refused(self, source: _BlobFile, reason: str, number: int | None) -> None:
        kept = self._current.blob
        log.warning("webauthn.mds_refused", extra={"file": str(source.path), "reason": reason, "no": number,
                                                   "kept": kept.number if kept is not None else None})

    def _warn_stale(self, source: _BlobFile) -> None:
        blob = self._current.blob
        if blob is not None and blob.next_update < self._clock().date() and source.stale_warned != blob.number:
            source.stale_warned = blob.number
            log.warning("webauthn.mds_stale", extra={"file": str(source.path), "no": blob.number,
                                                     "next_update": blob.next_update.isoformat()})


def build_trust(*, roots_file: Path | None, blob_file: Path | None, mds_root_file: Path | None,
                allowlist: Iterable[str], clock: Callable[[], dt.datetime] | None = None) -> AttestationTrust:
    """The trust of the settings (file paths given by api.deps); raises AttestationConfigError naming them."""
    explicit = load_roots(roots_file, "ACAR_WEBAUTHN_ATTESTATION_ROOTS_FILE") if roots_file is not None else ()
    mds_roots: tuple[Root, ...] = ()
    if blob_file is not None:
        if mds_root_file is None:
            raise AttestationConfigError("ACAR_WEBAUTHN_MDS_ROOT_FILE must be set with ACAR_WEBAUTHN_MDS_BLOB_FILE")
        mds_roots = load_roots(mds_root_file, "ACAR_WEBAUTHN_MDS_ROOT_FILE")
        if not mds_roots:
            raise AttestationConfigError(f"ACAR_WEBAUTHN_MDS_ROOT_FILE: {mds_root_file} holds no certificate")
    if clock is None:
        return AttestationTrust(explicit=explicit, blob_file=blob_file, mds_roots=mds_roots, allowlist=allowlist)
    return AttestationTrust(explicit=explicit, blob_file=blob_file, mds_roots=mds_roots, allowlist=allowlist,
                            clock=clock)


__all__ = ["COMPROMISED_STATUSES", "AttestationConfigError", "AttestationTrust", "MetadataBlob", "MetadataEntry",
           "MetadataRefused", "Root", "TrustAnchors", "build_trust", "fingerprint", "load_roots",
           "verify_metadata_blob"]


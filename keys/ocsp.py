"""The OCSP responder (RFC 6960): a DER OCSPRequest in, a DER OCSPResponse out, never an exception.

- Section 4.1: the request is parsed strictly (trailing bytes refused); a request that cannot be parsed,
  has no or too many single requests, or carries a critical extension we do not know, is answered with
  responseStatus malformedRequest (section 2.3), without responseBytes.
- Section 4.2.1: a successful answer is an id-pkix-ocsp-basic BasicOCSPResponse, version v1, with the
  responderID byKey (the SHA-1 of the responder's public key BIT STRING), producedAt, one SingleResponse
  per request echoing its CertID, thisUpdate and nextUpdate.
- Section 2.2: "good" when we issued the certificate and it is not revoked, "revoked" with revocationTime
  and (unless unspecified, as RFC 5280 section 5.3.1 advises) revocationReason, "unknown" for serials we
  did not issue and for CertIDs naming another issuer. SHA-1, SHA-256, SHA-384 and SHA-512 CertID hashes
  are recognised; the issuer's name and key hashes are computed once, at construction.
- Section 4.2.2.2: the response is signed by a delegated responder whose certificate, issued directly by
  the CA, carries id-kp-OCSPSigning; the certificate is included in `certs`.
- Section 4.4.1 and RFC 8954: the nonce extension is echoed; nonces must be 1 to 32 octets, else
  malformedRequest.
- Section 4.4.4: every answer about a certificate we issued carries the archiveCutoff single extension, set to
  the issuing CA certificate's notBefore: the status of every certificate the CA ever issued is kept, expired
  or not (keys.status reads it regardless of expiry; keys.crl keeps expired entries the same way), so a
  signature made with a certificate that has since expired can still be checked (ETSI EN 319 411-1 6.3.10).

This is a protocol core (STYLE habit 3): no web framework, no database. Statuses come from a
`CertificateStatusSource`; everything that does not change per request is encoded once.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Final

from asn1crypto import core, ocsp, x509

from keys.crl import REASON_CODES
from keys.der import tlv
from keys.errors import CANotInitialized
from keys.interfaces import CertificateStatus, CertificateStatusSource, KeyHandle
from keys.x509 import (
    certificate_public_key,
    same_public_key,
    serial_to_hex,
    signature_scheme,
    subject_public_key_bits,
)
from storage.base import utcnow

log = logging.getLogger("acar.keys.ocsp")

DEFAULT_VALIDITY: Final = dt.timedelta(minutes=10)
"""nextUpdate - thisUpdate: how long a relying party (or an HTTP cache for GET) may keep a response."""
MAX_SINGLE_REQUESTS: Final = 20
"""More single requests in one OCSPRequest are refused as malformed: bounds the work one request causes."""
MAX_REQUEST_BYTES: Final = 16 * 1024
NONCE_MIN, NONCE_MAX = 1, 32  # RFC 8954 section 2.1

_CERT_ID_HASHES: Final = ("sha1", "sha256", "sha384", "sha512")
_OCSP_SIGNING = "ocsp_signing"


def error_response(status: str) -> bytes:
    """An OCSPResponse without responseBytes: malformed_request, internal_error, try_later, unauthorized."""
    return bytes(ocsp.OCSPResponse({"response_status": status}).dump())


MALFORMED_REQUEST: Final = error_response("malformed_request")
INTERNAL_ERROR: Final = error_response("internal_error")
TRY_LATER: Final = error_response("try_later")
UNAUTHORIZED: Final = error_response("unauthorized")


class MalformedRequest(ValueError):
    """The request is not a well-formed OCSPRequest we can answer (RFC 6960 section 2.3 malformedRequest)."""


@dataclass(frozen=True, slots=True)
class _Query:
    cert_id: bytes  # the DER of the request's CertID, echoed byte for byte in the response
    serial_hex: str | None  # None: the CertID names another issuer


@dataclass(frozen=True, slots=True)
class OcspReply:
    """The DER OCSPResponse and, for logs, what it said."""

    der: bytes
    status: str  # responseStatus: successful, malformed_request, ...
    cert_statuses: tuple[str, ...] = ()  # good / revoked / unknown per single request
    nonce: bool = False


class OcspResponder:
    """Answers OCSP requests about the certificates of one CA, signed by its delegated responder."""

    def __init__(
        self,
        *,
        issuer_name: str,
        issuer_certificate: x509.Certificate,
        responder_handle: KeyHandle,
        responder_certificate: x509.Certificate,
        statuses: CertificateStatusSource,
        validity: dt.timedelta = DEFAULT_VALIDITY,
        clock: Callable[[], dt.datetime] = utcnow,
    ) -> None:
        _check_responder(responder_handle, responder_certificate, issuer_certificate)
        self.issuer_name = issuer_name
        self._handle = responder_handle
        self._statuses = statuses
        self._validity = validity
        self._clock = clock
        subject_der = bytes(issuer_certificate.subject.dump())
        key_bits = subject_public_key_bits(issuer_certificate.public_key)
        self._issuer_ids: dict[str, tuple[bytes, bytes]] = {
            name: (hashlib.new(name, subject_der).digest(), hashlib.new(name, key_bits).digest())
            for name in _CERT_ID_HASHES
        }
        responder_key_hash = hashlib.sha1(  # RFC 6960 section 4.2.1: KeyHash is the SHA-1 of the key
            subject_public_key_bits(responder_certificate.public_key), usedforsecurity=False).digest()
        scheme = signature_scheme(responder_handle.key_type)
        self._hash_name = scheme.hash_name
        # Encoded once (DER, X.690): ResponderID byKey [2] EXPLICIT KeyHash, the signatureAlgorithm and
        # certs [0] EXPLICIT SEQUENCE OF Certificate holding the responder certificate.
        self._responder_id = tlv(0xA2, tlv(0x04, responder_key_hash))
        self._signature_algorithm = bytes(scheme.identifier().dump())
        self._certs = tlv(0xA0, tlv(0x30, bytes(responder_certificate.dump())))
        # singleExtensions [1] EXPLICIT Extensions { id-pkix-ocsp-archive-cutoff, OCTET STRING { GeneralizedTime } }
        cutoff = _generalized_time(issuer_certificate.not_valid_before)
        self._archive_cutoff = tlv(0xA1, tlv(0x30, tlv(0x30, _ARCHIVE_CUTOFF_OID + tlv(0x04, cutoff))))
        self.not_after: dt.datetime = responder_certificate.not_valid_after

    # --- parsing -------------------------------------------------------------------------------------------

    def _parse(self, request_der: bytes) -> tuple[list[_Query], bytes | None]:
        if not request_der or len(request_der) > MAX_REQUEST_BYTES:
            raise MalformedRequest("empty or oversized request")
        try:
            return self._parse_der(request_der)
        except MalformedRequest:
            raise
        except Exception as exc:  # noqa: BLE001 - any parse failure of untrusted DER is malformedRequest
            raise MalformedRequest(f"{type(exc).__name__}: {exc}") from None

    def _parse_der(self, request_der: bytes) -> tuple[list[_Query], bytes | None]:
        request = ocsp.OCSPRequest.load(request_der, strict=True)
        tbs = request["tbs_request"]
        if tbs["version"].native != "v1":
            raise MalformedRequest("unknown request version")
        singles = tbs["request_list"]
        if not 1 <= len(singles) <= MAX_SINGLE_REQUESTS:
            raise MalformedRequest(f"a request holds 1 to {MAX_SINGLE_REQUESTS} single requests")
        queries = [self._query(single) for single in singles]
        nonce: bytes | None = None
        for extension in tbs["request_extensions"] or ():
            name = extension["extn_id"].native
            if name == "nonce":
                nonce = bytes(extension["extn_value"].parsed.native)
                if not NONCE_MIN <= len(nonce) <= NONCE_MAX:
                    raise MalformedRequest("the nonce must be 1 to 32 octets (RFC 8954)")
            elif extension["critical"].native:
                raise MalformedRequest(f"unsupported critical extension {name}")
        return queries, nonce

    def _query(self, single: Any) -> _Query:
        for extension in single["single_request_extensions"] or ():
            if extension["critical"].native:
                raise MalformedRequest(f"unsupported critical extension {extension['extn_id'].native}")
        cert_id = single["req_cert"]
        serial = cert_id["serial_number"].native
        if not isinstance(serial, int):
            raise MalformedRequest("the serial number is not an INTEGER")
        ids = self._issuer_ids.get(cert_id["hash_algorithm"]["algorithm"].native)
        ours = ids is not None and (cert_id["issuer_name_hash"].native, cert_id["issuer_key_hash"].native) == ids
        return _Query(bytes(cert_id.dump()), serial_to_hex(serial) if ours and serial > 0 else None)

    # --- answering -----------------------------------------------------------------------------------------

    async def respond(self, request_der: bytes) -> OcspReply:
        """Answer one DER OCSPRequest. Malformed input and failures become OCSP error statuses, never raise."""
        try:
            queries, nonce = self._parse(request_der)
        except MalformedRequest as exc:
            log.info("ocsp.malformed_request", extra={"reason": str(exc)[:200]})
            return OcspReply(MALFORMED_REQUEST, "malformed_request")
        serials = [q.serial_hex for q in queries if q.serial_hex is not None]
        try:
            known: Mapping[str, CertificateStatus] = (
                await self._statuses.lookup(self.issuer_name, serials) if serials else {})
        except Exception:  # a failing status source is tryLater (RFC 6960 section 2.3); logged
            log.warning("ocsp.status_lookup_failed", exc_info=True)
            return OcspReply(TRY_LATER, "try_later")
        try:
            return await self._sign(queries, known, nonce)
        except Exception:  # e.g. the HSM refused to sign: internalError, never a 500; logged
            log.exception("ocsp.signing_failed")
            return OcspReply(INTERNAL_ERROR, "internal_error")

    async def _sign(self, queries: list[_Query], known: Mapping[str, CertificateStatus],
              nonce: bytes | None) -> OcspReply:
        """Encode and sign the BasicOCSPResponse (RFC 6960 section 4.2.1) directly in DER.

        The structure is small and fixed, so it is written here rather than through asn1crypto's generic
        encoder (five times faster); the tests parse every response with openssl and asn1crypto.
        """
        now = self._clock().astimezone(dt.UTC)
        this_update = _generalized_time(now)
        next_update = tlv(0xA0, _generalized_time(now + self._validity))  # nextUpdate [0] EXPLICIT
        singles = bytearray()
        names = []
        for query in queries:
            status = known.get(query.serial_hex) if query.serial_hex is not None else None
            if status is None:
                cert_status, name = _UNKNOWN, "unknown"  # unknown [2] IMPLICIT NULL
            elif status.revoked_at is None:
                cert_status, name = _GOOD, "good"  # good [0] IMPLICIT NULL
            else:  # revoked [1] IMPLICIT RevokedInfo { revocationTime, revocationReason [0] EXPLICIT OPTIONAL }
                info = _generalized_time(status.revoked_at)
                code = REASON_CODES.get(status.reason or "unspecified", 0)
                if code:  # unspecified is left out, as RFC 5280 section 5.3.1 advises for CRLs
                    info += tlv(0xA0, tlv(0x0A, bytes([code])))
                cert_status, name = tlv(0xA1, info), "revoked"
            names.append(name)
            extensions = self._archive_cutoff if status is not None else b""
            singles += tlv(0x30, query.cert_id + cert_status + this_update + next_update + extensions)
        data = self._responder_id + this_update + tlv(0x30, bytes(singles))  # version v1 is DEFAULT: omitted
        if nonce is not None:  # responseExtensions [1] EXPLICIT Extensions { id-pkix-ocsp-nonce, OCTET STRING }
            data += tlv(0xA1, tlv(0x30, tlv(0x30, _NONCE_OID + tlv(0x04, tlv(0x04, nonce)))))
        tbs = tlv(0x30, data)
        signature = await self._handle.sign(tbs, self._hash_name)
        basic = tlv(0x30, tbs + self._signature_algorithm + tlv(0x03, b"\x00" + signature) + self._certs)
        response_bytes = tlv(0xA0, tlv(0x30, _BASIC_OID + tlv(0x04, basic)))
        der = tlv(0x30, _SUCCESSFUL + response_bytes)
        return OcspReply(der, "successful", tuple(names), nonce is not None)


def _generalized_time(value: dt.datetime) -> bytes:
    """GeneralizedTime in UTC, whole seconds, "YYYYMMDDHHMMSSZ" (RFC 5280 section 4.1.2.5.2, RFC 6960)."""
    return tlv(0x18, value.astimezone(dt.UTC).strftime("%Y%m%d%H%M%SZ").encode("ascii"))


_GOOD: Final = b"\x80\x00"
_UNKNOWN: Final = b"\x82\x00"
_SUCCESSFUL: Final = b"\x0a\x01\x00"  # OCSPResponseStatus successful (0)
_BASIC_OID: Final = bytes(core.ObjectIdentifier("1.3.6.1.5.5.7.48.1.1").dump())  # id-pkix-ocsp-basic
_NONCE_OID: Final = bytes(core.ObjectIdentifier("1.3.6.1.5.5.7.48.1.2").dump())  # id-pkix-ocsp-nonce
_ARCHIVE_CUTOFF_OID: Final = bytes(core.ObjectIdentifier("1.3.6.1.5.5.7.48.1.6").dump())  # id-pkix-ocsp-archive-cutoff


def _check_responder(handle: KeyHandle, certificate: x509.Certificate, issuer: x509.Certificate) -> None:
    """RFC 6960 section 4.2.2.2: the responder certificate certifies the key, was issued by the CA and
    carries id-kp-OCSPSigning."""
    if not same_public_key(certificate_public_key(certificate), handle.public_key()):
        raise CANotInitialized(f"the OCSP responder certificate does not certify key {handle.key_id}")
    if certificate.issuer.dump() != issuer.subject.dump():
        raise CANotInitialized("the OCSP responder certificate was not issued by the CA it answers for")
    eku = certificate.extended_key_usage_value
    if eku is None or _OCSP_SIGNING not in eku.native:
        raise CANotInitialized("the OCSP responder certificate lacks id-kp-OCSPSigning")

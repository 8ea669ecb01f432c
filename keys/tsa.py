"""The RFC 3161 time-stamp authority: a TimeStampReq in, a DER TimeStampResp out.

- RFC 3161 (Time-Stamp Protocol): request checks (section 2.4.1), the TimeStampResp, TSTInfo and failure
  codes (section 2.4.2), the TSA certificate's critical id-kp-timeStamping extended key usage (section 2.3).
- RFC 5816 (ESSCertIDv2 update for RFC 3161): the token names the TSA certificate with the
  signing-certificate-v2 attribute (SHA-256 certificate hash and issuer/serial).
- RFC 5652 (CMS): the token is a SignedData whose encapsulated content is the DER TSTInfo (eContentType
  id-ct-TSTInfo); the signature covers the DER of the signed attributes encoded as a SET OF (section 5.4).

This module is a protocol core (STYLE habit 3): it knows no web framework and reads no settings. Its one entry
point is `TimestampService.timestamp`, which answers a request and audits the grant in the same call: the HTTP
route (api/routes/tsa.py) and signing/ use it, and neither can hand out a time-stamp without its audit event.
The authority itself is built from values: a key handle, the TSA certificate and its chain, the policy OID,
a serial source, a clock and the accuracy. Everything that does not change per request (the
signing-certificate-v2 and content-type attributes, the signer identifier, the certificate set, the TSA name) is
encoded once, at construction; a request costs one parse, one TSTInfo encoding, one hash and one signature.

Decisions, so a reader sees them at one place:
- Imprint hash algorithms accepted: SHA-256, SHA-384, SHA-512 only. SHA-1 is refused with badAlg: RFC 3161
  leaves weak algorithms to the TSA's discretion and SHA-1 collisions are practical (ETSI TS 119 312 no
  longer lists it for new time-stamps). The imprint length must match the algorithm, else badAlg.
- SHA-2 parameters must be absent or NULL (RFC 5754 section 2); anything else is badDataFormat.
- Any request extension is refused with unacceptedExtension: RFC 3161 section 2.4.1 requires it for
  extensions the TSA does not recognise, critical or not, and this TSA recognises none.
- The signing-time attribute is not included: genTime in the TSTInfo is the time the token asserts.
- A request that cannot be answered for a server-side reason (no serial block, the key backend failing,
  the TSA certificate not valid now) gets status rejection with failInfo systemFailure, never an exception.
- A TSA whose certificate is revoked or expired (or that has none) does not sign at all: TsaProvider refuses
  with TsaNotConfigured (HTTP 503) on every node within the key cache time; see its docstring.
- Every granted time-stamp is an audit event ("tsa.timestamp": serial, imprint hash algorithm, policy; never the
  imprint) committed before the reply is returned (TimestampService, through a storage.audit.AuditSink that
  shares commits between concurrent requests). If the event cannot be written the token is withheld: the
  client gets a systemFailure rejection (RFC 3161 section 2.4.2), so no time-stamp exists that the trail lacks.
- The key signs through `KeyHandle.sign`, awaited: a PKCS#11 key signs in a worker thread of its module and the
  event loop keeps answering other requests meanwhile (keys.pkcs11).
"""

from __future__ import annotations

import asyncio
import datetime as dt
import hashlib
import logging
import math
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Final, Literal, Protocol

from asn1crypto import algos, cms, core, tsp, x509

from keys.der import OCTET_STRING, SEQUENCE, SET, tlv
from keys.errors import KeysError, TsaNotConfigured
from keys.interfaces import CertificateStatusSource, HashName, KeyHandle, KeyType, SerialSource
from keys.x509 import SIGNATURE_ALGORITHMS, certificate_public_key, same_public_key, serial_to_hex
from storage.audit import AuditSink
from storage.base import utcnow

log = logging.getLogger("acar.tsa")

DEFAULT_ACCURACY: Final = dt.timedelta(seconds=1)
"""The accuracy asserted in every token (RFC 3161 section 2.4.2): the bound on the host clock's error
against UTC (NTP-disciplined), generous enough to hold during a time-server outage of a few minutes."""

IMPRINT_LENGTHS: Final[dict[str, int]] = {"sha256": 32, "sha384": 48, "sha512": 64}
"""Hash algorithms accepted for the message imprint, with the length their hash value must have."""

# The digest and signature algorithms of the SignerInfo per key type (RFC 5754 / RFC 5758 identifiers).
_SIGNATURE_PROFILES: Final[dict[KeyType, tuple[HashName, str]]] = {  # keys.x509's table without Ed25519
    key_type: scheme for key_type, scheme in SIGNATURE_ALGORITHMS.items() if key_type != "Ed25519"}
_TIME_STAMPING = "time_stamping"
_EXTENDED_KEY_USAGE = "extended_key_usage"

# DER building blocks of the response template (keys.der; constants encoded by asn1crypto).
_EXPLICIT_0, _IMPLICIT_0 = 0xA0, 0xA0  # [0] constructed: EXPLICIT around one value, IMPLICIT replacing SET
_SIGNED_DATA_OID: Final = cms.ContentType("signed_data").dump()
_TST_INFO_OID: Final = cms.ContentType("tst_info").dump()
_MESSAGE_DIGEST_OID: Final = cms.CMSAttributeType("message_digest").dump()
_STATUS_GRANTED: Final = tsp.PKIStatusInfo({"status": "granted"}).dump()
# The imprint's AlgorithmIdentifier re-encoded as the client sent it: parameters absent or NULL.
_IMPRINT_ALGORITHMS: Final[dict[tuple[str, bool], bytes]] = {
    (name, with_null): algos.DigestAlgorithm(
        {"algorithm": name, "parameters": core.Null() if with_null else None}
    ).dump()
    for name in IMPRINT_LENGTHS
    for with_null in (False, True)
}


# --- rejections: RFC 3161 section 2.4.2 PKIFailureInfo, never raised out of `respond` ----------------------


class TimestampRejection(Exception):
    """A request the TSA refuses: answered with PKIStatus rejection (2) and the failInfo bit `fail_info`.

    RFC 3161 section 2.4.2: "When the status contains a value other than zero or one, a TimeStampToken
    MUST NOT be present." `detail` becomes the statusString (our own text, never echoed client data).
    """

    fail_info = "system_failure"
    also: frozenset[str] = frozenset()  # further failInfo bits set beside `fail_info`

    def __init__(self, detail: str) -> None:
        super().__init__(detail)
        self.detail = detail


class BadAlg(TimestampRejection):
    """badAlg (0): "unrecognized or unsupported Algorithm Identifier" (RFC 3161 section 2.4.2)."""

    fail_info = "bad_alg"


class BadDataFormat(TimestampRejection):
    """badDataFormat (5): "the data submitted has the wrong format" (RFC 3161 section 2.4.2).

    badRequest (2) is set too: a client that only looks for the generic "bad request" bit sees it.
    """

    fail_info = "bad_data_format"
    also = frozenset({"bad_request"})


class UnacceptedPolicy(TimestampRejection):
    """unacceptedPolicy (15): "the requested TSA policy is not supported by the TSA" (RFC 3161 section 2.4.2)."""

    fail_info = "unaccepted_policy"


class UnacceptedExtension(TimestampRejection):
    """unacceptedExtension (16): "the requested extension is not supported by the TSA" (RFC 3161 section 2.4.2)."""

    fail_info = "unaccepted_extensions"  # asn1crypto's name of bit 16


class SystemFailure(TimestampRejection):
    """systemFailure (25): "the request cannot be handled due to system failure" (RFC 3161 section 2.4.2)."""

    fail_info = "system_failure"


# --- values in and out -------------------------------------------------------------------------------------


class TsaCredentials(Protocol):
    """What the CA issues for the TSA: the key handle, its certificate and the chain up to (not incl.) the root.

    `keys.ca.CertifiedKey` (from `CertificateAuthorityService.certified_key(session, Profile.TSA)`) is one.
    """

    @property
    def handle(self) -> KeyHandle: ...

    @property
    def certificate(self) -> x509.Certificate: ...

    @property
    def chain(self) -> tuple[x509.Certificate, ...]: ...


@dataclass(frozen=True, slots=True)
class TimestampReply:
    """The answer to one request: the DER TimeStampResp and what the caller audits or logs.

    `failure` is the RFC 3161 PKIFailureInfo bit name of a rejection; `detail` says why (for system
    failures it is the server-side cause, for logs only: the client sees "system failure").
    """

    der: bytes
    status: Literal["granted", "rejection"]
    serial: int | None = None
    hash_algorithm: str | None = None
    gen_time: dt.datetime | None = None
    failure: str | None = None
    detail: str | None = None

    @property
    def granted(self) -> bool:
        return self.status == "granted"


@dataclass(frozen=True, slots=True)
class _ParsedRequest:
    imprint: bytes  # the DER MessageImprint
    hash_algorithm: str
    nonce: int | None
    cert_req: bool


# --- the authority -----------------------------------------------------------------------------------------


class TimestampAuthority:
    """Answers RFC 3161 time-stamp requests with tokens signed through one `KeyHandle` (see module docstring).

    The response is encoded as a template: every constant part (algorithm identifiers, the signer identifier,
    the signing-certificate-v2 and content-type attributes, the certificate set, the TSA name) is encoded once
    with asn1crypto at construction; per request only the serial, genTime, nonce, imprint, message digest and
    signature are encoded (asn1crypto primitives) and the constructed types around them are assembled with
    DER lengths. Building the same structure as nested asn1crypto objects costs ~20 times more per token.
    The tests check that asn1crypto re-encodes every response to the same bytes (it is DER) and that
    `openssl ts -verify` accepts it.
    """

    def __init__(
        self,
        handle: KeyHandle,
        certificate: x509.Certificate,
        chain: Sequence[x509.Certificate] = (),
        *,
        policy_oid: str,
        serials: SerialSource,
        clock: Callable[[], dt.datetime] = utcnow,
        accuracy: dt.timedelta = DEFAULT_ACCURACY,
        include_tsa_name: bool = True,
    ) -> None:
        profile = _SIGNATURE_PROFILES.get(handle.key_type)
        if profile is None:
            raise TsaNotConfigured(f"a TSA key must be EC P-256/P-384 or RSA, not {handle.key_type}")
        _check_certificate(handle, certificate)
        try:
            policy_der: bytes = core.ObjectIdentifier(policy_oid).dump()
        except (ValueError, TypeError) as exc:
            raise TsaNotConfigured(f"TSA policy {policy_oid!r} is not a dotted OID") from exc
        self.policy_oid = policy_oid
        self.certificate = certificate
        self._handle = handle
        self._serials = serials
        self._clock = clock
        self._hash_name: HashName = profile[0]
        self._not_before: dt.datetime = certificate.not_valid_before
        self._not_after: dt.datetime = certificate.not_valid_after

        # TSTInfo: version v1 and the policy lead; accuracy and the tsa name follow the per-request fields.
        self._tst_head = _der(core.Integer(1)) + policy_der
        self._accuracy = _encode_accuracy(accuracy)
        # RFC 3161: the tsa name "MUST correspond to one of the subject names included in the certificate"
        self._tsa_name = (
            tlv(_EXPLICIT_0, _der(x509.GeneralName(name="directory_name", value=certificate.subject)))
            if include_tsa_name else b""
        )
        # SignerInfo: RFC 5816 signing-certificate-v2 names the TSA certificate by its SHA-256 hash (the
        # default hash of ESSCertIDv2, so hashAlgorithm is omitted as DER requires) and issuer/serial.
        ess_cert_id = tsp.ESSCertIDv2({
            "cert_hash": hashlib.sha256(certificate.dump()).digest(),
            "issuer_serial": {
                "issuer": [x509.GeneralName(name="directory_name", value=certificate.issuer)],
                "serial_number": certificate.serial_number,
            },
        })
        self._static_attributes = (
            _der(cms.CMSAttribute({"type": "content_type", "values": ["tst_info"]})),
            _der(cms.CMSAttribute({"type": "signing_certificate_v2", "values": [{"certs": [ess_cert_id]}]})),
        )
        self._signer_head = _der(cms.CMSVersion("v1")) + _der(cms.SignerIdentifier(
            name="issuer_and_serial_number",
            value={"issuer": certificate.issuer, "serial_number": certificate.serial_number},
        ))
        # RFC 5754 section 2: SHA-2 AlgorithmIdentifiers are generated with absent parameters.
        self._digest_algorithm = _der(algos.DigestAlgorithm({"algorithm": self._hash_name, "parameters": None}))
        self._signature_algorithm = _der(algos.SignedDigestAlgorithm({"algorithm": profile[1]}))
        # SignedData: version v3 (RFC 5652 section 5.1: eContentType other than id-data), the digest algorithm.
        self._signed_data_head = _der(cms.CMSVersion("v3")) + tlv(SET, self._digest_algorithm)
        # certificates [0] IMPLICIT CertificateSet: a SET OF, so DER sorts the encodings.
        self._certificates = tlv(_IMPLICIT_0, *sorted(_der(c) for c in (certificate, *chain)))

    async def respond(self, request_der: bytes) -> TimestampReply:
        """Answer one DER TimeStampReq with a DER TimeStampResp; never raises on anything the client sent."""
        try:
            request = self._parse(request_der)
        except TimestampRejection as rejection:
            return _rejection(rejection)
        try:
            serial = await self._serials.allocate()
        except KeysError as exc:
            return _system_failure(f"no serial number: {exc.code}: {exc.detail}")
        gen_time = self._clock().astimezone(dt.UTC)
        if not self._not_before <= gen_time <= self._not_after:
            return _system_failure(f"the TSA certificate is not valid at {gen_time.isoformat()}")
        try:
            der = await self._token_response(request, serial, gen_time)
        except KeysError as exc:
            return _system_failure(f"signing failed: {exc.code}: {exc.detail}")
        return TimestampReply(der=der, status="granted", serial=serial, hash_algorithm=request.hash_algorithm,
                              gen_time=gen_time)

    def _parse(self, request_der: bytes) -> _ParsedRequest:
        """Check a TimeStampReq as RFC 3161 section 2.4.1 asks; raise the matching rejection."""
        try:
            request = tsp.TimeStampReq.load(request_der, strict=True)
            version = request["version"].native
            imprint = request["message_imprint"]
            algorithm = imprint["hash_algorithm"]
            hash_algorithm = algorithm["algorithm"].native
            parameters = algorithm["parameters"]
            hashed = imprint["hashed_message"].native
            req_policy = request["req_policy"]
            policy = None if isinstance(req_policy, core.Void) else req_policy.dotted
            nonce = request["nonce"].native
            cert_req = bool(request["cert_req"].native)
            has_extensions = not isinstance(request["extensions"], core.Void)
        except Exception as exc:  # asn1crypto raises assorted types on malformed DER: all mean badDataFormat
            raise BadDataFormat("the request is not a DER TimeStampReq") from exc
        if version != "v1":
            raise BadDataFormat("only TimeStampReq version 1 is supported")
        if hash_algorithm not in IMPRINT_LENGTHS:
            raise BadAlg("the imprint hash algorithm must be sha256, sha384 or sha512")
        if not isinstance(parameters, core.Void | core.Null):  # asn1crypto already refuses others for SHA-2
            raise BadDataFormat("the imprint hash algorithm must have absent or NULL parameters")
        if not isinstance(hashed, bytes) or len(hashed) != IMPRINT_LENGTHS[hash_algorithm]:
            raise BadAlg(f"a {hash_algorithm} imprint is {IMPRINT_LENGTHS[hash_algorithm]} bytes long")
        if policy is not None and policy != self.policy_oid:
            raise UnacceptedPolicy(f"this TSA issues time-stamps under policy {self.policy_oid} only")
        if has_extensions:
            raise UnacceptedExtension("this TSA supports no request extensions")
        # "The messageImprint MUST have the same value as the similar field in TimeStampReq": re-encoded from
        # the checked value (a BER-encoded request must not make the token non-DER).
        algorithm_der = _IMPRINT_ALGORITHMS[hash_algorithm, isinstance(parameters, core.Null)]
        return _ParsedRequest(imprint=tlv(SEQUENCE, algorithm_der, tlv(OCTET_STRING, hashed)),
                              hash_algorithm=hash_algorithm, nonce=nonce, cert_req=cert_req)

    async def _token_response(self, request: _ParsedRequest, serial: int, gen_time: dt.datetime) -> bytes:
        """Build and sign the TimeStampToken (RFC 3161 section 2.4.2, RFC 5652 section 5) and wrap it."""
        tst_info = tlv(
            SEQUENCE,
            self._tst_head,
            request.imprint,
            _der(core.Integer(serial)),
            _der(core.GeneralizedTime(gen_time)),  # fraction of a second kept, trailing zeros dropped
            self._accuracy,
            b"" if request.nonce is None else _der(core.Integer(request.nonce)),  # RFC 3161: nonce echoed
            self._tsa_name,
        )
        message_digest = tlv(SEQUENCE, _MESSAGE_DIGEST_OID, tlv(
            SET, tlv(OCTET_STRING, hashlib.new(self._hash_name, tst_info).digest())))
        # RFC 5652 section 5.4: the signature covers the DER of the signed attributes with an EXPLICIT SET OF
        # tag; DER orders the members of a SET OF by their encodings.
        attributes = b"".join(sorted((*self._static_attributes, message_digest)))
        signature = await self._handle.sign(tlv(SET, attributes), self._hash_name)
        signer_info = tlv(
            SEQUENCE,
            self._signer_head,
            self._digest_algorithm,
            tlv(_IMPLICIT_0, attributes),
            self._signature_algorithm,
            tlv(OCTET_STRING, signature),
        )
        encap_content_info = tlv(SEQUENCE, _TST_INFO_OID, tlv(_EXPLICIT_0, tlv(OCTET_STRING, tst_info)))
        signed_data = tlv(
            SEQUENCE,
            self._signed_data_head,
            encap_content_info,
            # RFC 3161: with certReq false "the certificates field ... MUST not be present in the response"
            self._certificates if request.cert_req else b"",
            tlv(SET, signer_info),
        )
        token = tlv(SEQUENCE, _SIGNED_DATA_OID, tlv(_EXPLICIT_0, signed_data))
        return tlv(SEQUENCE, _STATUS_GRANTED, token)


class TsaProvider:
    """Builds the TimestampAuthority from the credentials the CA issued, keeps it, and looks again now and then.

    `load` returns the TSA's key handle, certificate and chain (for example from
    `CertificateAuthorityService.certified_key`); nothing is loaded, parsed or looked up per request. The
    next request after `refresh_seconds` (the deployment's key cache time, ACAR_KEY_CACHE_SECONDS) refreshes:
    it calls `load` again and looks the certificate up in `statuses`, the certificates table the OCSP
    responder answers from. So every node stops using a revoked TSA certificate, and starts using a renewed
    one, within `refresh_seconds`, without a restart and without a query per request. An unchanged
    certificate keeps the authority already built. A refresh also falls due when the certificate expires.

    Decision: the TSA refuses to sign, with TsaNotConfigured (HTTP 503 problem), whenever it has no usable
    certificate: revoked, expired or not yet valid, unknown to `statuses`, or none at all (`load` raising a
    KeysError such as CANotInitialized). That is the answer of every node, whatever it held before, and the
    same as for a TSA never set up; such a refusal is kept for `refresh_seconds` too, so a refused TSA does
    not query the database per request. Failures within one request (no serial, the key backend failing,
    genTime outside the certificate's validity) stay RFC 3161 systemFailure replies (TimestampAuthority).
    """

    def __init__(
        self,
        load: Callable[[], Awaitable[TsaCredentials]],
        *,
        policy_oid: str,
        serials: SerialSource,
        statuses: CertificateStatusSource,
        issuer: str,
        refresh_seconds: float,
        issuer_parent: str | None = None,
        clock: Callable[[], dt.datetime] = utcnow,
        monotonic: Callable[[], float] = time.monotonic,
        accuracy: dt.timedelta = DEFAULT_ACCURACY,
    ) -> None:
        self._load = load
        self.policy_oid = policy_oid
        self._serials = serials
        self._statuses = statuses
        self._issuer = issuer  # the name of the CA that issues the TSA certificate, as `statuses` knows it
        self._issuer_parent = issuer_parent  # the CA above it: a revoked issuing CA stops the TSA too
        self._refresh_seconds = refresh_seconds
        self._clock = clock
        self._monotonic = monotonic
        self._accuracy = accuracy
        self._authority: TimestampAuthority | None = None
        self._refusal: str | None = None  # why the TSA refuses until the next refresh
        self._fresh_until = -math.inf
        self._lock = asyncio.Lock()

    async def __call__(self) -> TimestampAuthority:
        """The authority to answer with, or TsaNotConfigured when the TSA has no usable certificate."""
        if self._monotonic() < self._fresh_until:
            return self._current()
        async with self._lock:
            if self._monotonic() < self._fresh_until:
                return self._current()  # another request refreshed while this one waited
            try:
                authority, usable_for = await self._refresh()
            except KeysError as exc:  # no usable certificate: refused on this node until the next refresh
                self._authority, self._refusal = None, exc.detail
                self._fresh_until = self._monotonic() + self._refresh_seconds
                raise TsaNotConfigured(exc.detail) from None
            # anything else (the database unreachable) is raised as it is and tried again by the next request
            self._authority, self._refusal = authority, None
            self._fresh_until = self._monotonic() + min(self._refresh_seconds, usable_for)
            return authority

    def _current(self) -> TimestampAuthority:
        if self._authority is None:
            raise TsaNotConfigured(self._refusal or "the time-stamp authority has no certificate")
        return self._authority

    async def _refresh(self) -> tuple[TimestampAuthority, float]:
        """The authority for the credentials `load` returns now, and for how many seconds its certificate is
        valid; raises a KeysError when that certificate must not be used."""
        credentials = await self._load()
        certificate = credentials.certificate
        serial = serial_to_hex(certificate.serial_number)
        status = (await self._statuses.lookup(self._issuer, [serial])).get(serial)
        if status is None:
            raise TsaNotConfigured(f"the TSA certificate {serial} is not one the {self._issuer} CA issued")
        if status.revoked_at is not None:
            raise TsaNotConfigured(f"the TSA certificate {serial} was revoked at {status.revoked_at.isoformat()}")
        if self._issuer_parent is not None and credentials.chain:
            ca_serial = serial_to_hex(credentials.chain[0].serial_number)
            ca_status = (await self._statuses.lookup(self._issuer_parent, [ca_serial])).get(ca_serial)
            if ca_status is not None and ca_status.revoked_at is not None:
                raise TsaNotConfigured(f"the {self._issuer} CA certificate {ca_serial} was revoked at "
                                       f"{ca_status.revoked_at.isoformat()}: its TSA certificate is void")
        now = self._clock().astimezone(dt.UTC)
        if not certificate.not_valid_before <= now < certificate.not_valid_after:
            raise TsaNotConfigured(f"the TSA certificate {serial} is not valid at {now.isoformat()}")
        authority = self._authority
        if authority is None or authority.certificate.dump() != certificate.dump():
            authority = TimestampAuthority(
                credentials.handle, certificate, credentials.chain, policy_oid=self.policy_oid,
                serials=self._serials, clock=self._clock, accuracy=self._accuracy,
            )
        return authority, (certificate.not_valid_after - now).total_seconds()


# --- the domain service --------------------------------------------------------------------------------------


TIMESTAMP_EVENT: Final = "tsa.timestamp"
"""The audit event of a granted time-stamp."""


class TimestampService:
    """The time-stamp authority as a domain service: `timestamp` answers one RFC 3161 request and audits it.

    The rule lives here, not in a caller: a granted TimeStampResp is returned only after its audit event was
    committed through `audit` (storage.audit.AuditSink: `record` returns once the event is written). A failed
    write withholds the token and answers systemFailure instead (RFC 3161 section 2.4.2, "the request cannot be
    handled due to system failure"); the serial it had taken stays unused. Rejections are not audit events (they
    certify nothing) but are logged, system failures with their server-side cause.
    """

    def __init__(self, authority: Callable[[], Awaitable[TimestampAuthority]], audit: AuditSink) -> None:
        self._authority = authority  # a TsaProvider: raises TsaNotConfigured when the TSA must not sign
        self._audit = audit

    async def timestamp(self, request_der: bytes, *, actor: str, request_id: str | None = None) -> TimestampReply:
        """Answer a DER TimeStampReq (RFC 3161 section 2.4.1) with a DER TimeStampResp (section 2.4.2).

        `actor` is who asked ("anonymous" over HTTP, the signer of a document for signing/); `request_id` ties
        the audit event to the request's log lines. Raises TsaNotConfigured when the TSA has no usable
        certificate; everything about the request itself is answered inside the reply.
        """
        authority = await self._authority()
        reply = await authority.respond(request_der)
        if reply.granted:
            try:
                await self._audit.record(
                    TIMESTAMP_EVENT, actor=actor, subject=str(reply.serial),
                    detail={"serial": reply.serial, "hash_algorithm": reply.hash_algorithm,
                            "policy": authority.policy_oid},
                    request_id=request_id, clock=reply.gen_time,
                )
            except Exception as exc:  # noqa: BLE001 - whatever the database raised: no audit event, no token
                reply = _system_failure(f"the audit event of time-stamp {reply.serial} was not written: "
                                        f"{type(exc).__name__}: {exc}"[:500])
        if reply.failure == "system_failure":
            log.error("tsa.system_failure", extra={"detail": reply.detail})
        elif not reply.granted:
            log.info("tsa.rejected", extra={"failure": reply.failure})
        return reply


# --- helpers -----------------------------------------------------------------------------------------------


def _check_certificate(handle: KeyHandle, certificate: x509.Certificate) -> None:
    """The certificate must fit the key and be a TSA certificate as RFC 3161 section 2.3 requires."""
    try:
        certified = certificate_public_key(certificate)
    except ValueError as exc:
        raise TsaNotConfigured("the TSA certificate's public key cannot be read") from exc
    if not same_public_key(certified, handle.public_key()):
        raise TsaNotConfigured(f"the TSA certificate does not certify key {handle.key_id}")
    # "The corresponding certificate MUST contain only one instance of the extended key usage field
    # extension ... with KeyPurposeID having value: id-kp-timeStamping. This extension MUST be critical."
    eku = certificate.extended_key_usage_value
    if eku is None or eku.native != [_TIME_STAMPING] or _EXTENDED_KEY_USAGE not in certificate.critical_extensions:
        raise TsaNotConfigured("the TSA certificate needs a critical extended key usage of only id-kp-timeStamping")


def _encode_accuracy(accuracy: dt.timedelta) -> bytes:
    """RFC 3161 Accuracy: seconds, millis (1..999) and micros (1..999), zero parts omitted."""
    micros_total = accuracy // dt.timedelta(microseconds=1)
    if micros_total < 1:
        raise TsaNotConfigured("the TSA accuracy must be positive")
    seconds, rest = divmod(micros_total, 1_000_000)
    millis, micros = divmod(rest, 1_000)
    fields = {name: value for name, value in (("seconds", seconds), ("millis", millis), ("micros", micros)) if value}
    return _der(tsp.Accuracy(fields))


def _der(value: core.Asn1Value) -> bytes:
    encoded: bytes = value.dump()
    return encoded


def _rejection(rejection: TimestampRejection, *, client_text: str | None = None) -> TimestampReply:
    """A TimeStampResp with status rejection, the failInfo bit and a short statusString (no token)."""
    status = tsp.PKIStatusInfo({"status": "rejection", "status_string": [client_text or rejection.detail],
                                "fail_info": {rejection.fail_info, *rejection.also}})
    der = tlv(SEQUENCE, _der(status))  # asn1crypto's TimeStampResp wrongly requires timeStampToken
    return TimestampReply(der=der, status="rejection", failure=rejection.fail_info, detail=rejection.detail)


def _system_failure(cause: str) -> TimestampReply:
    """systemFailure: the cause stays in `detail` for the server's log; the client reads "system failure"."""
    return _rejection(SystemFailure(cause), client_text="system failure")

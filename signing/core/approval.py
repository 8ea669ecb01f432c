"""The signer's approval of a sign-mode request: a WebAuthn challenge bound to exactly the documents shown.

Sole control (CEN EN 419 241-1, sole control assurance level 2, SCAL2): a signature is made with the signer's key
only when the signer, authenticated, has approved *these* data to be signed (the signature activation data links
the signer's authentication to the data to be signed, so it cannot activate a signature over anything else).
Açar's approval is a WebAuthn assertion (W3C Web Authentication Level 2, section 7.2) whose challenge is not random
but derived, so that the authenticator's signature over clientDataJSON is a signature over what is approved:

    challenge = SHA-256( len || "acar-sign-approval-v1"        domain separation: no other protocol of Açar
                                                             (a passkey login, a token) produces this input
                         || len || request id (UTF-8)        the signing request: its agency, reason, level
                                                             and signer are fixed when it is created
                         || n                                how many documents (a u32)
                         || digest_1 || ... || digest_n )    each document's SHA-256 (32 bytes), in the
                                                             request's order

Every variable-length field is prefixed with its length as a big-endian u32 and the digests have a fixed length,
so the encoding is injective: two different (request id, digests) lists never give the same input, and SHA-256's
collision resistance carries that over to the challenge. Changing a document, adding, removing or reordering one, or
presenting the assertion for another request gives another challenge, which the assertion does not sign: an
approval authorises exactly these documents, once (the request leaves `pending` when approved), and nothing else.

What is bound, and what is not:
- bound by the challenge: the request id and the documents' SHA-256 digests, in order;
- bound by the request id (immutable once created): the agency, reason, location, level, placement and the signer
  FIN; the verifier also checks that the assertion's credential belongs to the person with that FIN;
- bound by WebAuthn itself (checked by the passkey verification in api/, idp.core.webauthn): the relying party
  (RP ID hash in authenticatorData), the origin and type in clientDataJSON, the credential's public key, user
  presence and, at level high, user verification, and the signature counter.

The challenge is deterministic, unlike a login's 32 random bytes (WebAuthn Level 2 section 13.4.3): a replayed
assertion can only approve the same documents of the same still-pending request, which is what its signer approved;
the single use comes from the request's state and the ceremony's one-time record, not from the challenge's
randomness.

`check_client_data` compares the challenge an assertion carries with the derived one in constant time.
`ApprovalService` decides on a request (shown, approved, rejected) through the `ApprovalStore` Protocol; the
WebAuthn verification itself is composed in api/ (signing never imports idp), which hands over what it verified
as a `VerifiedAssertion`. This module knows no WebAuthn library, no database and no web framework.
"""

from __future__ import annotations

import base64
import binascii
import datetime as dt
import hashlib
import hmac
import json
import re
import struct
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar, Final, Protocol

from signing.core.errors import SigningError
from signing.core.interfaces import EntityForm, MandateCheck, MandateChecker, MandateRefusal, SigningEntity

DOMAIN: Final = b"acar-sign-approval-v1"
"""The domain separation tag of the approval challenge (version 1 of the encoding above)."""
CHALLENGE_BYTES: Final = 32
MAX_DOCUMENTS: Final = 1000
"""More documents than any request may hold: a list longer than this is refused before anything is hashed."""
MAX_REQUEST_ID: Final = 200
_HEX_DIGEST = re.compile(r"^[0-9a-f]{64}$")
MAX_CLIENT_DATA: Final = 4096
"""clientDataJSON longer than this is no browser's (a few hundred bytes): refused before it is parsed."""


class ApprovalError(SigningError):
    """Base of the refusals of an approval."""

    code: ClassVar[str] = "approval_refused"
    status_code: ClassVar[int] = 400
    title: ClassVar[str] = "The approval cannot be accepted"


class InvalidApprovalInput(ApprovalError):
    """The request id or a digest is not what an approval can be derived from (a programming error upstream)."""

    code: ClassVar[str] = "approval_input_invalid"


class ChallengeMismatch(ApprovalError):
    """The assertion signs another challenge: it approves other documents or another request, or none."""

    code: ClassVar[str] = "approval_challenge_mismatch"
    status_code: ClassVar[int] = 400
    title: ClassVar[str] = "The approval was given for other documents"


@dataclass(frozen=True, slots=True)
class ApprovalChallenge:
    """The challenge of one request's approval and what it was derived from."""

    request_id: str
    digests: tuple[str, ...]
    """Each document's SHA-256, lowercase hex, in the request's order."""
    value: bytes
    """The 32-byte challenge (SHA-256 of the encoding in the module docstring)."""

    @property
    def base64url(self) -> str:
        """The challenge as clientDataJSON carries it (base64url without padding, WebAuthn Level 2 section 5.8.1)."""
        return base64.urlsafe_b64encode(self.value).rstrip(b"=").decode("ascii")


def derive_challenge(request_id: str, digests: Sequence[str]) -> ApprovalChallenge:
    """The approval challenge of request `request_id` over the documents with these SHA-256 digests (lowercase hex,
    in order). Refuses (InvalidApprovalInput) an empty or oversized id, no documents or too many, and a digest that
    is not 64 lowercase hex digits: nothing that cannot be a real request is ever given a challenge."""
    encoded_id = request_id.encode("utf-8")
    if not 0 < len(encoded_id) <= MAX_REQUEST_ID:
        raise InvalidApprovalInput(f"the request id must be 1 to {MAX_REQUEST_ID} bytes")
    if not 0 < len(digests) <= MAX_DOCUMENTS:
        raise InvalidApprovalInput(f"an approval covers 1 to {MAX_DOCUMENTS} documents")
    message = [struct.pack(">I", len(DOMAIN)), DOMAIN, struct.pack(">I", len(encoded_id)), encoded_id,
               struct.pack(">I", len(digests))]
    for digest in digests:
        if not isinstance(digest, str) or not _HEX_DIGEST.fullmatch(digest):
            raise InvalidApprovalInput("a document digest must be a SHA-256 in lowercase hex")
        message.append(bytes.fromhex(digest))
    value = hashlib.sha256(b"".join(message)).digest()
    return ApprovalChallenge(request_id=request_id, digests=tuple(digests), value=value)


def client_data_challenge(client_data_json: bytes) -> bytes:
    """The challenge a WebAuthn clientDataJSON carries (its `challenge` member, base64url), or ChallengeMismatch
    when there is none that can be read."""
    if len(client_data_json) > MAX_CLIENT_DATA:
        raise ChallengeMismatch("the passkey answer's client data is too long")
    try:
        data = json.loads(client_data_json)
    except (UnicodeDecodeError, ValueError, RecursionError):  # RecursionError: "[[[[..." past the recursion limit
        raise ChallengeMismatch("the passkey answer's client data is not JSON") from None
    challenge = data.get("challenge") if isinstance(data, dict) else None
    if not isinstance(challenge, str) or len(challenge) > 2 * CHALLENGE_BYTES or not challenge.isascii():
        raise ChallengeMismatch("the passkey answer carries no challenge")
    try:
        return base64.urlsafe_b64decode(challenge + "=" * (-len(challenge) % 4))
    except (binascii.Error, ValueError):
        raise ChallengeMismatch("the passkey answer's challenge is not base64url") from None


def check_client_data(client_data_json: bytes, expected: ApprovalChallenge) -> None:
    """Raise ChallengeMismatch unless the assertion's clientDataJSON carries exactly `expected`'s challenge
    (compared in constant time: hmac.compare_digest)."""
    received = client_data_challenge(client_data_json)
    if not hmac.compare_digest(received, expected.value):
        raise ChallengeMismatch("this approval was given for other documents or another request; open the "
                                "signing page again and approve what it shows")


# --- the decision ------------------------------------------------------------------------------------------


class ApprovalRequestNotFound(ApprovalError):
    """No sign-mode request has this id (or it is a seal request, which no person approves)."""

    code: ClassVar[str] = "request_not_found"
    status_code: ClassVar[int] = 404
    title: ClassVar[str] = "No such signing request"


class RequestNotPending(ApprovalError):
    """The request was decided already (approved, rejected, signed, failed): nothing is left to approve."""

    code: ClassVar[str] = "request_not_pending"
    status_code: ClassVar[int] = 409
    title: ClassVar[str] = "The signing request was already decided"

    def __init__(self, detail: str, *, state: str) -> None:
        super().__init__(detail)
        self.state = state


class ApprovalExpired(ApprovalError):
    code: ClassVar[str] = "signing_request_expired"
    status_code: ClassVar[int] = 410
    title: ClassVar[str] = "The signing request has expired"


class WrongSigner(ApprovalError):
    """The signed-in person is not the signer the agency named (by FIN)."""

    code: ClassVar[str] = "wrong_signer"
    status_code: ClassVar[int] = 403
    title: ClassVar[str] = "This request is for another person"


@dataclass(frozen=True, slots=True)
class ApprovalDocument:
    """A document as its signer is shown it."""

    n: int
    filename: str
    pages: int
    sha256: str


@dataclass(frozen=True, slots=True)
class ApprovalRequest:
    """A sign-mode request as its signer is shown it (never the document bytes)."""

    id: str
    client_id: str
    state: str
    signer_fin: str
    reason: str | None
    location: str | None
    level: str
    expires_at: dt.datetime
    documents: tuple[ApprovalDocument, ...]
    entity_voen: str | None = None
    """On behalf of a legal entity: its VÖEN (the signer must hold a valid mandate to sign its declarations)."""

    @property
    def pending(self) -> bool:
        return self.state == PENDING


@dataclass(frozen=True, slots=True)
class VerifiedAssertion:
    """What api/ verified of the signer's WebAuthn assertion (idp.core.webauthn, composed in api/): built only
    after the signature, origin, RP ID, counter, user verification and level checks passed for a credential of
    `person_id`. The challenge is checked here, again, against the request as it is now."""

    person_id: str
    fin: str
    credential_id: str
    client_data_json: bytes
    level: str


class ApprovalStore(Protocol):
    """Sign-mode requests as their signer sees and decides them, in the caller's unit of work (methods flush)."""

    async def approval_request(self, request_id: str) -> ApprovalRequest | None:
        """The sign-mode request with its documents in order, whoever created it; None for a seal request."""
    async def document_content(self, request_id: str, n: int) -> bytes | None:
        """The input bytes of document `n` (None when unknown or deleted)."""
    async def approve_request(self, request_id: str, *, key_id: str, now: dt.datetime,
                              entity_form: str | None = None, mandate_id: str | None = None) -> bool:
        """pending -> approved, signed with the key `key_id` (the signer's own, or an entity's seal), and one queued
        job per document, atomically; False (nothing written) when the request is not pending any more (the UPDATE
        names the state it leaves). On behalf of an entity, the form of the signature and the mandate approved
        under are recorded with it."""
    async def signing_entity(self, voen: str) -> SigningEntity | None:
        """A legal entity's signing configuration (None when it has none)."""
    async def reject_request(self, request_id: str, *, now: dt.datetime) -> bool:
        """pending -> rejected; False when it is not pending any more."""
    async def audit(self, event_type: str, *, actor: str, subject: str | None = None,
                    detail: Mapping[str, Any] | None = None) -> None: ...


PENDING: Final = "pending"


class MandateRefused(ApprovalError):
    """The signer holds no valid mandate with the power "sign_declarations" for the entity the request names;
    `reason` (signing.core.interfaces.MandateRefusal) says why, the page translates it."""

    code: ClassVar[str] = "mandate_invalid"
    status_code: ClassVar[int] = 403
    title: ClassVar[str] = "No valid mandate to sign for this legal entity"

    def __init__(self, detail: str, *, reason: str) -> None:
        super().__init__(detail)
        self.reason = reason


class EntityUnavailable(ApprovalError):
    """The entity the request names has no signing configuration any more (or its seal has no key)."""

    code: ClassVar[str] = "entity_not_configured"
    status_code: ClassVar[int] = 409
    title: ClassVar[str] = "The legal entity is not configured for signing"


REFUSALS: Final[Mapping[str, str]] = {
    MandateRefusal.NO_MANDATE: "holds no mandate for this legal entity",
    MandateRefusal.NOT_YET_VALID: "holds a mandate for this legal entity that has not begun yet",
    MandateRefusal.EXPIRED: "holds only an expired mandate for this legal entity",
    MandateRefusal.REVOKED: "holds only a revoked mandate for this legal entity",
    MandateRefusal.NO_POWER: "holds a mandate for this legal entity without the power to sign declarations",
    MandateRefusal.ENTITY_INACTIVE: "cannot sign for this legal entity: it is not active",
    MandateRefusal.PERSON_INACTIVE: "cannot sign for a legal entity: the person is not active in the registry",
}
"""The English detail of each refusal (the pages translate the reason themselves)."""


def refusal_detail(check: MandateCheck) -> str:
    reason = check.refusal or MandateRefusal.NO_MANDATE
    return (f"the signer {REFUSALS[reason]} (VÖEN {check.voen}): a valid mandate with the power sign_declarations "
            "is needed")


class ApprovalService:
    """Shows, approves and rejects sign-mode requests for their signer (see the module docstring).

    A request on behalf of a legal entity (issue 16) is shown and approved only while the signer holds a valid
    mandate with the power "sign_declarations" for it (`mandates`, the registry through api/): else MandateRefused,
    naming the reason. The approval signs with the entity's seal key (seal form) or the signer's own key (person
    form), as the entity's configuration says, and records the mandate; the worker checks it again before it
    signs (signing.core.jobs)."""

    def __init__(self, *, clock: Callable[[], dt.datetime], mandates: MandateChecker | None = None) -> None:
        self._clock = clock
        self._mandates = mandates

    async def representation(self, request: ApprovalRequest, fin: str) -> MandateCheck | None:
        """None for a request in the signer's own name; for one on behalf of an entity the valid mandate, else
        MandateRefused."""
        if request.entity_voen is None:
            return None
        if self._mandates is None:
            raise MandateRefused("no registry of mandates is available", reason=MandateRefusal.NO_MANDATE)
        check = await self._mandates.check(fin, request.entity_voen, at=self._clock())
        if not check.valid:
            raise MandateRefused(refusal_detail(check), reason=check.refusal or MandateRefusal.NO_MANDATE)
        return check

    async def request(self, store: ApprovalStore, request_id: str) -> ApprovalRequest:
        """The request in any state (the page says what became of it); ApprovalRequestNotFound if there is none."""
        found = await store.approval_request(request_id) if 0 < len(request_id) <= MAX_REQUEST_ID else None
        if found is None:
            raise ApprovalRequestNotFound("there is no signing request at this address")
        return found

    async def waiting(self, store: ApprovalStore, request_id: str) -> ApprovalRequest:
        """The request, which must still wait for a decision: else ApprovalRequestNotFound, RequestNotPending or
        ApprovalExpired (what the page tells anyone with the link, before the sign-in)."""
        found = await self.request(store, request_id)
        if not found.pending:
            raise RequestNotPending(f"this signing request is {found.state}", state=found.state)
        if found.expires_at <= self._clock():
            raise ApprovalExpired("this signing request has expired")
        return found

    async def pending(self, store: ApprovalStore, request_id: str, *, fin: str) -> ApprovalRequest:
        """The request, which must still wait for this signer's decision (`waiting`), else WrongSigner."""
        found = await self.waiting(store, request_id)
        if not hmac.compare_digest(found.signer_fin.encode(), fin.encode()):
            raise WrongSigner("this signing request is addressed to another person")
        return found

    @staticmethod
    def challenge(request: ApprovalRequest) -> ApprovalChallenge:
        return derive_challenge(request.id, [d.sha256 for d in request.documents])

    async def approve(self, store: ApprovalStore, request_id: str, assertion: VerifiedAssertion, *,
                      signing_key: Callable[[], Awaitable[str]]) -> ApprovalRequest:
        """Approve the request with the signer's verified assertion: the request is read again in this unit, the
        assertion's challenge must be the one derived from it now (ChallengeMismatch otherwise); only then is the
        signer's own key looked up or made (`signing_key`, in the same unit: a refused approval makes no key), and
        the request moves to approved, to be signed with that key, with its jobs; signing.request.approved is
        recorded (the credential, the challenge, each document's digest, the key)."""
        request = await self.pending(store, request_id, fin=assertion.fin)
        challenge = self.challenge(request)
        check_client_data(assertion.client_data_json, challenge)
        represented = await self.representation(request, assertion.fin)
        form: EntityForm | None = None
        seal_key: str | None = None
        if represented is not None:
            entity = await store.signing_entity(represented.voen)
            if entity is None or (entity.form is EntityForm.SEAL and entity.key_id is None):
                raise EntityUnavailable(f"the legal entity {represented.voen} has no signing configuration")
            form = entity.form
            seal_key = entity.key_id if entity.form is EntityForm.SEAL else None
        key_id = seal_key or await signing_key()  # the entity's seal, or the signer's own key (made on first use)
        if not await store.approve_request(request.id, key_id=key_id, now=self._clock(),
                                           entity_form=form.value if form else None,
                                           mandate_id=represented.mandate_id if represented else None):
            raise RequestNotPending("this signing request was decided meanwhile", state="decided")
        await store.audit("signing.request.approved", actor=assertion.person_id, subject=request.id, detail={
            "credential": assertion.credential_id, "level": assertion.level, "challenge": challenge.base64url,
            "documents": [{"n": d.n, "sha256": d.sha256} for d in request.documents], "key_id": key_id,
            **({**represented.audit(), "form": form.value if form else None} if represented else {})})
        return request

    async def reject(self, store: ApprovalStore, request_id: str, *, person_id: str, fin: str,
                     level: str) -> ApprovalRequest:
        """Reject the request as its signer (signing.request.rejected)."""
        request = await self.pending(store, request_id, fin=fin)
        if not await store.reject_request(request.id, now=self._clock()):
            raise RequestNotPending("this signing request was decided meanwhile", state="decided")
        await store.audit("signing.request.rejected", actor=person_id, subject=request.id,
                          detail={"level": level, "documents": [{"n": d.n, "sha256": d.sha256}
                                                                for d in request.documents]})
        return request

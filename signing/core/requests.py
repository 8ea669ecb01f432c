"""Signing requests: an agency's submission checked, stored once, and read back (issue 13, "Agency API").

- Validation before anything is stored: the mode (seal or sign), the signer's FIN in sign mode, the PAdES level
  (ETSI EN 319 142-1 section 6; default B-LT), the visible placement, the callback URL (https; http only where the
  deployment allows it), the number of documents, and every document through the input policy
  (signing.core.inspect: size, pages, objects, decompression bombs, reference loops, encryption, active content;
  a legitimate file pyHanko's strict parser refuses is repaired before it is stored). A refusal names
  its reason (a SigningError with its code) and nothing is stored: the unit of work is only opened once every
  document has passed.
- Idempotency (draft-ietf-httpapi-idempotency-key-header): a request sent with an Idempotency-Key is stored with
  the key (unique per client) and the SHA-256 of its body's meaning (the fields and each document's name and
  digest, `body_digest`). The same key with the same body answers the request stored the first time (`created`
  False); with another body it is refused (IdempotencyKeyReused, 409). Of two concurrent first uses of a key one
  inserts and the other answers its request (INSERT ... ON CONFLICT DO NOTHING, then read).
- States (TRANSITIONS): sign mode starts pending (the signer approves on <issuer>/sign/<id>); seal mode starts
  approved, its documents queued as jobs at once (signing.core.jobs signs them).
- On behalf of a legal entity (issue 16, "Business signing"): a sign-mode request may name `entity_voen`; the VÖEN
  must be well-formed, the entity registered and active (MandateChecker.entity, the registry in api/ over idp) and
  configured for signing in signing's own table (`signing_entities`: seal or person form). The mandate itself is
  checked at the approval and again at signing time (signing.core.approval, signing.core.jobs), not here.
- Audit: signing.request.created, in the unit that stores the request.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import hashlib
import io
import json
import math
import secrets
import tempfile
import unicodedata
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, BinaryIO, Final, cast
from urllib.parse import urlsplit

from keys.identifiers import InvalidIdentifierFormat, check_voen, normalize_fin
from signing.core.errors import (
    DocumentDeleted,
    DocumentNotReady,
    EntityInactive,
    EntityNotConfigured,
    EntityNotRegistered,
    IdempotencyKeyReused,
    InvalidCallbackUrl,
    InvalidDocument,
    InvalidFin,
    InvalidLevel,
    InvalidPlacement,
    InvalidSigningRequest,
    InvalidVoen,
    NoSeal,
    RequestNotFound,
    SignerRequired,
    SigningError,
    TooManyDocuments,
)
from signing.core.inspect import InputPolicy, inspect_pdf, prepare_for_signing
from signing.core.interfaces import (
    EntityForm,
    MandateChecker,
    Mode,
    NewDocument,
    NewRequest,
    Placement,
    RequestState,
    RequestView,
    SigningUnits,
)
from signing.core.levels import DEFAULT_LEVEL, PadesLevel

TRANSITIONS: Final[Mapping[RequestState, frozenset[RequestState]]] = {
    RequestState.PENDING: frozenset({RequestState.APPROVED, RequestState.REJECTED, RequestState.EXPIRED}),
    RequestState.APPROVED: frozenset({RequestState.SIGNING, RequestState.FAILED}),
    RequestState.SIGNING: frozenset({RequestState.COMPLETED, RequestState.FAILED}),
    RequestState.COMPLETED: frozenset(),
    RequestState.REJECTED: frozenset(),
    RequestState.EXPIRED: frozenset(),
    RequestState.FAILED: frozenset(),
}
"""Which state may follow which; the stores' UPDATEs name the state they leave in their WHERE clause, so a
transition happens once however many nodes try it."""

MAX_TEXT: Final = 200
"""Reason and location: at most this many characters (they go into the signature dictionary, ISO 32000-1
table 252 /Reason and /Location)."""
MAX_FILENAME: Final = 255
MAX_IDEMPOTENCY_KEY: Final = 255
MAX_CALLBACK_URL: Final = 2000
REPAIR_SPOOL_BYTES: Final = 8 * 1024 * 1024
"""A repaired document's rewrite is held in memory up to this size, then in a temporary file, until it is read."""
REQUEST_ID_BYTES: Final = 18
"""144 random bits, 24 base64url characters: the id is the only thing between a request and a guesser."""


def can_move(source: RequestState, target: RequestState) -> bool:
    return target in TRANSITIONS[source]


@dataclass(frozen=True, slots=True)
class SubmittedDocument:
    filename: str | None
    content: bytes


@dataclass(frozen=True, slots=True)
class Submission:
    """A request as the agency sent it, before any check (api/ reads it from JSON or multipart)."""

    mode: str | None
    documents: Sequence[SubmittedDocument]
    signer_fin: str | None = None
    reason: str | None = None
    location: str | None = None
    level: str | None = None
    placement: Mapping[str, Any] | None = None
    callback_url: str | None = None
    entity_voen: str | None = None
    """Sign mode on behalf of a legal entity: its VÖEN; `signer_fin` is then its representative."""


@dataclass(frozen=True, slots=True)
class Inspected:
    """What the input policy found out about one accepted document."""

    pages: int
    sha256: str
    findings: tuple[str, ...] = ()
    content: bytes | None = None
    """The bytes to store, when the policy repaired the input; None keeps the input as sent."""


Inspector = Callable[[bytes], Inspected]
"""The input policy for one document (synchronous, CPU-bound: run in a thread): raises a SigningError naming the
reason it refuses the document."""


@dataclass(frozen=True, slots=True)
class RequestPolicy:
    """The bounds of a request (settings ACAR_SIGNING_*)."""

    max_documents: int
    max_document_bytes: int
    allow_http_callback: bool
    sign_lifetime: dt.timedelta
    """How long a sign-mode request waits for its signer before it expires."""
    seal_lifetime: dt.timedelta
    """How long a seal request may take before it counts as expired (it normally completes in seconds)."""


def policy_inspector(policy: InputPolicy) -> Inspector:
    """The input policy (signing.core.inspect) for a document held in memory. A document the policy accepts as it
    is is inspected without a copy; one pyHanko's strict parser refuses but qpdf can rewrite (an unsigned file) is
    prepared again into a spooled file and the rewrite is what is stored and signed. The digest kept is the one of
    the stored bytes: what the signer approves and the engine signs."""

    def inspect(content: bytes) -> Inspected:
        found = inspect_pdf(io.BytesIO(content), policy)
        if not found.repaired:
            return Inspected(pages=found.pages, sha256=found.sha256, findings=found.findings)
        with tempfile.SpooledTemporaryFile(max_size=REPAIR_SPOOL_BYTES) as output:
            prepared = prepare_for_signing(io.BytesIO(content), cast("BinaryIO", output), policy)
            output.seek(0)
            repaired = output.read()
        return Inspected(pages=prepared.pages, sha256=prepared.sha256, findings=prepared.findings, content=repaired)

    return inspect


def _text(value: str | None, name: str, limit: int = MAX_TEXT) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str):
        raise InvalidSigningRequest(f"{name} must be a string")
    text = unicodedata.normalize("NFC", value.strip())
    if len(text) > limit:
        raise InvalidSigningRequest(f"{name} must be at most {limit} characters")
    if _unstorable(text):
        raise InvalidSigningRequest(f"{name} must not contain control characters, surrogates or noncharacters")
    return text or None


def _unstorable(text: str) -> bool:
    """Text a database column must not hold: control characters (NUL among them), unpaired surrogates (not UTF-8)
    and noncharacters or unassigned code points (Unicode category Cc, Cs, Cn)."""
    return any(unicodedata.category(ch) in ("Cc", "Cs", "Cn") for ch in text)


def parse_level(value: str | None) -> PadesLevel:
    if value is None or value == "":
        return DEFAULT_LEVEL
    try:
        return PadesLevel(value)
    except ValueError:
        raise InvalidLevel(f"level must be one of {', '.join(PadesLevel)} (ETSI EN 319 142-1 section 6), not "
                           f"{str(value)[:20]!r}") from None


def parse_placement(value: Mapping[str, Any] | None) -> Placement | None:
    """A visible signature's place: {"page": 1, "box": [x1, y1, x2, y2]} in PDF user-space points (ISO 32000-1
    section 8.3.2.3), x1 < x2 and y1 < y2."""
    if value is None:
        return None
    if not isinstance(value, Mapping) or set(value) - {"page", "box"}:
        raise InvalidPlacement("placement must be an object with page and box only")
    page, box = value.get("page", 1), value.get("box")
    if isinstance(page, bool) or not isinstance(page, int) or not 1 <= page <= 100_000:
        raise InvalidPlacement("placement.page must be a page number from 1")
    if (not isinstance(box, list | tuple) or len(box) != 4
            or not all(isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v)
                       and abs(v) <= 14_400 for v in box)):
        raise InvalidPlacement("placement.box must be four numbers [x1, y1, x2, y2] (PDF points, at most 14400)")
    x1, y1, x2, y2 = (float(v) for v in box)
    if not (x1 < x2 and y1 < y2):
        raise InvalidPlacement("placement.box must have x1 < x2 and y1 < y2")
    return Placement(page=page, box=(x1, y1, x2, y2))


def parse_callback(value: str | None, *, allow_http: bool) -> str | None:
    if value is None or value == "":
        return None
    if not isinstance(value, str) or len(value) > MAX_CALLBACK_URL:
        raise InvalidCallbackUrl(f"callback_url must be a URL of at most {MAX_CALLBACK_URL} characters")
    if _unstorable(value) or not value.isascii() or " " in value:
        raise InvalidCallbackUrl("callback_url must be an ASCII URL without spaces or control characters "
                                 "(RFC 3986 section 2)")
    parts = urlsplit(value)
    schemes = ("https", "http") if allow_http else ("https",)
    if parts.scheme not in schemes or not parts.hostname or parts.username or parts.password or parts.fragment:
        raise InvalidCallbackUrl("callback_url must be an absolute https URL without credentials or fragment"
                                 + (" (http is allowed in development)" if allow_http else ""))
    return value


def clean_filename(value: str | None, n: int) -> str:
    """The file's own name (no directories), NFC, printable, at most 255 characters; document-<n>.pdf if none."""
    name = unicodedata.normalize("NFC", (value or "").replace("\\", "/").rsplit("/", 1)[-1].strip())
    if any(unicodedata.category(ch).startswith("C") for ch in name):  # Cc, Cf, Cs, Co, Cn
        raise InvalidDocument(f"document {n}: the file name must not contain control characters")
    if len(name) > MAX_FILENAME:
        raise InvalidDocument(f"document {n}: the file name must be at most {MAX_FILENAME} characters")
    return name or f"document-{n}.pdf"


def body_digest(request: Mapping[str, Any]) -> str:
    """SHA-256 over the canonical JSON of what a request means (its idempotency fingerprint)."""
    canonical = json.dumps(request, sort_keys=True, separators=(",", ":"), ensure_ascii=True)
    return hashlib.sha256(canonical.encode()).hexdigest()


def new_request_id() -> str:
    return secrets.token_urlsafe(REQUEST_ID_BYTES)


class RequestService:
    """Creates and reads signing requests (see module docstring)."""

    def __init__(self, units: SigningUnits, *, policy: RequestPolicy, inspector: Inspector,
                 clock: Callable[[], dt.datetime], registry: MandateChecker | None = None) -> None:
        self._units = units
        self._registry = registry
        """The registry of legal entities (api/ over idp): None refuses requests naming an entity."""
        self.policy = policy
        self._inspect = inspector
        self._clock = clock

    async def create(self, client_id: str, submission: Submission, *,
                     idempotency_key: str | None = None) -> tuple[RequestView, bool]:
        """Check and store a request; (the request, True) when stored now, (the earlier one, False) when the
        Idempotency-Key was used before with the same body."""
        if idempotency_key is not None and not 1 <= len(idempotency_key) <= MAX_IDEMPOTENCY_KEY:
            raise InvalidSigningRequest(f"the Idempotency-Key must be 1 to {MAX_IDEMPOTENCY_KEY} characters")
        mode, signer_fin = _mode_and_signer(submission)
        entity_voen = _entity_voen(submission, mode)
        level = parse_level(submission.level)
        placement = parse_placement(submission.placement)
        callback = parse_callback(submission.callback_url, allow_http=self.policy.allow_http_callback)
        reason, location = _text(submission.reason, "reason"), _text(submission.location, "location")
        documents = await self._documents(submission.documents, placement)
        digest = body_digest({
            "mode": mode.value, "signer_fin": signer_fin, "reason": reason, "location": location,
            "level": level.value, "placement": placement.as_json() if placement else None, "callback_url": callback,
            "documents": [[d.filename, d.sha256] for d in documents],
            **({"entity_voen": entity_voen} if entity_voen else {})})
        if entity_voen is not None:
            await self._registered(entity_voen)
        now = self._clock()
        async with self._units.writing() as store:
            if idempotency_key is not None:
                earlier = await store.request_by_key(client_id, idempotency_key)
                if earlier is not None:
                    return _replayed(earlier, digest), False
            key_id = None
            if mode is Mode.SEAL:
                seal = await store.seal_of(client_id)
                if seal is None or seal.key_id is None:
                    raise NoSeal("this client has no electronic seal; an officer registers one with "
                                 f"`acar seal assign {client_id} --voen ... --organization ...`")
                key_id = seal.key_id
            if entity_voen is not None:
                configured = await store.signing_entity(entity_voen)
                if configured is None or (configured.form is EntityForm.SEAL and configured.key_id is None):
                    raise EntityNotConfigured(
                        f"the legal entity {entity_voen} has no signing configuration; an officer sets it with "
                        f"`acar entity-signing set {entity_voen} --form seal|person`")
            lifetime = self.policy.seal_lifetime if mode is Mode.SEAL else self.policy.sign_lifetime
            new = NewRequest(
                id=new_request_id(), client_id=client_id, mode=mode, signer_fin=signer_fin, key_id=key_id,
                reason=reason, location=location, level=level, placement=placement, callback_url=callback,
                state=RequestState.APPROVED if mode is Mode.SEAL else RequestState.PENDING,
                idempotency_key=idempotency_key, body_digest=digest, created_at=now, expires_at=now + lifetime,
                documents=documents, entity_voen=entity_voen)
            if not await store.insert_request(new):  # the key was taken meanwhile by a concurrent request
                assert idempotency_key is not None  # noqa: S101 - only a key can conflict
                earlier = await store.request_by_key(client_id, idempotency_key)
                if earlier is None:
                    raise RuntimeError("an idempotency key conflicted, but its request is not readable")
                return _replayed(earlier, digest), False
            await store.audit("signing.request.created", actor=client_id, subject=new.id, detail={
                "mode": mode.value, "level": level.value, "documents": [
                    {"n": d.n, "sha256": d.sha256, "pages": d.pages} for d in documents],
                **({"signer_fin": signer_fin} if signer_fin else {}), **({"key_id": key_id} if key_id else {}),
                **({"entity_voen": entity_voen} if entity_voen else {})})
            created = await store.get_request(new.id, client_id)
        if created is None:
            raise RuntimeError("a stored request is not readable")
        return created, True

    async def _registered(self, voen: str) -> None:
        """The entity must be registered and active (EntityNotRegistered, EntityInactive otherwise)."""
        entity = await self._registry.entity(voen) if self._registry is not None else None
        if entity is None:
            raise EntityNotRegistered(f"no legal entity with VÖEN {voen} is registered")
        if not entity.active:
            raise EntityInactive(f"the legal entity {voen} is {entity.status}: nobody can sign for it")

    async def _documents(self, submitted: Sequence[SubmittedDocument],
                         placement: Placement | None) -> list[NewDocument]:
        if not submitted:
            raise TooManyDocuments("a request carries at least one document")
        if len(submitted) > self.policy.max_documents:
            raise TooManyDocuments(f"a request carries at most {self.policy.max_documents} documents "
                                   f"(ACAR_SIGNING_MAX_DOCUMENTS), not {len(submitted)}")
        documents = []
        for n, document in enumerate(submitted, start=1):
            filename = clean_filename(document.filename, n)
            if not document.content:
                raise InvalidDocument(f"document {n} ({filename}) is empty")
            try:
                inspected = await asyncio.to_thread(self._inspect, document.content)
            except SigningError as exc:
                exc.detail = f"document {n} ({filename}): {exc.detail}"
                exc.args = (exc.detail,)
                raise
            if placement is not None and placement.page > inspected.pages:
                raise InvalidPlacement(f"placement.page {placement.page} is beyond the {inspected.pages} pages of "
                                       f"document {n} ({filename})")
            content = inspected.content if inspected.content is not None else document.content
            documents.append(NewDocument(n=n, filename=filename, content=content, pages=inspected.pages,
                                         sha256=inspected.sha256, findings=inspected.findings))
        return documents

    async def get(self, request_id: str, client_id: str) -> RequestView:
        async with self._units.reading() as store:
            found = await store.get_request(request_id, client_id)
        if found is None:
            raise RequestNotFound("no such signing request")
        return found

    async def signed_document(self, request_id: str, client_id: str, n: int) -> tuple[RequestView, bytes]:
        """The signed PDF of document `n` (1-based) of a completed request."""
        async with self._units.reading() as store:
            request, signed = await store.signed_document(request_id, client_id, n)
        if request.state is not RequestState.COMPLETED:
            raise DocumentNotReady(f"the request is {request.state.value}; its signed documents are available "
                                   "once it is completed")
        if signed is None:
            raise DocumentDeleted("the signed document was deleted when its retention ran out "
                                  "(ACAR_SIGNING_RETENTION_HOURS); its digest stays in the request")
        return request, signed


def _mode_and_signer(submission: Submission) -> tuple[Mode, str | None]:
    try:
        mode = Mode(submission.mode or "")
    except ValueError:
        raise InvalidSigningRequest("mode must be seal or sign") from None
    if mode is Mode.SEAL:
        if submission.signer_fin:
            raise InvalidSigningRequest("seal mode is signed with the agency's own seal: drop signer_fin")
        return mode, None
    if not submission.signer_fin:
        raise SignerRequired("sign mode needs signer_fin: the FIN of the person who signs")
    try:
        return mode, normalize_fin(submission.signer_fin)
    except InvalidIdentifierFormat as exc:
        raise InvalidFin(f"signer_fin: {exc}") from None


def _entity_voen(submission: Submission, mode: Mode) -> str | None:
    """The VÖEN of the entity a sign-mode request is made for (keys.identifiers.check_voen), or None."""
    if submission.entity_voen is None or submission.entity_voen == "":
        return None
    if mode is not Mode.SIGN:
        raise InvalidSigningRequest("entity_voen needs sign mode: the entity's representative (signer_fin) "
                                    "approves; a seal request is sealed with the agency's own seal")
    if not isinstance(submission.entity_voen, str):
        raise InvalidVoen("entity_voen must be a string of ten digits")
    try:
        return check_voen(submission.entity_voen)
    except InvalidIdentifierFormat as exc:
        raise InvalidVoen(f"entity_voen: {exc}") from None


def _replayed(earlier: RequestView, digest: str) -> RequestView:
    if earlier.body_digest != digest:
        raise IdempotencyKeyReused("this Idempotency-Key was used before with another body; use a new key for a "
                                   "new request")
    return earlier

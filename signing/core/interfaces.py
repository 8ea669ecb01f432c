"""What the signing service works with: plain records and the storage Protocols it calls.

`signing.core.requests` (creating and reading requests) and `signing.core.jobs` (the durable worker) import only
this module for storage; `signing.sql.store` implements the Protocols on compiled Core statements, one store per
unit of work, whose transaction api/ (or the worker) opens and ends (STYLE habit 3). Nothing here knows a web
framework or a database.
"""

from __future__ import annotations

import datetime as dt
import enum
from collections.abc import Mapping, Sequence
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass, field
from typing import Any, BinaryIO, Final, Protocol

from signing.core.levels import PadesLevel


class Mode(enum.StrEnum):
    SEAL = "seal"
    """The calling agency's own electronic seal: no person involved."""
    SIGN = "sign"
    """A person named by FIN signs, after approving on the approval page."""


class EntityForm(enum.StrEnum):
    """How a request on behalf of a legal entity is signed (the entity's configuration, `signing_entities`)."""

    SEAL = "seal"
    """With the entity's own seal certificate (ETSI EN 319 412-3 legal person, organizationIdentifier NTRAZ-<VÖEN>),
    after its representative approved."""
    PERSON = "person"
    """With the representative's own signing certificate (ETSI EN 319 412-2), the representation recorded as a
    claimed role in the signer-attributes-v2 signed attribute (ETSI EN 319 122-1 section 5.2.6.1)."""


class RequestState(enum.StrEnum):
    """The states of a signing request (signing.core.requests.TRANSITIONS says which follow which)."""

    PENDING = "pending"
    """Sign mode: waiting for the signer's approval."""
    APPROVED = "approved"
    """Its documents are jobs, waiting for a worker (seal mode starts here)."""
    SIGNING = "signing"
    """A worker has taken one of its jobs."""
    COMPLETED = "completed"
    REJECTED = "rejected"
    EXPIRED = "expired"
    FAILED = "failed"

    @property
    def finished(self) -> bool:
        return self in (RequestState.COMPLETED, RequestState.REJECTED, RequestState.EXPIRED, RequestState.FAILED)


@dataclass(frozen=True, slots=True)
class Placement:
    """Where the visible signature goes: a 1-based page and a box (x1, y1, x2, y2) in PDF user-space points."""

    page: int
    box: tuple[float, float, float, float]

    def as_json(self) -> dict[str, Any]:
        return {"page": self.page, "box": list(self.box)}


@dataclass(frozen=True, slots=True)
class NewDocument:
    """A document accepted by the input policy, about to be stored."""

    n: int
    filename: str
    content: bytes
    pages: int
    sha256: str
    findings: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class NewRequest:
    """A validated request, about to be stored with its documents (and, when approved, their jobs)."""

    id: str
    client_id: str
    mode: Mode
    signer_fin: str | None
    key_id: str | None
    reason: str | None
    location: str | None
    level: PadesLevel
    placement: Placement | None
    callback_url: str | None
    state: RequestState
    idempotency_key: str | None
    body_digest: str
    created_at: dt.datetime
    expires_at: dt.datetime
    documents: Sequence[NewDocument]
    entity_voen: str | None = None
    """Sign mode on behalf of a legal entity: its VÖEN (the signer is its representative)."""


@dataclass(frozen=True, slots=True)
class DocumentView:
    """A document as its agency sees it: never its bytes."""

    n: int
    filename: str
    pages: int
    size: int
    sha256: str
    state: str
    signed_sha256: str | None = None
    findings: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class RequestView:
    """A request as its agency sees it."""

    id: str
    client_id: str
    mode: Mode
    state: RequestState
    level: PadesLevel
    signer_fin: str | None
    reason: str | None
    location: str | None
    created_at: dt.datetime
    updated_at: dt.datetime
    expires_at: dt.datetime
    failure_code: str | None
    failure_detail: str | None
    body_digest: str | None
    purged: bool
    documents: tuple[DocumentView, ...] = field(default=())
    entity_voen: str | None = None


@dataclass(frozen=True, slots=True)
class Seal:
    """An agency client's electronic seal: the legal person it names (ETSI EN 319 412-3) and its key."""

    client_id: str
    voen: str
    organization: str
    key_id: str | None


@dataclass(frozen=True, slots=True)
class ClaimedJob:
    """A job this worker claimed: its own until `leased_until`, as long as `leased_by` still names its claim."""

    id: str
    request_id: str
    n: int
    attempts: int
    leased_by: str
    leased_until: dt.datetime


@dataclass(frozen=True, slots=True)
class JobWork:
    """What signing a claimed job needs: the request's options and the input document."""

    request_id: str
    n: int
    client_id: str
    mode: Mode
    key_id: str | None
    level: PadesLevel
    reason: str | None
    location: str | None
    placement: Placement | None
    filename: str
    content: bytes | None
    """The input's first bytes (all of it, unless it is larger than one chunk of the store: read the rest with
    SigningStore.read_content); None once the input is gone (signed by another claim, or deleted): nothing to do."""
    size: int
    """The input's length in bytes."""
    sha256: str
    """The input's SHA-256 (hex) as submitted and approved: what is read back must match it before it is signed."""
    signer_fin: str | None = None
    entity_voen: str | None = None
    """A request on behalf of a legal entity: its mandate is checked again before the document is signed."""
    entity_form: EntityForm | None = None
    """How it is signed (fixed at the approval)."""


@dataclass(frozen=True, slots=True)
class SigningEntity:
    """A legal entity's signing configuration (signing's own table `signing_entities`): the form its
    representatives' signatures take, and for the seal form the name and key of its seal."""

    voen: str
    form: EntityForm
    organization: str
    key_id: str | None


@dataclass(frozen=True, slots=True)
class RegisteredEntity:
    """A legal entity as the registry knows it (MandateChecker.entity)."""

    voen: str
    name: str
    status: str

    @property
    def active(self) -> bool:
        return self.status == "active"


class MandateRefusal(enum.StrEnum):
    """Why a person may not sign for an entity (MandateCheck.refusal): each has its translated text on the pages
    (sign.mandate.<value>) and is named in the failure detail of a request refused at signing time."""

    NO_MANDATE = "no_mandate"
    NOT_YET_VALID = "not_yet_valid"
    EXPIRED = "expired"
    REVOKED = "revoked"
    NO_POWER = "no_power"
    ENTITY_INACTIVE = "entity_inactive"
    PERSON_INACTIVE = "person_inactive"


SIGN_DECLARATIONS: Final = "sign_declarations"
"""The power of a mandate that lets its holder sign declarations for the entity."""


@dataclass(frozen=True, slots=True)
class MandateCheck:
    """The outcome of a mandate check: the valid mandate with the power "sign_declarations" (its id, the person and
    entity it joins), or the refusal."""

    fin: str
    voen: str
    entity_name: str
    person_id: str | None
    mandate_id: str | None
    refusal: MandateRefusal | None

    @property
    def valid(self) -> bool:
        return self.refusal is None and self.mandate_id is not None

    def audit(self) -> dict[str, Any]:
        """What the audit trail records of a representation."""
        return {"representation": {"person_id": self.person_id, "fin": self.fin, "voen": self.voen,
                                   "entity_name": self.entity_name, "mandate_id": self.mandate_id,
                                   "power": SIGN_DECLARATIONS}}


class MandateChecker(Protocol):
    """The registry of legal entities and mandates, as signing needs it (implemented in api/ over idp's registry:
    signing never imports idp)."""

    async def entity(self, voen: str) -> RegisteredEntity | None:
        """The registered entity with this (normalized) VÖEN, whatever its status; None when there is none."""
    async def check(self, fin: str, voen: str, *, at: dt.datetime) -> MandateCheck:
        """Whether the person with `fin` holds, at `at`, a valid mandate with the power "sign_declarations" for the
        entity `voen` (begun, not expired, not revoked, the entity and the person active)."""


class SigningStore(Protocol):
    """The requests, documents, jobs and seals of one unit of work. Methods flush; the unit's owner commits."""

    # requests
    async def insert_request(self, request: NewRequest) -> bool:
        """Store the request, its documents and (when it is approved) one queued job per document; False, storing
        nothing, when this client already used its idempotency key (of two concurrent inserts one wins)."""
    async def request_by_key(self, client_id: str, idempotency_key: str) -> RequestView | None: ...
    async def get_request(self, request_id: str, client_id: str) -> RequestView | None:
        """The request with its documents, if `client_id` created it."""
    async def signed_document(self, request_id: str, client_id: str, n: int) -> tuple[RequestView, bytes | None]:
        """The request and the signed bytes of its document `n` (None when not signed or deleted); raises
        RequestNotFound for another client's request or an unknown document."""

    # seals
    async def seal_of(self, client_id: str) -> Seal | None: ...
    async def signing_entity(self, voen: str) -> SigningEntity | None:
        """The signing configuration of a legal entity (None when it has none)."""

    # jobs
    async def claim_jobs(self, *, now: dt.datetime, lease_until: dt.datetime, leased_by: str,
                         limit: int) -> list[ClaimedJob]:
        """Take up to `limit` due jobs (queued and due, or running with an expired lease) for this claim; their
        requests move from approved to signing."""
    async def job_work(self, job: ClaimedJob) -> JobWork | None:
        """The options and the input (its first chunk) of a claimed job; None when the claim was lost."""
    async def read_content(self, request_id: str, n: int, offset: int) -> bytes | None:
        """The next chunk of document `n`'s input from byte `offset` (empty past its end; None once it is gone)."""
    async def finish_job(self, job: ClaimedJob, *, signed: BinaryIO, signed_sha256: str, now: dt.datetime,
                         actor: str, detail: Mapping[str, Any] | None = None) -> bool:
        """Write the signed document (read from `signed` to its end, in chunks) and mark the job done, in this unit's
        transaction, if the claim still holds the job; complete the request when it was its last document. False
        when the claim was lost (nothing written: another claim signs it). `detail` is added to the
        signing.document.signed event (the representation of a signature for a legal entity)."""
    async def retry_job(self, job: ClaimedJob, *, error: str, not_before: dt.datetime, now: dt.datetime) -> bool:
        """Give the job back for a later attempt (a transient failure)."""
    async def fail_job(self, job: ClaimedJob, *, code: str, detail: str, now: dt.datetime, actor: str,
                       audit: Mapping[str, Any] | None = None) -> bool:
        """Fail the job, its document and its request (with the code and detail), and cancel the request's other
        jobs."""

    # housekeeping
    async def expire_requests(self, now: dt.datetime) -> int:
        """Pending requests past their expiry become expired."""
    async def purge_contents(self, before: dt.datetime, now: dt.datetime) -> int:
        """Delete the input and output bytes of requests finished before `before` (digests stay)."""

    async def audit(self, event_type: str, *, actor: str, subject: str | None = None,
                    detail: Mapping[str, Any] | None = None) -> None: ...


class SigningUnits(Protocol):
    """Opens units of work, each with its SigningStore: committed when the block ends normally, rolled back on an
    error (storage.direct.keeps_writes)."""

    def writing(self) -> AbstractAsyncContextManager[SigningStore]: ...
    def reading(self) -> AbstractAsyncContextManager[SigningStore]: ...

"""`SigningStore` in SQL: compiled Core statements on a unit of work (storage.direct), one store per unit.

The statements are module constants compiled once per dialect (docs/architecture.md "Units of work"); audit events
are deferred to the unit's COMMIT (storage.audit.DeferredAudit). `SqlSigningUnits` opens the units the request
service and the worker use. The jobs' claim and finish statements carry the exactly-once rule of
signing.core.jobs: a job is claimed with `SELECT ... FOR UPDATE SKIP LOCKED` and an UPDATE in one writing unit
(SQLite: under its one write lock, which the writing unit holds from its first statement), and only the claim named
in `leased_by` may finish it.
"""

from __future__ import annotations

import contextlib
import datetime as dt
from collections.abc import AsyncIterator, Callable, Mapping
from typing import Any, BinaryIO, Final

from sqlalchemy import Integer, LargeBinary, and_, bindparam, cast, delete, exists, func, insert, or_, select, update

from signing.core.errors import RequestNotFound
from signing.core.interfaces import (
    ClaimedJob,
    DocumentView,
    EntityForm,
    JobWork,
    Mode,
    NewRequest,
    Placement,
    RequestState,
    RequestView,
    Seal,
    SigningEntity,
)
from signing.core.levels import PadesLevel
from signing.sql.callbacks import purge_callbacks, record_callback
from signing.sql.claims import claim_due, claimable
from signing.sql.models import AgencySeal, SigningDocument, SigningJob, SigningRequest
from signing.sql.models import SigningEntity as SigningEntityRow
from storage.audit import DeferredAudit
from storage.base import new_uuid
from storage.direct import DirectDatabase, Transaction, insert_ignoring, table

_requests, _documents, _jobs, _seals = table(SigningRequest), table(SigningDocument), table(SigningJob), \
    table(AgencySeal)
_entities = table(SigningEntityRow)

_REQUEST_COLUMNS = (_requests.c.id, _requests.c.client_id, _requests.c.mode, _requests.c.state, _requests.c.level,
                    _requests.c.signer_fin, _requests.c.reason, _requests.c.location, _requests.c.created_at,
                    _requests.c.updated_at, _requests.c.expires_at, _requests.c.failure_code,
                    _requests.c.failure_detail, _requests.c.body_digest, _requests.c.purged_at,
                    _requests.c.entity_voen)
_DOCUMENT_COLUMNS = (_documents.c.n, _documents.c.filename, _documents.c.pages, _documents.c.size,
                     _documents.c.sha256, _documents.c.state, _documents.c.signed_sha256, _documents.c.findings)

INSERT_REQUEST = insert_ignoring(_requests, "client_id", "idempotency_key")
INSERT_DOCUMENT = insert(_documents)
INSERT_JOB = insert(_jobs)
REQUEST = select(*_REQUEST_COLUMNS).where(_requests.c.id == bindparam("id"),
                                          _requests.c.client_id == bindparam("client_id"))
REQUEST_BY_KEY = select(*_REQUEST_COLUMNS).where(_requests.c.client_id == bindparam("client_id"),
                                                 _requests.c.idempotency_key == bindparam("key"))
DOCUMENTS = select(*_DOCUMENT_COLUMNS).where(_documents.c.request_id == bindparam("id")).order_by(_documents.c.n)
SIGNED = select(_documents.c.signed).where(_documents.c.request_id == bindparam("id"),
                                           _documents.c.n == bindparam("n"))
SEAL = select(_seals.c.client_id, _seals.c.voen, _seals.c.organization, _seals.c.key_id) \
    .where(_seals.c.client_id == bindparam("client_id"))
SIGNING_ENTITY = select(_entities.c.voen, _entities.c.form, _entities.c.organization, _entities.c.key_id) \
    .where(_entities.c.voen == bindparam("voen"))

# jobs
_DUE = or_(and_(_jobs.c.state == "queued", _jobs.c.not_before <= bindparam("now")),
           and_(_jobs.c.state == "running", _jobs.c.leased_until < bindparam("now")))
CLAIMABLE = claimable(_jobs, _DUE, _jobs.c.not_before, _jobs.c.id)
"""The due jobs, locked for this unit with FOR UPDATE SKIP LOCKED (signing.sql.claims, shared with the callbacks)."""
CLAIM_JOB = update(_jobs).where(_jobs.c.id == bindparam("id")).values(
    state="running", attempts=_jobs.c.attempts + 1, leased_until=bindparam("lease_until"),
    leased_by=bindparam("leased_by"), updated_at=bindparam("now")) \
    .returning(_jobs.c.id, _jobs.c.request_id, _jobs.c.n, _jobs.c.attempts)
START_REQUEST = update(_requests).where(_requests.c.id == bindparam("id"), _requests.c.state == "approved") \
    .values(state="signing", updated_at=bindparam("now"))
_HELD = and_(_jobs.c.id == bindparam("job_id"), _jobs.c.state == "running", _jobs.c.leased_by == bindparam("claim"))
HELD = select(_jobs.c.id).where(_HELD)
JOB_QUEUE = select(_jobs.c.state, func.count(), func.min(_jobs.c.created_at)) \
    .where(or_(_jobs.c.state == "queued", _jobs.c.state == "running")).group_by(_jobs.c.state)
"""The jobs waiting or being signed: how many of each, and since when the oldest was created (the metrics)."""
CONTENT_CHUNK: Final = 16 * 1024 * 1024
"""The most bytes of a document one statement carries, either way. A 50 MB document in one statement costs the
worker several copies of it at once in the driver (asyncpg assembles the received message, then decodes it; it
encodes a parameter, then copies it into the message, and the transport buffers what the socket did not take) and
leaves the received pieces as fragmented heap; in chunks, a few chunks at most (issue 13: 400 MB for a 50 MB PDF)."""


def _chunk(column: Any, offset: Any) -> Any:
    """`CONTENT_CHUNK` bytes of a binary column from the 0-based `offset` (substr counts from 1, on both databases)."""
    return func.substr(column, offset + 1, CONTENT_CHUNK, type_=LargeBinary)


JOB_WORK = select(_requests.c.client_id, _requests.c.mode, _requests.c.key_id, _requests.c.level,
                  _requests.c.reason, _requests.c.location, _requests.c.placement, _documents.c.filename,
                  _chunk(_documents.c.content, 0), func.length(_documents.c.content), _documents.c.sha256,
                  _requests.c.signer_fin, _requests.c.entity_voen, _requests.c.entity_form) \
    .join(_documents, _documents.c.request_id == _requests.c.id) \
    .where(_requests.c.id == bindparam("request_id"), _documents.c.n == bindparam("n"))
"""The options, and the input's first chunk and length: a small document is read whole by this one statement."""
CONTENT = select(_chunk(_documents.c.content, bindparam("offset", type_=Integer))) \
    .where(_documents.c.request_id == bindparam("request_id"), _documents.c.n == bindparam("n"))
JOB_DONE = update(_jobs).where(_HELD).values(state="done", leased_until=None, last_error=None,
                                             updated_at=bindparam("now"))
DOCUMENT_SIGNED = update(_documents).where(_documents.c.request_id == bindparam("request_id"),
                                           _documents.c.n == bindparam("n")) \
    .values(state="signed", signed=bindparam("signed"), signed_sha256=bindparam("signed_sha256"),
            signed_at=bindparam("now"), content=None)
"""The input goes with the signature: it is not needed any more, and the output is what is delivered."""
APPEND_SIGNED = update(_documents).where(_documents.c.request_id == bindparam("request_id"),
                                         _documents.c.n == bindparam("n")) \
    .values(signed=cast(_documents.c.signed.concat(bindparam("chunk", type_=LargeBinary)), LargeBinary))
"""The signed document's next chunk (bytea || bytea on PostgreSQL; SQLite's || makes text of blobs: cast back)."""
APPEND_CONTENT = update(_documents).where(_documents.c.request_id == bindparam("request_id"),
                                          _documents.c.n == bindparam("n")) \
    .values(content=cast(_documents.c.content.concat(bindparam("chunk", type_=LargeBinary)), LargeBinary))
"""A submitted document's next chunk, in the transaction that stores its request."""
LOCK_REQUEST = select(_requests.c.id).where(_requests.c.id == bindparam("request_id")).with_for_update()
"""Before a request's completion is decided: two workers finishing its last two documents at once would each see
the other's document unsigned (READ COMMITTED, neither committed yet) and neither would complete it. The second
waits here for the first to commit, and its next statement sees the first's document signed."""
_UNSIGNED = select(_documents.c.n).where(_documents.c.request_id == _requests.c.id, _documents.c.state != "signed")
COMPLETE_REQUEST = update(_requests).where(_requests.c.id == bindparam("request_id"),
                                           _requests.c.state == "signing", ~exists(_UNSIGNED)) \
    .values(state="completed", updated_at=bindparam("now"), finished_at=bindparam("now")) \
    .returning(_requests.c.client_id)
JOB_RETRY = update(_jobs).where(_HELD).values(state="queued", leased_until=None, leased_by=None,
                                              not_before=bindparam("not_before"), last_error=bindparam("error"),
                                              updated_at=bindparam("now"))
JOB_FAILED = update(_jobs).where(_HELD).values(state="failed", leased_until=None, last_error=bindparam("error"),
                                               updated_at=bindparam("now"))
DOCUMENT_FAILED = update(_documents).where(_documents.c.request_id == bindparam("request_id"),
                                           _documents.c.n == bindparam("n")).values(state="failed")
CANCEL_JOBS = update(_jobs).where(_jobs.c.request_id == bindparam("request_id"),
                                  or_(_jobs.c.state == "queued", _jobs.c.state == "running")) \
    .values(state="failed", leased_until=None, last_error="cancelled: another document of the request failed",
            updated_at=bindparam("now"))
FAIL_REQUEST = update(_requests).where(_requests.c.id == bindparam("request_id"),
                                       or_(_requests.c.state == "approved", _requests.c.state == "signing")) \
    .values(state="failed", failure_code=bindparam("code"), failure_detail=bindparam("detail"),
            updated_at=bindparam("now"), finished_at=bindparam("now")).returning(_requests.c.client_id)

# housekeeping
EXPIRE_REQUESTS = update(_requests).where(_requests.c.state == "pending", _requests.c.expires_at <= bindparam("now")) \
    .values(state="expired", updated_at=bindparam("now"), finished_at=bindparam("now")).returning(_requests.c.id)
_PURGEABLE = select(_requests.c.id).where(_requests.c.finished_at < bindparam("before"),
                                          _requests.c.purged_at.is_(None))
PURGE_DOCUMENTS = update(_documents).where(_documents.c.request_id.in_(_PURGEABLE.scalar_subquery())) \
    .values(content=None, signed=None)
MARK_PURGED = update(_requests).where(_requests.c.finished_at < bindparam("before"), _requests.c.purged_at.is_(None)) \
    .values(purged_at=bindparam("now"))
DELETE_FINISHED_JOBS = delete(_jobs).where(_jobs.c.request_id.in_(
    select(_requests.c.id).where(_requests.c.purged_at.is_not(None)).scalar_subquery()))

# seals (the officer's command, signing.sql.seals)
INSERT_SEAL = insert(_seals)
UPDATE_SEAL = update(_seals).where(_seals.c.client_id == bindparam("client_id")).values(
    voen=bindparam("voen"), organization=bindparam("organization"), key_id=bindparam("key_id"),
    updated_at=bindparam("now"))


def _request_view(row: tuple[Any, ...], documents: tuple[DocumentView, ...] = ()) -> RequestView:
    (id_, client_id, mode, state, level, fin, reason, location, created, updated, expires, code, detail, digest,
     purged_at, entity_voen) = row
    return RequestView(id=id_, client_id=client_id, mode=Mode(mode), state=RequestState(state),
                       level=PadesLevel(level), signer_fin=fin, reason=reason, location=location, created_at=created,
                       updated_at=updated, expires_at=expires, failure_code=code, failure_detail=detail,
                       body_digest=digest, purged=purged_at is not None, documents=documents,
                       entity_voen=entity_voen)


def _document_view(row: tuple[Any, ...]) -> DocumentView:
    n, filename, pages, size, sha256, state, signed_sha256, findings = row
    return DocumentView(n=n, filename=filename, pages=pages, size=size, sha256=sha256, state=state,
                        signed_sha256=signed_sha256, findings=tuple(findings or ()))


class SqlSigningStore:
    """`SigningStore` on one unit of work (see module docstring)."""

    def __init__(self, tx: Transaction, *, request_id: str | None = None) -> None:
        self.tx = tx
        self._audit = DeferredAudit(tx, request_id=request_id)

    # requests
    async def insert_request(self, request: NewRequest) -> bool:
        inserted = await self.tx.execute(
            INSERT_REQUEST[self.tx.dialect_name], id=request.id, client_id=request.client_id, mode=request.mode.value,
            signer_fin=request.signer_fin, key_id=request.key_id, reason=request.reason, location=request.location,
            level=request.level.value, placement=request.placement.as_json() if request.placement else None,
            callback_url=request.callback_url, state=request.state.value, failure_code=None, failure_detail=None,
            idempotency_key=request.idempotency_key, body_digest=request.body_digest, created_at=request.created_at,
            updated_at=request.created_at, expires_at=request.expires_at, finished_at=None, purged_at=None,
            entity_voen=request.entity_voen, entity_form=None, mandate_id=None)
        if inserted != 1:
            return False
        for document in request.documents:
            content = document.content  # a large one in chunks (CONTENT_CHUNK); a whole slice is the same bytes
            await self.tx.execute(INSERT_DOCUMENT, request_id=request.id, n=document.n, filename=document.filename,
                                  pages=document.pages, size=len(content), sha256=document.sha256,
                                  findings=list(document.findings), content=content[:CONTENT_CHUNK],
                                  state="pending", signed=None, signed_sha256=None, signed_at=None)
            for offset in range(CONTENT_CHUNK, len(content), CONTENT_CHUNK):
                await self.tx.execute(APPEND_CONTENT, request_id=request.id, n=document.n,
                                      chunk=content[offset:offset + CONTENT_CHUNK])
        if request.state is RequestState.APPROVED:
            await self.queue_jobs(request.id, [d.n for d in request.documents], request.created_at)
        return True

    async def queue_jobs(self, request_id: str, numbers: list[int], now: dt.datetime) -> None:
        """One queued job per document, due now (seal requests at once; sign requests once approved)."""
        await self.tx.execute_many(INSERT_JOB, [
            {"id": new_uuid(), "request_id": request_id, "n": n, "state": "queued", "attempts": 0, "not_before": now,
             "leased_until": None, "leased_by": None, "last_error": None, "created_at": now, "updated_at": now}
            for n in numbers])

    async def request_by_key(self, client_id: str, idempotency_key: str) -> RequestView | None:
        row = await self.tx.one(REQUEST_BY_KEY, client_id=client_id, key=idempotency_key)
        return await self._with_documents(row) if row is not None else None

    async def get_request(self, request_id: str, client_id: str) -> RequestView | None:
        if len(request_id) > 32:
            return None
        row = await self.tx.one(REQUEST, id=request_id, client_id=client_id)
        return await self._with_documents(row) if row is not None else None

    async def _with_documents(self, row: tuple[Any, ...]) -> RequestView:
        documents = tuple(_document_view(r) for r in await self.tx.all(DOCUMENTS, id=row[0]))
        return _request_view(row, documents)

    async def signed_document(self, request_id: str, client_id: str, n: int) -> tuple[RequestView, bytes | None]:
        request = await self.get_request(request_id, client_id)
        if request is None or not any(d.n == n for d in request.documents):
            raise RequestNotFound("no such signing request or document")
        row = await self.tx.one(SIGNED, id=request_id, n=n)
        return request, row[0] if row is not None else None

    # seals
    async def seal_of(self, client_id: str) -> Seal | None:
        row = await self.tx.one(SEAL, client_id=client_id)
        return Seal(*row) if row is not None else None

    async def signing_entity(self, voen: str) -> SigningEntity | None:
        row = await self.tx.one(SIGNING_ENTITY, voen=voen)
        if row is None:
            return None
        voen_, form, organization, key_id = row
        return SigningEntity(voen=voen_, form=EntityForm(form), organization=organization, key_id=key_id)

    async def save_seal(self, seal: Seal, now: dt.datetime) -> None:
        if not await self.tx.execute(UPDATE_SEAL, client_id=seal.client_id, voen=seal.voen,
                                     organization=seal.organization, key_id=seal.key_id, now=now):
            await self.tx.execute(INSERT_SEAL, client_id=seal.client_id, voen=seal.voen,
                                  organization=seal.organization, key_id=seal.key_id, created_at=now, updated_at=now)

    # jobs
    async def job_queue(self) -> dict[str, tuple[int, dt.datetime | None]]:
        """State ("queued", "running") -> (jobs, creation time of the oldest): the queue's depth and age."""
        return {state: (int(count), oldest) for state, count, oldest in await self.tx.all(JOB_QUEUE)}

    async def claim_jobs(self, *, now: dt.datetime, lease_until: dt.datetime, leased_by: str,
                         limit: int) -> list[ClaimedJob]:
        jobs = [ClaimedJob(id=id_, request_id=request_id, n=n, attempts=attempts, leased_by=leased_by,
                           leased_until=lease_until)
                for id_, request_id, n, attempts in await claim_due(
                    self.tx, CLAIMABLE, CLAIM_JOB, limit=limit, now=now, lease_until=lease_until,
                    leased_by=leased_by)]
        for request_id in sorted({job.request_id for job in jobs}):
            await self.tx.execute(START_REQUEST, id=request_id, now=now)
        return jobs

    async def job_work(self, job: ClaimedJob) -> JobWork | None:
        if await self.tx.one(HELD, job_id=job.id, claim=job.leased_by) is None:
            return None
        row = await self.tx.one(JOB_WORK, request_id=job.request_id, n=job.n)
        if row is None:
            return None
        (client_id, mode, key_id, level, reason, location, placement, filename, content, size, sha256, signer_fin,
         entity_voen, entity_form) = row
        return JobWork(request_id=job.request_id, n=job.n, client_id=client_id, mode=Mode(mode), key_id=key_id,
                       level=PadesLevel(level), reason=reason, location=location,
                       placement=Placement(page=placement["page"], box=tuple(placement["box"]))
                       if placement else None, filename=filename, content=content, size=size or 0, sha256=sha256,
                       signer_fin=signer_fin, entity_voen=entity_voen,
                       entity_form=EntityForm(entity_form) if entity_form else None)

    async def read_content(self, request_id: str, n: int, offset: int) -> bytes | None:
        row = await self.tx.one(CONTENT, request_id=request_id, n=n, offset=offset)
        return row[0] if row is not None else None

    async def finish_job(self, job: ClaimedJob, *, signed: BinaryIO, signed_sha256: str, now: dt.datetime,
                         actor: str, detail: Mapping[str, Any] | None = None) -> bool:
        if await self.tx.execute(JOB_DONE, job_id=job.id, claim=job.leased_by, now=now) != 1:
            return False
        await self.tx.execute(DOCUMENT_SIGNED, request_id=job.request_id, n=job.n,
                              signed=signed.read(CONTENT_CHUNK), signed_sha256=signed_sha256, now=now)
        while chunk := signed.read(CONTENT_CHUNK):  # a large document: the rest in chunks, in this transaction
            await self.tx.execute(APPEND_SIGNED, request_id=job.request_id, n=job.n, chunk=chunk)
        await self.audit("signing.document.signed", actor=actor, subject=job.request_id,
                         detail={"n": job.n, "sha256": signed_sha256, "attempts": job.attempts, **(detail or {})})
        await self.tx.one(LOCK_REQUEST, request_id=job.request_id)
        completed = await self.tx.one(COMPLETE_REQUEST, request_id=job.request_id, now=now)
        if completed is not None:
            await self.audit("signing.request.completed", actor=actor, subject=job.request_id,
                             detail={"client_id": completed[0]})
            await record_callback(self.tx, job.request_id, now=now)
        return True

    async def retry_job(self, job: ClaimedJob, *, error: str, not_before: dt.datetime, now: dt.datetime) -> bool:
        return await self.tx.execute(JOB_RETRY, job_id=job.id, claim=job.leased_by, not_before=not_before,
                                     error=error[:500], now=now) == 1

    async def fail_job(self, job: ClaimedJob, *, code: str, detail: str, now: dt.datetime, actor: str,
                       audit: Mapping[str, Any] | None = None) -> bool:
        if await self.tx.execute(JOB_FAILED, job_id=job.id, claim=job.leased_by, error=f"{code}: {detail}"[:500],
                                 now=now) != 1:
            return False
        await self.tx.execute(DOCUMENT_FAILED, request_id=job.request_id, n=job.n)
        await self.tx.execute(CANCEL_JOBS, request_id=job.request_id, now=now)
        failed = await self.tx.one(FAIL_REQUEST, request_id=job.request_id, code=code[:64], detail=detail[:500],
                                   now=now)
        if failed is not None:
            await self.audit("signing.request.failed", actor=actor, subject=job.request_id,
                             detail={"client_id": failed[0], "code": code, "n": job.n, **(audit or {})})
            await record_callback(self.tx, job.request_id, now=now)
        return True

    # housekeeping
    async def expire_requests(self, now: dt.datetime) -> int:
        expired = await self.tx.all(EXPIRE_REQUESTS, now=now)
        for (request_id,) in expired:
            await self.audit("signing.request.expired", actor="scheduler", subject=request_id)
            await record_callback(self.tx, request_id, now=now)
        return len(expired)

    async def purge_contents(self, before: dt.datetime, now: dt.datetime) -> int:
        await self.tx.execute(PURGE_DOCUMENTS, before=before)
        purged = await self.tx.execute(MARK_PURGED, before=before, now=now)
        await self.tx.execute(DELETE_FINISHED_JOBS)
        await purge_callbacks(self.tx)
        return purged

    async def audit(self, event_type: str, *, actor: str, subject: str | None = None,
                    detail: Mapping[str, Any] | None = None) -> None:
        await self._audit.record(event_type, actor=actor, subject=subject, detail=detail)


class SqlSigningUnits:
    """`SigningUnits` on the database's units of work (storage.direct)."""

    def __init__(self, database: DirectDatabase, *, request_id: Callable[[], str | None] | None = None) -> None:
        self._db = database
        self._request_id = request_id
        """Gives the current request's id for the audit events (api.logging.request_id_var.get)."""

    def _rid(self) -> str | None:
        return self._request_id() if self._request_id is not None else None

    @contextlib.asynccontextmanager
    async def writing(self) -> AsyncIterator[SqlSigningStore]:
        async with self._db.transaction() as tx:
            yield SqlSigningStore(tx, request_id=self._rid())

    @contextlib.asynccontextmanager
    async def reading(self) -> AsyncIterator[SqlSigningStore]:
        async with self._db.reading() as tx:
            yield SqlSigningStore(tx, request_id=self._rid())

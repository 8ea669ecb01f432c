"""`CallbackStore` in SQL (signing.core.callbacks), and `record_callback`, which the signing store calls in the
transaction that moves a request to its final state.

Statements are module constants on the models, run on a unit of work (storage.direct); callbacks are claimed with
the jobs' mechanism (signing.sql.claims: SELECT ... FOR UPDATE SKIP LOCKED, then an UPDATE per row). A claimed
callback's `next_attempt_at` is moved ahead by the lease: a worker that dies mid-attempt leaves it due again when
the lease runs out. Only the claim named in `leased_by` records the outcome.
"""

from __future__ import annotations

import contextlib
import datetime as dt
from collections.abc import AsyncIterator

from sqlalchemy import bindparam, delete, insert, select, update

from signing.core.callbacks import CallbackEvent, ClaimedCallback, Outcome
from signing.sql.claims import claim_due, claimable
from signing.sql.models import SigningCallback, SigningDocument, SigningRequest
from storage.audit import DeferredAudit
from storage.base import new_uuid
from storage.direct import DirectDatabase, Transaction, table

_callbacks, _requests, _documents = table(SigningCallback), table(SigningRequest), table(SigningDocument)

FINISHED = select(_requests.c.client_id, _requests.c.callback_url, _requests.c.state, _requests.c.failure_code,
                  _requests.c.failure_detail).where(_requests.c.id == bindparam("request_id"))
SIGNED_DIGESTS = select(_documents.c.n, _documents.c.signed_sha256) \
    .where(_documents.c.request_id == bindparam("request_id")).order_by(_documents.c.n)
INSERT_CALLBACK = insert(_callbacks)

_PENDING = _callbacks.c.state == "pending"
CLAIMABLE = claimable(_callbacks, _PENDING & (_callbacks.c.next_attempt_at <= bindparam("now")),
                      _callbacks.c.next_attempt_at, _callbacks.c.id)
CLAIM = update(_callbacks).where(_callbacks.c.id == bindparam("id"), _PENDING) \
    .values(next_attempt_at=bindparam("lease_until"), leased_by=bindparam("leased_by"), updated_at=bindparam("now")) \
    .returning(_callbacks.c.id, _callbacks.c.request_id, _callbacks.c.client_id, _callbacks.c.url,
               _callbacks.c.claims, _callbacks.c.body, _callbacks.c.attempts, _callbacks.c.created_at)
_HELD = (_callbacks.c.id == bindparam("callback_id")) & _PENDING & (_callbacks.c.leased_by == bindparam("claim"))
SAVE_BODY = update(_callbacks).where(_HELD).values(body=bindparam("body"), updated_at=bindparam("now"))
DELIVERED = update(_callbacks).where(_HELD).values(
    state="delivered", attempts=bindparam("attempts"), last_status=bindparam("status"), last_error=None,
    leased_by=None, delivered_at=bindparam("now"), updated_at=bindparam("now"))
RETRY = update(_callbacks).where(_HELD).values(
    attempts=bindparam("attempts"), last_status=bindparam("status"), last_error=bindparam("error"),
    next_attempt_at=bindparam("next_attempt_at"), leased_by=None, updated_at=bindparam("now"))
EXPIRED = update(_callbacks).where(_HELD).values(
    state="expired", attempts=bindparam("attempts"), last_status=bindparam("status"), last_error=bindparam("error"),
    leased_by=None, updated_at=bindparam("now"))

PURGE_FINISHED = delete(_callbacks).where(_callbacks.c.state != "pending", _callbacks.c.request_id.in_(
    select(_requests.c.id).where(_requests.c.purged_at.is_not(None)).scalar_subquery()))
"""Delivered and expired callbacks of requests whose documents the retention deleted (their audit events stay)."""


async def purge_callbacks(tx: Transaction) -> int:
    """Delete the finished callbacks of purged requests (in the housekeeping's unit, after the purge)."""
    return await tx.execute(PURGE_FINISHED)


async def record_callback(tx: Transaction, request_id: str, *, now: dt.datetime) -> bool:
    """In the caller's unit, right after `request_id` reached its final state: record its callback, if the request
    named a callback URL, with the event as it is now (state, signed documents' digests, failure). False when there
    is no callback URL (nothing written)."""
    row = await tx.one(FINISHED, request_id=request_id)
    if row is None or row[1] is None:
        return False
    client_id, url, state, failure_code, failure_detail = row
    documents: tuple[tuple[int, str], ...] = ()
    if state == "completed":
        documents = tuple((n, digest) for n, digest in await tx.all(SIGNED_DIGESTS, request_id=request_id))
    event = CallbackEvent(request_id=request_id, state=state, documents=documents, failure_code=failure_code,
                          failure_detail=failure_detail)
    await tx.execute(INSERT_CALLBACK, id=new_uuid(), request_id=request_id, client_id=client_id, url=url,
                     claims=event.claims(), body=None, state="pending", attempts=0, next_attempt_at=now,
                     leased_by=None, last_status=None, last_error=None, created_at=now, updated_at=now,
                     delivered_at=None)
    return True


class SqlCallbackStore:
    """`signing.core.callbacks.CallbackStore` on one unit of work."""

    def __init__(self, tx: Transaction) -> None:
        self.tx = tx
        self._audit = DeferredAudit(tx)

    async def claim(self, *, now: dt.datetime, lease_until: dt.datetime, leased_by: str,
                    limit: int) -> list[ClaimedCallback]:
        rows = await claim_due(self.tx, CLAIMABLE, CLAIM, limit=limit, now=now, lease_until=lease_until,
                               leased_by=leased_by)
        return [ClaimedCallback(id=id_, request_id=request_id, client_id=client_id, url=url, claims=claims,
                                body=body, attempts=attempts, created_at=created_at, leased_by=leased_by)
                for id_, request_id, client_id, url, claims, body, attempts, created_at in rows]

    async def save_body(self, callback: ClaimedCallback, body: str, *, now: dt.datetime) -> bool:
        return await self.tx.execute(SAVE_BODY, callback_id=callback.id, claim=callback.leased_by, body=body,
                                     now=now) == 1

    async def record(self, callback: ClaimedCallback, outcome: Outcome, *, now: dt.datetime) -> bool:
        held = {"callback_id": callback.id, "claim": callback.leased_by, "attempts": outcome.attempts,
                "status": outcome.status, "now": now}
        error = outcome.error[:500] if outcome.error is not None else None
        if outcome.result == "delivered":
            written = await self.tx.execute(DELIVERED, **held)
        elif outcome.result == "retrying":
            written = await self.tx.execute(RETRY, **held, error=error, next_attempt_at=outcome.next_attempt_at)
        else:
            written = await self.tx.execute(EXPIRED, **held, error=error)
        if written != 1:
            return False
        if outcome.result != "retrying":
            detail = {"client_id": callback.client_id, "callback_id": callback.id, "attempts": outcome.attempts,
                      "status": outcome.status, "state": callback.claims.get("state")}
            if outcome.result == "expired":
                detail["error"] = error
            await self._audit.record(f"signing.callback.{outcome.result}", actor="signing-callbacks",
                                     subject=callback.request_id, detail=detail, clock=now)
        return True


class SqlCallbackUnits:
    """`signing.core.callbacks.CallbackUnits` on the database's units of work (storage.direct)."""

    def __init__(self, database: DirectDatabase) -> None:
        self._db = database

    @contextlib.asynccontextmanager
    async def writing(self) -> AsyncIterator[SqlCallbackStore]:
        async with self._db.transaction() as tx:
            yield SqlCallbackStore(tx)

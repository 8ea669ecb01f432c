"""The audit trail: an append-only log of security-relevant events (issuance, login, revocation, ...).

Events carry who acted, on what, and a small JSON detail; never a token, secret or private key.
"""

from __future__ import annotations

import asyncio
import datetime as dt
from collections.abc import Mapping
from typing import Any, Protocol

from sqlalchemy import JSON, String, insert
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import Mapped, mapped_column

from storage.base import Base, UTCDateTime, new_uuid, utcnow
from storage.direct import DirectDatabase, table


class AuditEvent(Base):
    __tablename__ = "audit_events"

    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_uuid)
    occurred_at: Mapped[dt.datetime] = mapped_column(UTCDateTime(), default=utcnow, index=True)
    event_type: Mapped[str] = mapped_column(String(64), index=True)
    actor: Mapped[str] = mapped_column(String(200))
    subject: Mapped[str | None] = mapped_column(String(200), index=True)
    request_id: Mapped[str | None] = mapped_column(String(64))
    detail: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)


class AuditSink(Protocol):
    """Where a domain service hands an audit event that must be written before its result leaves (the TSA's
    granted timestamps, client_credentials tokens): `record` returns once the event is committed, and raises
    what the database raised. GroupCommitAuditLog is the production implementation."""

    async def record(self, event_type: str, *, actor: str, subject: str | None = None,
                     detail: dict[str, Any] | None = None, request_id: str | None = None,
                     clock: dt.datetime | None = None) -> None: ...


INSERT_AUDIT = insert(table(AuditEvent))
"""One audit_events row, for direct units of work (storage.direct): parameters from `audit_row`."""


def audit_row(event_type: str, *, actor: str, subject: str | None = None, detail: Mapping[str, Any] | None = None,
              request_id: str | None = None, clock: dt.datetime | None = None) -> dict[str, Any]:
    """The columns of one audit event (the arguments of `record_event`) for INSERT_AUDIT."""
    return {"id": new_uuid(), "occurred_at": clock or utcnow(), "event_type": event_type, "actor": actor,
            "subject": subject, "request_id": request_id, "detail": dict(detail) if detail is not None else {}}


def record_event(
    session: AsyncSession,
    event_type: str,
    *,
    actor: str,
    subject: str | None = None,
    detail: dict[str, Any] | None = None,
    request_id: str | None = None,
    clock: dt.datetime | None = None,
) -> AuditEvent:
    """Add an audit event to the caller's unit of work (it is written when the caller commits)."""
    event = AuditEvent(
        event_type=event_type,
        actor=actor,
        subject=subject,
        detail=detail or {},
        request_id=request_id,
        occurred_at=clock or utcnow(),
    )
    session.add(event)
    return event


class GroupCommitAuditLog:
    """Writes audit events of many concurrent requests in shared transactions (group commit).

    For hot endpoints whose only write is their audit event (the token endpoint's client_credentials grant, the
    time-stamp authority): `record` returns once the event is committed, like a transaction of its own, but
    events arriving while a commit is in flight are written together by the next one, so a busy node pays one
    round trip per batch instead of per request. No timer delays a lone event: an idle log commits it at once.
    A batch is one unit of work with its rows deferred (storage.direct: on PostgreSQL one atomic executemany).

    On PostgreSQL a second batch may be committing while the first is (`in_flight`): the server's process works
    on the first while this one serves requests and gathers the second, instead of idling until the first
    returns. SQLite's units take turns on one connection, so there one batch is in flight at a time. The order
    in which two batches commit is not defined (each event carries its own time). One instance serves one
    event loop.
    """

    def __init__(self, database: DirectDatabase, *, max_batch: int = 500, in_flight: int | None = None) -> None:
        self._db = database
        self._max_batch = max_batch
        self._in_flight = in_flight or (2 if database.dialect.name == "postgresql" else 1)
        self._pending: list[tuple[dict[str, Any], asyncio.Future[None]]] = []
        self._writers: dict[asyncio.Task[None], list[tuple[dict[str, Any], asyncio.Future[None]]]] = {}
        """Each writer and the batch it is committing."""
        self._gatherer: asyncio.Task[None] | None = None
        """The writer waiting one loop turn for the events of requests already under way: new events join its
        batch."""

    async def record(self, event_type: str, *, actor: str, subject: str | None = None,
                     detail: dict[str, Any] | None = None, request_id: str | None = None,
                     clock: dt.datetime | None = None) -> None:
        """Commit one event (the arguments of `record_event`); raises what the database raised."""
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        fields = {"event_type": event_type, "actor": actor, "subject": subject, "detail": detail,
                  "request_id": request_id, "clock": clock}
        self._pending.append((fields, done))
        if self._gatherer is None and len(self._writers) < self._in_flight:
            self._gatherer = writer = asyncio.create_task(self._write())
            self._writers[writer] = []
            writer.add_done_callback(self._stopped)
        await done

    async def _write(self) -> None:
        me = asyncio.current_task()
        assert me is not None  # noqa: S101 - a task
        while True:
            await asyncio.sleep(0)  # one loop turn: requests already under way add their events to this batch
            batch, self._pending = self._pending[:self._max_batch], self._pending[self._max_batch:]
            self._writers[me] = batch
            self._gatherer = None
            if not batch:
                break
            error = await self._commit(batch)
            if error is not None and len(batch) > 1:
                # one bad event must not fail the others that shared its transaction: write each alone
                for item in batch:
                    _settle([item], await self._commit([item]))
            else:
                _settle(batch, error)
            self._writers[me] = []
            if not self._pending or self._gatherer is not None:
                break  # nothing left, or another writer gathers it
            self._gatherer = me
        # leave now, not in the done callback a loop turn later: an event recorded in between would find the
        # writers all busy and wait for a writer that has finished
        del self._writers[me]

    def _stopped(self, writer: asyncio.Task[None]) -> None:
        """A writer ended. Cancelled (shutdown), even before its first step: nobody will write its batch, nor the
        queue if it was the last writer (a writer still committing takes the queue over when it is done); their
        callers get an error instead of waiting for ever."""
        batch = self._writers.pop(writer, [])
        if self._gatherer is writer:
            self._gatherer = None
        if not writer.cancelled() and writer.exception() is None:
            return
        closed = RuntimeError("the audit log stopped before the event was known to be written")
        _settle(batch, closed)
        if not self._writers:
            _settle(self._pending, closed)
            self._pending = []

    async def _commit(self, batch: list[tuple[dict[str, Any], asyncio.Future[None]]]) -> Exception | None:
        try:
            async with self._db.transaction() as tx:  # on PostgreSQL one atomic executemany (Transaction.finish)
                for fields, _ in batch:
                    tx.defer(INSERT_AUDIT, **audit_row(**fields))
        except Exception as exc:  # noqa: BLE001 - handed to the waiting callers, who re-raise it
            return exc
        return None


def _settle(waiting: list[tuple[dict[str, Any], asyncio.Future[None]]], error: Exception | None) -> None:
    for _, done in waiting:
        if done.done():  # the caller went away (cancelled); its event is written all the same
            continue
        if error is None:
            done.set_result(None)
        else:
            done.set_exception(error)

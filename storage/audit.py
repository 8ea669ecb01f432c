"""The audit trail: an append-only log of security-relevant events (issuance, login, revocation, ...).

Events carry who acted, on what, and a small JSON detail; never a token, secret or private key.
"""

from __future__ import annotations

import asyncio
import contextvars
import datetime as dt
from collections.abc import Mapping
from typing import Any, Protocol

from sqlalchemy import JSON, String, delete, insert
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import Mapped, mapped_column

from storage.base import Base, UTCDateTime, new_uuid, utcnow
from storage.direct import DirectDatabase, Transaction, table


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
    """Where audit events go. Two implementations:
    - `DeferredAudit`: within a unit of work; the event is written with the unit (just before its COMMIT), never
      when it rolls back (the stores of idp.sql).
    - `GroupCommitAuditLog`: for a domain service whose only write is its audit event and whose result must not
      leave before it is written (the TSA's timestamps, client_credentials tokens); `record` returns once the
      event is committed, and raises what the database raised."""

    async def record(self, event_type: str, *, actor: str, subject: str | None = None,
                     detail: Mapping[str, Any] | None = None, request_id: str | None = None,
                     clock: dt.datetime | None = None) -> None: ...


INSERT_AUDIT = insert(table(AuditEvent))
"""One audit_events row, for direct units of work (storage.direct): parameters from `audit_row`."""


def audit_row(event_type: str, *, actor: str, subject: str | None = None, detail: Mapping[str, Any] | None = None,
              request_id: str | None = None, clock: dt.datetime | None = None) -> dict[str, Any]:
    """The columns of one audit event (the arguments of `record_event`) for INSERT_AUDIT."""
    return {"id": new_uuid(), "occurred_at": clock or utcnow(), "event_type": event_type, "actor": actor,
            "subject": subject, "request_id": request_id, "detail": dict(detail) if detail is not None else {}}


class DeferredAudit:
    """An AuditSink within one unit of work: each event is deferred to the unit's COMMIT (storage.direct)."""

    def __init__(self, tx: Transaction, *, request_id: str | None = None) -> None:
        self._tx = tx
        self._request_id = request_id

    async def record(self, event_type: str, *, actor: str, subject: str | None = None,
                     detail: Mapping[str, Any] | None = None, request_id: str | None = None,
                     clock: dt.datetime | None = None) -> None:
        self._tx.defer(INSERT_AUDIT, **audit_row(event_type, actor=actor, subject=subject, detail=detail,
                                                 request_id=request_id or self._request_id, clock=clock))


def record_event(session: AsyncSession, event_type: str, *, actor: str, subject: str | None = None,
                 detail: dict[str, Any] | None = None, request_id: str | None = None,
                 clock: dt.datetime | None = None) -> AuditEvent:
    """Add an audit event to an ORM session's unit of work (written when the caller commits): the CLI, the admin
    API and the CA, which work in ORM sessions. Units of work on storage.direct defer `audit_row` instead."""
    event = AuditEvent(**audit_row(event_type, actor=actor, subject=subject, detail=detail, request_id=request_id,
                                   clock=clock))
    session.add(event)
    return event


Waiting = tuple[dict[str, Any], "asyncio.Future[None]"]
"""An event's fields and the future its caller waits on."""


class GroupCommitAuditLog:
    """An AuditSink writing the events of many concurrent requests in shared transactions (group commit).

    For hot endpoints whose only write is their audit event (the token endpoint's client_credentials grant, the
    time-stamp authority): `record` returns once the event is committed, like a transaction of its own, but
    events arriving while a commit is in flight are written together by the next one, so a busy node pays one
    round trip per batch instead of per request. No timer delays a lone event: an idle log commits it at once.
    A batch is one unit of work with its rows deferred (storage.direct: on PostgreSQL one atomic executemany).

    Events go into a queue drained by long-lived consumer tasks, started with the application (`start`, in the
    lifespan) and stopped with it (`stop`): a consumer waits one loop turn after the first event so the events of
    requests already under way join its batch; consumers gather in turn (one at a time). On PostgreSQL two consumers
    run (`consumers`): the server commits one batch while the other consumer gathers the next. SQLite writes one
    transaction at a time, so there one consumer runs. The order in which two batches commit is not defined (each
    event carries its own time). Events that cannot be written any more (the log stopped, a consumer cancelled while
    committing) fail their callers with RuntimeError instead of leaving them waiting. One instance serves one event
    loop.
    """

    def __init__(self, database: DirectDatabase, *, max_batch: int = 500, consumers: int | None = None) -> None:
        self._db = database
        self._max_batch = max_batch
        self._consumer_count = consumers or (2 if database.dialect.name == "postgresql" else 1)
        self._queue: asyncio.Queue[Waiting] | None = None
        self._gathering = asyncio.Lock()
        self._consumers: dict[asyncio.Task[None], list[Waiting]] = {}
        """Each consumer and the batch it is committing."""

    async def __aenter__(self) -> GroupCommitAuditLog:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    @property
    def running(self) -> bool:
        return bool(self._consumers)

    async def start(self) -> None:
        """Start the consumers (the application's lifespan does). They run in a context of their own: a unit of
        work of the request that happened to start them must not look like an outer unit to theirs."""
        if self._consumers:
            return
        self._queue = asyncio.Queue()
        self._gathering = asyncio.Lock()
        for _ in range(self._consumer_count):
            consumer = asyncio.create_task(self._consume(), context=contextvars.Context())
            self._consumers[consumer] = []
            consumer.add_done_callback(self._stopped)

    async def stop(self) -> None:
        """Cancel the consumers; events not known to be written fail their callers."""
        consumers = list(self._consumers)
        for consumer in consumers:
            consumer.cancel()
        await asyncio.gather(*consumers, return_exceptions=True)

    async def record(self, event_type: str, *, actor: str, subject: str | None = None,
                     detail: Mapping[str, Any] | None = None, request_id: str | None = None,
                     clock: dt.datetime | None = None) -> None:
        """Commit one event (the arguments of `record_event`); raises what the database raised."""
        if self._queue is None or not self._consumers:
            raise RuntimeError("the audit log is not running (GroupCommitAuditLog.start)")
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        fields = {"event_type": event_type, "actor": actor, "subject": subject, "detail": detail,
                  "request_id": request_id, "clock": clock}
        self._queue.put_nowait((fields, done))
        await done

    async def _consume(self) -> None:
        me = asyncio.current_task()
        queue, gathering = self._queue, self._gathering
        assert me is not None  # noqa: S101 - a task
        assert queue is not None  # noqa: S101 - started by start()
        while True:
            async with gathering:  # one consumer gathers at a time, so idle consumers do not split a burst
                batch = [await queue.get()]
                self._consumers[me] = batch
                await asyncio.sleep(0)  # one loop turn: requests already under way add their events to this batch
                while len(batch) < self._max_batch and not queue.empty():
                    batch.append(queue.get_nowait())
            # committing: the next consumer gathers the next batch meanwhile
            error = await self._commit(batch)
            if error is not None and len(batch) > 1:
                # one bad event must not fail the others that shared its transaction: write each alone
                for item in batch:
                    _settle([item], await self._commit([item]))
            else:
                _settle(batch, error)
            self._consumers[me] = []

    def _stopped(self, consumer: asyncio.Task[None]) -> None:
        """A consumer ended (cancelled at shutdown, even before its first step): nobody will write its batch, nor
        the queue if it was the last consumer; their callers get an error instead of waiting for ever."""
        batch = self._consumers.pop(consumer, [])
        closed = RuntimeError("the audit log stopped before the event was known to be written")
        _settle(batch, closed)
        if not self._consumers and self._queue is not None:
            queue, self._queue = self._queue, None
            while not queue.empty():
                _settle([queue.get_nowait()], closed)

    async def _commit(self, batch: list[Waiting]) -> Exception | None:
        try:
            async with self._db.transaction() as tx:  # on PostgreSQL one atomic executemany (Transaction.finish)
                for fields, _ in batch:
                    tx.defer(INSERT_AUDIT, **audit_row(**fields))
        except Exception as exc:  # noqa: BLE001 - handed to the waiting callers, who re-raise it
            return exc
        return None


def _settle(waiting: list[Waiting], error: Exception | None) -> None:
    for _, done in waiting:
        if done.done():  # the caller went away (cancelled); its event is written all the same
            continue
        if error is None:
            done.set_result(None)
        else:
            done.set_exception(error)


ANONYMOUS_ACTOR = "anonymous"
"""The actor of events that unauthenticated requests cause (a failed passkey login, a wrong activation code, a
rate limit tripped): the events any stranger can cause, kept for a shorter time."""


async def purge_audit(session: AsyncSession, *, before: dt.datetime | None,
                      anonymous_before: dt.datetime | None) -> dict[str, int]:
    """Delete the audit events older than the retention (ACAR_AUDIT_RETENTION_DAYS: `before`), and those of
    unauthenticated requests older than theirs (`anonymous_before`); None keeps them. On the occurred_at index."""
    counts = {"audit_events": 0, "anonymous_audit_events": 0}
    if before is not None:
        result = await session.execute(delete(AuditEvent).where(AuditEvent.occurred_at < before))
        counts["audit_events"] = int(result.rowcount or 0)  # type: ignore[attr-defined]
    if anonymous_before is not None:
        result = await session.execute(delete(AuditEvent).where(AuditEvent.occurred_at < anonymous_before,
                                                                AuditEvent.actor == ANONYMOUS_ACTOR))
        counts["anonymous_audit_events"] = int(result.rowcount or 0)  # type: ignore[attr-defined]
    return counts

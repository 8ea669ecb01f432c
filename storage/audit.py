"""The audit trail: an append-only log of security-relevant events (issuance, login, revocation, ...).

Events carry who acted, on what, and a small JSON detail; never a token, secret or private key. Every event is
written unsealed (chain, seq and chain_hash NULL) in the transaction of the action it records; the sealer of
`storage.audit_chain` later gives it its place in a hash chain and the chain head a signed checkpoint (tamper
evidence, docs/architecture.md "Audit trail: tamper evidence").
"""

from __future__ import annotations

import asyncio
import contextvars
import datetime as dt
from collections.abc import Callable, Mapping
from typing import Any, Protocol

from sqlalchemy import JSON, BigInteger, Index, String, UniqueConstraint, delete, func, insert, select, update
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
    chain: Mapped[str | None] = mapped_column(String(16))
    """The hash chain the sealer put the event in (CHAINS), NULL until sealed."""
    seq: Mapped[int | None] = mapped_column(BigInteger)
    """The event's place in its chain (1, 2, ... without gaps), NULL until sealed."""
    chain_hash: Mapped[str | None] = mapped_column(String(64))
    """Hex SHA-256 over the previous event's chain_hash and this event's canonical content (storage.audit_chain)."""

    __table_args__ = (
        UniqueConstraint("chain", "seq"),
        # the sealer's work list: the unsealed events only, in the order it seals them
        Index("ix_audit_events_unsealed", "occurred_at", "id", sqlite_where=seq.is_(None),
              postgresql_where=seq.is_(None)),
    )


AUDIT_CHAIN = "audit"
ANONYMOUS_CHAIN = "anonymous"
CHAINS = (ANONYMOUS_CHAIN, AUDIT_CHAIN)
"""The hash chains, in the order the sealer claims their heads. Events of unauthenticated requests have a chain of
their own because their retention is shorter: retention then only ever deletes the oldest part of a chain."""


class AuditChainHead(Base):
    """The head of one hash chain: where it ends (seq, chain_hash) and where its retained part begins (start_seq,
    start_hash: the chain_hash of the event before it, already deleted by retention). The sealer claims this row
    (SELECT ... FOR UPDATE; BEGIN IMMEDIATE on SQLite) for the length of one short transaction."""

    __tablename__ = "audit_chain_heads"

    chain: Mapped[str] = mapped_column(String(16), primary_key=True)
    seq: Mapped[int] = mapped_column(BigInteger)
    chain_hash: Mapped[str] = mapped_column(String(64))
    start_seq: Mapped[int] = mapped_column(BigInteger)
    start_hash: Mapped[str] = mapped_column(String(64))
    checkpoints: Mapped[int] = mapped_column(BigInteger)
    """The number of the chain's last checkpoint (0: none yet)."""
    checkpoint_hash: Mapped[str] = mapped_column(String(64))
    updated_at: Mapped[dt.datetime] = mapped_column(UTCDateTime(), default=utcnow)


class AuditCheckpoint(Base):
    """A chain head (seq, chain_hash) signed through keys/ (a JWS of the token keys with its time, `iat`), chained
    to the chain's previous checkpoint (prev_hash): rows deleted from the tail, or checkpoints dropped, show."""

    __tablename__ = "audit_checkpoints"

    chain: Mapped[str] = mapped_column(String(16), primary_key=True)
    number: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    seq: Mapped[int] = mapped_column(BigInteger)
    chain_hash: Mapped[str] = mapped_column(String(64))
    prev_hash: Mapped[str] = mapped_column(String(64))
    checkpoint_hash: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime(), default=utcnow)
    kid: Mapped[str] = mapped_column(String(200))
    signature: Mapped[str] = mapped_column(String(4000))
    """The compact JWS whose payload names chain, number, seq, chain_hash, prev_hash and checkpoint_hash."""


AuditObserver = Callable[[str, Mapping[str, Any] | None], None]
"""Told of every event as a sink takes it (its type and detail): the metrics of api.metrics count outcomes here."""
_observers: list[AuditObserver] = []


def observe_audit(observer: AuditObserver) -> Callable[[], None]:
    """Tell `observer` of every event recorded from now on, synchronously and on the recording task: it must be
    quick and must not raise. An event is told when it is recorded, before its unit of work commits (a unit that
    then rolls back was still attempted). Returns the function that stops the observing."""
    _observers.append(observer)
    return lambda: _observers.remove(observer) if observer in _observers else None


def _told(event_type: str, detail: Mapping[str, Any] | None) -> None:
    for observer in _observers:
        observer(event_type, detail)


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
        if _observers:
            _told(event_type, detail)
        self._tx.defer(INSERT_AUDIT, **audit_row(event_type, actor=actor, subject=subject, detail=detail,
                                                 request_id=request_id or self._request_id, clock=clock))


def record_event(session: AsyncSession, event_type: str, *, actor: str, subject: str | None = None,
                 detail: dict[str, Any] | None = None, request_id: str | None = None,
                 clock: dt.datetime | None = None) -> AuditEvent:
    """Add an audit event to an ORM session's unit of work (written when the caller commits): the CLI, the admin
    API and the CA, which work in ORM sessions. Units of work on storage.direct defer `audit_row` instead."""
    event = AuditEvent(**audit_row(event_type, actor=actor, subject=subject, detail=detail, request_id=request_id,
                                   clock=clock))
    if _observers:
        _told(event_type, detail)
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
    A batch is one unit of work with its rows deferred (storage.direct: on PostgreSQL one atomic multi-row
    INSERT, or past MAX_FOLDED_ROWS events one atomic executemany).

    Events go into a queue drained by long-lived consumer tasks, started with the application (`start`, in the
    lifespan) and stopped with it (`stop`): a consumer waits one loop turn after the first event so the events of
    requests already under way join its batch, unless `at_once` events are already queued: those are committed at
    once, so a busy node starts a commit while the rest of its requests are still being worked on, instead of
    letting every request in flight reach its wait before the batch leaves (which left the core idle for each
    commit's round trip: docs/performance.md, "The group commit's batch sent at once"). Consumers gather in turn
    (one at a time). On PostgreSQL two consumers run (`consumers`): the server commits one batch while the other
    consumer gathers the next. SQLite writes one transaction at a time, so there one consumer runs. The order in
    which two batches commit is not defined (each event carries its own time). Events that cannot be written any
    more (the log stopped, a consumer cancelled while committing) fail their callers with RuntimeError instead of
    leaving them waiting. One instance serves one event loop.
    """

    def __init__(self, database: DirectDatabase, *, max_batch: int = 500, at_once: int = 8,
                 consumers: int | None = None) -> None:
        self._db = database
        self._max_batch = max_batch
        self._at_once = at_once
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
        if _observers:
            _told(event_type, detail)
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
                if queue.qsize() + 1 < self._at_once:
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
            async with self._db.transaction() as tx:  # on PostgreSQL one atomic statement (Transaction.finish)
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
    unauthenticated requests older than theirs (`anonymous_before`); None keeps them.

    Only the oldest sealed part of each chain goes: the events up to (not including) the first sealed event at or
    after the cutoff. An event older than the cutoff but sealed after a younger one stays until that one goes too,
    and unsealed events wait for the sealer. The head records where the retained chain now begins (start_seq, and
    start_hash: the chain_hash of the last deleted event), so the rest still verifies; the checkpoints of the
    deleted part go with it, but for the chain's last one."""
    anonymous_cutoff = max((c for c in (before, anonymous_before) if c is not None), default=None)
    work = {AUDIT_CHAIN: (before, "audit_events"), ANONYMOUS_CHAIN: (anonymous_cutoff, "anonymous_audit_events")}
    counts = {key: 0 for _, key in work.values()}
    for chain in CHAINS:  # the heads in the sealer's order (storage.audit_chain.seal): the two never deadlock
        cutoff, key = work[chain]
        if cutoff is not None:
            counts[key] = await _purge_chain(session, chain, cutoff)
    return counts


async def _purge_chain(session: AsyncSession, chain: str, cutoff: dt.datetime) -> int:
    # the head first, as a write: the sealer's lock (PostgreSQL) or the write lock (SQLite) from the first statement
    claimed = await session.execute(update(AuditChainHead).where(AuditChainHead.chain == chain)
                                    .values(updated_at=utcnow()).returning(AuditChainHead.seq,
                                                                          AuditChainHead.checkpoints))
    head = claimed.one_or_none()
    if head is None:
        return 0
    head_seq, last_checkpoint = int(head[0]), int(head[1])
    first_kept = (await session.execute(
        select(func.min(AuditEvent.seq)).where(AuditEvent.chain == chain, AuditEvent.seq.is_not(None),
                                               AuditEvent.occurred_at >= cutoff))).scalar_one()
    start = int(first_kept) if first_kept is not None else head_seq + 1
    last_gone = (await session.execute(select(AuditEvent.chain_hash).where(
        AuditEvent.chain == chain, AuditEvent.seq == start - 1))).scalar_one_or_none()
    if last_gone is None:  # nothing (more) to delete
        return 0
    await session.execute(update(AuditChainHead).where(AuditChainHead.chain == chain)
                          .values(start_seq=start, start_hash=last_gone))
    result = await session.execute(delete(AuditEvent).where(AuditEvent.chain == chain, AuditEvent.seq < start))
    # the checkpoints of the deleted part go too, except the last one: it still signs the head
    await session.execute(delete(AuditCheckpoint).where(AuditCheckpoint.chain == chain, AuditCheckpoint.seq < start,
                                                        AuditCheckpoint.number < last_checkpoint))
    return int(result.rowcount or 0)  # type: ignore[attr-defined]

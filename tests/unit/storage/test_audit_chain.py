"""The audit trail's hash chain (storage.audit_chain): events written by every path are sealed into an intact chain
with signed checkpoints; editing any column of a sealed event, deleting an event from the middle or the tail, or
dropping a checkpoint makes the verification fail and name the row; concurrent writers and sealers keep the chain
whole; retention deletes the oldest part and the rest still verifies."""

from __future__ import annotations

import asyncio
import datetime as dt
from typing import Any

import pytest
from sqlalchemy import delete, select, text, update

from api.deps import Services, build_audit_checkpoints
from storage import audit_chain
from storage.audit import (
    CHAINS,
    AuditChainHead,
    AuditCheckpoint,
    AuditEvent,
    DeferredAudit,
    GroupCommitAuditLog,
    purge_audit,
    record_event,
)
from storage.audit_chain import GENESIS, VerifyReport, seal, seal_all, verify_trail
from storage.base import utcnow

EVENTS = AuditEvent.__table__


async def _record(services: Services, count: int, *, actor: str = "officer-1", event_type: str = "test.event",
                  start: dt.datetime | None = None) -> None:
    start = start or utcnow()
    async with services.sessions() as session, session.begin():
        for i in range(count):
            record_event(session, event_type, actor=actor, subject=f"s{i}", detail={"i": i, "text": "Məmmədova"},
                         request_id=f"r{i}", clock=start + dt.timedelta(microseconds=i))


async def _seal(services: Services) -> dict[str, dict[str, Any]]:
    return await seal_all(services.direct, build_audit_checkpoints(services.settings, services.token_keys))


async def _verify(services: Services) -> VerifyReport:
    return await verify_trail(services.direct, build_audit_checkpoints(services.settings, services.token_keys))


async def _chain(services: Services, chain: str = "audit") -> list[AuditEvent]:
    async with services.sessions() as session:
        return list((await session.execute(select(AuditEvent).where(AuditEvent.chain == chain)
                                           .order_by(AuditEvent.seq))).scalars())


async def _tamper(services: Services, statement: Any) -> None:
    """A statement run directly on the database, outside every path of the application."""
    async with services.engine.begin() as conn:
        await conn.execute(statement)


async def test_events_of_every_path_seal_into_an_intact_chain(initialized: Services) -> None:
    services = initialized
    await _record(services, 3)
    await _record(services, 2, actor="anonymous", event_type="login.failed")
    async with services.direct.transaction() as tx:
        await DeferredAudit(tx, request_id="req-1").record("test.deferred", actor="officer-2", detail={"n": 1})
    async with GroupCommitAuditLog(services.direct) as log:
        await asyncio.gather(*(log.record("test.group", actor="client-1", subject=str(i)) for i in range(4)))

    sealed = await _seal(services)
    report = await _verify(services)

    assert report.intact, report.summary()
    assert report.unsealed == 0
    chains = {c.chain: c for c in report.chains}
    audit = await _chain(services)
    assert [e.seq for e in audit] == list(range(1, len(audit) + 1))
    assert chains["audit"].events == len(audit) == sealed["audit"]["sealed"] >= 3 + 1 + 4
    assert chains["anonymous"].events == 2 and {e.actor for e in await _chain(services, "anonymous")} == {"anonymous"}
    assert chains["audit"].checkpoints == chains["anonymous"].checkpoints == 1
    assert chains["audit"].signatures_verified == 1
    assert report.summary().startswith("audit chain intact: ")
    # the sealing order is (occurred_at, id), within each chain
    assert [(e.occurred_at, e.id) for e in audit] == sorted((e.occurred_at, e.id) for e in audit)
    # nothing new: no new checkpoint
    assert await _seal(services) == {}


CHANGES: dict[str, Any] = {
    "occurred_at": lambda e: e.occurred_at + dt.timedelta(microseconds=1),
    "event_type": lambda e: "test.other",
    "actor": lambda e: "officer-9",
    "subject": lambda e: None,
    "request_id": lambda e: "forged",
    "detail": lambda e: {"i": 99, "text": "Məmmədova"},
    "chain": lambda e: "forged",
    "seq": lambda e: 10_000,
    "chain_hash": lambda e: GENESIS,
    "id": lambda e: "00000000-0000-4000-8000-000000000000",
}


@pytest.mark.parametrize("column", sorted(CHANGES))
async def test_editing_any_column_of_a_sealed_event_is_found_and_named(initialized: Services, column: str) -> None:
    services = initialized
    await _record(services, 5)
    await _seal(services)
    target = next(e for e in await _chain(services) if e.event_type == "test.event" and e.subject == "s2")
    new_value = CHANGES[column](target)

    await _tamper(services, update(EVENTS).where(EVENTS.c.id == target.id).values({column: new_value}))
    report = await _verify(services)

    broken = report.first_broken
    assert not report.intact and broken is not None
    named = new_value if column == "id" else target.id
    assert broken.event_id == named, broken.describe()
    assert named in report.summary() and report.summary().startswith("audit chain BROKEN")


async def test_deleting_an_event_from_the_middle_names_the_gap(initialized: Services) -> None:
    services = initialized
    await _record(services, 5)
    await _seal(services)
    chain = await _chain(services)
    gone, after = chain[-3], chain[-2]

    await _tamper(services, delete(EVENTS).where(EVENTS.c.id == gone.id))
    broken = (await _verify(services)).first_broken

    assert broken is not None
    assert (broken.event_id, broken.seq) == (after.id, after.seq)
    assert f"seq {gone.seq}..{gone.seq} are missing" in broken.reason


async def test_deleting_the_tail_after_a_checkpoint_is_found(initialized: Services) -> None:
    services = initialized
    await _record(services, 3)
    await _seal(services)
    await _record(services, 3, start=utcnow() + dt.timedelta(seconds=1))
    await _seal(services)
    chain = await _chain(services)
    kept = chain[-3]

    # the last two events go: the head still names the last seq
    await _tamper(services, delete(EVENTS).where(EVENTS.c.seq > kept.seq, EVENTS.c.chain == "audit"))
    broken = (await _verify(services)).first_broken
    assert broken is not None and "tail" in broken.reason

    # ... and the head is rewound to the last event left: the last checkpoint names a missing event
    await _tamper(services, update(AuditChainHead.__table__).where(AuditChainHead.chain == "audit")
                  .values(seq=kept.seq, chain_hash=kept.chain_hash))
    broken = (await _verify(services)).first_broken
    assert broken is not None and broken.checkpoint == 2 and broken.seq == chain[-1].seq
    assert "missing" in broken.reason

    # ... and that checkpoint deleted too: the head names a checkpoint that is not there
    await _tamper(services, delete(AuditCheckpoint.__table__).where(AuditCheckpoint.chain == "audit",
                                                                    AuditCheckpoint.number == 2))
    broken = (await _verify(services)).first_broken
    assert broken is not None and "checkpoint" in broken.reason


async def test_a_changed_or_dropped_checkpoint_is_found(initialized: Services) -> None:
    services = initialized
    for i in range(3):
        await _record(services, 2, start=utcnow() + dt.timedelta(seconds=i))
        await _seal(services)
    assert (await _verify(services)).intact

    table = AuditCheckpoint.__table__
    await _tamper(services, delete(table).where(table.c.chain == "audit", table.c.number == 2))
    broken = (await _verify(services)).first_broken
    assert broken is not None and broken.checkpoint == 3 and "checkpoints 2..2 are missing" in broken.reason


async def test_a_forged_checkpoint_signature_is_found(initialized: Services) -> None:
    services = initialized
    await _record(services, 2)
    await _seal(services)
    table = AuditCheckpoint.__table__
    async with services.sessions() as session:
        token = (await session.execute(select(table.c.signature).where(table.c.chain == "audit"))).scalar_one()
    header, payload, signature = token.split(".")
    forged = f"{header}.{payload}.{signature[:-4]}{'AAAA' if signature[-4:] != 'AAAA' else 'BBBB'}"

    await _tamper(services, update(table).where(table.c.chain == "audit").values(signature=forged))
    broken = (await _verify(services)).first_broken

    assert broken is not None and broken.checkpoint == 1 and "signature" in broken.reason


async def test_a_batch_sealed_in_steps_is_one_chain_in_time_order(initialized: Services,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    """A batch is read, hashed and marked a step at a time (SEAL_STEP events, so a pass never holds the serving
    loop for a whole batch); each step continues the chains where the step before left them, and the batch still
    ends with one checkpoint per chain."""
    services = initialized
    monkeypatch.setattr(audit_chain, "SEAL_STEP", 3)
    start = utcnow() - dt.timedelta(seconds=10)
    await _record(services, 7, start=start)
    await _record(services, 4, actor="anonymous", event_type="login.failed", start=start + dt.timedelta(microseconds=3))
    signer = build_audit_checkpoints(services.settings, services.token_keys)

    async with services.direct.transaction() as tx:  # a batch that is not a whole number of steps
        first = await seal(tx, signer, batch=5)
    sealed = await _seal(services)
    report = await _verify(services)

    assert sum(step["sealed"] for step in first.values()) == 5
    assert report.intact, report.summary()
    assert report.unsealed == 0
    for chain, event_type, count in (("audit", "test.event", 7), ("anonymous", "login.failed", 4)):
        events = await _chain(services, chain)  # with the events the set-up wrote
        assert [e.seq for e in events] == list(range(1, len(events) + 1))
        assert [e.occurred_at for e in events] == sorted(e.occurred_at for e in events)
        assert sum(e.event_type == event_type for e in events) == count
        assert first.get(chain, {}).get("sealed", 0) + sealed[chain]["sealed"] == len(events)
    assert {c.chain: c.checkpoints for c in report.chains} == {
        chain: 1 + (chain in first) for chain in ("audit", "anonymous")}


async def test_concurrent_writers_and_sealers_keep_one_valid_chain(initialized: Services) -> None:
    services = initialized
    writers, per_writer = 6, 15

    async def direct_writer(n: int) -> None:
        for i in range(per_writer):
            async with services.direct.transaction() as tx:
                await DeferredAudit(tx).record("test.direct", actor=f"w{n}", subject=str(i))

    async def sealer() -> int:
        passes = 0
        for _ in range(6):
            await _seal(services)
            passes += 1
            await asyncio.sleep(0)
        return passes

    async with GroupCommitAuditLog(services.direct) as log:
        async def group_writer(n: int) -> None:
            for i in range(per_writer):
                await log.record("test.group", actor=f"g{n}", subject=str(i))

        await asyncio.gather(*(direct_writer(n) for n in range(writers)),
                             *(group_writer(n) for n in range(writers)), sealer(), sealer())
    await _seal(services)
    report = await _verify(services)

    assert report.intact, report.summary()
    assert report.unsealed == 0
    chain = await _chain(services)
    assert [e.seq for e in chain] == list(range(1, len(chain) + 1))
    assert sum(e.event_type in {"test.direct", "test.group"} for e in chain) == 2 * writers * per_writer


async def test_retention_keeps_the_chain_verifiable(initialized: Services) -> None:
    services = initialized
    now = utcnow()
    old = now - dt.timedelta(days=500)
    await _record(services, 3, start=old)
    await _record(services, 2, actor="anonymous", start=now - dt.timedelta(days=40))
    await _record(services, 2, actor="anonymous", start=now - dt.timedelta(days=1))
    await _seal(services)
    # an old event sealed after younger ones: it stays until they go (only the oldest part of a chain is deleted)
    await _record(services, 1, start=old - dt.timedelta(days=1), event_type="test.late")
    await _record(services, 2, start=now - dt.timedelta(days=10))
    await _seal(services)
    assert (await _verify(services)).intact

    async with services.sessions() as session, session.begin():
        purged = await purge_audit(session, before=now - dt.timedelta(days=400),
                                   anonymous_before=now - dt.timedelta(days=30))
    report = await _verify(services)

    assert report.intact, report.summary()
    assert purged["anonymous_audit_events"] == 2
    chain = await _chain(services)
    assert "test.late" in {e.event_type for e in chain}
    assert all(e.occurred_at > old for e in chain if e.event_type == "test.event")
    assert purged["audit_events"] >= 3
    # the chain goes on after retention, and later passes purge what was kept back
    await _record(services, 2)
    await _seal(services)
    assert (await _verify(services)).intact
    # deleting the oldest retained event is still found: the head says where the retained chain begins
    first = (await _chain(services))[0]
    await _tamper(services, delete(EVENTS).where(EVENTS.c.id == first.id))
    broken = (await _verify(services)).first_broken
    assert broken is not None and broken.seq == first.seq + 1


@pytest.mark.postgresql
async def test_retention_takes_the_chain_heads_in_the_sealers_order(initialized: Services) -> None:
    """A sealing pass holds the first chain head (CHAINS order) when retention starts: retention waits for that
    head before it takes any other, so the pass then takes the second head at once. In the other order (retention
    held the second head and waited for the first) the two deadlocked, and PostgreSQL aborted one of them; with
    both on the housekeeping interval, that happened on every pass that found them together."""
    services = initialized
    await _record(services, 1)
    await _seal(services)  # both heads exist
    lock = text("SELECT 1 FROM audit_chain_heads WHERE chain = :chain FOR UPDATE")
    waiting = text("SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
                   "AND wait_event_type = 'Lock'")

    async def retention() -> dict[str, int]:
        now = utcnow()
        async with services.sessions() as session, session.begin():
            return await purge_audit(session, before=now - dt.timedelta(days=400),
                                     anonymous_before=now - dt.timedelta(days=30))

    async with services.engine.connect() as sealer, services.engine.connect() as watcher:
        await sealer.begin()
        await sealer.execute(lock, {"chain": CHAINS[0]})
        purge = asyncio.ensure_future(retention())
        async with asyncio.timeout(10):
            while True:  # until the database shows retention waiting for a head
                found = (await watcher.execute(waiting)).scalar_one()
                await watcher.rollback()  # pg_stat_activity is read once per transaction
                if found:
                    break
                await asyncio.sleep(0.02)
        assert not purge.done()
        await sealer.execute(text("SET LOCAL lock_timeout = '5s'"))
        await sealer.execute(lock, {"chain": CHAINS[1]})  # free: retention holds no head while it waits
        await sealer.commit()

    assert await asyncio.wait_for(purge, 10) == {"audit_events": 0, "anonymous_audit_events": 0}

"""Group commit of audit events: each caller returns after its event is committed; concurrent callers
share transactions; one bad event does not fail the others."""

from __future__ import annotations

import asyncio

import pytest
from sqlalchemy import func, select

from api.deps import Services
from storage.audit import AuditEvent, GroupCommitAuditLog


async def _count(services: Services, event_type: str) -> int:
    async with services.sessions() as session:
        statement = select(func.count()).select_from(AuditEvent).where(AuditEvent.event_type == event_type)
        return int((await session.execute(statement)).scalar_one())


async def test_a_lone_event_is_committed_before_record_returns(services: Services) -> None:
    log = GroupCommitAuditLog(services.direct)

    await log.record("test.alone", actor="tester", subject="1", detail={"n": 1})

    assert await _count(services, "test.alone") == 1


async def test_concurrent_events_share_transactions(services: Services) -> None:
    log = GroupCommitAuditLog(services.direct)
    before = services.direct.commits

    await asyncio.gather(*(log.record("test.burst", actor="tester", subject=str(i)) for i in range(60)))

    assert await _count(services, "test.burst") == 60
    assert 1 <= services.direct.commits - before < 60


async def test_one_bad_event_does_not_fail_its_batch(services: Services) -> None:
    log = GroupCommitAuditLog(services.direct)
    good = [log.record("test.good", actor="tester", subject=str(i)) for i in range(10)]
    bad = log.record("test.bad", actor="tester", detail={"not json": object()})

    results = await asyncio.gather(*good, bad, return_exceptions=True)

    assert results[:10] == [None] * 10
    assert isinstance(results[10], Exception)
    assert await _count(services, "test.good") == 10 and await _count(services, "test.bad") == 0


async def test_a_caller_that_goes_away_still_gets_its_event_written(services: Services) -> None:
    log = GroupCommitAuditLog(services.direct)
    others = [asyncio.ensure_future(log.record("test.stay", actor="tester", subject=str(i))) for i in range(5)]
    leaving = asyncio.ensure_future(log.record("test.leave", actor="tester"))
    await asyncio.sleep(0)
    leaving.cancel()

    await asyncio.gather(*others)
    with pytest.raises(asyncio.CancelledError):
        await leaving

    assert await _count(services, "test.stay") == 5 and await _count(services, "test.leave") == 1

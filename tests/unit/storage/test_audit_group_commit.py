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


async def test_two_batches_in_flight_write_every_event_once(services: Services) -> None:
    """PostgreSQL's setting (a second batch commits while the first is in flight), on the suite's database."""
    log = GroupCommitAuditLog(services.direct, max_batch=7, in_flight=2)
    before = services.direct.commits

    await asyncio.gather(*(log.record("test.pipelined", actor="tester", subject=str(i)) for i in range(60)))
    await log.record("test.pipelined", actor="tester", subject="after")  # an idle log starts a writer again

    assert await _count(services, "test.pipelined") == 61
    assert 60 // 7 < services.direct.commits - before < 61


@pytest.mark.parametrize("turns", [1, 3, 30], ids=["before-its-first-step", "gathering", "committing"])
async def test_events_of_a_cancelled_writer_fail_rather_than_hang(services: Services, turns: int) -> None:
    """What the event loop's shutdown does to a writer (asyncio.run cancels the tasks left), at any point."""
    log = GroupCommitAuditLog(services.direct, in_flight=1)
    waiting = [asyncio.ensure_future(log.record("test.shutdown", actor="tester", subject=str(i))) for i in range(3)]
    for _ in range(turns):
        await asyncio.sleep(0)
    for writer in list(log._writers):
        writer.cancel()

    results = await asyncio.wait_for(asyncio.gather(*waiting, return_exceptions=True), 5)

    written = await _count(services, "test.shutdown")
    assert all(r is None or isinstance(r, RuntimeError) for r in results)
    # a caller told "written" finds it written; a commit cut off in flight may have landed all the same
    assert results.count(None) <= written
    await log.record("test.shutdown.after", actor="tester")  # and the log works on afterwards
    assert await _count(services, "test.shutdown.after") == 1


async def test_an_event_recorded_just_as_the_writer_finishes_is_written(services: Services) -> None:
    """The next event comes before the finished writer's done callback has run (one caller after another)."""
    log = GroupCommitAuditLog(services.direct, in_flight=1)
    for i in range(5):
        await asyncio.wait_for(log.record("test.sequential", actor="tester", subject=str(i)), 5)

    assert await _count(services, "test.sequential") == 5

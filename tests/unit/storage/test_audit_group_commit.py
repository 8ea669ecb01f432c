"""Group commit of audit events: each caller returns after its event is committed; concurrent callers
share transactions; one bad event does not fail the others; a stopped log fails its waiting callers, never
leaves them hanging, and refuses new events until it is started again."""

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
    async with GroupCommitAuditLog(services.direct) as log:
        await log.record("test.alone", actor="tester", subject="1", detail={"n": 1})

    assert await _count(services, "test.alone") == 1


async def test_concurrent_events_share_transactions(services: Services) -> None:
    before = services.direct.commits

    async with GroupCommitAuditLog(services.direct, consumers=1) as log:
        await asyncio.gather(*(log.record("test.burst", actor="tester", subject=str(i)) for i in range(60)))

    assert await _count(services, "test.burst") == 60
    assert 1 <= services.direct.commits - before < 60


async def test_one_bad_event_does_not_fail_its_batch(services: Services) -> None:
    async with GroupCommitAuditLog(services.direct) as log:
        good = [log.record("test.good", actor="tester", subject=str(i)) for i in range(10)]
        bad = log.record("test.bad", actor="tester", detail={"not json": object()})
        results = await asyncio.gather(*good, bad, return_exceptions=True)

    assert results[:10] == [None] * 10
    assert isinstance(results[10], Exception)
    assert await _count(services, "test.good") == 10 and await _count(services, "test.bad") == 0


async def test_a_caller_that_goes_away_still_gets_its_event_written(services: Services) -> None:
    async with GroupCommitAuditLog(services.direct) as log:
        others = [asyncio.ensure_future(log.record("test.stay", actor="tester", subject=str(i))) for i in range(5)]
        leaving = asyncio.ensure_future(log.record("test.leave", actor="tester"))
        await asyncio.sleep(0)
        leaving.cancel()

        await asyncio.gather(*others)
        with pytest.raises(asyncio.CancelledError):
            await leaving

    assert await _count(services, "test.stay") == 5 and await _count(services, "test.leave") == 1


async def test_two_consumers_write_every_event_once(services: Services) -> None:
    """PostgreSQL's setting (a second batch commits while the first is in flight), on the suite's database."""
    before = services.direct.commits

    async with GroupCommitAuditLog(services.direct, max_batch=7, consumers=2) as log:
        await asyncio.gather(*(log.record("test.pipelined", actor="tester", subject=str(i)) for i in range(60)))
        await log.record("test.pipelined", actor="tester", subject="after")  # idle consumers take it at once

    assert await _count(services, "test.pipelined") == 61
    assert 60 // 7 < services.direct.commits - before < 61


@pytest.mark.parametrize("turns", [0, 1, 3, 30], ids=["queued", "taken", "gathering", "committing"])
@pytest.mark.parametrize("consumers", [1, 2])
async def test_events_of_a_stopped_log_fail_rather_than_hang(services: Services, turns: int, consumers: int) -> None:
    """What the application's shutdown does to the consumers (the lifespan stops the log; asyncio.run cancels the
    tasks left), at any point of their work."""
    log = GroupCommitAuditLog(services.direct, consumers=consumers)
    await log.start()
    waiting = [asyncio.ensure_future(log.record("test.shutdown", actor="tester", subject=str(i))) for i in range(3)]
    for _ in range(turns):
        await asyncio.sleep(0)
    await log.stop()

    results = await asyncio.wait_for(asyncio.gather(*waiting, return_exceptions=True), 5)

    written = await _count(services, "test.shutdown")
    assert all(r is None or isinstance(r, RuntimeError) for r in results)
    # a caller told "written" finds it written; a commit cut off in flight may have landed all the same
    assert results.count(None) <= written
    with pytest.raises(RuntimeError, match="not running"):
        await log.record("test.shutdown.refused", actor="tester")
    async with log:  # started again, the log works on
        await log.record("test.shutdown.after", actor="tester")
    assert await _count(services, "test.shutdown.after") == 1
    assert await _count(services, "test.shutdown.refused") == 0


async def test_a_cancelled_consumer_fails_its_batch_and_the_other_goes_on(services: Services) -> None:
    async with GroupCommitAuditLog(services.direct, consumers=2) as log:
        waiting = [asyncio.ensure_future(log.record("test.one_down", actor="tester", subject=str(i)))
                   for i in range(4)]
        await asyncio.sleep(0)
        next(iter(log._consumers)).cancel()
        results = await asyncio.wait_for(asyncio.gather(*waiting, return_exceptions=True), 5)
        assert all(r is None or isinstance(r, RuntimeError) for r in results)
        await asyncio.wait_for(log.record("test.one_down.after", actor="tester"), 5)
    assert await _count(services, "test.one_down.after") == 1


async def test_events_recorded_one_after_another_are_written(services: Services) -> None:
    """The next event comes as soon as the consumer has settled the last (one caller after another)."""
    async with GroupCommitAuditLog(services.direct, consumers=1) as log:
        for i in range(5):
            await asyncio.wait_for(log.record("test.sequential", actor="tester", subject=str(i)), 5)

    assert await _count(services, "test.sequential") == 5


async def test_idle_consumers_do_not_split_a_burst(services: Services) -> None:
    """Consumers gather in turn: a burst that arrives while both wait is one batch, not one per consumer."""
    before = services.direct.commits

    async with GroupCommitAuditLog(services.direct, consumers=2) as log:
        await asyncio.gather(*(log.record("test.unsplit", actor="tester", subject=str(i)) for i in range(40)))

    assert await _count(services, "test.unsplit") == 40
    assert services.direct.commits - before == 1


@pytest.mark.parametrize(("at_once", "commits"), [(4, 2), (5, 1)], ids=["full batch at once", "one loop turn"])
async def test_a_full_batch_leaves_without_waiting_a_loop_turn(services: Services, at_once: int,
                                                               commits: int) -> None:
    """Four events queued before the consumer runs, a fifth recorded one loop turn later (after the consumer's
    first step): with at_once=4 the four are already a batch and leave at once, the fifth goes in the next
    transaction; with at_once=5 the consumer waits its loop turn and the fifth joins the same transaction."""
    async with GroupCommitAuditLog(services.direct, consumers=1, at_once=at_once) as log:
        before = services.direct.commits

        async def late() -> None:
            await asyncio.sleep(0)  # resumed after the consumer's first step, which the first put scheduled
            await log.record("test.at_once", actor="tester", subject="late")

        early = [log.record("test.at_once", actor="tester", subject=str(i)) for i in range(4)]
        await asyncio.wait_for(asyncio.gather(*early, late()), 5)

        assert services.direct.commits - before == commits
    assert await _count(services, "test.at_once") == 5

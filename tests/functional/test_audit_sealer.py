"""The audit trail's sealing schedule (api.audit_sealer) in the real application: no pass at the start, the first
one interval later; a pass in hand when the application stops is cancelled and leaves nothing behind, neither a
half-sealed chain nor a held lock (SQLite's write lock, PostgreSQL's row lock on the chain heads)."""

from __future__ import annotations

import asyncio
import dataclasses

from sqlalchemy import func, select

from api.app import create_app
from api.audit_sealer import AuditSealer
from api.deps import Services, build_audit_checkpoints
from storage.audit import ANONYMOUS_CHAIN, AuditChainHead, AuditCheckpoint, AuditEvent, record_event
from storage.audit_chain import CLAIM_HEAD, seal_all, verify_trail
from storage.base import utcnow


async def _record(services: Services, count: int) -> None:
    async with services.sessions() as session, session.begin():
        for i in range(count):
            record_event(session, "test.sealer", actor="officer-1", subject=f"s{i}", clock=utcnow())


async def _count(services: Services, what: object) -> int:
    async with services.sessions() as session:
        return int((await session.execute(select(func.count()).select_from(what))).scalar_one())  # type: ignore[arg-type]


async def _unsealed(services: Services) -> int:
    async with services.sessions() as session:
        return int((await session.execute(select(func.count()).select_from(AuditEvent)
                                          .where(AuditEvent.seq.is_(None)))).scalar_one())


async def test_the_tests_settings_start_no_schedule(initialized: Services) -> None:
    """The tests' settings turn the schedule off (tests/conftest.py): no test's app seals behind its back."""
    assert initialized.settings.audit_seal_seconds == 0
    app = create_app(services=initialized)
    async with app.router.lifespan_context(app):
        assert app.state.audit_sealer.enabled is False
        await asyncio.wait_for(app.state.housekeeping_passed.wait(), timeout=30)  # the background started


async def test_the_first_pass_comes_one_interval_after_the_start(initialized: Services) -> None:
    await _record(initialized, 3)
    scheduled = dataclasses.replace(initialized,
                                    settings=initialized.settings.model_copy(update={"audit_seal_seconds": 1.0}))
    app = create_app(services=scheduled)
    async with app.router.lifespan_context(app):
        sealer: AuditSealer = app.state.audit_sealer
        assert sealer.enabled
        # started, and nothing sealed: no chain head claimed, no checkpoint signed at the start
        assert await _count(initialized, AuditChainHead) == 0 and await _count(initialized, AuditCheckpoint) == 0
        await asyncio.wait_for(sealer.passed.wait(), timeout=30)
        assert await _unsealed(initialized) == 0
        assert await _count(initialized, AuditCheckpoint) >= 1
    report = await verify_trail(initialized.direct, build_audit_checkpoints(initialized.settings,
                                                                            initialized.token_keys))
    assert report.intact and report.unsealed == 0, report.summary()


async def test_stopping_cancels_a_pass_in_hand_and_releases_its_transaction(initialized: Services) -> None:
    signer = build_audit_checkpoints(initialized.settings, initialized.token_keys)
    await _record(initialized, 2)
    await seal_all(initialized.direct, signer)  # the chain heads exist
    checkpoints = await _count(initialized, AuditCheckpoint)
    await _record(initialized, 3)
    sealer = AuditSealer(initialized, 0.01)
    async with initialized.direct.transaction() as holder:
        # the heads held by another writer: the sealer's first pass begins and waits for them
        assert await holder.one(CLAIM_HEAD, chain=ANONYMOUS_CHAIN) is not None
        sealer.start()
        await asyncio.sleep(0.5)
        assert not sealer.passed.is_set()
        async with asyncio.timeout(10):
            await sealer.stop(grace=0.1)  # cancelled in hand: rolled back before stop returns
    assert not sealer.passed.is_set()
    assert await _unsealed(initialized) == 3  # nothing half-sealed
    assert await _count(initialized, AuditCheckpoint) == checkpoints
    async with asyncio.timeout(10):  # and nothing held: the next pass goes through at once
        sealed = await seal_all(initialized.direct, signer)
    assert sealed["audit"]["sealed"] == 3
    report = await verify_trail(initialized.direct, signer)
    assert report.intact and report.unsealed == 0, report.summary()

"""`acar audit verify`: one line and exit 0 for an intact trail (after --seal), the JSON report with --json, and
exit 1 naming the event when a row was edited directly in the database."""

from __future__ import annotations

import json

from sqlalchemy import delete, insert, select, update

from api.deps import Services
from storage.audit import AuditEvent, record_event
from tests.functional.helpers import InProcessAcar


async def test_audit_verify_seals_reports_and_names_an_edited_row(acar: InProcessAcar, initialized: Services) -> None:
    async with initialized.sessions() as session, session.begin():
        for i in range(4):
            record_event(session, "test.cli", actor="officer-1", subject=str(i), detail={"n": i})
        record_event(session, "login.failed", actor="anonymous")

    unsealed = acar.json("audit", "verify")
    assert unsealed["intact"] is True and unsealed["unsealed"] >= 5

    sealed = acar("audit", "verify", "--seal")
    assert sealed.returncode == 0
    assert sealed.stdout.startswith("audit chain intact: anonymous: 1 events (seq 1..1), 1 checkpoints, audit: ")
    report = acar.json("audit", "verify")
    assert report["intact"] is True and report["unsealed"] == 0 and report["broken"] is None
    chains = {c["chain"]: c for c in report["chains"]}
    assert chains["anonymous"]["events"] == 1 and chains["audit"]["events"] >= 4
    assert chains["audit"]["checkpoints"] == chains["audit"]["signatures_verified"] == 1

    async with initialized.sessions() as session, session.begin():
        target = (await session.execute(select(AuditEvent).where(AuditEvent.subject == "2"))).scalar_one()
        await session.execute(update(AuditEvent.__table__).where(AuditEvent.id == target.id)
                              .values(detail={"n": 20}))

    broken = acar("audit", "verify", check=False)
    assert broken.returncode == 1
    assert broken.stdout.startswith("audit chain BROKEN: chain audit, event ") and target.id in broken.stdout
    assert f"seq {target.seq}, test.cli" in broken.stdout
    as_json = json.loads(acar("audit", "verify", "--json", check=False).stdout)
    assert as_json["intact"] is False and as_json["broken"]["event_id"] == target.id
    assert as_json["broken"]["seq"] == target.seq and as_json["broken"]["event_type"] == "test.cli"


async def test_audit_verify_names_the_row_after_a_deleted_one_and_a_deleted_tail(
        acar: InProcessAcar, initialized: Services) -> None:
    async with initialized.sessions() as session, session.begin():
        for i in range(5):
            record_event(session, "test.cli", actor="officer-1", subject=f"d{i}")
    assert acar("audit", "verify", "--seal").returncode == 0
    async with initialized.sessions() as session:
        rows = {e.subject: e for e in (await session.execute(
            select(AuditEvent).where(AuditEvent.event_type == "test.cli"))).scalars()}

    # a row deleted from the middle: the row after the gap is named
    async with initialized.engine.begin() as conn:
        await conn.execute(delete(AuditEvent.__table__).where(AuditEvent.id == rows["d2"].id))
    middle = acar("audit", "verify", check=False)
    assert middle.returncode == 1, middle
    assert f"event {rows['d3'].id} (seq {rows['d3'].seq}, test.cli)" in middle.stdout
    assert f"events seq {rows['d2'].seq}..{rows['d2'].seq} are missing" in middle.stdout

    # the middle put back, the tail deleted: the checkpoint names the missing seq
    async with initialized.engine.begin() as conn:
        await conn.execute(insert(AuditEvent.__table__).values(
            id=rows["d2"].id, occurred_at=rows["d2"].occurred_at, event_type="test.cli", actor="officer-1",
            subject="d2", request_id=None, detail=rows["d2"].detail, chain="audit", seq=rows["d2"].seq,
            chain_hash=rows["d2"].chain_hash))
    assert acar("audit", "verify").returncode == 0
    async with initialized.engine.begin() as conn:
        await conn.execute(delete(AuditEvent.__table__).where(AuditEvent.id == rows["d4"].id))
    tail = json.loads(acar("audit", "verify", "--json", check=False).stdout)
    assert tail["intact"] is False and tail["broken"]["seq"] == rows["d4"].seq, tail
    assert "deleted from the tail" in tail["broken"]["message"], tail

"""`acar audit verify`: one line and exit 0 for an intact trail (after --seal), the JSON report with --json, and
exit 1 naming the event when a row was edited directly in the database."""

from __future__ import annotations

import json

from sqlalchemy import select, update

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

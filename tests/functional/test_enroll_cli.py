"""`acar enroll-code`: the command in-process on the test database."""

from __future__ import annotations

import json
import re

from sqlalchemy import select

from api.deps import Services
from idp.sql.enrollment import ALPHABET, EnrollmentService, code_lookup, normalize_code
from idp.sql.models import ActivationCode, WebAuthnCredential
from storage.audit import AuditEvent
from storage.base import utcnow
from tests.functional.helpers import InProcessAcar
from tests.oidc_tools import register_person

FIN = "5ABCD12"
CODE_RE = re.compile(rf"^[{ALPHABET}]{{4}}(-[{ALPHABET}]{{4}}){{4}}$")


async def test_prints_a_code_once_that_opens_an_enrollment(acar: InProcessAcar, services: Services) -> None:
    person_id = await register_person(services, FIN)
    out = acar("enroll-code", "--fin", FIN.lower(), "--json")
    issued = json.loads(out.stdout)
    assert CODE_RE.fullmatch(issued["code"]) and issued["person"] == person_id and issued["fin"] == FIN
    assert issued["credentials_revoked"] == 0 and issued["expires_at"]
    assert out.stderr == ""
    async with services.sessions() as session, session.begin():
        row = await session.get(ActivationCode, issued["code_id"])
        assert row is not None and row.issued_by == "cli" and row.lookup == code_lookup(normalize_code(issued["code"]))
        assert normalize_code(issued["code"]) not in row.secret_hash
        started = await EnrollmentService(session, services.enrollment_policy, clock=utcnow).redeem(issued["code"])
        assert started.enrollment.person_id == person_id
    human = acar("enroll-code", "--fin", FIN)
    fields = dict(part.split("=", 1) for part in human.stdout.split())
    assert CODE_RE.fullmatch(fields["code"]) and fields["fin"] == FIN and fields["code_id"] not in fields["code"]
    assert "shown only this once" in human.stderr
    async with services.sessions() as session:
        codes = (await session.execute(select(ActivationCode).order_by(ActivationCode.created_at))).scalars().all()
        assert [c.revoked_at is not None for c in codes] == [True, False]  # the new code replaced the first


async def test_recovery_revokes_credentials(acar: InProcessAcar, services: Services) -> None:
    person_id = await register_person(services, FIN)
    async with services.sessions() as session, session.begin():
        from idp.core.webauthn import CredentialRecord
        from idp.sql.passkeys_store import SqlPasskeyStore
        from storage.direct import SessionTransaction

        await SqlPasskeyStore(SessionTransaction(session)).add_credential(CredentialRecord(
            id="cred-1", person_id=person_id, public_key=b"k", sign_count=0, transports=(), aaguid="0" * 36,
            attestation_format="none", user_verified=True, attested=False, backup_eligible=False, backed_up=False,
            name="Laptop", max_level="high", created_at=utcnow()))
    issued = json.loads(acar("enroll-code", "--fin", FIN, "--revoke-credentials", "--json").stdout)
    assert issued["credentials_revoked"] == 1
    async with services.sessions() as session:
        row = await session.get(WebAuthnCredential, "cred-1")
        assert row is not None and row.revoked_at is not None
        event = (await session.execute(select(AuditEvent).where(AuditEvent.event_type == "webauthn.removed"))
                 ).scalar_one()
        assert event.actor == "cli" and event.detail["reason"].startswith("recovery")


async def test_bad_fin_is_one_line_and_writes_nothing(acar: InProcessAcar, services: Services) -> None:
    await register_person(services, FIN)
    for fin, message in (("12", "FIN must be exactly 7 Latin letters or digits"), ("7QWE123", "no person with FIN")):
        out = acar("enroll-code", "--fin", fin, "--json", check=False)
        assert out.returncode == 1 and out.stdout == ""
        assert out.stderr.splitlines() == [out.stderr.strip()] and out.stderr.startswith("acar: error: ")
        assert message in out.stderr
    usage = acar("enroll-code", check=False)
    assert usage.returncode == 2 and len(usage.stderr.splitlines()) == 1
    async with services.sessions() as session:
        assert (await session.execute(select(ActivationCode.id))).first() is None

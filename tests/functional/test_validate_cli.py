"""`acar validate FILE.pdf [--json] [--at DATE]` in-process on the test database (the built-in CA of `world`): exit
code 0 only when every signature is TOTAL-PASSED, 1 otherwise, 2 with one line for a file that cannot be read or is
refused; the JSON is the API's report; the validation is audited with actor "cli"."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from sqlalchemy import select

from api.deps import Services
from signing.core.levels import PadesLevel
from storage.audit import AuditEvent
from tests.functional.helpers import InProcessAcar
from tests.pades_world import World
from tests.signing_tools import minimal_pdf


async def test_validate_exit_codes_summary_and_json(acar: InProcessAcar, world: World, services: Services,
                                                    tmp_path: Path) -> None:
    signed = tmp_path / "signed.pdf"
    signed.write_bytes(await world.sign(minimal_pdf(1, "Müqavilə"), PadesLevel.B_LT))
    unsigned = tmp_path / "unsigned.pdf"
    unsigned.write_bytes(minimal_pdf())
    not_pdf = tmp_path / "notes.pdf"
    not_pdf.write_text("not a pdf")

    result = acar("validate", str(signed))
    assert result.returncode == 0 and "TOTAL-PASSED" in result.stdout
    assert "result: every signature is TOTAL-PASSED (1)" in result.stdout
    report = json.loads(acar("validate", str(signed), "--json").stdout)
    assert report["all_passed"] is True and report["document"]["sha256"] == hashlib.sha256(
        signed.read_bytes()).hexdigest()

    result = acar("validate", str(unsigned), check=False)
    assert result.returncode == 1 and "no signature" in result.stdout

    for path in (not_pdf, tmp_path / "missing.pdf"):
        result = acar("validate", str(path), check=False)
        assert result.returncode == 2 and result.stdout == ""
        assert result.stderr.startswith("acar: error:") and len(result.stderr.strip().splitlines()) == 1
    result = acar("validate", str(signed), "--at", "not-a-date", check=False)
    assert result.returncode == 2 and "RFC 3339" in result.stderr

    result = acar("validate", str(signed), "--at", "2099-01-01T00:00:00Z", check=False)
    assert result.returncode == 2 and "future" in result.stderr

    async with services.sessions() as session:
        actors = (await session.execute(select(AuditEvent.actor).where(
            AuditEvent.event_type == "validation.performed"))).scalars().all()
    assert actors == ["cli", "cli", "cli"]

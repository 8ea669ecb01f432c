"""`acar import persons|entities|mandates FILE.csv`, `acar entity`, `acar mandate`: a file is imported whole or
not at all; a refused file reports every bad row (line, column, reason) and leaves the database untouched (rows
counted before and after)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from sqlalchemy import func, select

from api.deps import Services
from idp.sql.models import LegalEntity, Mandate, Person
from storage.audit import AuditEvent
from tests.functional.helpers import InProcessAcar

FIN, VOEN = "5ABCD12", "1400057421"

PERSONS = (
    "fin,given_name,family_name,given_name_cyrillic,family_name_cyrillic,birthdate,category,document_type,"
    "document_country,document_number,status\n"
    f"{FIN},Aysel,Məmmədova,Айсель,Мамедова,1990-02-03,citizen,,,,\n"
    ",Ivan,Petrov,Иван,Петров,1985-07-01,stateless,stateless_travel_document,AZE,ST1234567,\n"
    "6XYZ789,Rəşad,Əliyev,,,,,,,,deceased\n"
)
ENTITIES = f"voen,name,legal_form,status\n{VOEN},\"Açar Texnologiya, MMC\",MMC,active\n1234567892,Rəşad Əliyev,FS,\n"


async def counts(services: Services) -> dict[str, int]:
    async with services.sessions() as session:
        return {model.__tablename__: int((await session.execute(select(func.count()).select_from(model)))
                                         .scalar_one())
                for model in (Person, LegalEntity, Mandate, AuditEvent)}


def write(tmp_path: Path, name: str, data: str | bytes) -> str:
    path = tmp_path / name
    path.write_bytes(data.encode() if isinstance(data, str) else data)
    return str(path)


async def test_import_persons_with_bom(acar: InProcessAcar, services: Services, tmp_path: Path) -> None:
    path = write(tmp_path, "persons.csv", b"\xef\xbb\xbf" + PERSONS.replace("\n", "\r\n").encode())
    out = acar("import", "persons", path)
    assert out.stdout.startswith(f"imported 3 persons from {path} (sha256 ") and out.stderr == ""
    assert (await counts(services))["persons"] == 3
    shown = acar.json("person", "show", FIN)
    assert shown["given_name_cyrillic"] == "Айсель" and shown["status"] == "active"
    assert acar.json("person", "show", "6XYZ789")["status"] == "deceased"
    async with services.sessions() as session:
        events = (await session.execute(select(AuditEvent).where(
            AuditEvent.event_type == "registry.persons_imported"))).scalars().all()
    assert [e.detail["rows"] for e in events] == [3] and events[0].actor == "cli"


BAD_FILES = [
    pytest.param("persons", PERSONS + "12345,A,B,,,,,,,,\n", [(5, "fin", "FIN must be exactly 7")], id="bad-fin"),
    pytest.param("persons", PERSONS + f"{FIN.lower()},A,B,,,,,,,,\n", [(5, "fin", "first on line 2")],
                 id="duplicate-in-file"),
    pytest.param("persons", PERSONS + "7QWE890,A,B,,,1990-02-30,,,,,\n", [(5, "birthdate", "YYYY-MM-DD")],
                 id="bad-date"),
    pytest.param("persons", PERSONS + "7QWE890,A,B,,,,,,,,retired\n", [(5, "status", "status must be one of")],
                 id="bad-status"),
    pytest.param("persons", PERSONS.replace("family_name,given_name_cyrillic", "given_name_cyrillic"),
                 [(1, "family_name", "missing column")], id="missing-column"),
    pytest.param("persons", PERSONS.encode() + "7QWE890,Jörg,Müller,,,,,,,,\n".encode("latin-1"),
                 [(5, None, "not UTF-8")], id="wrong-encoding"),
    pytest.param("persons", PERSONS.replace("Айсель", "Aysel1"), [(2, "given_name_cyrillic", "Cyrillic")],
                 id="bad-cyrillic"),
    pytest.param("entities", ENTITIES + "1400057425,Bad Check,MMC,\n", [(4, "voen", "tenth digit")],
                 id="bad-voen-check"),
    pytest.param("entities", ENTITIES + "140005742,Short,MMC,\n", [(4, "voen", "exactly 10 digits")],
                 id="bad-voen-length"),
    pytest.param("entities", ENTITIES + f"{VOEN},Again,MMC,\n", [(4, "voen", "first on line 2")],
                 id="duplicate-voen"),
    pytest.param("entities", ENTITIES + "1400000011,X,MMC,closed\n", [(4, "status", "status must be one of")],
                 id="bad-entity-status"),
    pytest.param("entities", ENTITIES.encode("utf-8").replace("Əliyev".encode(), "Əliyev".encode("utf-16-le")),
                 [(3, None, "not UTF-8")], id="utf16-bytes"),
]


@pytest.mark.parametrize(("kind", "content", "expected"), BAD_FILES)
async def test_bad_file_is_rejected_whole(acar: InProcessAcar, services: Services, tmp_path: Path, *, kind: str,
                                          content: str | bytes, expected: list[tuple[int, str | None, str]]) -> None:
    path = write(tmp_path, f"{kind}.csv", content)
    before = await counts(services)
    proc = acar("import", kind, path, check=False)
    assert proc.returncode == 1 and proc.stdout == ""
    lines = proc.stderr.splitlines()
    assert len(lines) == len(expected) + 1 and lines[-1].startswith(f"acar: error: the {kind} file was not imported")
    for line, (number, column, reason) in zip(lines, expected, strict=False):
        where = f"line {number}" + (f", column {column}" if column else "")
        assert line.startswith(f"acar: {path}: {where}: ") and reason in line, line
    assert await counts(services) == before  # nothing written, not even an audit event


async def test_every_bad_row_reported_as_json_and_duplicates_against_the_database(
        acar: InProcessAcar, services: Services, tmp_path: Path) -> None:
    acar("import", "persons", write(tmp_path, "first.csv", PERSONS))
    before = await counts(services)
    again = (
        "fin,given_name,family_name,birthdate\n"
        f"{FIN},Aysel,Məmmədova,\n"        # 2: already registered
        "7QWE890,Ok,Row,\n"                 # 3: fine, but the file is refused whole
        "7qwe89,Bad,Fin,2030-01-01\n"       # 4: bad FIN and a future birthdate
        "8ABC123,,Nameless,\n"              # 5: empty given name
    )
    proc = acar("import", "persons", write(tmp_path, "again.csv", again), "--json", check=False)
    assert proc.returncode == 1
    report = json.loads(proc.stdout)
    assert report["error"] == "import_rejected"
    assert [(p["line"], p["column"]) for p in report["problems"]] == [
        (2, "fin"), (4, "fin"), (4, "birthdate"), (5, "given_name")]
    assert "already registered" in report["problems"][0]["reason"]
    assert proc.stderr.count("\n") == 1 and proc.stderr.startswith("acar: error: the persons file was not imported")
    assert await counts(services) == before


async def test_entities_mandates_and_their_commands(acar: InProcessAcar, services: Services, tmp_path: Path) -> None:
    acar("import", "persons", write(tmp_path, "p.csv", PERSONS))
    summary = acar.json("import", "entities", write(tmp_path, "e.csv", ENTITIES))
    assert summary["imported"] == 2 and summary["kind"] == "entities"
    assert acar.json("entity", "show", VOEN)["name"] == "Açar Texnologiya, MMC"
    added = json.loads(acar("entity", "add", "--voen", "9900071001", "--name", "Dövlət Vergi Xidməti",
                            "--legal-form", "PHŞ").stdout)
    assert added["status"] == "active"
    dup = acar("entity", "add", "--voen", VOEN, "--name", "X", "--legal-form", "MMC", check=False)
    assert dup.returncode == 1 and "already registered" in dup.stderr

    before = await counts(services)
    bad = (f"fin,voen,powers,valid_from\n{FIN},{VOEN},sign_declarations,2026-01-01\n"
           f"6XYZ789,{VOEN},sign_declarations,2026-01-01\n")  # the person is deceased
    proc = acar("import", "mandates", write(tmp_path, "bad.csv", bad), check=False)
    assert proc.returncode == 1 and "line 3, column fin: the person with FIN 6XYZ789 is deceased" in proc.stderr
    assert await counts(services) == before
    assert acar.json("import", "mandates", write(tmp_path, "m.csv", bad.splitlines(keepends=True)[0] +
                                                 bad.splitlines(keepends=True)[1]))["imported"] == 1

    granted = acar.json("mandate", "grant", "--fin", FIN, "--voen", "9900071001", "--power", "represent_at_login",
                        "--valid-from", "2026-01-01", "--valid-to", "2030-01-01T00:00:00+04:00", "--granted-by",
                        "director-1", "--granted-via", "director")
    assert granted["valid_to"] == "2029-12-31T20:00:00+00:00" and granted["powers"] == ["represent_at_login"]
    assert len(acar.json("mandate", "list", "--fin", FIN, "--at", "2026-06-01")) == 2
    assert acar.json("mandate", "list", "--fin", FIN, "--at", "2025-06-01") == []
    revoked = acar.json("mandate", "revoke", granted["id"])
    assert revoked["revoked_by"] == "cli"
    assert [m["voen"] for m in acar.json("mandate", "list", "--fin", FIN)] == [VOEN]
    assert len(acar.json("mandate", "list", "--fin", FIN, "--all")) == 2
    again = acar("mandate", "revoke", granted["id"], check=False)
    assert again.returncode == 1 and "was revoked" in again.stderr
    bad_power = acar("mandate", "grant", "--fin", FIN, "--voen", VOEN, "--power", "everything", "--granted-by", "x",
                     check=False)
    assert bad_power.returncode == 2


async def test_person_set_status_and_unreadable_file(acar: InProcessAcar, services: Services, tmp_path: Path) -> None:
    acar("person", "add", "--fin", FIN, "--given-name", "Aysel", "--family-name", "Məmmədova",
         "--family-name-cyrillic", "Мамедова")
    assert acar.json("person", "set-status", FIN, "suspended")["status"] == "suspended"
    missing = acar("import", "persons", str(tmp_path / "nope.csv"), check=False)
    assert missing.returncode == 1 and "cannot read" in missing.stderr
    empty = acar("import", "entities", write(tmp_path, "empty.csv", b""), check=False)
    assert empty.returncode == 1 and "line 1: the file is empty" in empty.stderr

"""The registry (issue 16): VÖEN rule, person status and Cyrillic names, legal entities, mandates valid at an instant,
the CSV importers' all-or-nothing rule, and the development login refusing an inactive person."""

from __future__ import annotations

import datetime as dt

import httpx
import pytest
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from api.deps import Services
from idp.core.errors import (
    EntityExists,
    EntityNotFound,
    ImportRejected,
    InvalidIdentifier,
    InvalidMandate,
    MandateNotFound,
)
from idp.sql.models import LegalEntity, Mandate, Person
from idp.sql.persons import PersonService
from idp.sql.registry import EntityService, MandateRecord, MandateService
from idp.sql.registry_import import import_entities, import_mandates, import_persons
from keys.identifiers import InvalidIdentifierFormat, check_voen, normalize_voen, voen_is_legal_person
from storage.audit import AuditEvent
from tests.oidc_tools import add_person, authorization_params, dev_login, pkce_pair, register_client, register_person

FIN, OTHER_FIN = "5ABCD12", "6XYZ789"
VOEN, IE_VOEN = "1400057421", "1234567892"  # a legal person (tenth digit 1), an individual entrepreneur (2)
T0 = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)

Sessions = async_sessionmaker[AsyncSession]


@pytest.fixture
def sessions(rolled_back: Sessions) -> Sessions:
    """The registry tests use one session at a time and no other connection: one transaction rolled back, no wipe
    (the development-login test, which needs the HTTP app, stays on `initialized` and its wipe)."""
    return rolled_back


# --- VÖEN -------------------------------------------------------------------------------------------------

@pytest.mark.nodb
@pytest.mark.parametrize("value", [VOEN, IE_VOEN, " 9900071001 "])
def test_check_voen_accepts_ten_digits_ending_in_1_or_2(value: str) -> None:
    assert check_voen(value) == value.strip()


@pytest.mark.nodb
@pytest.mark.parametrize(("value", "message"), [
    ("1400057420", "tenth digit"), ("1400057423", "tenth digit"), ("1400057429", "tenth digit"),
    ("140005742", "exactly 10 digits"), ("14000574211", "exactly 10 digits"), ("14000574a1", "exactly 10 digits"),
    ("١٤٠٠٠٥٧٤٢١", "exactly 10 digits"), ("", "exactly 10 digits"),
])
def test_check_voen_refuses(value: str, message: str) -> None:
    with pytest.raises(InvalidIdentifierFormat, match=message):
        check_voen(value)


@pytest.mark.nodb
def test_normalize_voen_stays_the_certificate_profiles_format_check() -> None:
    assert normalize_voen("1400057420") == "1400057420"  # any ten digits: certificates issued before keep working
    assert voen_is_legal_person(VOEN) and not voen_is_legal_person(IE_VOEN)


# --- persons ----------------------------------------------------------------------------------------------

async def _count(sessions: Sessions, model: type[object]) -> int:
    async with sessions() as session:
        return int((await session.execute(select(func.count()).select_from(model))).scalar_one())


async def _events(sessions: Sessions, event_type: str) -> list[AuditEvent]:
    async with sessions() as session:
        return list((await session.execute(select(AuditEvent).where(AuditEvent.event_type == event_type)
                                            .order_by(AuditEvent.occurred_at))).scalars())


async def test_person_status_and_cyrillic_names(sessions: Sessions) -> None:
    async with sessions() as session, session.begin():
        added = await PersonService(session).add(fin=FIN, given_name="Aysel", family_name="Məmmədova",
                                                 given_name_cyrillic="Айсель", family_name_cyrillic="Мамедова")
    assert added.status == "active" and added.family_name_cyrillic == "Мамедова"
    async with sessions() as session, session.begin():
        changed = await PersonService(session).set_status(FIN.lower(), "deceased", actor="officer-1")
    assert changed.status == "deceased"
    [event] = await _events(sessions, "person.status_changed")
    assert event.actor == "officer-1" and event.detail == {"from": "active", "to": "deceased"}
    async with sessions() as session:
        assert (await PersonService(session).get_by_fin(FIN)).as_json()["status"] == "deceased"


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"given_name_cyrillic": "Aysel"}, "Cyrillic"),
    ({"family_name_cyrillic": "Мамедова1"}, "Cyrillic"),
    ({"status": "retired"}, "status must be one of"),
    ({"document_type": "driving_licence", "category": "foreigner", "fin": None, "document_country": "RUS",
      "document_number": "751234567"}, "document type"),
])
async def test_invalid_person_fields_write_nothing(sessions: Sessions, kwargs: dict[str, object], message: str) -> None:
    fields: dict[str, object] = {"fin": FIN, **kwargs}
    with pytest.raises(InvalidIdentifier, match=message):
        async with sessions() as session, session.begin():
            await PersonService(session).add(given_name="A", family_name="B", **fields)  # type: ignore[arg-type]
    assert await _count(sessions, Person) == 0


async def test_set_status_refuses_unknown_status(sessions: Sessions) -> None:
    await add_person(sessions, FIN)
    with pytest.raises(InvalidIdentifier, match="status must be one of"):
        async with sessions() as session, session.begin():
            await PersonService(session).set_status(FIN, "gone", actor="t")


async def test_dev_login_refuses_a_suspended_person(initialized: Services, http: httpx.AsyncClient) -> None:
    """The development login, like the passkey and ID-card logins (test_webauthn, test_idcard_login), refuses a
    person who is not active: 403 and no session cookie."""
    rp = await register_client(initialized)
    await register_person(initialized, FIN)
    async with initialized.sessions() as session, session.begin():
        await PersonService(session).set_status(FIN, "suspended", actor="test")
    _verifier, challenge = pkce_pair()
    location = (await http.get("/authorize", params=authorization_params(rp, challenge))).headers["location"]
    r = await dev_login(http, location, fin=FIN)
    assert r.status_code == 403 and "suspended" in r.text
    assert "acar_session" not in r.headers.get("set-cookie", "")


# --- legal entities ---------------------------------------------------------------------------------------

async def test_entity_add_get_duplicate_and_status(sessions: Sessions) -> None:
    async with sessions() as session, session.begin():
        added = await EntityService(session).add(voen=VOEN, name="Açar Texnologiya MMC", legal_form="MMC",
                                                 actor="cli")
    assert added.status == "active"
    with pytest.raises(EntityExists):
        async with sessions() as session, session.begin():
            await EntityService(session).add(voen=f" {VOEN} ", name="Another", legal_form="ASC", actor="cli")
    with pytest.raises(InvalidIdentifier, match="tenth digit"):
        async with sessions() as session, session.begin():
            await EntityService(session).add(voen="1400057425", name="X", legal_form="MMC", actor="cli")
    with pytest.raises(InvalidIdentifier, match="name must not be empty"):
        async with sessions() as session, session.begin():
            await EntityService(session).add(voen=IE_VOEN, name="  ", legal_form="FS", actor="cli")
    assert await _count(sessions, LegalEntity) == 1
    async with sessions() as session, session.begin():
        assert (await EntityService(session).set_status(VOEN, "liquidated", actor="cli")).status == "liquidated"
    async with sessions() as session:
        assert (await EntityService(session).get(VOEN)).as_json()["status"] == "liquidated"
        with pytest.raises(EntityNotFound):
            await EntityService(session).get(IE_VOEN)
    assert [e.detail["voen"] for e in await _events(sessions, "entity.registered")] == [VOEN]


# --- mandates ---------------------------------------------------------------------------------------------

@pytest.fixture
async def parties(sessions: Sessions) -> str:
    """A person (FIN) and an active entity (VOEN); the person's id."""
    person_id = await add_person(sessions, FIN)
    async with sessions() as session, session.begin():
        await EntityService(session).add(voen=VOEN, name="Açar Texnologiya MMC", legal_form="MMC", actor="test")
    return person_id


async def _grant(sessions: Sessions, **kw: object) -> str:
    fields: dict[str, object] = {"fin": FIN, "voen": VOEN, "powers": ["sign_declarations"], "valid_from": T0,
                                 "granted_by": "officer-1", "granted_via": "officer", "actor": "officer-1", **kw}
    async with sessions() as session, session.begin():
        return (await MandateService(session).grant(**fields)).id  # type: ignore[arg-type]


async def _valid(sessions: Sessions, person_id: str, at: dt.datetime, power: str | None = None) -> list[str]:
    async with sessions() as session:
        return [m.id for m in await MandateService(session).valid(person_id, at=at, power=power)]


async def test_mandate_valid_only_within_its_period_and_until_revoked(sessions: Sessions, parties: str) -> None:
    day = dt.timedelta(days=1)
    mandate = await _grant(sessions, powers=["sign_declarations", "represent_at_login"], valid_to=T0 + 30 * day)
    assert await _valid(sessions, parties, T0 - dt.timedelta(seconds=1)) == []  # not yet valid
    assert await _valid(sessions, parties, T0) == [mandate]  # valid_from is inclusive
    assert await _valid(sessions, parties, T0 + 30 * day) == []  # valid_to is exclusive: expired
    assert await _valid(sessions, parties, T0 + day, power="represent_at_login") == [mandate]
    clock = T0 + 10 * day
    async with sessions() as session, session.begin():
        revoked = await MandateService(session, clock=lambda: clock).revoke(mandate, actor="director-1")
    assert revoked.revoked_at == clock and revoked.revoked_by == "director-1"
    assert await _valid(sessions, parties, T0 + day) == [mandate]  # before the revocation it was valid
    assert await _valid(sessions, parties, clock) == []  # revoked: excluded from then on
    with pytest.raises(InvalidMandate, match="was revoked"):
        async with sessions() as session, session.begin():
            await MandateService(session).revoke(mandate, actor="x")
    with pytest.raises(MandateNotFound):
        async with sessions() as session, session.begin():
            await MandateService(session).revoke("00000000-0000-0000-0000-000000000000", actor="x")
    granted, revoked_events = await _events(sessions, "mandate.granted"), await _events(sessions, "mandate.revoked")
    assert [e.subject for e in granted] == [mandate] and granted[0].detail["powers"] == ["represent_at_login",
                                                                                         "sign_declarations"]
    assert [(e.subject, e.actor) for e in revoked_events] == [(mandate, "director-1")]


def _record(valid_to: dt.datetime | None, revoked_at: dt.datetime | None = None) -> MandateRecord:
    return MandateRecord(id="m", person_id="p", fin=FIN, entity_id="e", voen=VOEN, entity_name="E",
                         powers=frozenset({"sign_declarations"}), valid_from=T0, valid_to=valid_to,
                         granted_by="officer-1", granted_via="officer", revoked_at=revoked_at, revoked_by=None)


@pytest.mark.nodb
def test_mandate_state_at_follows_the_same_period_rule_as_valid() -> None:
    """valid_from inclusive, valid_to exclusive; revoked wins whenever it was revoked (the pages' rule)."""
    day, second = dt.timedelta(days=1), dt.timedelta(seconds=1)
    record = _record(T0 + 30 * day)
    assert record.state_at(T0 - second) == "future"
    assert record.state_at(T0) == "active"
    assert record.state_at(T0 + 30 * day - second) == "active"
    assert record.state_at(T0 + 30 * day) == "expired"
    assert _record(None).state_at(T0 + 1000 * day) == "active"
    assert _record(T0 + 30 * day, revoked_at=T0 + day).state_at(T0) == "revoked"
    assert _record(T0 + 30 * day, revoked_at=T0 + day).state_at(T0 + 40 * day) == "revoked"


async def test_mandate_power_filter_and_inactive_entity(sessions: Sessions, parties: str) -> None:
    signing = await _grant(sessions)
    login = await _grant(sessions, powers=["represent_at_login"], granted_via="director", granted_by="director-1")
    now = T0 + dt.timedelta(days=1)
    assert await _valid(sessions, parties, now) == [signing, login]
    assert await _valid(sessions, parties, now, power="sign_declarations") == [signing]
    async with sessions() as session, session.begin():
        await EntityService(session).set_status(VOEN, "suspended", actor="test")
    assert await _valid(sessions, parties, now) == []  # mandates act only for an active entity


@pytest.mark.parametrize(("kwargs", "error", "message"), [
    ({"powers": ["sign_everything"]}, InvalidMandate, "unknown power sign_everything"),
    ({"powers": []}, InvalidMandate, "at least one power"),
    ({"valid_to": T0}, InvalidMandate, "valid_to must be after valid_from"),
    ({"granted_via": "neighbour"}, InvalidMandate, "granted_via"),
    ({"voen": "1400057425"}, InvalidIdentifier, "tenth digit"),
    ({"voen": IE_VOEN}, EntityNotFound, "no legal entity"),
])
async def test_mandate_refusals_write_nothing(sessions: Sessions, parties: str, kwargs: dict[str, object],
                                              error: type[Exception], message: str) -> None:
    with pytest.raises(error, match=message):
        await _grant(sessions, **kwargs)
    assert await _count(sessions, Mandate) == 0 and await _events(sessions, "mandate.granted") == []


async def test_no_mandate_for_an_inactive_person_or_entity(sessions: Sessions, parties: str) -> None:
    async with sessions() as session, session.begin():
        await PersonService(session).set_status(FIN, "deceased", actor="test")
    with pytest.raises(InvalidMandate, match="is deceased"):
        await _grant(sessions)
    async with sessions() as session, session.begin():
        await PersonService(session).set_status(FIN, "active", actor="test")
        await EntityService(session).set_status(VOEN, "liquidated", actor="test")
    with pytest.raises(InvalidMandate, match="is liquidated"):
        await _grant(sessions)
    assert await _count(sessions, Mandate) == 0


# --- imports (the command line's own tests: tests/functional/test_import_cli.py) ------------------------------

PERSONS_CSV = (
    "fin,given_name,family_name,given_name_cyrillic,family_name_cyrillic,birthdate,category,document_type,"
    "document_country,document_number,status\r\n"
    f"{FIN},Aysel,Məmmədova,Айсель,Мамедова,1990-02-03,citizen,,,,\r\n"
    ",John,Smith,,,1980-01-01,foreigner,residence_permit,GBR,123456789,\r\n"
    f"{OTHER_FIN},Rəşad,Əliyev,,,,,,,,suspended\r\n"
)


async def test_import_persons_all_rows_one_event(sessions: Sessions) -> None:
    async with sessions() as session, session.begin():
        summary = await import_persons(session, ("\ufeff" + PERSONS_CSV).encode(), actor="cli")
    assert summary.imported == 3
    async with sessions() as session:
        people = {p.given_name: p for p in (await session.execute(select(Person))).scalars()}
    assert people["John"].fin is None and people["John"].document_country == "GBR"
    assert people["Rəşad"].status == "suspended" and people["Aysel"].given_name_cyrillic == "Айсель"
    [event] = await _events(sessions, "registry.persons_imported")
    assert event.detail == {"rows": 3, "sha256": summary.sha256}


async def test_import_reports_every_bad_row_and_writes_nothing(sessions: Sessions) -> None:
    await add_person(sessions, "7QWE890")
    bad = (
        "fin,given_name,family_name,birthdate,status\n"
        "12345,A,B,,\n"                   # line 2: bad FIN
        "5ABCD12,A,B,1990-13-01,\n"       # line 3: bad date
        "5abcd12,C,D,,\n"                 # line 4: duplicate of line 3 within the file
        "7QWE890,E,F,,\n"                 # line 5: already registered
        "6XYZ789,G,H,,asleep\n"           # line 6: bad status
        "6XYZ780,,H\n"                    # line 7: too few fields
        "6XYZ781,I,J,,\n"                 # line 8: good, but the file is refused whole
    )
    before = await _count(sessions, Person)
    with pytest.raises(ImportRejected) as caught:
        async with sessions() as session, session.begin():
            await import_persons(session, bad.encode(), actor="cli")
    assert [(line, column) for line, column, _ in caught.value.problems] == [
        (2, "fin"), (3, "birthdate"), (4, "fin"), (5, "fin"), (6, "status"), (7, None)]
    assert "first on line 3" in caught.value.problems[2][2]
    assert await _count(sessions, Person) == before
    assert await _events(sessions, "registry.persons_imported") == []


async def test_import_entities_and_mandates(sessions: Sessions) -> None:
    await add_person(sessions, FIN)
    async with sessions() as session, session.begin():
        assert (await import_entities(session, (
            "voen,name,legal_form,status\n"
            f"{VOEN},\"Açar Texnologiya, MMC\",MMC,\n"
            f"{IE_VOEN},Rəşad Əliyev,FS,liquidated\n").encode(), actor="cli")).imported == 2
    with pytest.raises(ImportRejected) as caught:
        async with sessions() as session, session.begin():
            await import_mandates(session, (
                "fin,voen,powers,valid_from,valid_to,granted_via\n"
                f"{FIN},{VOEN},sign_declarations represent_at_login,2026-01-01,2027-01-01,director\n"
                f"{FIN},{IE_VOEN},sign_declarations,2026-01-01,,\n"         # entity liquidated
                f"{OTHER_FIN},{VOEN},sign_declarations,2026-01-01,,\n"      # no such person
                f"{FIN},{VOEN},fly,2026-01-01T10:00:00,2025-13-01,\n").encode(), actor="cli")  # 3 problems
    assert [(line, column) for line, column, _ in caught.value.problems] == [
        (3, "voen"), (4, "fin"), (5, "powers"), (5, "valid_from"), (5, "valid_to")]
    assert await _count(sessions, Mandate) == 0
    async with sessions() as session, session.begin():
        summary = await import_mandates(session, (
            "fin,voen,powers,valid_from,valid_to,granted_via,granted_by\n"
            f"{FIN},{VOEN},sign_declarations;represent_at_login,2026-01-01,2027-01-01,director,Director Ə.\n"
        ).encode(), actor="cli")
    assert summary.imported == 1
    person_id = await add_person(sessions, OTHER_FIN)  # another person: no mandates
    async with sessions() as session:
        fin_person = (await session.execute(select(Person.id).where(Person.fin == FIN))).scalar_one()
        [valid] = await MandateService(session).valid(fin_person, at=T0 + dt.timedelta(days=5))
        assert await MandateService(session).valid(person_id, at=T0 + dt.timedelta(days=5)) == []
    assert valid.granted_via == "director" and valid.granted_by == "Director Ə." and valid.voen == VOEN

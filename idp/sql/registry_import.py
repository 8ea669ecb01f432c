"""Bulk import of the registry from CSV files (docs/registry.md): persons, legal entities, mandates.

A file is imported whole or not at all. It must be UTF-8 (a byte-order mark is allowed and dropped) CSV
(RFC 4180: comma-separated, double-quoted fields, CRLF or LF) whose first line is the header. Every row is
checked first (formats by the same rules as the single-record services, duplicates within the file and against
the database, references to persons and entities); any problem refuses the file with ImportRejected listing every
bad row's problems (line number, column, reason) and nothing is added to the session. A good file adds every row
and one audit event (registry.<kind>_imported: counts and the file's SHA-256) into the caller's unit of work.
"""

from __future__ import annotations

import csv
import datetime as dt
import hashlib
import io
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, Final

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from idp.core.errors import IdpError, ImportRejected, InvalidIdentifier
from idp.sql.models import LegalEntity, Mandate, Person
from idp.sql.persons import check_person
from idp.sql.registry import (
    GRANTED_VIA,
    check_legal_form,
    check_period,
    check_powers,
    entity_name,
    entity_status,
    normalize_voen,
)
from keys.identifiers import InvalidIdentifierFormat, normalize_fin
from storage.audit import record_event

PERSON_COLUMNS: Final = ("fin", "given_name", "family_name")
PERSON_OPTIONAL: Final = ("category", "birthdate", "given_name_cyrillic", "family_name_cyrillic", "document_type",
                          "document_country", "document_number", "status")
ENTITY_COLUMNS: Final = ("voen", "name", "legal_form")
ENTITY_OPTIONAL: Final = ("status", "director_fin")
MANDATE_COLUMNS: Final = ("fin", "voen", "powers", "valid_from")
MANDATE_OPTIONAL: Final = ("valid_to", "granted_via", "granted_by")
MAX_ROWS: Final = 100_000
"""A file of more data rows is refused (bounded memory: the whole file is checked before anything is written)."""
_CHUNK = 500
"""Identifiers looked up per query when checking duplicates against the database."""
_BOM = b"\xef\xbb\xbf"

Problem = tuple[int, str | None, str]


@dataclass(frozen=True, slots=True)
class ImportSummary:
    kind: str
    imported: int
    sha256: str

    def as_json(self) -> dict[str, Any]:
        return {"kind": self.kind, "imported": self.imported, "sha256": self.sha256}


@dataclass(slots=True)
class _Row:
    line: int
    values: dict[str, str]


def _decode(data: bytes, kind: str) -> str:
    """The file as text: UTF-8, an initial byte-order mark dropped; ImportRejected naming the line otherwise."""
    body = data[len(_BOM):] if data.startswith(_BOM) else data
    try:
        text = body.decode("utf-8", errors="strict")
    except UnicodeDecodeError as exc:
        line = body[:exc.start].count(b"\n") + 1
        raise _reject(kind, [(line, None, (
            f"the file is not UTF-8 (byte 0x{body[exc.start]:02x} at offset {exc.start + len(data) - len(body)}); "
            "save it as UTF-8 CSV"))]) from None
    if "\x00" in text:
        line = text[:text.index("\x00")].count("\n") + 1
        raise _reject(kind, [(line, None, "a NUL character: not a CSV text file")])
    return text


def _header_problems(header: list[str], required: Sequence[str], optional: Sequence[str]) -> list[Problem]:
    problems: list[Problem] = [(1, name, "missing column") for name in required if name not in header]
    seen: set[str] = set()
    for name in header:
        if name in seen:
            problems.append((1, name, "the column appears twice"))
        elif name not in required and name not in optional:
            problems.append((1, name or None, (f"unknown column {name!r}; the columns are "
                                               f"{', '.join((*required, *optional))}")))
        seen.add(name)
    return problems


def _rows(data: bytes, kind: str, required: Sequence[str], optional: Sequence[str]) -> tuple[list[_Row], list[Problem]]:
    """The data rows as column -> stripped value, with their first line numbers, and the header's problems."""
    reader = csv.reader(io.StringIO(_decode(data, kind), newline=""), strict=True)
    try:
        header = [name.strip() for name in next(reader)]
    except StopIteration:
        raise _reject(kind, [(1, None, ("the file is empty: the first line must be the header "
                                                             f"({','.join(required)})"))]) from None
    except csv.Error as exc:
        raise _reject(kind, [(1, None, f"not CSV: {exc}")]) from None
    problems = _header_problems(header, required, optional)
    if problems:
        raise _reject(kind, problems)
    rows: list[_Row] = []
    iterator: Iterator[list[str]] = iter(reader)
    while True:
        line = reader.line_num + 1
        try:
            fields = next(iterator)
        except StopIteration:
            break
        except csv.Error as exc:
            raise _reject(kind, [*problems, (line, None, f"not CSV: {exc}")]) from None
        if not fields or all(not f.strip() for f in fields):
            continue  # a blank line
        if len(fields) != len(header):
            problems.append((line, None, f"{len(fields)} fields where the header has {len(header)}"))
            continue
        rows.append(_Row(line, {name: value.strip() for name, value in zip(header, fields, strict=True)}))
        if len(rows) > MAX_ROWS:
            raise _reject(kind, [(line, None, f"more than {MAX_ROWS} rows: split the file")])
    return rows, problems


def _date(value: str) -> dt.date:
    try:
        return dt.date.fromisoformat(value)
    except ValueError:
        raise InvalidIdentifier(f"{value!r} is not a date as YYYY-MM-DD") from None


def parse_instant(value: str) -> dt.datetime:
    """A mandate's bound: a date (YYYY-MM-DD, midnight UTC) or an RFC 3339 date-time with its offset."""
    try:
        if len(value) == 10:
            return dt.datetime.combine(dt.date.fromisoformat(value), dt.time(), tzinfo=dt.UTC)
        moment = dt.datetime.fromisoformat(value)
    except ValueError:
        raise InvalidIdentifier(f"{value!r} is not a date (YYYY-MM-DD) or a date-time with offset") from None
    if moment.tzinfo is None:
        raise InvalidIdentifier(f"{value!r} has no UTC offset (write Z or +04:00)")
    return moment.astimezone(dt.UTC)


def _fin(value: str) -> str:
    try:
        return normalize_fin(value)
    except InvalidIdentifierFormat as exc:
        raise InvalidIdentifier(str(exc)) from None


def _granted_via(value: str) -> str:
    if value not in GRANTED_VIA:
        raise InvalidIdentifier(f"granted_via must be one of {', '.join(GRANTED_VIA)} (got {value!r})")
    return value


def _check(problems: list[Problem], line: int, column: str, check: Callable[..., Any], *args: Any) -> Any:
    """check(*args), or None with its problem noted (IdpError's detail) under `line` and `column`."""
    try:
        return check(*args)
    except IdpError as exc:
        problems.append((line, column, exc.detail))
        return None


async def _existing(session: AsyncSession, column: Any, values: Sequence[str]) -> set[str]:
    found: set[str] = set()
    unique = sorted(set(values))
    for start in range(0, len(unique), _CHUNK):
        chunk = unique[start:start + _CHUNK]
        found.update((await session.execute(select(column).where(column.in_(chunk)))).scalars())
    return found


def _reject(kind: str, problems: list[Problem]) -> ImportRejected:
    problems.sort(key=lambda p: p[0])
    lines = len({p[0] for p in problems})
    return ImportRejected(f"the {kind} file was not imported: {len(problems)} problem(s) on {lines} line(s); "
                          "nothing was written", problems)


def _finish(session: AsyncSession, kind: str, data: bytes, count: int, actor: str) -> ImportSummary:
    digest = hashlib.sha256(data).hexdigest()
    record_event(session, f"registry.{kind}_imported", actor=actor, detail={"rows": count, "sha256": digest})
    return ImportSummary(kind, count, digest)


async def import_persons(session: AsyncSession, data: bytes, *, actor: str,
                         today: dt.date | None = None) -> ImportSummary:
    """Import a persons file (PERSON_COLUMNS, PERSON_OPTIONAL): all of it, or ImportRejected and nothing."""
    rows, problems = _rows(data, "persons", PERSON_COLUMNS, PERSON_OPTIONAL)
    people: list[tuple[int, dict[str, Any]]] = []
    fins: dict[str, int] = {}
    documents: dict[tuple[str, str], int] = {}
    for row in rows:
        v = row.values
        birthdate = _check(problems, row.line, "birthdate", _date, v["birthdate"]) \
            if v.get("birthdate") else None
        values, found = check_person(
            given_name=v["given_name"], family_name=v["family_name"], fin=v["fin"] or None, birthdate=birthdate,
            category=v.get("category") or "citizen", document_type=v.get("document_type") or None,
            document_country=v.get("document_country") or None, document_number=v.get("document_number") or None,
            status=v.get("status") or "active", given_name_cyrillic=v.get("given_name_cyrillic") or None,
            family_name_cyrillic=v.get("family_name_cyrillic") or None, today=today)
        problems.extend((row.line, column, reason) for column, reason in found)
        if found:
            continue
        fin = values["fin"]
        if fin is not None:
            if fin in fins:
                problems.append((row.line, "fin", f"FIN {fin} appears again (first on line {fins[fin]})"))
                continue
            fins[fin] = row.line
        if values["document_number"] is not None:
            key = (values["document_country"], values["document_number"])
            if key in documents:
                problems.append((row.line, "document_number", (f"document {key[0]} {key[1]} appears again "
                                                               f"(first on line {documents[key]})")))
                continue
            documents[key] = row.line
        people.append((row.line, values))
    for fin in await _existing(session, Person.fin, list(fins)):
        problems.append((fins[fin], "fin", f"a person with FIN {fin} is already registered"))
    if documents:
        for country, number in await _documents(session, [number for _, number in documents]):
            line = documents.get((country or "", number or ""))
            if line is not None:
                problems.append((line, "document_number",
                                 f"a person with document {country} {number} is already registered"))
    if problems:
        raise _reject("persons", problems)
    session.add_all(Person(**values) for _, values in people)
    await session.flush()
    return _finish(session, "persons", data, len(people), actor)


async def _documents(session: AsyncSession, numbers: list[str]) -> list[tuple[str | None, str | None]]:
    """(country, number) of the registered persons holding a document with one of these numbers."""
    unique = sorted(set(numbers))
    held: list[tuple[str | None, str | None]] = []
    for start in range(0, len(unique), _CHUNK):
        chunk = unique[start:start + _CHUNK]
        held.extend((c, n) for c, n in (await session.execute(
            select(Person.document_country, Person.document_number)
            .where(Person.document_number.in_(chunk)))).all())
    return held


async def import_entities(session: AsyncSession, data: bytes, *, actor: str,
                          now: dt.datetime | None = None) -> ImportSummary:
    """Import a legal entities file (ENTITY_COLUMNS, ENTITY_OPTIONAL): all of it, or ImportRejected and nothing.
    `director_fin`, when given, names the entity's director: a registered, active person (a row error otherwise);
    each director recorded is audited entity.director_changed too."""
    rows, problems = _rows(data, "entities", ENTITY_COLUMNS, ENTITY_OPTIONAL)
    entities: list[dict[str, Any]] = []
    voens: dict[str, int] = {}
    directors: dict[int, str] = {}
    for row in rows:
        v, before = row.values, len(problems)
        voen = _check(problems, row.line, "voen", normalize_voen, v["voen"])
        name = _check(problems, row.line, "name", entity_name, v["name"])
        form = _check(problems, row.line, "legal_form", check_legal_form, v["legal_form"])
        status = _check(problems, row.line, "status", entity_status, v.get("status") or "active")
        director = _check(problems, row.line, "director_fin", _fin, v["director_fin"]) \
            if v.get("director_fin") else None
        if director is not None:
            directors[row.line] = director
        if voen is not None:
            if voen in voens:
                problems.append((row.line, "voen", f"VÖEN {voen} appears again (first on line {voens[voen]})"))
            else:
                voens[voen] = row.line
        if len(problems) == before:
            entities.append({"line": row.line, "voen": voen, "name": name, "legal_form": form, "status": status})
    for voen in await _existing(session, LegalEntity.voen, list(voens)):
        problems.append((voens[voen], "voen", f"a legal entity with VÖEN {voen} is already registered"))
    persons = await _directors(session, directors, problems)
    if problems:
        raise _reject("entities", problems)
    moment = now or dt.datetime.now(dt.UTC)
    added = [LegalEntity(**{k: v for k, v in values.items() if k != "line"}, created_at=moment, updated_at=moment,
                         director_person_id=persons[directors[values["line"]]].id if values["line"] in directors
                         else None) for values in entities]
    session.add_all(added)
    await session.flush()
    for entity in added:
        if entity.director_person_id is not None:
            record_event(session, "entity.director_changed", actor=actor, subject=entity.id,
                         detail={"voen": entity.voen, "from": None, "to": entity.director_person_id})
    return _finish(session, "entities", data, len(entities), actor)


async def _directors(session: AsyncSession, directors: dict[int, str], problems: list[Problem]) -> dict[str, Person]:
    """The registered persons named as directors (line -> FIN), by FIN; an unknown or inactive one noted."""
    fins = sorted(set(directors.values()))
    persons = {p.fin: p for start in range(0, len(fins), _CHUNK) for p in (await session.execute(
        select(Person).where(Person.fin.in_(fins[start:start + _CHUNK])))).scalars()}
    for line, fin in directors.items():
        person = persons.get(fin)
        if person is None:
            problems.append((line, "director_fin", f"no person with FIN {fin} is registered"))
        elif person.status != "active":
            problems.append((line, "director_fin", f"the person with FIN {fin} is {person.status}"))
    return {fin: p for fin, p in persons.items() if fin is not None}


async def import_mandates(session: AsyncSession, data: bytes, *, actor: str,
                          now: dt.datetime | None = None) -> ImportSummary:
    """Import a mandates file (MANDATE_COLUMNS, MANDATE_OPTIONAL) for persons and entities already registered
    and active: all of it, or ImportRejected and nothing. `granted_via` defaults to officer, `granted_by` to the
    importing actor."""
    rows, problems = _rows(data, "mandates", MANDATE_COLUMNS, MANDATE_OPTIONAL)
    checked: list[tuple[int, dict[str, Any]]] = []
    for row in rows:
        v, before = row.values, len(problems)

        fin = _check(problems, row.line, "fin", _fin, v["fin"])
        voen = _check(problems, row.line, "voen", normalize_voen, v["voen"])
        powers = _check(problems, row.line, "powers", check_powers, v["powers"].replace(";", " ").split())
        start = _check(problems, row.line, "valid_from", parse_instant, v["valid_from"])
        end = _check(problems, row.line, "valid_to", parse_instant, v["valid_to"]) if v.get("valid_to") \
            else None
        if start is not None and end is not None:
            _check(problems, row.line, "valid_to", check_period, start, end)
        via = _check(problems, row.line, "granted_via", _granted_via, v.get("granted_via") or "officer")
        if len(problems) == before:
            checked.append((row.line, {"fin": fin, "voen": voen, "powers": sorted(powers), "valid_from": start,
                                       "valid_to": end, "granted_via": via,
                                       "granted_by": (v.get("granted_by") or actor)[:200]}))
    fins = sorted({values["fin"] for _, values in checked})
    voens = sorted({values["voen"] for _, values in checked})
    persons = {p.fin: p for start in range(0, len(fins), _CHUNK) for p in (await session.execute(
        select(Person).where(Person.fin.in_(fins[start:start + _CHUNK])))).scalars()}
    entities = {e.voen: e for start in range(0, len(voens), _CHUNK) for e in (await session.execute(
        select(LegalEntity).where(LegalEntity.voen.in_(voens[start:start + _CHUNK])))).scalars()}
    mandates: list[Mandate] = []
    moment = now or dt.datetime.now(dt.UTC)
    for line, values in checked:
        person, entity = persons.get(values["fin"]), entities.get(values["voen"])
        if person is None:
            problems.append((line, "fin", f"no person with FIN {values['fin']} is registered"))
        elif person.status != "active":
            problems.append((line, "fin", f"the person with FIN {values['fin']} is {person.status}"))
        if entity is None:
            problems.append((line, "voen", f"no legal entity with VÖEN {values['voen']} is registered"))
        elif entity.status != "active":
            problems.append((line, "voen", f"the legal entity with VÖEN {values['voen']} is {entity.status}"))
        if person is not None and entity is not None:
            mandates.append(Mandate(person_id=person.id, entity_id=entity.id, powers=values["powers"],
                                    valid_from=values["valid_from"], valid_to=values["valid_to"],
                                    granted_by=values["granted_by"], granted_via=values["granted_via"],
                                    created_at=moment))
    if problems:
        raise _reject("mandates", problems)
    session.add_all(mandates)
    await session.flush()
    return _finish(session, "mandates", data, len(mandates), actor)

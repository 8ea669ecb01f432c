"""What the registry's pages share: the registration officer's screens (api.routes.officer) and an entity director's
section of the account page (api.routes.director, shown by api.routes.pages).

- A refused form's plumbing: `Refused` carries the page out of the unit of work so that it rolls back (nothing is
  written), `Errors` notes a message id under each field, `typed_values` is what was typed, to show again.
- The mandate grant form's checks: the representative's FIN, the powers, the first and the last day typed (local
  dates in Azerbaijan time; the last may be left empty: until revoked), each error under its field with the page's
  own message ids (`GrantMessages`), and the period they make (`period_bounds`: valid_from inclusive, valid_to
  exclusive, as idp.sql.registry keeps it).
- A mandate as these pages show it (`MandateStateView`): its state now (MandateRecord.state_at) and its last day.
"""

from __future__ import annotations

import datetime as dt
import re
from dataclasses import dataclass
from typing import Any, Final

from fastapi import Response
from sqlalchemy.ext.asyncio import AsyncSession

from api.i18n import DISPLAY_TIMEZONE
from idp.core.errors import InvalidIdentifier, PersonNotFound
from idp.sql.models import Person
from idp.sql.persons import PersonService
from idp.sql.registry import POWERS, MandateRecord, MandateState

DATE_RE: Final = re.compile(r"^\d{4}-\d{2}-\d{2}$")
MAX_FIELD: Final = 200
"""Typed values longer than this are not shown again (each field's own limit is checked and reported)."""

Errors = dict[str, str]
"""Field name -> message id, in the order of the form's fields (an error summary lists them so)."""


class Refused(Exception):
    """Carries a page out of the unit of work, so the unit rolls back: a refusal writes nothing."""

    def __init__(self, response: Response) -> None:
        super().__init__("refused")
        self.response = response


def form_field(form: dict[str, list[str]], name: str) -> str:
    """The first value of a form field, stripped; empty when missing."""
    return (form.get(name) or [""])[0].strip()


def typed_values(form: dict[str, list[str]]) -> dict[str, Any]:
    """What was typed, to show again in a refused form: no CSRF token, no overlong value, only known powers."""
    values: dict[str, Any] = {k: v[0] for k, v in form.items() if v and k != "csrf_token" and len(v[0]) <= MAX_FIELD}
    values["powers"] = [p for p in form.get("powers", []) if p in POWERS]
    return values


def parse_date(value: str) -> dt.date | None:
    """A date typed as YYYY-MM-DD (an HTML date input's value), None when it is not one."""
    if not DATE_RE.fullmatch(value):
        return None
    try:
        return dt.date.fromisoformat(value)
    except ValueError:
        return None


def start_of(day: dt.date) -> dt.datetime:
    """Midnight at the start of `day` in Azerbaijan time (the dates typed are local dates)."""
    return dt.datetime.combine(day, dt.time(0), tzinfo=DISPLAY_TIMEZONE)


# --- the mandate grant form ---------------------------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class GrantMessages:
    """The message ids of a mandate grant form's errors (each page words them its own way)."""

    fin_required: str
    fin: str
    person_not_found: str
    person_inactive: str
    powers: str
    date: str
    period: str


async def grant_person(session: AsyncSession, fin: str, errors: Errors, messages: GrantMessages) -> Person | None:
    """The person the mandate is for (their FIN typed), else None; the FIN's error under "fin": missing,
    malformed, unknown, or a person not active (the person is returned then too)."""
    if not fin:
        errors["fin"] = messages.fin_required
        return None
    try:
        person = await PersonService(session).person(fin)
    except InvalidIdentifier:
        errors["fin"] = messages.fin
        return None
    except PersonNotFound:
        errors["fin"] = messages.person_not_found
        return None
    if person.status != "active":
        errors["fin"] = messages.person_inactive
    return person


def grant_powers(form: dict[str, list[str]], errors: Errors, messages: GrantMessages) -> list[str]:
    """The powers ticked; the error under "powers" when none is, or one is unknown (idp.sql.registry.POWERS)."""
    powers = form.get("powers", [])
    if not powers or any(p not in POWERS for p in powers):
        errors["powers"] = messages.powers
    return powers


def grant_period(form: dict[str, list[str]], errors: Errors,
                 messages: GrantMessages) -> tuple[dt.date | None, dt.date | None]:
    """The first and the last day typed (valid_from, valid_to; the last may be left empty: until revoked), each
    error under its field: not a date, or a last day before the first."""
    first = parse_date(form_field(form, "valid_from"))
    if first is None:
        errors["valid_from"] = messages.date
    typed_last = form_field(form, "valid_to")
    last = parse_date(typed_last) if typed_last else None
    if typed_last and last is None:
        errors["valid_to"] = messages.date
    elif first is not None and last is not None and last < first:
        errors["valid_to"] = messages.period
    return first, last


def period_bounds(first: dt.date, last: dt.date | None) -> tuple[dt.datetime, dt.datetime | None]:
    """The mandate's valid_from and valid_to for the first and last day typed: from the start of the first day to
    the start of the day after the last (valid_to is exclusive), or open-ended."""
    return start_of(first), start_of(last + dt.timedelta(days=1)) if last else None


# --- a mandate on a page ------------------------------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class MandateStateView:
    """A mandate as the officer's person page and the director's section show it."""

    record: MandateRecord
    state: MandateState
    """active, revoked, expired or future (MandateRecord.state_at)."""
    last_day: dt.date | None
    """The last day of the period in Azerbaijan time (valid_to is exclusive), None when open-ended."""

    @classmethod
    def at(cls, record: MandateRecord, now: dt.datetime) -> MandateStateView:
        last = (record.valid_to.astimezone(DISPLAY_TIMEZONE) - dt.timedelta(seconds=1)).date() \
            if record.valid_to else None
        return cls(record, record.state_at(now), last)


__all__ = ["DATE_RE", "MAX_FIELD", "Errors", "GrantMessages", "MandateStateView", "Refused",
           "form_field", "grant_period", "grant_person", "grant_powers", "parse_date", "period_bounds", "start_of",
           "typed_values"]

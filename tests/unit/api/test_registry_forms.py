"""What the officer's screens and the director's section share (api.registry_forms): the grant form's period typed
in Azerbaijan dates, its errors under each page's own message ids, and a mandate's last day as the pages show it."""

from __future__ import annotations

import datetime as dt

import pytest

from api.i18n import DISPLAY_TIMEZONE
from api.registry_forms import GrantMessages, MandateStateView, grant_period, grant_powers, period_bounds, typed_values
from idp.sql.registry import MandateRecord

MESSAGES = GrantMessages(fin_required="x.fin_required", fin="x.fin", person_not_found="x.not_found",
                         person_inactive="x.inactive", powers="x.powers", date="x.date", period="x.period")


@pytest.mark.nodb
@pytest.mark.parametrize(("first", "last", "errors"), [
    ("2026-03-01", "", {}),
    ("2026-03-01", "2026-03-01", {}),
    ("2026-03-01", "2026-02-28", {"valid_to": "x.period"}),
    ("2026-02-30", "2026-03-01", {"valid_from": "x.date"}),
    ("1.3.2026", "soon", {"valid_from": "x.date", "valid_to": "x.date"}),
    ("", "", {"valid_from": "x.date"}),
])
def test_grant_period_notes_each_error_under_its_field(first: str, last: str, errors: dict[str, str]) -> None:
    noted: dict[str, str] = {}
    grant_period({"valid_from": [first], "valid_to": [last]}, noted, MESSAGES)
    assert noted == errors


@pytest.mark.nodb
def test_grant_powers_and_typed_values_keep_only_known_powers() -> None:
    errors: dict[str, str] = {}
    form = {"powers": ["sign_declarations", "rule_the_world"], "csrf_token": ["t"], "fin": ["5ABCD12"],
            "name": ["x" * 201]}
    grant_powers(form, errors, MESSAGES)
    assert errors == {"powers": "x.powers"}
    assert typed_values(form) == {"powers": ["sign_declarations"], "fin": "5ABCD12"}
    grant_powers({}, errors := {}, MESSAGES)
    assert errors == {"powers": "x.powers"}


@pytest.mark.nodb
def test_the_days_typed_make_a_period_whose_end_is_exclusive_and_shown_back_as_the_last_day() -> None:
    valid_from, valid_to = period_bounds(dt.date(2026, 3, 1), dt.date(2026, 3, 31))
    assert valid_from == dt.datetime(2026, 3, 1, tzinfo=DISPLAY_TIMEZONE)
    assert valid_to == dt.datetime(2026, 4, 1, tzinfo=DISPLAY_TIMEZONE)
    assert period_bounds(dt.date(2026, 3, 1), None)[1] is None
    record = MandateRecord(id="m", person_id="p", fin="5ABCD12", entity_id="e", voen="1400057421", entity_name="E",
                           powers=frozenset({"sign_declarations"}), valid_from=valid_from,
                           valid_to=valid_to.astimezone(dt.UTC), granted_by="officer-1", granted_via="officer",
                           revoked_at=None, revoked_by=None)
    view = MandateStateView.at(record, dt.datetime(2026, 3, 31, 19, 59, 59, tzinfo=dt.UTC))  # 23:59:59 in Baku
    assert (view.state, view.last_day) == ("active", dt.date(2026, 3, 31))
    assert MandateStateView.at(record, dt.datetime(2026, 3, 31, 20, tzinfo=dt.UTC)).state == "expired"

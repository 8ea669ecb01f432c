"""An entity's director on their account page (issue 16: mandates "granted by an officer or by the entity's
director, revocable"): grant a mandate for the entity to a person by FIN, revoke one of its mandates.

Who may, decided at every request (nothing is cached): the person signed in with Açar's session cookie who is, now,
the director of the active entity named in the address (idp.sql.registry.DirectorService: a director replaced or an
entity suspended stops at once; anyone else gets the account page with a translated refusal, 403, and nothing
changes), and whose session reached the level of assurance "substantial" (a passkey or an ID card, as the officer
screens; eIDAS Implementing Regulation (EU) 2015/1502, sections 2.1 and 2.3).

Every form carries csrf_for_session(session cookie, DIRECTOR_CSRF_PURPOSE), a purpose of its own: a missing or wrong
token answers 403 and changes nothing. A refused grant shows the account page again (400) with what was typed and a
translated error next to each field; the unit of work is rolled back (api.registry_forms.Refused), so nothing is
written. A director cannot grant a mandate to themselves: their authority comes from the register and ends with
their term, and a mandate to themselves would outlive it (an officer grants it when they must also sign or log in
for the entity).
Mandates are granted with granted_via "director" and audited, granted_by and actor "director:<person id>".
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Final

from fastapi import APIRouter, Request, Response
from fastapi.responses import RedirectResponse
from sqlalchemy.ext.asyncio import AsyncSession

from api.registry_forms import (
    Errors,
    GrantMessages,
    Refused,
    form_field,
    grant_period,
    grant_person,
    grant_powers,
    period_bounds,
    typed_values,
)
from api.rendering import FORM_EXPIRED, error_page, render
from api.routes.pages import DIRECTOR_LEVEL, _account_page, _load_account
from api.routes.passkeys import orm_unit
from api.units import RequestUnit
from api.web import DIRECTOR_CSRF_PURPOSE, NO_STORE, provider_of, read_page_form, services_of, session_cookie
from idp.core.errors import EntityNotFound, IdpError, InvalidMandate, MandateNotFound
from idp.core.interfaces import LoginState
from idp.core.loa import at_least
from idp.core.sessions import csrf_matches
from idp.sql.registry import DirectorService
from storage.direct import SessionTransaction

router = APIRouter(prefix="/account/companies", tags=["pages"], include_in_schema=False)

GRANT_MESSAGES: Final = GrantMessages(
    fin_required="account.director.error.fin_required", fin="account.director.error.fin",
    person_not_found="account.director.error.person_not_found",
    person_inactive="account.director.error.person_inactive", powers="account.director.error.powers",
    date="account.director.error.date", period="account.director.error.period")


@dataclass(frozen=True, slots=True)
class _Director:
    request: Request
    cookie: str
    work: RequestUnit
    state: LoginState
    session: AsyncSession
    directors: DirectorService

    async def page(self, *, status: int, error_key: str | None = None,
                   form: dict[str, Any] | None = None) -> Refused:
        view = await _load_account(self.request, self.work, self.state)
        return Refused(_account_page(view, self.cookie, error_key=error_key, status=status, director_form=form))


async def _as_director(request: Request, voen: str,
                       act: Callable[[_Director, dict[str, list[str]]], Awaitable[Response]]) -> Response:
    """Run `act` for the signed-in director of the active entity `voen` (see the module docstring), in one unit of
    work, the CSRF token checked first; a `Refused` page leaves with the unit rolled back."""
    services, provider = services_of(request), provider_of(request)
    cookie = session_cookie(request, provider)
    form = await read_page_form(request)
    if cookie is None or not csrf_matches(cookie, DIRECTOR_CSRF_PURPOSE, form.get("csrf_token", [])):
        return error_page("invalid_request", FORM_EXPIRED, status=403)
    try:
        async with orm_unit(services) as work:
            state = await provider.login_sessions.current(work.oidc, cookie)
            if state is None:
                return render("account_signin.html", {"title_key": "account.signin.title"}, status=401)
            if not isinstance(work.tx, SessionTransaction):
                raise TypeError("the director's forms run in an ORM unit of work (orm_unit)")
            director = _Director(request, cookie, work, state, work.tx.session, DirectorService(work.tx.session))
            try:
                await director.directors.entity(state.person_id, voen)
            except EntityNotFound:
                raise await director.page(status=403, error_key="account.director.error.not_director") from None
            if not at_least(state.level, DIRECTOR_LEVEL):
                raise await director.page(status=403, error_key="account.director.error.level")
            return await act(director, form)
    except Refused as refused:
        return refused.response


async def _check_grant(director: _Director, form: dict[str, list[str]], errors: Errors) -> tuple[
        dt.date | None, dt.date | None]:
    """The representative's FIN (not the director's own), the powers and the period typed, each error noted next
    to its field."""
    person = await grant_person(director.session, form_field(form, "fin"), errors, GRANT_MESSAGES)
    if person is not None and person.id == director.state.person_id:
        errors["fin"] = "account.director.error.self"
    grant_powers(form, errors, GRANT_MESSAGES)
    return grant_period(form, errors, GRANT_MESSAGES)


def _done(notice: str) -> Response:
    return RedirectResponse(f"/account?done={notice}#companies", status_code=303, headers=NO_STORE)


@router.post("/{voen}/mandates")
async def grant_mandate(request: Request, voen: str) -> Response:
    """Grant a mandate for the entity as its director (DirectorService.grant: granted_via "director", audited
    mandate.granted): from the first day typed (Azerbaijan time) to the end of the last day typed, or until
    revoked."""
    voen = voen[:32]

    async def grant(director: _Director, form: dict[str, list[str]]) -> Response:
        errors: Errors = {}
        first, last = await _check_grant(director, form, errors)
        refused = {"voen": voen, "values": typed_values(form)}
        if errors or first is None:
            raise await director.page(status=400, form={**refused, "errors": errors})
        valid_from, valid_to = period_bounds(first, last)
        try:
            await director.directors.grant(
                director.state.person_id, voen, fin=form_field(form, "fin"), powers=form.get("powers", []),
                valid_from=valid_from, valid_to=valid_to)
        except IdpError:  # InvalidMandate, or a party changed since the checks above
            raise await director.page(status=400, form={**refused, "errors": {
                "fin": "account.director.error.invalid"}}) from None
        return _done("director_granted")

    return await _as_director(request, voen, grant)


@router.post("/{voen}/mandates/{mandate_id}/revoke")
async def revoke_mandate(request: Request, voen: str, mandate_id: str) -> Response:
    """Revoke one of the entity's mandates now as its director (audited mandate.revoked); a mandate of another
    entity is 404 and nothing changes."""
    voen = voen[:32]

    async def revoke(director: _Director, _form: dict[str, list[str]]) -> Response:
        try:
            await director.directors.revoke(director.state.person_id, voen, mandate_id)
        except MandateNotFound:
            raise await director.page(status=404, error_key="account.director.error.mandate_not_found") from None
        except InvalidMandate:
            raise await director.page(status=400, error_key="account.director.error.mandate_revoked") from None
        return _done("director_revoked")

    return await _as_director(request, voen, revoke)


__all__ = ["router"]

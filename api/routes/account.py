"""The citizen's own view of what they shared: consents per client, revocable (the session cookie authenticates).

Revoking a consent also revokes the grants (and so every token) that client holds for the citizen; the next
authorization request of that client asks for consent again.
"""

from __future__ import annotations

from fastapi import APIRouter, Request, Response
from fastapi.responses import JSONResponse

from api.errors import ApiProblem
from api.web import NO_STORE, provider_of, session_cookie
from idp.core.interfaces import LoginState
from idp.sql.store import SqlOidcStore

router = APIRouter(tags=["account"])


async def _require_session(request: Request, store: SqlOidcStore) -> LoginState:
    provider = provider_of(request)
    current = await provider.login_sessions.current(store, session_cookie(request, provider))
    if current is None:
        raise ApiProblem(401, "login_required", "Sign-in required", "sign in to see what you have shared")
    return current


@router.get("/account/consents")
async def list_consents(request: Request) -> JSONResponse:
    provider = provider_of(request)
    async with provider.unit_of_work() as unit:
        current = await _require_session(request, unit.oidc)
        consents = await unit.oidc.list_consents(current.person_id)
    out = []
    for c in consents:
        client = await provider.clients.get(c.client_id)
        out.append({"client_id": c.client_id, "client_name": client.name if client else c.client_id,
                    "scopes": sorted(c.scopes), "claims": sorted(c.claims), "granted_at": c.granted_at.isoformat()})
    return JSONResponse({"consents": out}, headers=NO_STORE)


@router.delete("/account/consents/{client_id}")
async def revoke_consent(request: Request, client_id: str) -> Response:
    """SameSite=Lax keeps the cookie off cross-site DELETE requests; the Origin check is a second guard."""
    provider = provider_of(request)
    origin = request.headers.get("origin")
    if origin is not None and origin != provider.issuer:
        raise ApiProblem(403, "cross_origin", "Cross-origin request refused", "revoke consents from Açar's own pages")
    async with provider.unit_of_work() as unit:
        current = await _require_session(request, unit.oidc)
        if not await unit.oidc.withdraw_consent(current.person_id, client_id[:64]):
            raise ApiProblem(404, "consent_not_found", "No such consent", "you have not shared data with this client")
    return Response(status_code=204, headers=NO_STORE)

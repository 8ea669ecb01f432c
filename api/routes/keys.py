"""Public key material: the JWK Set of the token-signing keys (RFC 7517 section 5)."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse

from api.deps import Services
from api.routing import PlainRoute
from keys.token_keys import JWKS_MAX_AGE_SECONDS

router = APIRouter(tags=["keys"])
"""The module's tag in the OpenAPI document; its one endpoint is a plain route (`plain_routes`)."""


async def jwks(request: Request) -> JSONResponse:
    """Every published token-signing key: next, current and retired-but-not-expired."""
    services: Services = request.app.state.services
    body = await services.token_keys.jwks()
    return JSONResponse(dict(body), headers={"Cache-Control": f"public, max-age={JWKS_MAX_AGE_SECONDS}"},
                        media_type="application/jwk-set+json")


plain_routes = [PlainRoute("/jwks.json", jwks, methods=["GET"])]
"""The JWK Set every relying party fetches to verify tokens: a plain Starlette route at the head of the route table
(api.app), like the token endpoint, answered without FastAPI's request handling."""

"""OAuth endpoints answer RFC 6749 section 5.2 error JSON, not problem+json."""

from __future__ import annotations

import httpx
import pytest
from fastapi import FastAPI

from api import problems
from idp.core.errors import InvalidClient, InvalidGrant, InvalidRequest, InvalidScope, OAuthError, UnsupportedGrantType


@pytest.mark.parametrize(
    ("exc", "status", "error"),
    [
        (InvalidRequest("grant_type is missing"), 400, "invalid_request"),
        (InvalidClient("unknown client"), 401, "invalid_client"),
        (InvalidGrant("code already used"), 400, "invalid_grant"),
        (UnsupportedGrantType("password is not supported"), 400, "unsupported_grant_type"),
        (InvalidScope("scope fin not allowed"), 400, "invalid_scope"),
    ],
)
async def test_oauth_errors_are_rfc6749_json(exc: OAuthError, status: int, error: str) -> None:
    app = FastAPI()
    problems.install(app)

    @app.post("/token")
    async def token() -> None:
        raise exc

    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as client:
        r = await client.post("/token")
    assert r.status_code == status
    assert r.headers["content-type"] == "application/json"
    assert r.headers["cache-control"] == "no-store"
    assert r.json() == {"error": error, "error_description": exc.description}
    assert ("www-authenticate" in r.headers) == (status == 401)

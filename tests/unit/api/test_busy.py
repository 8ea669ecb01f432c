"""An embedded database whose writers queued past its busy timeout (storage.direct.WriteLockTimeout) is an
overload, answered 503 with Retry-After in the endpoint's error form, never a 500."""

from __future__ import annotations

from typing import Any

import httpx
import pytest
from fastapi import FastAPI

from api.deps import Services
from storage.direct import WriteLockTimeout

BROWSER = "text/html,application/xhtml+xml,*/*;q=0.8"


@pytest.fixture
def busy_token(app: FastAPI, initialized: Services, monkeypatch: pytest.MonkeyPatch) -> None:
    """The token service raising what a writer past SQLite's busy timeout raises."""
    async def queued_too_long(*args: Any, **kwargs: Any) -> Any:
        raise WriteLockTimeout("no write lock after 10 s")

    monkeypatch.setattr(app.state.services.oidc.grants, "token", queued_too_long)


@pytest.mark.usefixtures("busy_token")
async def test_the_token_endpoint_answers_temporarily_unavailable(client: httpx.AsyncClient) -> None:
    r = await client.post("/token", data={"grant_type": "client_credentials"}, auth=("c", "s"))
    assert r.status_code == 503 and r.headers["retry-after"] == "5" and r.headers["cache-control"] == "no-store"
    assert r.headers["content-type"] == "application/json"
    assert r.json()["error"] == "temporarily_unavailable"


async def test_other_routes_answer_a_problem_or_the_page(app: FastAPI, client: httpx.AsyncClient) -> None:
    async def busy() -> None:
        raise WriteLockTimeout("no write lock after 10 s")

    app.add_api_route("/test-busy", busy)
    r = await client.get("/test-busy")
    assert r.status_code == 503 and r.headers["content-type"] == "application/problem+json"
    assert r.json()["type"] == "urn:acar:problem:temporarily_unavailable" and r.headers["retry-after"] == "5"
    page = await client.get("/test-busy", headers={"Accept": BROWSER, "Accept-Language": "en"})
    assert page.status_code == 503 and page.headers["content-type"].startswith("text/html")
    assert "temporarily unavailable" in page.text.lower() or "try again" in page.text.lower()

"""A request whose form or query cannot be read: the pages answer the translated invalid_request error page, the
OAuth endpoints the error JSON of RFC 6749 section 5.2. (One exception and one handler on the pages' side:
api.errors.InvalidPageRequest, answered in api.problems.)"""

from __future__ import annotations

import httpx
import pytest

pytestmark = pytest.mark.asyncio

FORM = "application/x-www-form-urlencoded"
NOT_FORM = f"the body must be {FORM}"
TOO_MANY = "&".join(f"p{i}=x" for i in range(101))
PAGES_POSTED = ("/authorize", "/logout", "/logout/confirm", "/interaction/some-id/consent",
                "/interaction/some-id/dev-login", "/account/credentials/some-id/rename",
                "/account/credentials/some-id/remove", "/account/consents/some-client/withdraw")


def _is_error_page(r: httpx.Response, description: str, lang: str = "az") -> None:
    assert r.status_code == 400
    assert r.headers["content-type"].startswith("text/html")
    assert r.headers["cache-control"] == "no-store"
    assert r.headers["content-security-policy"].startswith("default-src 'none'")
    assert r.headers["content-language"] == lang
    assert r.headers["x-request-id"]
    assert '<code>invalid_request</code>' in r.text
    assert f'<p lang="en">{description}</p>' in r.text  # the reason, as technical detail


@pytest.mark.parametrize("path", PAGES_POSTED)
async def test_a_page_posted_without_form_encoding_is_the_error_page(http: httpx.AsyncClient, path: str) -> None:
    r = await http.post(path, content=b"{}", headers={"Content-Type": "application/json"})
    _is_error_page(r, NOT_FORM)


@pytest.mark.parametrize("path", ["/authorize", "/logout/confirm", "/account/consents/some-client/withdraw"])
async def test_a_page_posted_too_large_or_undecodable_is_the_error_page(http: httpx.AsyncClient, path: str) -> None:
    _is_error_page(await http.post(path, content=b"a=" + b"x" * (64 * 1024), headers={"Content-Type": FORM}),
                   "the request body is too large")
    _is_error_page(await http.post(path, content=b"a=\xff\xfe", headers={"Content-Type": FORM}),
                   "the body is not valid form encoding")


@pytest.mark.parametrize("path", ["/authorize", "/logout"])
async def test_a_page_with_too_many_query_parameters_is_the_error_page(http: httpx.AsyncClient, path: str) -> None:
    _is_error_page(await http.get(f"{path}?{TOO_MANY}"), "too many parameters")
    # in the citizen's language (here Accept-Language; Azerbaijani by default)
    _is_error_page(await http.get(f"{path}?{TOO_MANY}", headers={"Accept-Language": "ru"}), "too many parameters",
                   lang="ru")


async def test_the_enrollment_form_shows_itself_again(http: httpx.AsyncClient) -> None:
    r = await http.post("/enroll", content=b"{}", headers={"Content-Type": "application/json"})
    assert r.status_code == 400 and r.headers["content-type"].startswith("text/html")
    assert 'name="code"' in r.text  # the activation-code form, not the error page


@pytest.mark.parametrize("path", ["/token", "/introspect", "/revoke", "/userinfo"])
async def test_the_oauth_endpoints_answer_error_json(http: httpx.AsyncClient, path: str) -> None:
    r = await http.post(path, content=b"{}", headers={"Content-Type": "application/json"})
    assert r.status_code == 400
    assert r.headers["content-type"] == "application/json"
    assert r.json() == {"error": "invalid_request", "error_description": NOT_FORM}
    assert r.headers["cache-control"] == "no-store" and r.headers["pragma"] == "no-cache"

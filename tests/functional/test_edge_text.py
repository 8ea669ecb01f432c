"""Text storage cannot hold (NUL, unpaired surrogates, noncharacters; api.text) is refused at the edge, in each
endpoint's own error format, before any database call: every route of the app's route table and every `acar`
command that takes text, on both databases (PostgreSQL is where NUL reached the database and answered 500)."""

from __future__ import annotations

import argparse
import base64
import json
import re
from collections.abc import Iterator
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest
from fastapi import FastAPI
from fastapi.routing import iter_route_contexts
from sqlalchemy import text

from api.auth import mint_admin_token
from api.cli import build_parser
from api.deps import Services
from storage.base import Base
from tests.functional.helpers import InProcessAcar
from tests.oidc_tools import register_client

NUL_URL, SURROGATE_URL = "a%00b", "a%ED%A0%80b"  # NUL, and an encoded surrogate (invalid UTF-8) in a URL or form
NUL_JSON, SURROGATE_JSON = "a\x00b", "a\ud800b"  # sent as the JSON escapes \u0000 and \ud800
RAW = {NUL_URL: b"a\x00b", SURROGATE_URL: b"a\xed\xa0\x80b"}  # the same as raw bytes in a JSON body
EC_POINT = {"x": "f83OJ3D2xF1Bg8vub9tLe1gHMzV76e8Tus9uPHvRVEU", "y": "x_FEzRu9m36HLN_tue659LNpXW6pCyStikYjKIWI5a0"}
OAUTH_PATHS = {"/token", "/introspect", "/revoke", "/userinfo"}
PAGE_PATHS = {"/authorize", "/logout", "/logout/confirm"}
PAGE_TAGS = {"pages", "interaction"}
FIELDS = ("client_id", "client_secret", "redirect_uri", "state", "scope", "code", "token", "refresh_token",
          "grant_type", "id_token_hint", "post_logout_redirect_uri", "csrf_token", "name", "next", "error",
          "error_description", "fin", "code_verifier", "response_type", "nonce", "pending_id", "lang")
JSON_FIELDS = ("name", "subject", "scope", "reason", "fin", "pending_id", "ceremony", "code", "label", "nickname")


def _routes(app: FastAPI) -> Iterator[tuple[Any, str]]:
    """Every (route, method) of the app's route table, the included routers' routes too (mounted static files
    aside)."""
    for route in iter_route_contexts(app.routes):
        if route.path is not None and route.methods:
            for method in sorted(route.methods - {"HEAD"}):
                yield route, method


def _path(route: Any, value: str) -> str:
    return re.sub(r"\{[^}]+\}", value, route.path)


def _kind(route: Any) -> str:
    if route.path.endswith(".png"):
        return "image"  # an <img> source: its own refusals are a bare status, the edge's as for any request
    if route.path in OAUTH_PATHS:
        return "oauth"
    tags = {str(tag) for tag in getattr(route, "tags", None) or ()}
    if route.path in PAGE_PATHS or route.path.startswith("/interaction/") or tags & PAGE_TAGS:
        return "page"
    return "problem"


def _json_body(value: str) -> bytes:
    body: dict[str, Any] = dict.fromkeys(JSON_FIELDS, value)
    body.update(redirect_uris=[f"https://portal.example/{value}"], post_logout_redirect_uris=[value],
                scopes=["openid"], credential={"id": value}, ttl_seconds=60,
                jwks={"keys": [{"kty": "EC", "crv": "P-256", "kid": value, "x": "x", "y": "y"}]})
    return json.dumps(body).encode()  # ensure_ascii: \u0000 and \ud800 as escapes


async def _rows(services: Services) -> dict[str, int]:
    query = " UNION ALL ".join(f"SELECT '{t.name}', COUNT(*) FROM \"{t.name}\""  # noqa: S608 - metadata names
                               for t in Base.metadata.sorted_tables)
    async with services.engine.connect() as conn:
        return {str(row[0]): int(row[1]) for row in (await conn.execute(text(query))).all()}


def _check(route: Any, method: str, what: str, r: httpx.Response) -> None:
    where = f"{method} {route.path} ({what}): {r.status_code} {r.text[:300]}"
    assert r.status_code < 500, where
    if r.status_code < 400:
        return
    kind, ctype = _kind(route), r.headers.get("content-type", "")
    if kind == "oauth":
        assert ctype == "application/json" and "error" in r.json(), where
    elif kind == "page":
        assert ctype.startswith("text/html"), where
    elif kind == "image":
        assert not r.content or ctype.startswith(("text/html", "application/problem+json")), where
    else:
        assert ctype == "application/problem+json", where


async def test_every_route_refuses_nul_and_surrogates(client: httpx.AsyncClient, initialized: Services) -> None:
    minted = await mint_admin_token(initialized, subject="operator", scopes={"acar:admin"}, ttl_seconds=600)
    bearer = {"Authorization": f"Bearer {minted['access_token']}"}
    app: FastAPI = client._transport.app  # type: ignore[attr-defined]  # httpx.ASGITransport's app
    before = await _rows(initialized)
    seen = 0
    for route, method in _routes(app):
        for url_bad, json_bad in ((NUL_URL, NUL_JSON), (SURROGATE_URL, SURROGATE_JSON)):
            query = "&".join(f"{name}={url_bad}" for name in FIELDS)
            basic = "Basic " + base64.b64encode(f"{url_bad}:c".encode()).decode()
            attempts: list[tuple[str, str, dict[str, str], bytes | None]] = [
                ("path", _path(route, url_bad), bearer, None),
                ("query", _path(route, "x") + "?" + query, bearer, None),
            ]
            if method != "GET":
                attempts += [
                    ("form", _path(route, "x"), {"Content-Type": "application/x-www-form-urlencoded", **bearer},
                     query.encode()),
                    ("basic", _path(route, "x"), {"Content-Type": "application/x-www-form-urlencoded",
                                                  "Authorization": basic}, b"grant_type=client_credentials"),
                    ("json", _path(route, "x"), {"Content-Type": "application/json", **bearer},
                     _json_body(json_bad)),
                    ("raw json", _path(route, "x"), {"Content-Type": "application/json", **bearer},
                     _json_body("\x01").replace(b"\\u0001", RAW[url_bad])),
                ]
            for what, url, headers, body in attempts:
                r = await client.request(method, url, headers=headers, content=body)
                _check(route, method, what, r)
                seen += 1
    assert seen > 300 and {route.path for route, _ in _routes(app)} >= {"/admin/clients/{client_id}", "/token"}
    assert await _rows(initialized) == before


async def test_admin_client_list_fields_refuse_surrogates_and_nul(client: httpx.AsyncClient,
                                                                   initialized: Services) -> None:
    minted = await mint_admin_token(initialized, subject="operator", scopes={"acar:client:manage"}, ttl_seconds=600)
    headers = {"Authorization": f"Bearer {minted['access_token']}", "Content-Type": "application/json"}
    valid: dict[str, Any] = {"name": "Agency portal", "redirect_uris": ["https://portal.example/cb"],
                             "post_logout_redirect_uris": ["https://portal.example/bye"]}
    jwk = {"kty": "EC", "crv": "P-256", **EC_POINT, "kid": "k1"}
    before = await _rows(initialized)
    for bad in (SURROGATE_JSON, NUL_JSON):
        for field, body in (
            ("redirect_uris.0", {**valid, "redirect_uris": [f"https://portal.example/{bad}"]}),
            ("post_logout_redirect_uris.0", {**valid, "post_logout_redirect_uris": [f"https://portal.example/{bad}"]}),
            ("jwks.keys.0.kid", {**valid, "auth_method": "private_key_jwt", "jwks": {"keys": [{**jwk, "kid": bad}]}}),
            ("name", {**valid, "name": bad}),
        ):
            r = await client.post("/admin/clients", headers=headers, content=json.dumps(body))
            assert r.status_code == 422 and r.headers["content-type"] == "application/problem+json", r.text
            assert r.json()["type"] == "urn:acar:problem:invalid_request"
            assert r.json()["errors"][0]["field"] == field, r.text
    assert await _rows(initialized) == before
    assert (await client.get("/admin/clients", headers=headers)).status_code == 200
    for action in ("", "/disable", "/secret"):
        method = "GET" if not action else "POST"
        r = await client.request(method, f"/admin/clients/{NUL_URL}{action}", headers=headers)
        assert r.status_code == 422 and r.headers["content-type"] == "application/problem+json", r.text


async def test_oauth_endpoints_answer_oauth_errors(client: httpx.AsyncClient, initialized: Services) -> None:
    basic = {"Authorization": "Basic " + base64.b64encode(b"a%00b:c").decode()}
    for path in ("/token", "/introspect", "/revoke"):
        r = await client.post(path, headers=basic, data={"token": "t", "grant_type": "client_credentials"})
        assert r.status_code == 401 and r.json()["error"] == "invalid_client", (path, r.text)
        assert "U+0000" in r.json()["error_description"]
        r = await client.post(path, data={"client_id": "a\x00b", "token": "t", "grant_type": "client_credentials"})
        assert r.status_code == 400 and r.json()["error"] == "invalid_request", (path, r.text)
    r = await client.post("/token", content=b"grant_type=client_credentials&client_id=a%ED%A0%80",
                          headers={"Content-Type": "application/x-www-form-urlencoded"})
    assert r.status_code == 400 and r.json()["error"] == "invalid_request"  # not UTF-8: refused, not U+FFFD


async def test_percent_escapes_that_are_not_utf8_are_refused(client: httpx.AsyncClient, initialized: Services) -> None:
    """A form field or query parameter whose percent-escapes decode to bytes that are not UTF-8 (a lone byte, a cut
    or overlong sequence, an encoded surrogate: RFC 3629 section 3) is malformed text, refused in the endpoint's own
    error format (URL Standard, application/x-www-form-urlencoded: the bytes are UTF-8 decoded), never taken as
    U+FFFD; nothing is written."""
    registered = await register_client(initialized)
    form = {"Content-Type": "application/x-www-form-urlencoded"}
    before = await _rows(initialized)
    for bad in ("%FF", "a%ED%A0%80b", "%C0%AF", "%E2%82"):
        for path, body in (("/token", f"grant_type=client_credentials&client_id={bad}"),
                           ("/introspect", f"token=t&client_id={registered.client_id}&client_secret={bad}"),
                           ("/revoke", f"token={bad}"), ("/userinfo", f"access_token={bad}")):
            r = await client.post(path, content=body.encode(), headers=form)
            assert r.status_code == 400 and r.headers["content-type"] == "application/json", (path, bad, r.text)
            assert r.json()["error"] == "invalid_request" and "UTF-8" in r.json()["error_description"], r.text
        valid = f"client_id={registered.client_id}&response_type=code&scope=openid"
        for method, url, body in (("GET", f"/authorize?{valid}&redirect_uri={bad}", None),
                                  ("POST", "/authorize", f"{valid}&state={bad}".encode()),
                                  ("GET", f"/logout?state={bad}", None),
                                  ("POST", "/logout/confirm", f"csrf_token={bad}".encode()),
                                  ("GET", f"/language/en?next={bad}", None)):
            r = await client.request(method, url, content=body, headers=form if body else {})
            assert r.status_code == 400 and r.headers["content-type"].startswith("text/html"), (url, bad, r.text)
            assert "UTF-8" in r.text, (url, bad)
        basic = {"Authorization": "Basic " + base64.b64encode(f"{registered.client_id}:s{bad}".encode()).decode()}
        r = await client.post("/introspect", data={"token": "t"}, headers=basic)  # RFC 6749 2.3.1: form-encoded
        assert r.status_code == 401 and r.json()["error"] == "invalid_client", r.text
        assert "UTF-8" in r.json()["error_description"], r.text
    r = await client.get("/language/en?next=/help%3Fq%3D%C5%9F")  # UTF-8 escapes stay text
    assert r.status_code == 303, r.text
    assert await _rows(initialized) == before


async def test_authorize_redirects_or_shows_the_page_as_rfc6749_says(client: httpx.AsyncClient,
                                                                     initialized: Services) -> None:
    registered = await register_client(initialized)
    valid = {"client_id": registered.client_id, "redirect_uri": registered.redirect_uri, "response_type": "code",
             "scope": "openid", "state": "s1"}
    before = await _rows(initialized)
    r = await client.get("/authorize", params={**valid, "nonce": "n\x00"})
    assert r.status_code == 303, r.text
    sent = urlsplit(r.headers["location"])
    answer = parse_qs(sent.query)
    assert sent.netloc == "agency.example" and answer["error"] == ["invalid_request"] and answer["state"] == ["s1"]
    for name in ("client_id", "redirect_uri", "state", "response_mode"):
        r = await client.get("/authorize", params={**valid, name: "x\x00"})
        assert r.status_code == 400 and r.headers["content-type"].startswith("text/html"), (name, r.text)
    r = await client.get("/interaction/a%00b")
    assert r.status_code == 400 and r.headers["content-type"].startswith("text/html")
    assert await _rows(initialized) == before


def _commands(parser: argparse.ArgumentParser, prefix: tuple[str, ...] = ()) -> Iterator[
        tuple[tuple[str, ...], argparse.ArgumentParser]]:
    """Every leaf command of `acar`, with its parser."""
    subparsers = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    if not subparsers:
        yield prefix, parser
        return
    for name, sub in subparsers[0].choices.items():
        yield from _commands(sub, (*prefix, name))


def _text_actions(parser: argparse.ArgumentParser) -> list[argparse.Action]:
    return [a for a in parser._actions if a.nargs != 0 and a.type is None and a.choices is None
            and a.dest not in ("help", "json")]


def _filler(action: argparse.Action) -> list[str]:
    """A plausible value for a required argument other than the one under test."""
    if action.choices is not None:
        value = next(iter(action.choices))
    elif action.type is int:
        value = "1"
    else:
        value = "x"
    return [value] if not action.option_strings else [action.option_strings[0], value]


def test_every_cli_command_refuses_nul_and_surrogates(acar: InProcessAcar) -> None:
    tried = 0
    for command, parser in _commands(build_parser()):
        required = [a for a in parser._actions if (a.required or not a.option_strings) and a.nargs != 0]
        for action in _text_actions(parser):
            for bad in (NUL_JSON, SURROGATE_JSON):
                argv = [*command]
                for other in required:
                    if other is not action and other.option_strings:
                        argv += _filler(other)
                for group in parser._mutually_exclusive_groups:
                    if group.required and action not in group._group_actions:
                        argv += _filler(group._group_actions[0])
                if action.option_strings:
                    argv += [action.option_strings[0], bad]
                for positional in (a for a in required if not a.option_strings):  # in the parser's order
                    argv += [bad] if positional is action else _filler(positional)
                result = acar(*argv, check=False)
                assert result.returncode == 2, (argv, result)
                assert result.stderr.startswith("acar: error: ") and "Traceback" not in result.stderr, (argv, result)
                assert "U+0000" in result.stderr or "surrogate" in result.stderr, (argv, result)
                tried += 1
    assert tried > 30


@pytest.mark.parametrize("bad", [NUL_JSON, SURROGATE_JSON])
def test_cli_jwks_file_refuses_bad_kid(acar: InProcessAcar, tmp_path: Any, bad: str) -> None:
    path = tmp_path / "jwks.json"
    path.write_text(json.dumps({"keys": [{"kty": "EC", "crv": "P-256", "kid": bad, **EC_POINT}]}))
    result = acar("client", "add", "--name", "n", "--auth-method", "private_key_jwt", "--grant-type",
                  "client_credentials", "--scope", "s", "--jwks-file", str(path), check=False)
    assert result.returncode == 1 and "keys.0.kid" in result.stderr, result
    assert json.loads(acar("client", "list", "--json").stdout) == []

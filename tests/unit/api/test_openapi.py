"""The OpenAPI document (api.openapi) tells the truth: OAuth endpoints with their parameters, security schemes,
problem+json errors with their real schema, real content types, enumerations and patterns, unique operation
ids, an example for every request body."""

from __future__ import annotations

import re
import warnings
from typing import Any

import httpx
from fastapi import FastAPI

from api.app import create_app
from api.settings import Settings
from idp.core.interfaces import AUTH_METHODS, GRANT_TYPES
from idp.sql.clients import ID_TOKEN_ALGS
from keys.crl import REASON_CODES

PROBLEM = "application/problem+json"


def _document(app: FastAPI) -> dict[str, Any]:
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # FastAPI warns of duplicate operation ids, among others
        return app.openapi()


def _operations(doc: dict[str, Any]) -> list[tuple[str, str, dict[str, Any]]]:
    return [(path, method, op) for path, ops in doc["paths"].items() for method, op in ops.items()]


def _resolve(doc: dict[str, Any], schema: dict[str, Any]) -> dict[str, Any]:
    ref = schema.get("$ref")
    return doc["components"]["schemas"][ref.rsplit("/", 1)[1]] if ref else schema


def test_document_builds_without_warnings_and_ids_are_unique(settings: Settings) -> None:
    doc = _document(create_app(settings))
    ids = [op["operationId"] for _, _, op in _operations(doc)]
    assert len(ids) == len(set(ids)) and len(ids) > 30


def test_security_schemes_and_error_responses(settings: Settings) -> None:
    doc = _document(create_app(settings))
    schemes = doc["components"]["securitySchemes"]
    assert schemes["clientBasic"] == {**schemes["clientBasic"], "type": "http", "scheme": "basic"}
    assert schemes["adminBearer"]["scheme"] == "bearer"
    assert "HTTPValidationError" not in doc["components"]["schemas"]
    problem = doc["components"]["schemas"]["Problem"]
    assert set(problem["required"]) == {"type", "title", "status"}
    for path, method, op in _operations(doc):
        responses = op["responses"]
        if path.startswith("/admin/"):
            assert op["security"] == [{"adminBearer": []}], (path, method)
            for status in ("401", "403", "default"):
                assert responses[status]["content"] == {PROBLEM: {"schema": {"$ref": "#/components/schemas/Problem"}}}
        if "422" in responses:
            assert list(responses["422"]["content"]) == [PROBLEM], (path, method)
        for status, response in responses.items():
            for media in response.get("content", {}):
                assert media != "application/json" or status.startswith("2") or path in (
                    "/token", "/introspect", "/revoke", "/userinfo"), (path, method, status)
    token = doc["paths"]["/token"]["post"]
    assert {"clientBasic": []} in token["security"]
    form = token["requestBody"]["content"]["application/x-www-form-urlencoded"]["schema"]
    assert form["properties"]["grant_type"]["enum"] == list(GRANT_TYPES) and form["required"] == ["grant_type"]
    assert token["responses"]["401"]["content"]["application/json"]["schema"]["$ref"].endswith("/OAuthError")
    authorize = {p["name"]: p for p in doc["paths"]["/authorize"]["get"]["parameters"]}
    assert authorize["client_id"]["required"] and authorize["response_type"]["schema"]["enum"] == ["code"]
    assert "content" not in doc["paths"]["/revoke"]["post"]["responses"]["200"]
    assert "content" not in doc["paths"]["/admin/tokens/{jti}/revoke"]["post"]["responses"]["204"]
    assert list(doc["paths"]["/logout"]["get"]["responses"]["200"]["content"]) == ["text/html"]
    assert list(doc["paths"]["/jwks.json"]["get"]["responses"]["200"]["content"]) == ["application/jwk-set+json"]
    links = doc["paths"]["/admin/clients"]["post"]["responses"]["201"]["links"]
    assert {link["operationId"] for link in links.values()} == {
        doc["paths"]["/admin/clients/{client_id}"]["get"]["operationId"],
        doc["paths"]["/admin/clients/{client_id}/disable"]["post"]["operationId"],
        doc["paths"]["/admin/clients/{client_id}/secret"]["post"]["operationId"]}


def test_enumerations_patterns_and_examples(settings: Settings) -> None:
    doc = _document(create_app(settings))
    schemas = doc["components"]["schemas"]
    client = schemas["ClientCreate"]["properties"]
    assert client["auth_method"]["enum"] == list(AUTH_METHODS)
    assert client["subject_type"]["enum"] == ["pairwise", "public"]
    assert client["id_token_alg"]["enum"] == list(ID_TOKEN_ALGS)
    assert client["grant_types"]["items"]["enum"] == list(GRANT_TYPES)
    assert schemas["RevokeRequest"]["properties"]["reason"]["enum"] == list(REASON_CODES)
    fin = schemas["EnrollmentCodeRequest"]["properties"]["fin"]["pattern"]
    assert re.fullmatch(fin, "5ABC7DE") and not re.fullmatch(fin, "5ABC7D")
    jti = next(p for p in doc["paths"]["/admin/tokens/{jti}/revoke"]["post"]["parameters"] if p["name"] == "jti")
    assert re.fullmatch(jti["schema"]["pattern"], "0" * 32) and not re.fullmatch(jti["schema"]["pattern"], "no!")
    for path, method, op in _operations(doc):
        for media, content in op.get("requestBody", {}).get("content", {}).items():
            schema = _resolve(doc, content.get("schema", {}))
            assert "example" in content or "examples" in content or schema.get("examples"), (path, method, media)


async def test_content_types_answered_are_the_documented_ones(client: httpx.AsyncClient, app: FastAPI) -> None:
    doc = _document(app)
    for path in ("/jwks.json", "/.well-known/openid-configuration"):
        r = await client.get(path)
        assert r.headers["content-type"].split(";")[0] in doc["paths"][path]["get"]["responses"]["200"]["content"]
    r = await client.post("/admin/clients", json={})
    assert r.status_code == 401 and r.headers["content-type"] == PROBLEM
    r = await client.post("/revoke", data={"token": "x"})
    documented = doc["paths"]["/revoke"]["post"]["responses"][str(r.status_code)]
    assert r.headers["content-type"] in documented["content"]


def test_edge_answers_are_documented(settings: Settings) -> None:
    """413 (api.middleware.BodyLimitMiddleware) on every operation with a body; 429 in each rate-limited
    operation's own error form (api.openapi.RATE_LIMITED, the admin API by its authentication)."""
    doc = _document(create_app(settings))
    for path, method, op in _operations(doc):
        if "requestBody" in op:
            assert list(op["responses"]["413"]["content"]) == [PROBLEM], (path, method)
        if path.startswith("/admin/"):
            assert list(op["responses"]["429"]["content"]) == [PROBLEM], (path, method)
    paths = doc["paths"]
    assert list(paths["/token"]["post"]["responses"]["429"]["content"]) == ["application/json"]
    assert list(paths["/authorize"]["get"]["responses"]["429"]["content"]) == ["text/html"]
    assert list(paths["/webauthn/login/verify"]["post"]["responses"]["429"]["content"]) == [PROBLEM]
    assert "429" not in paths["/jwks.json"]["get"]["responses"]

"""The OpenAPI document (api.openapi) tells the truth: OAuth endpoints with their parameters, security schemes,
problem+json errors with their real schema, real content types, enumerations and patterns, unique operation
ids, an example for every request body; the JSON bodies the passkey endpoints read by hand, and the cookies and
CSRF header that authenticate the browser's endpoints."""

from __future__ import annotations

import inspect
import re
import warnings
from typing import Any

import httpx
import jsonschema_rs
from fastapi import FastAPI
from fastapi.routing import iter_route_contexts

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


_READS = re.compile(r"""(?:text_member|credential_member)\(body, "(\w+)"|body\.get\("(\w+)"\)""")
"""How the JSON endpoints read a field of the JSON body they parse themselves (api.json_endpoints.read_json)."""
COOKIE_OPERATIONS = {
    ("/webauthn/register/options", "post"): [{"enrollmentCookie": []}, {"sessionCookie": []}],
    ("/webauthn/register/verify", "post"): [{"enrollmentCookie": []}, {"sessionCookie": []}],
    ("/webauthn/enrollment", "get"): [{"enrollmentCookie": []}],
    ("/webauthn/credentials", "get"): [{"sessionCookie": []}],
    ("/webauthn/credentials/{credential_id}", "patch"): [{"sessionCookie": []}],
    ("/webauthn/credentials/{credential_id}", "delete"): [{"sessionCookie": []}],
    ("/account/consents", "get"): [{"sessionCookie": []}],
    ("/account/consents/{client_id}", "delete"): [{"sessionCookie": []}],
    ("/sign/{request_id}/options", "post"): [{"sessionCookie": []}],
    ("/sign/{request_id}/approve", "post"): [{"sessionCookie": []}],
}
CSRF_OPERATIONS = {("/webauthn/login/options", "post"), ("/webauthn/login/verify", "post"),
                   ("/webauthn/register/options", "post"), ("/webauthn/register/verify", "post"),
                   ("/webauthn/credentials/{credential_id}", "patch"),
                   ("/webauthn/credentials/{credential_id}", "delete"),
                   ("/sign/{request_id}/options", "post"), ("/sign/{request_id}/approve", "post"),
                   ("/idcard/webeid/challenge", "post"), ("/idcard/webeid/login", "post")}


def _json_reading_routes(app: FastAPI) -> list[tuple[str, str, set[str]]]:
    """(path, method, fields read) of every route whose endpoint parses its own JSON body."""
    found = []
    for route in iter_route_contexts(app.routes):
        source = inspect.getsource(route.endpoint) if route.endpoint is not None and route.methods else ""
        if "await read_json(request)" in source:
            fields = {a or b for a, b in _READS.findall(source)}
            found += [(str(route.path), method.lower(), fields) for method in route.methods or () if method != "HEAD"]
    return found


def _valid(doc: dict[str, Any], schema: dict[str, Any], value: Any) -> bool:
    return bool(jsonschema_rs.validator_for({**schema, "components": doc["components"]}).is_valid(value))


def test_routes_reading_their_own_json_document_their_bodies(settings: Settings) -> None:
    """Every route that reads a JSON body by hand declares it: an object schema naming every field the code reads
    (bounded strings), additionalProperties as the code treats it, a valid example; its success body's schema
    and its refusals as problems whose `code` is one of those documented."""
    app = create_app(settings)
    doc = _document(app)
    routes = _json_reading_routes(app)
    assert {(path, method) for path, method, _ in routes} >= {
        ("/webauthn/login/options", "post"), ("/webauthn/login/verify", "post"), ("/webauthn/enrollment", "post"),
        ("/webauthn/register/options", "post"), ("/webauthn/register/verify", "post"),
        ("/webauthn/credentials/{credential_id}", "patch")}
    for path, method, fields in routes:
        op = doc["paths"][path][method]
        body = op.get("requestBody")
        assert body is not None and body["required"], (path, method)
        assert list(body["content"]) == ["application/json"], (path, method)
        content = body["content"]["application/json"]
        schema = content["schema"]
        assert schema["type"] == "object" and schema["additionalProperties"] is True, (path, method)
        assert fields and fields <= set(schema["properties"]), (path, method, fields)
        for name, field in schema["properties"].items():
            if "string" in field.get("type", ()):
                assert field["maxLength"] <= 500, (path, method, name)
        assert _valid(doc, schema, content["example"]), (path, method)
        assert not _valid(doc, schema, []), (path, method)
        success = [status for status in op["responses"] if status.startswith("2")]
        assert len(success) == 1, (path, method, success)
        answer = _resolve(doc, op["responses"][success[0]]["content"]["application/json"]["schema"])
        assert answer.get("properties") or answer.get("oneOf"), (path, method)
        for status in ("400", "413"):
            assert list(op["responses"][status]["content"]) == [PROBLEM], (path, method, status)
        codes = op["responses"]["400"]["content"][PROBLEM]["schema"]["allOf"][1]["properties"]["code"]["enum"]
        assert "invalid_request" in codes, (path, method)


async def test_documented_examples_are_answered_as_documented(client: httpx.AsyncClient, app: FastAPI) -> None:
    """Each documented example body, sent without the cookies and pending request it needs, gets one of the
    documented refusals: its status documented, its problem (with its `code`) valid against that status's schema."""
    doc = _document(app)
    for path, method, _ in _json_reading_routes(app):
        op = doc["paths"][path][method]
        example = op["requestBody"]["content"]["application/json"]["example"]
        r = await client.request(method, path.replace("{credential_id}", "AAEC"), json=example)
        assert str(r.status_code) in op["responses"], (path, method, r.status_code, r.text)
        assert r.headers["content-type"] == PROBLEM and r.json()["code"] != "invalid_request", (path, r.text)
        documented = op["responses"][str(r.status_code)]["content"][PROBLEM]["schema"]
        assert _valid(doc, documented, r.json()), (path, method, r.text)


def test_cookie_security_schemes_and_the_csrf_header(settings: Settings) -> None:
    """The browser's endpoints name the cookie that authenticates them (an apiKey in a cookie, OpenAPI 3.1 section
    4.8.27) and the X-CSRF-Token header they require; the names follow the issuer (__Host- over https)."""
    doc = _document(create_app(settings))
    schemes = doc["components"]["securitySchemes"]
    for scheme, name in (("sessionCookie", "acar_session"), ("enrollmentCookie", "acar_enroll")):
        assert {k: schemes[scheme][k] for k in ("type", "in", "name")} == {
            "type": "apiKey", "in": "cookie", "name": name}
        assert f"__Host-{name}" in schemes[scheme]["description"]
    for (path, method), security in COOKIE_OPERATIONS.items():
        op = doc["paths"][path][method]
        assert op["security"] == security, (path, method)
        assert list(op["responses"]["401"]["content"]) == [PROBLEM], (path, method)
    for path, method, op in _operations(doc):
        csrf = [p for p in op.get("parameters", []) if p["in"] == "header" and p["name"] == "X-CSRF-Token"]
        assert bool(csrf) == ((path, method) in CSRF_OPERATIONS), (path, method)
        if csrf:
            assert csrf[0]["required"] and csrf[0]["description"], (path, method)
            assert list(op["responses"]["403"]["content"]) == [PROBLEM], (path, method)
    https = _document(create_app(settings.model_copy(update={"issuer": "https://id.example.az"})))
    assert https["components"]["securitySchemes"]["sessionCookie"]["name"] == "__Host-acar_session"
    assert https["components"]["securitySchemes"]["enrollmentCookie"]["name"] == "__Host-acar_enroll"

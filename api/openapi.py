"""The published API contract: the OpenAPI document completed with what the server really does.

FastAPI documents its own routes from their signatures; that leaves out what they do not declare. Here the
document gets:
- the plain OAuth/OIDC endpoints (api.routes.oidc, interaction, passkeys) with their form or JSON parameters,
  their client authentication (RFC 6749 section 2.3.1, HTTP Basic) or bearer token (RFC 6750) and their RFC 6749
  section 5.2 error JSON;
- securitySchemes: HTTP Basic for clients, bearer for the admin API (RFC 9068 JWTs) and for userinfo;
- RFC 9457 problem+json as the error type of every API operation, with its real schema (422 included: it is
  answered as a problem, not as FastAPI's HTTPValidationError);
- the real content types: application/jwk-set+json for /jwks.json (RFC 7517 section 8.5.1), text/html for
  pages and their error pages, no content for /revoke's 200 (RFC 7009 section 2.2).
Enumerations, patterns and request examples live in the schemas themselves (api.schemas).
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from typing import Any

from fastapi import FastAPI
from fastapi.routing import iter_route_contexts

from api.bodies import authenticators
from api.text import PAGE_TAGS
from idp.core.client_auth import JWT_BEARER_ASSERTION
from idp.core.interfaces import GRANT_TYPES
from idp.sql.revocation import JTI_RE

PROBLEM = "application/problem+json"
FORM = "application/x-www-form-urlencoded"
PAGE_PATHS = frozenset({"/logout", "/logout/confirm"})
"""FastAPI routes outside the page routers that answer HTML pages (RP-Initiated Logout 1.0)."""

SCHEMAS: dict[str, Any] = {
    "Problem": {
        "title": "Problem", "type": "object", "required": ["type", "title", "status"],
        "description": "RFC 9457 problem details",
        "properties": {
            "type": {"type": "string", "description": "urn:acar:problem:<code>"},
            "title": {"type": "string"}, "status": {"type": "integer"}, "detail": {"type": "string"},
            "instance": {"type": "string"}, "request_id": {"type": "string"},
            "code": {"type": "string", "description": "passkey endpoints: the machine code the pages translate"},
            "errors": {"type": "array", "description": "422: the fields that do not match the schema",
                       "items": {"type": "object", "required": ["field", "message"],
                                 "properties": {"field": {"type": "string"}, "message": {"type": "string"}}}},
        },
    },
    "OAuthError": {
        "title": "OAuthError", "type": "object", "required": ["error"], "description": "RFC 6749 section 5.2",
        "properties": {"error": {"type": "string"}, "error_description": {"type": "string"}},
    },
    "TokenResponse": {
        "title": "TokenResponse", "type": "object", "required": ["access_token", "token_type", "expires_in"],
        "description": "RFC 6749 section 5.1 (OIDC Core 3.1.3.3: id_token for the authorization code)",
        "properties": {"access_token": {"type": "string"}, "token_type": {"type": "string", "enum": ["Bearer"]},
                       "expires_in": {"type": "integer"}, "refresh_token": {"type": "string"},
                       "id_token": {"type": "string"}, "scope": {"type": "string"}},
    },
    "JWKSet": {
        "title": "JWKSet", "type": "object", "required": ["keys"], "description": "RFC 7517 section 5",
        "properties": {"keys": {"type": "array", "items": {"type": "object", "required": ["kty"],
                                                          "properties": {"kty": {"type": "string"},
                                                                         "kid": {"type": "string"}}}}},
    },
}
SECURITY_SCHEMES: dict[str, Any] = {
    "clientBasic": {"type": "http", "scheme": "basic",
                    "description": "client_secret_basic: client_id and secret, each form-urlencoded (RFC 6749 2.3.1)"},
    "adminBearer": {"type": "http", "scheme": "bearer", "bearerFormat": "JWT",
                    "description": "an admin access token (RFC 9068) from `acar admin token` or POST /admin/tokens"},
    "accessToken": {"type": "http", "scheme": "bearer",
                    "description": "an access token issued by /token (RFC 6750)"},
}


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def problem(description: str) -> dict[str, Any]:
    return {"description": description, "content": {PROBLEM: {"schema": _ref("Problem")}}}


def oauth_error(description: str) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": _ref("OAuthError")}}}


def html(description: str) -> dict[str, Any]:
    return {"description": description, "content": {"text/html": {"schema": {"type": "string"}}}}


REDIRECT = {"description": "on to the client's redirect URI or the next interaction (Location)",
            "headers": {"Location": {"schema": {"type": "string"}}}}


def _fields(properties: Mapping[str, Any], required: list[str], example: Mapping[str, str]) -> dict[str, Any]:
    schema = {"type": "object", "properties": dict(properties), "required": required}
    return {"required": True, "content": {FORM: {"schema": schema, "example": dict(example)}}}


_TEXT = {"type": "string", "maxLength": 2048}
_AUTHORIZE = {
    "response_type": {"type": "string", "enum": ["code"]}, "client_id": _TEXT, "redirect_uri": _TEXT,
    "scope": _TEXT, "state": _TEXT, "response_mode": {"type": "string", "enum": ["query", "form_post"]},
    "nonce": _TEXT, "prompt": _TEXT, "max_age": _TEXT, "ui_locales": _TEXT, "acr_values": _TEXT, "claims": _TEXT,
    "login_hint": _TEXT, "id_token_hint": _TEXT, "code_challenge": _TEXT,
    "code_challenge_method": {"type": "string", "enum": ["S256"]},
}
_AUTHORIZE_REQUIRED = ["response_type", "client_id", "redirect_uri", "scope"]
_AUTHORIZE_EXAMPLE = {"response_type": "code", "client_id": "b59cd9cab8c99c9ac17fa2d5949caa27",
                      "redirect_uri": "https://portal.example/cb", "scope": "openid profile", "state": "af0ifjsldkj",
                      "nonce": "n-0S6_WzA2Mj", "code_challenge": "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM",
                      "code_challenge_method": "S256"}
_AUTHORIZE_RESPONSES = {"200": html("response_mode=form_post: the page posting the answer to the client"),
                        "303": REDIRECT, "400": html("the error page (the redirect URI cannot be trusted)")}
_CLIENT_AUTH = {"client_id": _TEXT, "client_secret": _TEXT,
                "client_assertion_type": {"type": "string", "enum": [JWT_BEARER_ASSERTION]},
                "client_assertion": {"type": "string"}}
_CLIENT_ERRORS = {"400": oauth_error("invalid_request and the other RFC 6749 section 5.2 errors"),
                  "401": oauth_error("invalid_client (WWW-Authenticate: Basic)")}
_CLIENT_SECURITY: list[dict[str, list[str]]] = [{"clientBasic": []}, {}]
"""HTTP Basic, or client_secret_post / private_key_jwt / none in the form (no security scheme names those)."""
_TOKEN_TYPE_HINT = {"type": "string", "enum": ["access_token", "refresh_token"]}

PLAIN_OPERATIONS: dict[str, dict[str, dict[str, Any]]] = {
    "/authorize": {
        "get": {"summary": "Authorization request (OIDC Core 3.1.2.1)",
                "parameters": [{"name": name, "in": "query", "required": name in _AUTHORIZE_REQUIRED, "schema": schema}
                               for name, schema in _AUTHORIZE.items()],
                "responses": _AUTHORIZE_RESPONSES},
        "post": {"summary": "Authorization request by form post (OIDC Core 3.1.2.1)",
                 "requestBody": _fields(_AUTHORIZE, _AUTHORIZE_REQUIRED, _AUTHORIZE_EXAMPLE),
                 "responses": _AUTHORIZE_RESPONSES},
    },
    "/token": {
        "post": {"summary": "Token request (RFC 6749 sections 4.1.3, 4.4.2, 6)", "security": _CLIENT_SECURITY,
                 "requestBody": _fields({"grant_type": {"type": "string", "enum": list(GRANT_TYPES)}, "code": _TEXT,
                                         "redirect_uri": _TEXT, "code_verifier": _TEXT, "refresh_token": _TEXT,
                                         "scope": _TEXT, **_CLIENT_AUTH}, ["grant_type"],
                                        {"grant_type": "client_credentials", "scope": "tax:read"}),
                 "responses": {"200": {"description": "the tokens", "content": {
                     "application/json": {"schema": _ref("TokenResponse")}}}, **_CLIENT_ERRORS}},
    },
    "/userinfo": {
        method: {"summary": "UserInfo (OIDC Core 5.3)", "security": [{"accessToken": []}],
                 **({"requestBody": {"required": False, "content": {FORM: {
                     "schema": {"type": "object", "properties": {"access_token": _TEXT}},
                     "example": {"access_token": "eyJhbGciOiJFUzI1NiJ9.e30.c2ln"}}}}} if method == "post" else {}),
                 "responses": {"200": {"description": "the released claims", "content": {"application/json": {
                     "schema": {"type": "object", "required": ["sub"], "properties": {"sub": {"type": "string"}}}}}},
                     "400": oauth_error("invalid_request"),
                     "401": oauth_error("invalid_token (WWW-Authenticate: Bearer, RFC 6750 section 3)"),
                     "403": oauth_error("insufficient_scope")}}
        for method in ("get", "post")
    },
    "/introspect": {
        "post": {"summary": "Token introspection (RFC 7662)", "security": [{"clientBasic": []}, {}],
                 "requestBody": _fields({"token": _TEXT, "token_type_hint": _TOKEN_TYPE_HINT, **_CLIENT_AUTH},
                                        ["token"], {"token": "eyJhbGciOiJFUzI1NiJ9.e30.c2ln"}),
                 "responses": {"200": {"description": "RFC 7662 section 2.2", "content": {"application/json": {
                     "schema": {"type": "object", "required": ["active"],
                                "properties": {"active": {"type": "boolean"}}}}}}, **_CLIENT_ERRORS}},
    },
    "/revoke": {
        "post": {"summary": "Token revocation (RFC 7009)", "security": _CLIENT_SECURITY,
                 "requestBody": _fields({"token": _TEXT, "token_type_hint": _TOKEN_TYPE_HINT, **_CLIENT_AUTH},
                                        ["token"], {"token": "eyJhbGciOiJFUzI1NiJ9.e30.c2ln"}),
                 "responses": {"200": {"description": "revoked, or not a valid token (RFC 7009 section 2.2); "
                                                      "no content"}, **_CLIENT_ERRORS}},
    },
    "/interaction/{pending_id}": {
        "get": {"summary": "The login page of a pending authorization request",
                "parameters": [{"name": "pending_id", "in": "path", "required": True,
                                "schema": {"type": "string", "maxLength": 64}}],
                "responses": {"200": html("the login page"), "400": html("the error page")}},
    },
}
_CSRF = [{"name": "X-CSRF-Token", "in": "header", "required": True, "schema": {"type": "string"},
          "description": "the pending request's CSRF token (from the login page)"}]
_PENDING = {"type": "string", "minLength": 1, "maxLength": 64}
for _path, _properties, _required, _example in (
    ("/webauthn/login/options", {"pending_id": _PENDING}, ["pending_id"], {"pending_id": "Jx3pW0_2b9Q"}),
    ("/webauthn/login/verify", {"pending_id": _PENDING, "ceremony": _PENDING, "credential": {"type": "object"}},
     ["pending_id", "ceremony", "credential"],
     {"pending_id": "Jx3pW0_2b9Q", "ceremony": "c8Zk1", "credential": {"id": "AAEC", "type": "public-key"}}),
):
    PLAIN_OPERATIONS[_path] = {"post": {
        "summary": "Passkey login (WebAuthn Level 3)", "parameters": _CSRF,
        "requestBody": {"required": True, "content": {"application/json": {
            "schema": {"type": "object", "properties": _properties, "required": _required}, "example": _example}}},
        "responses": {"200": {"description": "the ceremony, or where the browser goes next",
                              "content": {"application/json": {"schema": {"type": "object"}}}},
                      "default": problem("a passkey problem (its machine code in `code`)")}}}


def _page(route: Any) -> bool:
    return route.path in PAGE_PATHS or bool(PAGE_TAGS.intersection(str(t) for t in getattr(route, "tags", ()) or ()))


def _complete_fastapi_operation(route: Any, operation: dict[str, Any]) -> None:
    responses: dict[str, Any] = operation.setdefault("responses", {})
    if _page(route):
        for status in [s for s in responses if s.startswith("2")]:
            responses[status] = html(responses[status].get("description", "the page"))
        responses.pop("422", None)
        responses["303"] = REDIRECT
        responses["default"] = html("the error page")
        return
    if "422" in responses:
        responses["422"] = problem("the request does not match the schema")
    if any(True for _ in authenticators(getattr(route, "dependant", None))):
        operation["security"] = [{"adminBearer": []}]
        responses["401"] = problem("no valid admin bearer token (WWW-Authenticate: Bearer)")
        responses["403"] = problem("the token lacks the scope of this operation")
    responses["default"] = problem("any other error: an RFC 9457 problem")
    for status, response in responses.items():
        if status.startswith("2") and response.get("content") == {"application/json": {"schema": {}}} \
                and route.status_code == 204:
            response.pop("content")


CLIENT_LINKS = {"ShowClient": ("/admin/clients/{client_id}", "get"),
                "DisableClient": ("/admin/clients/{client_id}/disable", "post"),
                "RotateSecret": ("/admin/clients/{client_id}/secret", "post")}
"""OpenAPI 3.1 section 4.8.20 links: the client_id a registration answers is the one to show, disable and rotate
(what a stateful fuzzer follows)."""


def _link_client_operations(paths: dict[str, dict[str, Any]]) -> None:
    created = paths.get("/admin/clients", {}).get("post", {}).get("responses", {}).get("201")
    if created is None:
        return
    links = {}
    for name, (path, method) in CLIENT_LINKS.items():
        target = paths.get(path, {}).get(method)
        if target is not None:
            links[name] = {"operationId": target["operationId"],
                           "parameters": {"client_id": "$response.body#/client_id"}}
    created["links"] = links


RATE_LIMITED: dict[tuple[str, str], str] = {
    ("/authorize", "get"): "page", ("/authorize", "post"): "page", ("/enroll", "post"): "page",
    ("/token", "post"): "oauth", ("/introspect", "post"): "oauth", ("/revoke", "post"): "oauth",
    ("/webauthn/login/options", "post"): "json", ("/webauthn/login/verify", "post"): "json",
    ("/webauthn/enrollment", "post"): "json",
}
"""The operations that spend a budget of api.ratelimit (the admin API's are found by their authentication), each
with the form its 429 takes (RFC 6585 section 4, Retry-After)."""


def _edge_responses(paths: dict[str, dict[str, Any]]) -> None:
    """What the edge answers before any route (api.middleware.BodyLimitMiddleware: 413 for a body over
    ACAR_MAX_BODY_BYTES) and what a spent rate-limit budget answers (429)."""
    for path, operations in paths.items():
        for method, operation in operations.items():
            responses = operation.setdefault("responses", {})
            if "requestBody" in operation:
                responses.setdefault("413", problem("the body is larger than ACAR_MAX_BODY_BYTES"))
            kind = RATE_LIMITED.get((path, method))
            if kind is None and "adminBearer" in str(operation.get("security", "")):
                kind = "json"
            if kind is not None:
                description = "too many requests from this client (Retry-After)"
                responses.setdefault("429", {"oauth": oauth_error, "page": html, "json": problem}[kind](description))


def complete(document: dict[str, Any], app: FastAPI) -> dict[str, Any]:
    """`document` (FastAPI's, with the plain routes' operations) completed as the module docstring says."""
    document = copy.deepcopy(document)
    paths: dict[str, dict[str, Any]] = document.setdefault("paths", {})
    for path, operations in PLAIN_OPERATIONS.items():
        for method, operation in operations.items():
            if method in paths.get(path, {}):
                paths[path][method] = {**paths[path][method], **copy.deepcopy(operation)}
    for route in iter_route_contexts(app.routes):
        operations = paths.get(str(route.path_format), {}) if route.path_format else {}
        if route.path in PLAIN_OPERATIONS or not hasattr(route, "dependant"):
            continue
        for method in route.methods or ():
            found = operations.get(method.lower())
            if found is not None:
                _complete_fastapi_operation(route, found)
    jwks = paths.get("/jwks.json", {}).get("get")
    if jwks is not None:
        jwks["responses"]["200"]["content"] = {"application/jwk-set+json": {"schema": _ref("JWKSet")}}
    revoke = paths.get("/admin/tokens/{jti}/revoke", {}).get("post")
    if revoke is not None:
        for parameter in revoke.get("parameters", []):
            if parameter["name"] == "jti":
                parameter["schema"]["pattern"] = JTI_RE.pattern
    _link_client_operations(paths)
    _edge_responses(paths)
    components = document.setdefault("components", {})
    schemas = components.setdefault("schemas", {})
    for unused in ("HTTPValidationError", "ValidationError"):
        schemas.pop(unused, None)
    schemas.update(copy.deepcopy(SCHEMAS))
    components["securitySchemes"] = copy.deepcopy(SECURITY_SCHEMES)
    return document

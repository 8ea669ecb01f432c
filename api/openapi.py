"""The published API contract: the OpenAPI document completed with what the server really does.

FastAPI documents its own routes from their signatures; that leaves out what they do not declare. Here the
document gets:
- the plain OAuth/OIDC endpoints (api.routes.oidc, interaction, passkeys, idcard, keys) with their form or JSON
  parameters, their client authentication (RFC 6749 section 2.3.1, HTTP Basic) or bearer token (RFC 6750) and
  their RFC 6749 section 5.2 error JSON;
- securitySchemes: HTTP Basic for clients, bearer for the admin API (RFC 9068 JWTs) and for userinfo, and the
  browser's cookies (the signed-in session, an open enrollment: apiKey in a cookie, named as the issuer makes them)
  with the X-CSRF-Token header the passkey endpoints require;
- the JSON bodies the passkey endpoints read by hand (api.routes.passkeys): every field they read, its type and
  bound, their answers, and their refusals as problems whose `code` is one of those the endpoint really answers
  (taken from the exception classes, so a code cannot be documented apart from the error that carries it);
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

from api.auth import CLIENT_AUTHENTICATORS
from api.bodies import authenticators
from api.errors import CardLoginUnavailable, CsrfRefused, LoginRequired, RateLimited
from api.schemas.signing import SigningRequestCreate
from api.schemas.validation import ValidationReportOut
from api.text import PAGE_TAGS
from idp.core import errors as card_errors
from idp.core.client_auth import JWT_BEARER_ASSERTION
from idp.core.interfaces import GRANT_TYPES, LEVELS
from idp.core.webauthn import (
    MAX_NAME,
    ChallengeExpired,
    ChallengeUsed,
    CounterRegression,
    CredentialExists,
    CredentialFlagged,
    CredentialNotFound,
    CredentialRemoved,
    InsufficientLevel,
    InvalidPasskeyRequest,
    PasskeyError,
    RequestExpired,
    UnknownCredential,
    UserVerificationRequired,
    VerificationFailed,
    WrongOrigin,
    WrongUser,
)
from idp.sql.enrollment import CodeInvalid, CodeUsed, EnrollmentRequired
from idp.sql.revocation import JTI_RE
from signing.core import errors as signing_errors
from signing.core.approval import (
    ApprovalError,
    ApprovalExpired,
    ApprovalRequestNotFound,
    ChallengeMismatch,
    RequestNotPending,
    WrongSigner,
)

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
_STRING = {"type": "string"}
_LEVEL = {"type": "string", "enum": list(LEVELS)}
SCHEMAS.update({
    "PasskeyCeremony": {
        "title": "PasskeyCeremony", "type": "object", "required": ["ceremony", "publicKey"],
        "description": "the ceremony's id (sent back with the browser's answer) and the options for "
                       "navigator.credentials.get or .create (WebAuthn Level 3 sections 5.5 and 5.4, as JSON)",
        "properties": {"ceremony": _STRING, "publicKey": {"type": "object", "required": ["challenge"],
                                                           "properties": {"challenge": _STRING}}},
    },
    "PasskeyLoginNext": {
        "title": "PasskeyLoginNext", "description": "where the browser goes after the login (api.routes.passkeys)",
        "oneOf": [
            {"type": "object", "required": ["redirect"], "properties": {"redirect": _STRING},
             "description": "go there: the client's redirect URI with the code, or the consent page"},
            {"type": "object", "required": ["form_post"], "description": "response_mode=form_post: post the "
             "params to the action (OAuth 2.0 Form Post Response Mode)",
             "properties": {"form_post": {"type": "object", "required": ["action", "params"], "properties": {
                 "action": _STRING, "params": {"type": "object", "additionalProperties": _STRING}}}}},
        ],
    },
    "PasskeyRegistered": {
        "title": "PasskeyRegistered", "type": "object", "required": ["credential_id", "name", "level", "redirect"],
        "properties": {"credential_id": _STRING, "name": _STRING, "level": _LEVEL,
                       "redirect": {"type": "string", "description": "the sign-in the enrollment came from, "
                                    "/enroll/done, or /account"}},
    },
    "PasskeyCredential": {
        "title": "PasskeyCredential", "type": "object", "description": "one of the signed-in person's passkeys",
        "required": ["id", "name", "level", "synced", "flagged", "transports", "created_at", "last_used_at"],
        "properties": {"id": _STRING, "name": _STRING, "level": _LEVEL, "synced": {"type": "boolean"},
                       "flagged": {"type": "boolean"}, "transports": {"type": "array", "items": _STRING},
                       "created_at": _STRING, "last_used_at": {"type": ["string", "null"]}},
    },
    "Enrollment": {
        "title": "Enrollment", "type": "object", "required": ["csrf_token", "expires_at", "display_name"],
        "description": "the browser's open enrollment: its CSRF token (X-CSRF-Token of the registration), when it "
                       "ends (ISO 8601) and whose it is",
        "properties": {"csrf_token": _STRING, "expires_at": _STRING, "display_name": _STRING},
    },
    "WebAuthnCredential": {
        "title": "WebAuthnCredential", "type": "object", "required": ["id", "rawId", "response", "type"],
        "description": "the browser's PublicKeyCredential as JSON (WebAuthn Level 3 section 5.1, toJSON(): "
                       "RegistrationResponseJSON or AuthenticationResponseJSON)",
        "properties": {"id": _STRING, "rawId": _STRING, "type": {"type": "string", "enum": ["public-key"]},
                       "response": {"type": "object"}, "authenticatorAttachment": {"type": ["string", "null"]},
                       "clientExtensionResults": {"type": "object"}},
    },
})
SCHEMAS.update({
    "WebEidChallenge": {
        "title": "WebEidChallenge", "type": "object", "required": ["nonce", "expires_at"],
        "description": "a Web eID challenge nonce (base64 of 32 random bytes, single use) for webeid.authenticate, "
                       "and when it expires (ISO 8601)",
        "properties": {"nonce": {"type": "string", "minLength": 44, "maxLength": 44}, "expires_at": _STRING},
    },
    "WebEidToken": {
        "title": "WebEidToken", "type": "object", "required": ["format", "algorithm", "unverifiedCertificate",
                                                               "signature"],
        "description": "the Web eID authentication token as the extension returns it (web-eid:1; Web eID system "
                       "architecture, \"Authentication token format\"): the card's certificate as base64 DER and its "
                       "signature over hash(origin) || hash(nonce)",
        "properties": {"format": _STRING, "algorithm": _STRING, "unverifiedCertificate": _STRING,
                       "signature": _STRING, "appVersion": _STRING},
    },
})
SESSION_COOKIE, ENROLLMENT_COOKIE = "acar_session", "acar_enroll"
"""The cookies' names under an http issuer (development); an https issuer prefixes __Host- (RFC 6265bis section
4.1.3.2: Secure, this exact origin, path /), as api.provider.Provider.cookie_name and
api.web.enrollment_cookie_name do."""


def cookie_schemes(secure_cookies: bool) -> dict[str, Any]:
    """The browser's cookies as apiKey security schemes (OpenAPI 3.1 section 4.8.27), named as the server names
    them for this issuer."""
    prefix = "__Host-" if secure_cookies else ""
    return {
        "sessionCookie": {
            "type": "apiKey", "in": "cookie", "name": prefix + SESSION_COOKIE,
            "description": f"the signed-in session, set by a login: named __Host-{SESSION_COOKIE} when the issuer "
                           f"is https (Secure, this origin only), {SESSION_COOKIE} otherwise; HttpOnly, "
                           "SameSite=Lax. State-changing passkey calls also need X-CSRF-Token (the account token "
                           "of GET /webauthn/credentials)"},
        "enrollmentCookie": {
            "type": "apiKey", "in": "cookie", "name": prefix + ENROLLMENT_COOKIE,
            "description": f"an open enrollment, set by POST /webauthn/enrollment (an activation code): named "
                           f"__Host-{ENROLLMENT_COOKIE} when the issuer is https, {ENROLLMENT_COOKIE} otherwise; "
                           "HttpOnly, SameSite=Strict. Its registration also needs X-CSRF-Token (the enrollment's "
                           "csrf_token)"},
    }


SECURITY_SCHEMES: dict[str, Any] = {
    "clientBasic": {"type": "http", "scheme": "basic",
                    "description": "client_secret_basic: client_id and secret, each form-urlencoded (RFC 6749 2.3.1)"},
    "adminBearer": {"type": "http", "scheme": "bearer", "bearerFormat": "JWT", "description": (
        "an admin access token (RFC 9068) from `acar admin token` or POST /admin/tokens, or a staff member's own "
        "access token from /token (authorization code flow) carrying a role scope: acar:role:registration_officer, "
        "acar:role:agency_admin or acar:role:system_admin; the role is checked again at every request "
        "(docs/registry.md, Roles)")},
    "accessToken": {"type": "http", "scheme": "bearer",
                    "description": "an access token issued by /token (RFC 6750)"},
    "agencyBearer": {"type": "http", "scheme": "bearer", "bearerFormat": "JWT",
                     "description": "an agency client's own access token (client_credentials at /token, RFC 9068) "
                                    "carrying the scope `signing`; the validation API takes one of any scope"},
}


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def problem(description: str) -> dict[str, Any]:
    return {"description": description, "content": {PROBLEM: {"schema": _ref("Problem")}}}


def oauth_error(description: str) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": _ref("OAuthError")}}}


def html(description: str) -> dict[str, Any]:
    return {"description": description, "content": {"text/html": {"schema": {"type": "string"}}}}


def coded_problem(description: str, errors: list[Any]) -> dict[str, Any]:
    """A problem with the member `code` (api.problems.passkey_problem, api.problems.rate_limited): one of the
    codes `errors` carry."""
    codes = sorted({error.code for error in errors})
    schema = {"allOf": [_ref("Problem"), {"type": "object", "required": ["code"],
                                          "properties": {"code": {"type": "string", "enum": codes}}}]}
    return {"description": f"{description} (code: {', '.join(codes)})", "content": {PROBLEM: {"schema": schema}}}


_STATUS = {400: "the request is refused", 401: "no live session or enrollment in this browser (its cookie)",
           403: "refused (see the code: a wrong CSRF token or Origin, a blocked passkey, an ID card refused)",
           404: "no such passkey, or ID-card sign-in not offered on this server",
           409: "the passkey is already registered", 410: "gone: the signing request has expired",
           503: "not available on this server, or an ID card's revocation status cannot be checked now"}


def passkey_errors(*errors: type[PasskeyError] | type[ApprovalError] | type[card_errors.CardLoginError]
                   ) -> dict[str, Any]:
    """The refusals of a passkey (or ID-card) endpoint by status, each a coded_problem with the codes of that
    status."""
    by_status: dict[int, list[type[PasskeyError] | type[RateLimited] | type[ApprovalError]
                              | type[card_errors.CardLoginError]]] = {}
    for error in errors:
        by_status.setdefault(error.status_code, []).append(error)
    return {str(status): coded_problem(_STATUS[status], found) for status, found in sorted(by_status.items())}


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


def _csrf(token: str) -> list[dict[str, Any]]:
    """The X-CSRF-Token header a state-changing passkey call requires (api.routes.passkeys): else 403 csrf."""
    return [{"name": "X-CSRF-Token", "in": "header", "required": True, "schema": {"type": "string"},
             "description": f"{token}; a missing or wrong one is refused (403, code csrf)"}]


def _json_body(properties: Mapping[str, Any], required: list[str], example: Mapping[str, Any]) -> dict[str, Any]:
    """A JSON object body as api.json_endpoints.read_json reads it: members it does not read are ignored."""
    schema = {"type": "object", "properties": dict(properties), "required": required, "additionalProperties": True}
    return {"required": True, "content": {"application/json": {"schema": schema, "example": dict(example)}}}


def _json(description: str, schema: str) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": _ref(schema)}}}


_PENDING_CSRF = "the pending authorization request's CSRF token (the login page's csrf_token)"
_REGISTRANT_CSRF = ("the open enrollment's csrf_token (POST or GET /webauthn/enrollment) or, signed in, the account "
                    "token (csrf_token of GET /webauthn/credentials)")
_ACCOUNT_CSRF = "the account token (csrf_token of GET /webauthn/credentials)"
_PENDING = {"type": "string", "minLength": 1, "maxLength": 64, "description": "the pending authorization request's "
            "id (the login page's pending_id); it must be live in this browser (its acar_browser cookie)"}
_CEREMONY = {"type": "string", "minLength": 1, "maxLength": 64, "description": "the ceremony of the options call"}
_CREDENTIAL = {**_ref("WebAuthnCredential")}
_NAME_RULE = f"the passkey's name: at most {MAX_NAME} printable characters once its runs of white space are one space"
_NAME: dict[str, Any] = {"type": "string", "minLength": 1, "maxLength": 500, "description": _NAME_RULE}
_LOGIN_EXAMPLE = {"id": "AAEC", "rawId": "AAEC", "type": "public-key", "response": {
    "clientDataJSON": "eyJ0eXBlIjoid2ViYXV0aG4uZ2V0In0", "authenticatorData": "SZYN5YgO", "signature": "MEUCIQ",
    "userHandle": "dXNlcg"}}
_REGISTER_EXAMPLE = {"id": "AAEC", "rawId": "AAEC", "type": "public-key", "response": {
    "clientDataJSON": "eyJ0eXBlIjoid2ViYXV0aG4uY3JlYXRlIn0", "attestationObject": "o2NmbXRkbm9uZQ"}}
_BODY_REFUSED = [InvalidPasskeyRequest]  # not JSON, not an object, a field missing, mistyped or too long
_GUARDS = [CsrfRefused, WrongOrigin]
_PASSKEYS = "passkeys: the browser's calls (api/static/webauthn.js)"
_CARD_REFUSED = [error for error in vars(card_errors).values()
                 if isinstance(error, type) and issubclass(error, card_errors.CardLoginError)
                 and error is not card_errors.CardLoginError
                 and error not in (card_errors.CertificateMissing, card_errors.ForwardedCertificateRefused)]
"""The refusals of a Web eID login: every CardLoginError but the mutual-TLS ones."""
_SIGN_CSRF = "the signing page's token (data-csrf of /sign/{request_id})"
_SIGN_REFUSED = [WrongSigner, ApprovalRequestNotFound, RequestNotPending, ApprovalExpired]
PASSKEY_OPERATIONS: dict[tuple[str, str], dict[str, Any]] = {
    ("/webauthn/login/options", "post"): {
        "summary": "Passkey login: the options (WebAuthn Level 3 section 7.2)", "parameters": _csrf(_PENDING_CSRF),
        "requestBody": _json_body({"pending_id": _PENDING}, ["pending_id"], {"pending_id": "Jx3pW0_2b9Q"}),
        "responses": {"200": _json("the ceremony for navigator.credentials.get", "PasskeyCeremony"),
                      **passkey_errors(*_BODY_REFUSED, RequestExpired, *_GUARDS)}},
    ("/webauthn/login/verify", "post"): {
        "summary": "Passkey login: the browser's answer (WebAuthn Level 3 section 7.2); sets the session cookie",
        "parameters": _csrf(_PENDING_CSRF),
        "requestBody": _json_body({"pending_id": _PENDING, "ceremony": _CEREMONY, "credential": _CREDENTIAL},
                                  ["pending_id", "ceremony", "credential"],
                                  {"pending_id": "Jx3pW0_2b9Q", "ceremony": "c8Zk1", "credential": _LOGIN_EXAMPLE}),
        "responses": {"200": _json("signed in: where the browser goes next", "PasskeyLoginNext"),
                      **passkey_errors(*_BODY_REFUSED, RequestExpired, ChallengeExpired, ChallengeUsed,
                                       UnknownCredential, CredentialRemoved, WrongUser, VerificationFailed,
                                       UserVerificationRequired, InsufficientLevel, *_GUARDS, CredentialFlagged,
                                       CounterRegression)}},
    ("/webauthn/register/options", "post"): {
        "summary": "Passkey registration: the options (WebAuthn Level 3 section 7.1)",
        "security": [{"enrollmentCookie": []}, {"sessionCookie": []}], "parameters": _csrf(_REGISTRANT_CSRF),
        "requestBody": _json_body({"name": {**_NAME, "type": ["string", "null"], "description": _NAME_RULE
                                            + "; only checked here (it is stored at verify)"}}, [],
                                  {"name": "My phone"}),
        "responses": {"200": _json("the ceremony for navigator.credentials.create", "PasskeyCeremony"),
                      **passkey_errors(*_BODY_REFUSED, LoginRequired, *_GUARDS)}},
    ("/webauthn/register/verify", "post"): {
        "summary": "Passkey registration: the browser's answer (WebAuthn Level 3 section 7.1)",
        "security": [{"enrollmentCookie": []}, {"sessionCookie": []}], "parameters": _csrf(_REGISTRANT_CSRF),
        "requestBody": _json_body({
            "ceremony": _CEREMONY, "credential": _CREDENTIAL,
            "name": {**_NAME, "type": ["string", "null"], "description": _NAME_RULE + "; without one, "
                     "the passkey is named after its browser and device"},
            "interaction": {"description": "enrollment only: the id of the sign-in it was started from, to return "
                                           "to if it is still live in this browser; any other value is ignored"}},
            ["ceremony", "credential"], {"ceremony": "c8Zk1", "credential": _REGISTER_EXAMPLE, "name": "My phone"}),
        "responses": {"201": _json("registered (an enrollment: its cookie cleared, acar_enrolled set)",
                                   "PasskeyRegistered"),
                      **passkey_errors(*_BODY_REFUSED, ChallengeExpired, ChallengeUsed, VerificationFailed,
                                       UserVerificationRequired, CodeUsed, LoginRequired, *_GUARDS,
                                       CredentialExists)}},
    ("/webauthn/enrollment", "post"): {
        "summary": "Start an enrollment with an activation code; sets the enrollment cookie",
        "description": "No CSRF token (it acts on nothing yet): the Origin check and the JSON content type guard "
                       "it. Every refused code gets the same 400 code_invalid.",
        "requestBody": _json_body({"code": {"type": "string", "minLength": 1, "maxLength": 40,
                                            "description": "the activation code from the registration office"}},
                                  ["code"], {"code": "K7QM-2X9D-PV4T"}),
        "responses": {"201": _json("the enrollment is open in this browser", "Enrollment"),
                      **passkey_errors(*_BODY_REFUSED, CodeInvalid, WrongOrigin)}},
    ("/webauthn/enrollment", "get"): {
        "security": [{"enrollmentCookie": []}],
        "responses": {"200": _json("the open enrollment", "Enrollment"), **passkey_errors(EnrollmentRequired)}},
    ("/webauthn/credentials", "get"): {
        "security": [{"sessionCookie": []}],
        "responses": {"200": {"description": "the account token and the signed-in person's passkeys", "content": {
            "application/json": {"schema": {
                "type": "object", "required": ["csrf_token", "credentials"],
                "properties": {"csrf_token": _STRING,
                               "credentials": {"type": "array", "items": _ref("PasskeyCredential")}}}}}},
                      **passkey_errors(LoginRequired)}},
    ("/webauthn/credentials/{credential_id}", "patch"): {
        "security": [{"sessionCookie": []}], "parameters": _csrf(_ACCOUNT_CSRF),
        "requestBody": _json_body({"name": _NAME}, ["name"], {"name": "Work laptop"}),
        "responses": {"200": _json("the renamed passkey", "PasskeyCredential"),
                      **passkey_errors(*_BODY_REFUSED, LoginRequired, *_GUARDS, CredentialNotFound)}},
    ("/webauthn/credentials/{credential_id}", "delete"): {
        "security": [{"sessionCookie": []}], "parameters": _csrf(_ACCOUNT_CSRF),
        "responses": {"204": {"description": "removed for good"},
                      **passkey_errors(LoginRequired, *_GUARDS, CredentialNotFound)}},
    ("/sign/{request_id}/options", "post"): {
        "summary": "Signing approval: the options of an assertion over the request's approval challenge "
                   "(signing.core.approval; WebAuthn Level 3 section 7.2), allowing the signer's own passkeys",
        "security": [{"sessionCookie": []}], "parameters": _csrf(_SIGN_CSRF),
        "responses": {"200": _json("the ceremony for navigator.credentials.get", "PasskeyCeremony"),
                      **passkey_errors(LoginRequired, *_GUARDS, *_SIGN_REFUSED)}},
    ("/sign/{request_id}/approve", "post"): {
        "summary": "Signing approval: the signer's assertion; the request is approved and its documents queued",
        "security": [{"sessionCookie": []}], "parameters": _csrf(_SIGN_CSRF),
        "requestBody": _json_body({"ceremony": _CEREMONY, "credential": _CREDENTIAL}, ["ceremony", "credential"],
                                  {"ceremony": "c8Zk1", "credential": _LOGIN_EXAMPLE}),
        "responses": {"200": _json("approved: the page to show next", "PasskeyLoginNext"),
                      **passkey_errors(*_BODY_REFUSED, LoginRequired, ChallengeExpired, ChallengeUsed,
                                       UnknownCredential, CredentialRemoved, WrongUser, VerificationFailed,
                                       UserVerificationRequired, InsufficientLevel, *_GUARDS, CredentialFlagged,
                                       CounterRegression, ChallengeMismatch, *_SIGN_REFUSED)}},
    ("/idcard/webeid/challenge", "post"): {
        "summary": "ID-card login (Web eID): a challenge nonce for the pending request",
        "parameters": _csrf(_PENDING_CSRF),
        "requestBody": _json_body({"pending_id": _PENDING}, ["pending_id"], {"pending_id": "Jx3pW0_2b9Q"}),
        "responses": {"200": _json("the nonce to pass to webeid.authenticate", "WebEidChallenge"),
                      **passkey_errors(*_BODY_REFUSED, RequestExpired, *_GUARDS, CardLoginUnavailable)}},
    ("/idcard/webeid/login", "post"): {
        "summary": "ID-card login (Web eID): the extension's authentication token; sets the session cookie",
        "description": "The nonce is used up before the token is verified. The card's certificate is validated to "
                       "the ID-card trust anchors (RFC 5280 section 6: validity, keyUsage digitalSignature, EKU "
                       "clientAuth, required policies) and its revocation status asked of OCSP (CRL as fallback).",
        "parameters": _csrf(_PENDING_CSRF),
        "requestBody": _json_body({
            "pending_id": _PENDING,
            "nonce": {"type": "string", "minLength": 1, "maxLength": 100,
                      "description": "the nonce of the challenge call, as it was returned"},
            "token": _ref("WebEidToken")}, ["pending_id", "nonce", "token"],
            {"pending_id": "Jx3pW0_2b9Q", "nonce": "eS1wZTNuUEJSbnN3SUJ0bGRtZUVqZ0pDNnlWZ3JVcmM=",
             "token": {"format": "web-eid:1.0", "algorithm": "ES384", "unverifiedCertificate": "MIIBkjCCATig",
                       "signature": "xsjXsQvVYXWcdV0YPhxLthJxtf0", "appVersion": "https://web-eid.eu/web-eid-app/"
                                                                     "releases/2.5.0+0"}}),
        "responses": {"200": _json("signed in at level high: where the browser goes next", "PasskeyLoginNext"),
                      **passkey_errors(*_BODY_REFUSED, RequestExpired, *_GUARDS, CardLoginUnavailable,
                                       *_CARD_REFUSED)}},
    ("/account/consents", "get"): {
        "security": [{"sessionCookie": []}],
        "responses": {"401": problem("not signed in (login_required)")}},
    ("/account/consents/{client_id}", "delete"): {
        "security": [{"sessionCookie": []}],
        "responses": {"204": {"description": "withdrawn, with the client's grants and tokens"},
                      "401": problem("not signed in (login_required)"),
                      "403": problem("an Origin other than the issuer's (cross_origin)"),
                      "404": problem("no consent for this client (consent_not_found)")}},
}
"""What the browser's JSON endpoints read and answer (api.routes.passkeys, api.routes.account), merged into their
operations: responses replace FastAPI's generic 200, parameters add to theirs."""
for (_path, _method), _operation in PASSKEY_OPERATIONS.items():
    if _path.startswith(("/webauthn/login/", "/idcard/webeid/")):
        PLAIN_OPERATIONS[_path] = {_method: {**_operation, "responses": {
            **_operation["responses"], "default": problem("any other error: an RFC 9457 problem")}}}


_METADATA = {"200": {"description": "the provider's metadata", "content": {"application/json": {"schema": {
    "type": "object", "required": ["issuer", "authorization_endpoint", "token_endpoint", "jwks_uri"]}}}},
    "default": problem("any other error: an RFC 9457 problem")}
PLAIN_OPERATIONS.update({
    "/.well-known/openid-configuration": {"get": {
        "summary": "OpenID Provider Metadata (OpenID Connect Discovery 1.0 section 4)", "responses": _METADATA}},
    "/.well-known/oauth-authorization-server": {"get": {
        "summary": "Authorization Server Metadata (RFC 8414 section 3), the same document", "responses": _METADATA}},
    "/jwks.json": {"get": {
        "summary": "JWK Set of the token-signing keys (RFC 7517 section 5)",
        "responses": {"200": {"description": "every published token-signing key: next, current and retired",
                              "content": {"application/jwk-set+json": {"schema": _ref("JWKSet")}}},
                      "default": problem("any other error: an RFC 9457 problem")}}},
})
"""The metadata documents every relying party fetches, plain routes too (api.routes.oidc, api.routes.keys); the
JWK Set's own media type (RFC 7517 section 8.5.1)."""

_OCSP_RESPONSE = {"200": {"description": "always a 200 OCSPResponse (RFC 6960 section 4.2.1): successful, or "
                                         "malformedRequest for what is not one",
                          "content": {"application/ocsp-response": {}}},
                  "default": problem("any other error: an RFC 9457 problem")}
PLAIN_OPERATIONS.update({
    "/pki/ocsp": {"post": {"summary": "OCSP request in the body (RFC 6960 appendix A.1)",
                           "responses": _OCSP_RESPONSE}},
    "/pki/ocsp/{encoded}": {"get": {"summary": "OCSP request as URL-encoded base64 in the path (RFC 6960 appendix "
                                               "A.1)",
                                    "responses": _OCSP_RESPONSE}},
    "/pki/tsa": {"post": {
        "summary": "Time-stamp request (RFC 3161 section 3.4)",
        "responses": {"200": {"description": "a TimeStampResp: granted, or a rejection with its failure info",
                              "content": {"application/timestamp-reply": {}}},
                      "413": problem("the body is over 64 KiB"),
                      "415": problem("not application/timestamp-query"),
                      "default": problem("any other error: an RFC 9457 problem")}}},
})
"""The OCSP responder and the TSA, plain routes too (api.routes.pki, api.routes.tsa): their answers' own media types
(RFC 6960 appendix A.1, RFC 3161 section 3.4); their DER bodies are described, not given a schema (as when they were
FastAPI's routes)."""


def _document_browser_json(paths: dict[str, dict[str, Any]]) -> None:
    """PASSKEY_OPERATIONS merged into the FastAPI operations they describe (the plain ones are PLAIN_OPERATIONS)."""
    for (path, method), documented in PASSKEY_OPERATIONS.items():
        found = paths.get(path, {}).get(method)
        if found is not None and path not in PLAIN_OPERATIONS:
            _merge(found, documented)


def _merge(operation: dict[str, Any], entry: Mapping[str, Any]) -> None:
    """`entry` (of PASSKEY_OPERATIONS) into a FastAPI operation: FastAPI's success answer replaced."""
    documented = copy.deepcopy(dict(entry))
    responses = operation.setdefault("responses", {})
    if any(status.startswith("2") for status in documented.get("responses", {})):
        for status in [s for s in responses if s.startswith("2")]:
            del responses[status]
    responses.update(documented.pop("responses", {}))
    operation["parameters"] = [*operation.get("parameters", []), *documented.pop("parameters", [])]
    if not operation["parameters"]:
        del operation["parameters"]
    operation.update(documented)


_SIGNING_ERRORS_OF_CREATE = [
    signing_errors.InvalidSigningRequest, signing_errors.InvalidLevel, signing_errors.InvalidFin,
    signing_errors.SignerRequired, signing_errors.InvalidPlacement, signing_errors.InvalidCallbackUrl,
    signing_errors.InvalidDocument, signing_errors.TooManyDocuments, signing_errors.IdempotencyKeyReused,
    signing_errors.NoSeal, signing_errors.EncryptedPdf, signing_errors.DamagedPdf, signing_errors.TooManyPages,
    signing_errors.TooManyObjects, signing_errors.InflationBomb, signing_errors.ReferenceLoop,
    signing_errors.ActiveContent, signing_errors.PdfRefused]
_SIGNING_STATUS = {404: "no such request for this client", 409: "refused in the request's present state",
                   410: "gone: the retention ran out", 422: "the request or a document is refused (see code)"}
"""413 and 415 are plain problems: the edge's 413 and the route's 415 carry no `code` member."""


def _signing_errors(*errors: Any) -> dict[str, Any]:
    """The refusals of a signing operation by status, each a problem with the `code`s of that status."""
    by_status: dict[int, list[Any]] = {}
    for error in errors:
        by_status.setdefault(error.status_code, []).append(error)
    return {str(status): coded_problem(_SIGNING_STATUS[status], found) for status, found in sorted(by_status.items())}


_MULTIPART_EXAMPLE = {"mode": "seal", "reason": "Arayış", "level": "B-LT", "document": ["(PDF file)"]}
SIGNING_OPERATIONS: dict[tuple[str, str], dict[str, Any]] = {
    ("/api/v1/signing-requests", "post"): {
        "responses": {"200": {"description": "the same Idempotency-Key and body as before: the request made then",
                              "content": {"application/json": {"schema": _ref("SigningRequestOut")}}},
                      "415": problem("neither application/json nor multipart/form-data (unsupported_media_type), or a "
                                     "document that is not a PDF (not_pdf)"),
                      "413": problem("the body is over ACAR_SIGNING_MAX_REQUEST_BYTES (content_too_large) or a "
                                     "document over ACAR_SIGNING_MAX_DOCUMENT_BYTES (too_large)"),
                      **_signing_errors(*_SIGNING_ERRORS_OF_CREATE)}},
    ("/api/v1/signing-requests/{request_id}", "get"): {"responses": _signing_errors(signing_errors.RequestNotFound)},
    ("/api/v1/signing-requests/{request_id}/documents/{n}", "get"): {"responses": _signing_errors(
        signing_errors.RequestNotFound, signing_errors.DocumentNotReady, signing_errors.DocumentDeleted)},
}
"""The signing API's answers beyond FastAPI's: its refusals with their codes (signing.core.errors)."""


def _document_signing(paths: dict[str, dict[str, Any]], schemas: dict[str, Any]) -> None:
    """SIGNING_OPERATIONS merged, the JSON body's schema (read by hand, so FastAPI does not list it) and the link
    from a created request to its state."""
    for (path, method), documented in SIGNING_OPERATIONS.items():
        operation = paths.get(path, {}).get(method)
        if operation is not None:
            operation.setdefault("responses", {}).update(copy.deepcopy(documented["responses"]))
    body = SigningRequestCreate.model_json_schema(ref_template="#/components/schemas/{model}")
    schemas.update(body.pop("$defs", {}))
    schemas["SigningRequestCreate"] = body
    create = paths.get("/api/v1/signing-requests", {}).get("post")
    if create is None:
        return
    create["requestBody"]["content"]["multipart/form-data"]["example"] = _MULTIPART_EXAMPLE
    follow = paths.get("/api/v1/signing-requests/{request_id}", {}).get("get")
    if follow is not None:
        link = {"operationId": follow["operationId"], "parameters": {"request_id": "$response.body#/id"}}
        for status in ("200", "201"):
            create["responses"][status]["links"] = {"GetSigningRequest": link}



_VALIDATION_REFUSALS = [signing_errors.EncryptedPdf, signing_errors.DamagedPdf, signing_errors.TooManyPages,
                        signing_errors.TooManyObjects, signing_errors.InflationBomb, signing_errors.ReferenceLoop,
                        signing_errors.PdfRefused, signing_errors.InvalidValidationRequest, signing_errors.NoFile]


def _document_validation(paths: dict[str, dict[str, Any]], schemas: dict[str, Any]) -> None:
    """POST /api/v1/validations: the report's schema (api.schemas.validation, the wire form of
    signing.core.report), the PDF report, the optional agency token and the refusals with their codes."""
    report = ValidationReportOut.model_json_schema(ref_template="#/components/schemas/{model}")
    schemas.update(report.pop("$defs", {}))
    schemas["ValidationReport"] = report
    operation = paths.get("/api/v1/validations", {}).get("post")
    if operation is None:
        return
    operation["security"] = [{"agencyBearer": []}, {}]
    content = operation["requestBody"]["content"]
    content["application/pdf"]["example"] = "%PDF-1.7 ... (a signed PDF)"
    content["multipart/form-data"]["example"] = {"file": "(PDF file)", "at": "2026-01-31T12:00:00Z"}
    operation["responses"] = {
        "200": {"description": "the validation report (ETSI TS 119 102-2 shaped), also for a PDF without any "
                               "signature (all_passed false); with Accept: application/pdf the same report as a PDF "
                               "in the language of Accept-Language",
                "content": {"application/json": {"schema": _ref("ValidationReport")},
                            "application/pdf": {"schema": {"type": "string", "format": "binary"}}}},
        "401": problem("an Authorization header whose token is not a valid client_credentials token (invalid_token)"),
        "403": problem("a person's token instead of a client's own (insufficient_scope)"),
        "413": problem("the body is over the bound of one document (ACAR_SIGNING_MAX_DOCUMENT_BYTES): "
                       "content_too_large or too_large"),
        "415": problem("neither application/pdf nor multipart/form-data (unsupported_media_type), or not a PDF "
                       "(not_pdf)"),
        "422": coded_problem("the document or the request is refused", _VALIDATION_REFUSALS),
        "429": coded_problem("an anonymous caller's budget ACAR_VALIDATION_ANONYMOUS_RATE_LIMIT is spent "
                             "(Retry-After)", [RateLimited]),
        "503": coded_problem("the trust policy cannot be built (trusted list, built-in CA), or the revocation "
                             "sources did not answer in time",
                             [signing_errors.ValidationUnavailable, signing_errors.ValidationTimedOut]),
        "default": problem("any other error: an RFC 9457 problem"),
    }

def _page(route: Any) -> bool:
    return route.path in PAGE_PATHS or bool(PAGE_TAGS.intersection(str(t) for t in getattr(route, "tags", ()) or ()))


def _client_authenticated(dependant: Any) -> bool:
    """Whether the route authenticates an agency client (api.auth.require_client_scope)."""
    return any(dependency.call in CLIENT_AUTHENTICATORS or _client_authenticated(dependency)
               for dependency in getattr(dependant, "dependencies", ()))


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
    if _client_authenticated(getattr(route, "dependant", None)):
        operation["security"] = [{"agencyBearer": []}]
        responses["401"] = problem("no valid access token (WWW-Authenticate: Bearer)")
        responses["403"] = problem("the token is not a client's own or lacks the scope signing (insufficient_scope)")
    elif any(True for _ in authenticators(getattr(route, "dependant", None))):
        operation["security"] = [{"adminBearer": []}]
        responses["401"] = problem("no valid admin bearer token (WWW-Authenticate: Bearer)")
        responses["403"] = problem("the token lacks the scope of this operation, or its person does not hold (any "
                                   "longer) a staff role allowing it; nothing is read or changed")
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
    ("/idcard/webeid/challenge", "post"): "json", ("/idcard/webeid/login", "post"): "json",
    ("/idcard/tls/{pending_id}", "post"): "page",
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
                responses.setdefault("429", coded_problem(description, [RateLimited]) if kind == "json"
                                     else {"oauth": oauth_error, "page": html}[kind](description))


def complete(document: dict[str, Any], app: FastAPI, *, secure_cookies: bool) -> dict[str, Any]:
    """`document` (FastAPI's, with the plain routes' operations) completed as the module docstring says;
    `secure_cookies`: the issuer is https, so the cookies are named __Host-... (api.provider.Provider)."""
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
    revoke = paths.get("/admin/tokens/{jti}/revoke", {}).get("post")
    if revoke is not None:
        for parameter in revoke.get("parameters", []):
            if parameter["name"] == "jti":
                parameter["schema"]["pattern"] = JTI_RE.pattern
    _document_browser_json(paths)
    _link_client_operations(paths)
    components = document.setdefault("components", {})
    schemas = components.setdefault("schemas", {})
    _document_signing(paths, schemas)
    _document_validation(paths, schemas)
    _edge_responses(paths)
    for unused in ("HTTPValidationError", "ValidationError"):
        schemas.pop(unused, None)
    schemas.update(copy.deepcopy(SCHEMAS))
    components["securitySchemes"] = {**copy.deepcopy(SECURITY_SCHEMES), **cookie_schemes(secure_cookies)}
    return document

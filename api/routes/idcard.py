"""ID-card login (issue 15): the Web eID token's JSON endpoints and the mutual-TLS form post.

Web eID (Web eID system architecture, "Authentication"; the login page's JavaScript talks to the browser
extension):
  POST /idcard/webeid/challenge  {"pending_id"} -> {"nonce", "expires_at"}: a single-use nonce (idp.core.webeid:
                                 base64 of 32 random bytes) for this pending authorization request
  POST /idcard/webeid/login      {"pending_id", "nonce", "token"} -> {"redirect"} or {"form_post"} (as a passkey
                                 login: api.json_endpoints.next_step) and the session cookie. "token" is the
                                 extension's authToken object ("web-eid:1": unverifiedCertificate, algorithm,
                                 signature, appVersion); "nonce" the string the challenge returned.
Both take the pending request's CSRF token in X-CSRF-Token and refuse another Origin, as the passkey login does;
refusals are RFC 9457 problems with the member "code" (a CardLoginError's code, or request_expired, csrf,
wrong_origin, invalid_request, rate_limited), which the page translates.

Mutual TLS:
  POST /idcard/tls/{pending_id}  a form (csrf_token = the pending request's) posted by the login page to the mTLS
                                 listener (ACAR_MTLS_PUBLIC_URL: api.server requests a client certificate there) or,
                                 behind a reverse proxy, to the issuer. The certificate is the TLS connection's
                                 (the ASGI TLS extension: scope["extensions"]["tls"]["client_cert_chain"], PEM, leaf
                                 first) or else, only when the TCP peer is one of ACAR_TRUSTED_PROXIES, the header
                                 ACAR_IDCARD_CLIENT_CERT_HEADER (nginx $ssl_client_escaped_cert: URL-encoded PEM).
                                 The header from any other address is ignored and audited
                                 ("login.card.forwarded_header_ignored"): anyone can send a header. OpenSSL's
                                 handshake checks neither revocation nor key usage, so the certificate is verified
                                 here in full, exactly as a Web eID token's. Success: the answer of a login page
                                 (api.web.answer) and the session cookie; refusal: the translated error page
                                 (api.rendering.card_error_page).

Every attempt spends the per-IP budgets ACAR_RATE_LIMIT_CARD_CHALLENGE / ACAR_RATE_LIMIT_CARD_LOGIN first. The
login's rule (nonce used up first, verification, identity mapping, audit) is idp.sql.card_login's.
"""

from __future__ import annotations

import base64
import binascii
import hmac
import re
from urllib.parse import unquote

from fastapi import APIRouter, Request, Response
from fastapi.responses import JSONResponse, RedirectResponse

from api.errors import CardLoginUnavailable
from api.json_endpoints import check_csrf, next_step, pending_request, read_json, text_member
from api.logging import request_id_var
from api.rendering import FORM_EXPIRED, card_error_page, error_page
from api.routing import PlainRoute
from api.settings import Settings
from api.units import RequestUnit
from api.web import (
    NO_STORE,
    answer,
    browser_binding,
    complete_login,
    interaction_path,
    provider_of,
    read_page_form,
    services_of,
)
from idp.core.authorize import AuthorizeResult, Interaction
from idp.core.errors import CardLoginError, CertificateMalformed, CertificateMissing, ForwardedCertificateRefused
from idp.sql.card_login import CardLoginService, SqlCardLoginStore

router = APIRouter(tags=["idcard"])
page_router = APIRouter(tags=["interaction"])
"""The mutual-TLS form post: a page (its refusals are translated pages, text refused at the edge as on every page)."""
EXPIRED = "this sign-in request has expired or was already completed; start again from the service you were using"
UNAVAILABLE = "ID-card sign-in is not available on this server"
MAX_CERTIFICATE = 16 * 1024
"""A forwarded certificate longer than this (URL-encoded PEM) is no ID card's: refused as malformed."""
_PEM = re.compile(r"-----BEGIN CERTIFICATE-----(.+?)-----END CERTIFICATE-----", re.DOTALL)


def card_tls_url(settings: Settings, pending_id: str) -> str | None:
    """Where the login page's mutual-TLS form posts: the mTLS listener (ACAR_MTLS_PUBLIC_URL or the issuer's host on
    ACAR_MTLS_PORT: api.server), else the issuer itself when a reverse proxy forwards the client certificate
    (ACAR_IDCARD_CLIENT_CERT_HEADER); None when neither is configured (Web eID only)."""
    base = settings.resolved_mtls_public_url
    if base is None:
        base = settings.issuer if settings.idcard_client_cert_header else None
    return f"{base}/idcard/tls/{pending_id}" if base else None


async def _service(request: Request) -> CardLoginService:
    """The process's card login service; CardLoginUnavailable without an ID-card trust anchor."""
    card = await services_of(request).card.service()
    if card is None:
        raise CardLoginUnavailable(f"{UNAVAILABLE} (no ID-card trust anchor)")
    return card


def _store(work: RequestUnit) -> SqlCardLoginStore:
    return SqlCardLoginStore(work.tx, request_id=request_id_var.get())


# --- Web eID ----------------------------------------------------------------------------------------------

async def webeid_challenge(request: Request) -> JSONResponse:
    """{"pending_id"} -> {"nonce", "expires_at"}: a Web eID challenge nonce for the pending request (single use,
    ACAR_IDCARD_CHALLENGE_SECONDS). CSRF: the pending request's token."""
    services = services_of(request)
    body = await read_json(request)
    pending_id = text_member(body, "pending_id")
    assert pending_id is not None  # noqa: S101 - required
    limits = services.ratelimits  # each answer stores a nonce: counted per IP before anything is written
    await limits.spend(limits.budgets.card_challenge, [("ip", limits.client_ip(request))], answer="json")
    card = await _service(request)
    async with RequestUnit.on(services.direct) as work:
        pending = await pending_request(request, work.oidc, pending_id)
        check_csrf(request, services, pending.csrf_token)
        challenge = await card.challenge(_store(work), pending.id)
    return JSONResponse({"nonce": challenge.nonce, "expires_at": challenge.expires_at.isoformat()}, headers=NO_STORE)


async def webeid_login(request: Request) -> JSONResponse:
    """{"pending_id", "nonce", "token"} -> 200 {"redirect"} or {"form_post"} with the session cookie set.

    The nonce is used up before the token is looked at (a replayed or refused token's nonce stays used, in a unit of
    work of its own); the token's signature over hash(origin) || hash(nonce) and its certificate are verified outside
    any unit of work (revocation requests wait on the network or on the built-in PKI's own units), then, in a second
    unit, the card holder mapped to a person,
    and the login completes the pending authorization request exactly as a passkey login does (a session, then the
    request resumed with a fresh login), at level high. A refusal is a problem with its CardLoginError code; it
    writes its audit event and the used nonce, nothing else."""
    services, provider = services_of(request), provider_of(request)
    body = await read_json(request)
    pending_id = text_member(body, "pending_id")
    assert pending_id is not None  # noqa: S101 - required
    nonce = body.get("nonce")
    limits = services.ratelimits  # every attempt, before the token is verified
    await limits.spend(limits.budgets.card_login, [("ip", limits.client_ip(request))], answer="json")
    card = await _service(request)
    async with RequestUnit.on(services.direct) as work:  # the nonce used up (and a refusal audited) first
        pending = await pending_request(request, work.oidc, pending_id)
        check_csrf(request, services, pending.csrf_token)
        used = await card.use_nonce(_store(work), pending_id=pending.id,
                                    nonce=nonce if isinstance(nonce, str) else None)
    # outside any unit of work: OCSP and CRL requests, the built-in PKI's in-process answers (idp.sql.card_login)
    check = await card.check_webeid(body.get("token"), nonce=used)
    async with RequestUnit.on(services.direct) as work:
        login = await card.record(_store(work), check)
        done = await complete_login(request, provider, work.oidc, pending.id, person_id=login.person_id,
                                    method=login.method)
    return done.with_cookie(next_step(request, done.result), provider)


# --- mutual TLS -------------------------------------------------------------------------------------------

def _der(text: str) -> bytes:
    """The DER of one certificate sent as PEM (also with its line breaks turned into spaces or tabs, as some proxies
    forward it) or as bare base64 DER; CertificateMalformed otherwise (RFC 7468 section 5.1)."""
    found = _PEM.search(text)
    body = found.group(1) if found else text
    try:
        der = base64.b64decode("".join(body.split()), validate=True)
    except (binascii.Error, ValueError):
        raise CertificateMalformed("the client certificate is not PEM or base64 DER") from None
    if not der:
        raise CertificateMalformed("the client certificate is empty")
    return der


def _tls_chain(request: Request) -> list[str]:
    """The TLS connection's client certificate chain (ASGI TLS extension), PEM, leaf first; [] without one."""
    tls = request.scope.get("extensions", {}).get("tls") or {}
    chain = tls.get("client_cert_chain") if isinstance(tls, dict) else None
    return [item for item in chain if isinstance(item, str)] if isinstance(chain, list) else []


async def _presented(request: Request, card: CardLoginService, store: SqlCardLoginStore
                     ) -> tuple[bytes, list[bytes]]:
    """The certificate (DER) and the intermediates presented with it: the TLS connection's, else the header of a
    trusted proxy. A header from anyone else is ignored and audited; without a certificate, the refusal audited."""
    settings, limits = services_of(request).settings, services_of(request).ratelimits
    chain = _tls_chain(request)
    header = settings.idcard_client_cert_header
    forwarded = request.headers.get(header, "") if header else ""
    trusted = bool(forwarded) and limits.from_trusted_proxy(request)
    if forwarded and not trusted:
        peer = request.client.host if request.client else "unknown"
        await store.audit("login.card.forwarded_header_ignored", actor="anonymous",
                          detail={"peer": peer[:100], "header": header})
    if chain:
        return _der(chain[0]), [_der(item) for item in chain[1:]]
    if not forwarded:
        raise await card.refuse(store, "tls", CertificateMissing("no client certificate came with the request"))
    if not trusted:
        raise await card.refuse(store, "tls", ForwardedCertificateRefused(
            f"the {header} header was sent by an address that is not a trusted proxy (ACAR_TRUSTED_PROXIES)"))
    if len(forwarded) > MAX_CERTIFICATE:
        raise await card.refuse(store, "tls", CertificateMalformed("the forwarded client certificate is too long"))
    try:
        return _der(unquote(forwarded, errors="strict")), []
    except UnicodeDecodeError:
        raise await card.refuse(store, "tls", CertificateMalformed(
            "the forwarded client certificate is not URL-encoded text")) from None
    except CertificateMalformed as exc:
        raise await card.refuse(store, "tls", exc) from None


def _tls_answer(result: AuthorizeResult, issuer: str) -> Response:
    """api.web.answer, with the next interaction (consent) at the issuer: the mTLS listener is another origin."""
    if isinstance(result, Interaction):
        return RedirectResponse(issuer + interaction_path(result), status_code=303,
                                headers={"Cache-Control": "no-store"})
    return answer(result)


@page_router.post("/idcard/tls/{pending_id}")
async def tls_login(request: Request, pending_id: str) -> Response:
    """The login page's mutual-TLS form (csrf_token): log in with the TLS client certificate (module docstring)."""
    services, provider = services_of(request), provider_of(request)
    form = await read_page_form(request)
    limits = services.ratelimits
    await limits.spend(limits.budgets.card_login, [("ip", limits.client_ip(request))], answer="page")
    card = await services.card.service()
    if card is None:  # not offered here: no ID-card trust anchor
        return error_page("access_denied", UNAVAILABLE, status=404)
    try:
        async with RequestUnit.on(services.direct) as work:
            pending = await provider.authorization.pending_for(work.oidc, pending_id, browser_binding(request))
            if pending is None:
                return error_page("invalid_request", EXPIRED)
            sent = form.get("csrf_token", [])
            if len(sent) != 1 or not hmac.compare_digest(sent[0].encode(), pending.csrf_token.encode()):
                return error_page("invalid_request", FORM_EXPIRED, status=403)
            certificate, intermediates = await _presented(request, card, _store(work))
        # outside any unit of work: OCSP and CRL requests, the built-in PKI's in-process answers
        check = await card.check_certificate(certificate, intermediates)
        async with RequestUnit.on(services.direct) as work:
            login = await card.record(_store(work), check)
            done = await complete_login(request, provider, work.oidc, pending.id, person_id=login.person_id,
                                        method=login.method)
    except CardLoginError as exc:  # its audit event and nothing else committed (persist)
        return card_error_page(exc)
    return done.with_cookie(_tls_answer(done.result, provider.issuer), provider)


plain_routes = [
    PlainRoute("/idcard/webeid/challenge", webeid_challenge, methods=["POST"]),
    PlainRoute("/idcard/webeid/login", webeid_login, methods=["POST"]),
]
"""The Web eID login: plain Starlette routes at the head of the route table, like the passkey login (api.app)."""

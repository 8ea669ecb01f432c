"""The PKI's public endpoints: CA certificates, CRLs (RFC 5280) and the OCSP responder (RFC 6960).

- GET /pki/ca/{name}.crt: the DER CA certificate (application/pkix-cert, RFC 2585 section 4.1), the
  caIssuers URL of the certificates the CA issued.
- GET /pki/crl/{name}.crl: the CA's newest CRL (application/pkix-crl, RFC 2585 section 4.2).
- POST /pki/ocsp with a DER OCSPRequest, or GET /pki/ocsp/{base64 of the DER} (RFC 6960 appendix A.1):
  always a 200 application/ocsp-response; a malformed or oversized request is answered with the OCSP status
  malformedRequest, never an HTTP error. The media type of a POST is not enforced: the body decides.
"""

from __future__ import annotations

import base64
import binascii
import time

from fastapi import APIRouter, Request
from fastapi.responses import Response

from api.body import read_limited
from api.deps import Services
from api.metrics.instruments import ocsp_answered
from api.routing import PlainRoute
from keys.ocsp import MALFORMED_REQUEST, MAX_REQUEST_BYTES, OcspReply

router = APIRouter(prefix="/pki", tags=["pki"])

OCSP_RESPONSE = "application/ocsp-response"
PKIX_CERT = "application/pkix-cert"
PKIX_CRL = "application/pkix-crl"


def _ocsp_response(reply: OcspReply, *, cache_seconds: int | None) -> Response:
    headers = {"Cache-Control": "no-store"}
    if cache_seconds is not None and reply.status == "successful" and not reply.nonce:
        # RFC 5019 section 6.2: GET responses may be cached until (at most) nextUpdate
        headers = {"Cache-Control": f"max-age={cache_seconds}, public, no-transform, must-revalidate"}
    return Response(content=reply.der, media_type=OCSP_RESPONSE, headers=headers)


async def _answer(services: Services, request_der: bytes) -> OcspReply:
    """The responder's answer, its time counted by response status (acar_ocsp_response_seconds)."""
    started = time.perf_counter()
    reply = await services.pki.ocsp(request_der)
    ocsp_answered(reply.status, time.perf_counter() - started)
    return reply


def _malformed() -> Response:
    """OCSP malformedRequest (RFC 6960 section 4.2.1): always a 200, never an HTTP error."""
    return Response(content=MALFORMED_REQUEST, media_type=OCSP_RESPONSE, headers={"Cache-Control": "no-store"})


async def ocsp_post(request: Request) -> Response:
    """Answer a DER OCSPRequest sent as the body (application/ocsp-request)."""
    services: Services = request.app.state.services
    body = await read_limited(request, MAX_REQUEST_BYTES)
    if body is None:
        return _malformed()
    return _ocsp_response(await _answer(services, body), cache_seconds=None)


async def ocsp_get(request: Request) -> Response:
    """Answer an OCSPRequest sent as the URL-encoded base64 of its DER (RFC 6960 appendix A.1)."""
    services: Services = request.app.state.services
    encoded: str = request.path_params["encoded"]
    # A trailing "/" is base64 (about one request in 200 ends with one) and stays. A leading "/" comes from a
    # base URL ending in "/" (".../ocsp//MEI..."): never base64 here, as a DER OCSPRequest starts with 0x30 ("M").
    text = encoded.replace(" ", "+").lstrip("/")
    if len(text) > MAX_REQUEST_BYTES * 2:
        return _malformed()
    try:
        der = base64.b64decode(text + "=" * (-len(text) % 4), altchars=b"-_" if "-" in text or "_" in text else None,
                               validate=True)
    except (binascii.Error, ValueError):
        return _malformed()
    reply = await _answer(services, der)
    return _ocsp_response(reply, cache_seconds=int(services.pki.ocsp_validity.total_seconds()))


plain_routes = [PlainRoute("/pki/ocsp", ocsp_post, methods=["POST"]),
                PlainRoute("/pki/ocsp/{encoded:path}", ocsp_get, methods=["GET"])]
"""The OCSP responder every relying party asks about every certificate: plain Starlette routes at the head of the
route table (api.app), like the token endpoint, answered without FastAPI's request handling (its routing and
dependency solving were a quarter of a response's CPU)."""


@router.get("/ca/{name}.crt", response_class=Response, responses={200: {"content": {PKIX_CERT: {}}}})
async def ca_certificate(name: str, request: Request) -> Response:
    """The DER certificate of the root or issuing CA."""
    services: Services = request.app.state.services
    der = await services.pki.ca_certificate(name)
    return Response(content=der, media_type=PKIX_CERT, headers={"Cache-Control": "public, max-age=3600"})


@router.get("/crl/{name}.crl", response_class=Response, responses={200: {"content": {PKIX_CRL: {}}}})
async def crl(name: str, request: Request) -> Response:
    """The newest DER CRL of the root or issuing CA (republished when half of its lifetime has passed)."""
    services: Services = request.app.state.services
    der = await services.pki.crl(name)
    return Response(content=der, media_type=PKIX_CRL, headers={"Cache-Control": "public, max-age=300"})

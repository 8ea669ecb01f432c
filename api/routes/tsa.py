"""The RFC 3161 time-stamp authority over HTTP (RFC 3161 section 3.4): POST a DER TimeStampReq with
Content-Type application/timestamp-query, get a DER TimeStampResp as application/timestamp-reply.

A request the TSA refuses (malformed, unsupported hash algorithm, wrong policy) is still a 200 with a
TimeStampResp whose status is rejection: the protocol carries the failure, not HTTP. HTTP errors are only for
what is not a time-stamp request at all: another media type (415), a body over MAX_REQUEST_BYTES (413).
This route is a thin adapter: keys.tsa.TimestampService answers and audits in one call (every granted
time-stamp is an audit event committed before the reply is returned; concurrent requests share a commit,
storage.audit.GroupCommitAuditLog, so the audit trail does not cap the throughput).
"""

from __future__ import annotations

import time

from fastapi import APIRouter, Request
from fastapi.responses import Response

from api.body import read_limited
from api.deps import Services
from api.errors import ApiProblem
from api.logging import request_id_var
from api.metrics.instruments import tsa_answered
from api.routing import PlainRoute

router = APIRouter(prefix="/pki", tags=["pki"])
"""The module's tag in the OpenAPI document; its one endpoint is a plain route (`plain_routes`)."""

QUERY_MEDIA_TYPE = "application/timestamp-query"
REPLY_MEDIA_TYPE = "application/timestamp-reply"
MAX_REQUEST_BYTES = 64 * 1024
"""A TimeStampReq is a hash, a few OIDs and a nonce (~100 bytes); anything far larger is not one."""


async def timestamp(request: Request) -> Response:
    """Answer an RFC 3161 time-stamp request."""
    media_type = request.headers.get("content-type", "").split(";", 1)[0].strip().lower()
    if media_type != QUERY_MEDIA_TYPE:
        raise ApiProblem(415, "unsupported_media_type", "Unsupported media type",
                         f"send the DER TimeStampReq as {QUERY_MEDIA_TYPE}")
    body = await read_limited(request, MAX_REQUEST_BYTES)
    if body is None:
        raise ApiProblem(413, "content_too_large", "Content too large",
                         f"a time-stamp request is at most {MAX_REQUEST_BYTES} bytes")
    services: Services = request.app.state.services
    started = time.perf_counter()
    reply = await services.tsa.timestamp(body, actor="anonymous", request_id=request_id_var.get())
    tsa_answered(reply.failure or reply.status, time.perf_counter() - started)
    return Response(content=reply.der, media_type=REPLY_MEDIA_TYPE, headers={"Cache-Control": "no-store"})


plain_routes = [PlainRoute("/pki/tsa", timestamp, methods=["POST"])]
"""The time-stamp authority: a plain Starlette route at the head of the route table (api.app), like the OCSP
responder."""

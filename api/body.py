"""Request bodies read with a size limit, for the endpoints that take raw DER (OCSP, TSA)."""

from __future__ import annotations

from fastapi import Request


async def read_limited(request: Request, limit: int) -> bytes | None:
    """The body, or None once it is known to exceed `limit` bytes: from its Content-Length before reading,
    or while streaming (a chunked body is never buffered past the limit)."""
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        return None
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > limit:
            return None
    return bytes(body)

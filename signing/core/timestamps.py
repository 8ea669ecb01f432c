"""Time-stamp clients of the PAdES engine: pyHanko `TimeStamper`s over the built-in TSA or an RFC 3161 URL.

- ETSI EN 319 142-1 section 5.3 (B-T): the signature time-stamp is an RFC 3161 token over the signature value,
  in the unsigned attribute signature-time-stamp (RFC 5652 / ETSI EN 319 122-1); section 5.5 (B-LTA): the
  document time-stamp is an RFC 3161 token over the whole revision (SubFilter ETSI.RFC3161).
- Issue 13: one client per process, reused by every signature (never one per signature), so the size estimate
  pyHanko takes from a first "dummy" token is paid once.

Decisions, so a reader sees them at one place:
- The built-in TSA is asked in process through `keys.tsa.TimestampService.timestamp`, the one call that grants
  and audits a token (the audit event commits before the token is returned). The actor of the audit event is
  the signer of the document: the engine sets it for the duration of a signature with `acting_as`, a context
  variable, so concurrent signatures in other tasks keep their own. A request without an actor is refused
  (no anonymous in-process time-stamp). pyHanko's first request is a size-estimate token over the hash of
  nothing; it is granted and audited like any other (once per process).
- An external TSA is pyHanko's `HTTPTimeStamper` on one aiohttp session owned here (connection pooling), with
  a bounded timeout; `close` releases it.
- Every way a token is not obtained (a rejection with its RFC 3161 failInfo, the TSA not configured, a network
  error, a response that does not parse or does not match the request's nonce) reaches the engine as pyHanko's
  `TimestampRequestError`; the engine turns it into signing.core.errors.TimestampUnavailable and writes nothing.
"""

from __future__ import annotations

import contextlib
import contextvars
from collections.abc import Iterator
from typing import Final, Protocol

from asn1crypto import tsp
from pyhanko.sign.timestamps import HTTPTimeStamper, TimeStamper, TimestampRequestError
from pyhanko_certvalidator.fetchers.aiohttp_fetchers.util import LazySession

from keys.errors import KeysError
from keys.tsa import TimestampReply

DEFAULT_HTTP_TIMEOUT: Final = 10.0
"""Seconds an external TSA has to answer one request."""

_ACTOR: contextvars.ContextVar[str | None] = contextvars.ContextVar("acar_timestamp_actor", default=None)


@contextlib.contextmanager
def acting_as(actor: str) -> Iterator[None]:
    """Time-stamps requested inside this block are audited with `actor` (the signer of the document)."""
    token = _ACTOR.set(actor)
    try:
        yield
    finally:
        _ACTOR.reset(token)


class TimestampSource(Protocol):
    """What the in-process client needs of the TSA: keys.tsa.TimestampService is one."""

    async def timestamp(self, request_der: bytes, *, actor: str, request_id: str | None = None) -> TimestampReply:
        ...


class ServiceTimeStamper(TimeStamper):
    """The built-in TSA in process: each request is granted and audited by `keys.tsa.TimestampService`."""

    def __init__(self, service: TimestampSource) -> None:
        # RFC 3161 section 2.4.1: the nonce ties the reply to the request
        super().__init__(include_nonce=True)  # type: ignore[no-untyped-call]  # unannotated in pyHanko
        self._service = service

    async def async_request_tsa_response(self, req: tsp.TimeStampReq) -> tsp.TimeStampResp:
        actor = _ACTOR.get()
        if actor is None:
            raise TimestampRequestError("an in-process time-stamp needs the actor it is audited under")
        try:
            reply = await self._service.timestamp(req.dump(), actor=actor)
        except KeysError as exc:  # TsaNotConfigured: no usable TSA certificate on this node
            raise TimestampRequestError(f"the built-in TSA does not sign: {exc.detail}") from exc
        except Exception as exc:  # whatever its storage raised (the database away): no token
            raise TimestampRequestError(f"the built-in TSA failed: {type(exc).__name__}") from exc
        if not reply.granted:
            raise TimestampRequestError(f"the built-in TSA refused the request: {reply.failure}")
        response: tsp.TimeStampResp = tsp.TimeStampResp.load(reply.der)
        return response

    async def close(self) -> None:
        """Nothing to release: the service belongs to the caller."""


class UrlTimeStamper(HTTPTimeStamper):
    """An external RFC 3161 TSA over HTTP(S) (RFC 3161 section 3.4), on one pooled session of its own."""

    def __init__(self, url: str, *, timeout: float = DEFAULT_HTTP_TIMEOUT) -> None:
        if not url.startswith(("http://", "https://")):
            raise ValueError(f"the TSA URL must be http or https, not {url!r}")
        self._lazy = LazySession()  # type: ignore[no-untyped-call]  # unannotated in pyHanko
        super().__init__(url, timeout=timeout, session=self._lazy)

    async def async_request_tsa_response(self, req: tsp.TimeStampReq) -> tsp.TimeStampResp:
        response: tsp.TimeStampResp = await super().async_request_tsa_response(req)
        status = response["status"]["status"].native  # a rejection carries no token: say why, not "malformed"
        if status not in ("granted", "granted_with_mods"):
            fail_info = response["status"]["fail_info"].native
            raise TimestampRequestError(f"the TSA at {self.url} answered {status} ({fail_info})")
        return response

    async def close(self) -> None:
        """Close the pooled session (created again on the next request)."""
        await self._lazy.close()  # type: ignore[no-untyped-call]  # unannotated in pyHanko

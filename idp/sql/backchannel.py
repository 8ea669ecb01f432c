"""Durable delivery of OpenID Connect Back-Channel Logout 1.0 logout tokens.

When a login session ends, `OidcStore.queue_logouts` writes one `logout_deliveries` row per client of the session that
registered a `backchannel_logout_uri` (section 2.2), in the caller's unit of work. `BackchannelDelivery` is the
worker that sends them:

- section 2.4 (Logout Token): a fresh token is signed for every attempt (new iat, exp and jti); the row keeps
  only sub and sid, never a token, and neither do its `last_error`, the audit events or the logs.
- sections 2.5 and 2.6 (Back-Channel Logout Request, Logout Token Validation): the token is POSTed as the
  `logout_token` parameter, application/x-www-form-urlencoded; the RP validates it. Redirects are not followed:
  the token goes to the registered URI only.
- section 2.7 (Back-Channel Logout Actions): the RP may be down when the session ends, so a row is retried
  with exponential backoff (5 s, doubling, capped at one hour) until `give_up_at`.
- section 2.8 (Back-Channel Logout Response): 200 OK (or the 204 No Content some frameworks substitute)
  means logged out. 5xx, 408, 429, timeouts and connection errors are transient and retried; any other 4xx
  (400 with an OAuth error JSON: the RP refused this token) and 3xx are final and the row is given up.

Several nodes may run the worker against one database: a row is claimed by one UPDATE that moves
`next_attempt_at` forward by a lease (on PostgreSQL over `SELECT ... FOR UPDATE SKIP LOCKED`, on SQLite under
its single writer lock), so two nodes never send the same row at the same moment; a node that dies mid-send
leaves the row due again when its lease runs out (at-least-once delivery).

The table has no state column: a row is pending while `delivered_at` is NULL and `next_attempt_at` is a real
time, delivered once `delivered_at` is set, and given up when `next_attempt_at` is `GAVE_UP` (never due).

This module is a worker, not the protocol core: it uses SQLAlchemy and httpx, but knows no web framework.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import json
import logging
import math
import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Literal, Protocol

import httpx
from sqlalchemy import delete, or_, select, update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from idp.sql.models import LogoutDelivery
from storage.audit import record_event
from storage.base import utcnow

log = logging.getLogger("acar.backchannel")

AUDIT_ACTOR = "backchannel"
HTTP_TIMEOUT = 5.0
"""Seconds for each connect, write and read of one logout request (the client this module creates)."""
ATTEMPT_DEADLINE = 30.0
"""Seconds one attempt may take in all, signing included: a client that drips its answer is cut off."""
FIRST_RETRY = 5
"""Seconds before the first retry; each further retry waits twice as long ..."""
MAX_RETRY = 3600
"""... up to one hour between attempts (section 2.7: the RP may be down for a while)."""
GAVE_UP = dt.datetime(9999, 12, 31, tzinfo=dt.UTC)
"""`next_attempt_at` of a row given up: it is never due again and `purge` may delete it."""
MAX_ERROR_BODY = 2048
"""Bytes of a refusal's body read for its OAuth error (section 2.8); the rest is not read."""
_JWS = re.compile(r"eyJ[A-Za-z0-9_-]+\.[A-Za-z0-9_-]*\.[A-Za-z0-9_-]*")
RETRYABLE_STATUS = frozenset({408, 429})
"""4xx answers that mean "not now" rather than "never" (408 Request Timeout, 429 Too Many Requests)."""

Result = Literal["delivered", "retrying", "gave_up"]


class LogoutTokenSigner(Protocol):
    """Signs a logout token (section 2.4) for one client, subject and session (`TokenIssuer.logout_token`)."""

    def __call__(self, *, client_id: str, sub: str, sid: str) -> Awaitable[str]: ...


def retry_delay(attempts: int) -> dt.timedelta:
    """How long to wait after the `attempts`-th failed attempt: 5 s, 10 s, 20 s, ... capped at one hour."""
    exponent = min(max(attempts, 1) - 1, 20)  # 5 * 2**20 s is far past the cap already
    return dt.timedelta(seconds=min(FIRST_RETRY * 2**exponent, MAX_RETRY))


@dataclass(frozen=True, slots=True)
class _Claim:
    """A row this node claimed: its own until `lease`."""

    id: str
    client_id: str
    uri: str
    sub: str
    sid: str
    attempts: int
    give_up_at: dt.datetime
    last_error: str | None
    lease: dt.datetime


@dataclass(frozen=True, slots=True)
class _Outcome:
    result: Result
    attempts: int
    error: str | None = None


class _Refused(Exception):
    """The RP's answer or a transport failure, with whether trying again may help."""

    def __init__(self, error: str, *, retryable: bool) -> None:
        super().__init__(error)
        self.error = error
        self.retryable = retryable


class BackchannelDelivery:
    """Sends the queued logout tokens; one instance per node, run in the background by `run`."""

    def __init__(self, sessions: async_sessionmaker[AsyncSession], sign: LogoutTokenSigner, *,
                 http: httpx.AsyncClient | None = None, clock: Callable[[], dt.datetime] = utcnow,
                 batch: int = 50, max_concurrency: int = 8) -> None:
        if batch < 1 or max_concurrency < 1:
            raise ValueError("batch and max_concurrency must be at least 1")
        self._sessions = sessions
        self._sign = sign
        self._owns_http = http is None
        self._http = http  # an own client is made at the first delivery: making one loads the CA bundle (~60 ms)
        self._clock = clock
        self._batch = batch
        self._max_concurrency = max_concurrency
        # long enough for the whole batch, attempts waiting for a free slot included: a row is not taken over
        # by another node while this one may still send it
        rounds = math.ceil(batch / max_concurrency)
        self._lease = dt.timedelta(seconds=ATTEMPT_DEADLINE * rounds + 60)
        self._wake = asyncio.Event()

    async def aclose(self) -> None:
        """Close the HTTP client if this instance created it."""
        if self._owns_http and self._http is not None:
            await self._http.aclose()

    def _client(self) -> httpx.AsyncClient:
        if self._http is None:
            self._http = httpx.AsyncClient(timeout=HTTP_TIMEOUT, follow_redirects=False)
        return self._http

    def kick(self) -> None:
        """Wake `run` now (a logout was just queued and committed) instead of at its next tick."""
        self._wake.set()

    async def run(self, interval: float) -> None:
        """Deliver what is due every `interval` seconds, or at once when kicked; runs until cancelled."""
        while True:
            self._wake.clear()  # a kick during this pass makes the next one start at once
            full = False
            try:
                counts = await self.deliver_due()
                full = sum(counts.values()) >= self._batch  # more may be due: go on without waiting
            except Exception:  # a database outage must not end the worker; the next tick tries again
                log.exception("backchannel.delivery_failed")
            if full:
                continue
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(interval):
                    await self._wake.wait()

    async def deliver_due(self) -> dict[str, int]:
        """Send the due logout tokens (up to one batch); counts of delivered, retrying and gave_up rows.

        A failing delivery (the RP, the network, the signer) only changes its own row; a database error
        propagates.
        """
        claims = await self._claim(self._clock())
        counts = {"delivered": 0, "retrying": 0, "gave_up": 0}
        if not claims:
            return counts
        slots = asyncio.Semaphore(self._max_concurrency)

        async def one(claim: _Claim) -> None:
            async with slots:
                outcome = await self._attempt(claim)
            if await self._record(claim, outcome):
                counts[outcome.result] += 1

        try:
            async with asyncio.TaskGroup() as tasks:
                for claim in claims:
                    tasks.create_task(one(claim))
        except ExceptionGroup as failed:  # only a database error gets here: raise it as itself, not in a group
            raise failed.exceptions[0] from None
        return counts

    async def purge(self, before: dt.datetime) -> int:
        """Delete delivered and given-up rows created before `before`; pending rows stay."""
        async with self._sessions() as session, session.begin():
            result = await session.execute(
                delete(LogoutDelivery).where(
                    LogoutDelivery.created_at < before,
                    or_(LogoutDelivery.delivered_at.is_not(None), LogoutDelivery.next_attempt_at == GAVE_UP)))
        return int(result.rowcount or 0)  # type: ignore[attr-defined]

    async def _claim(self, now: dt.datetime) -> list[_Claim]:
        """Take up to one batch of due rows by moving them `lease` ahead, in one committed statement."""
        lease = now + self._lease
        due = (select(LogoutDelivery.id)
               .where(LogoutDelivery.delivered_at.is_(None), LogoutDelivery.next_attempt_at <= now)
               .order_by(LogoutDelivery.next_attempt_at)
               .limit(self._batch)
               .with_for_update(skip_locked=True))  # PostgreSQL: rows another node is claiming are skipped
        claim = (update(LogoutDelivery)
                 .where(LogoutDelivery.id.in_(due.scalar_subquery()),
                        LogoutDelivery.delivered_at.is_(None), LogoutDelivery.next_attempt_at <= now)
                 .values(next_attempt_at=lease)
                 .returning(LogoutDelivery.id, LogoutDelivery.client_id, LogoutDelivery.uri, LogoutDelivery.sub,
                            LogoutDelivery.sid, LogoutDelivery.attempts, LogoutDelivery.give_up_at,
                            LogoutDelivery.last_error)
                 .execution_options(synchronize_session=False))
        async with self._sessions() as session, session.begin():
            rows = (await session.execute(claim)).all()
        return [_Claim(id=r.id, client_id=r.client_id, uri=r.uri, sub=r.sub, sid=r.sid, attempts=r.attempts,
                       give_up_at=r.give_up_at, last_error=r.last_error, lease=lease) for r in rows]

    async def _attempt(self, claim: _Claim) -> _Outcome:
        """Send one logout token unless the retry window has closed; never raises for this delivery."""
        if self._clock() >= claim.give_up_at:
            return _Outcome("gave_up", claim.attempts, claim.last_error or "retry window closed before delivery")
        attempts = claim.attempts + 1
        try:
            async with asyncio.timeout(ATTEMPT_DEADLINE):
                await self._send(claim)
        except _Refused as refused:
            error, retryable = refused.error, refused.retryable
        except TimeoutError:
            error, retryable = f"no answer within {ATTEMPT_DEADLINE:g} s", True
        except Exception as exc:  # the signer or an unexpected failure: this row is retried, the batch goes on
            log.exception("backchannel.attempt_failed", extra={"client_id": claim.client_id})
            error, retryable = f"attempt failed: {type(exc).__name__}", True
        else:
            return _Outcome("delivered", attempts)
        if retryable and self._clock() + retry_delay(attempts) < claim.give_up_at:
            return _Outcome("retrying", attempts, error)
        return _Outcome("gave_up", attempts, error)

    async def _send(self, claim: _Claim) -> None:
        """POST a freshly signed logout token (section 2.5); returns on success, raises `_Refused` otherwise."""
        token = await self._sign(client_id=claim.client_id, sub=claim.sub, sid=claim.sid)
        try:
            async with self._client().stream(
                "POST", claim.uri,
                data={"logout_token": token},
                headers={"Content-Type": "application/x-www-form-urlencoded", "Cache-Control": "no-store"},
                follow_redirects=False,  # the token goes to the registered URI and nowhere else
            ) as response:
                status = response.status_code
                if 200 <= status < 300:  # section 2.8: 200 OK, or the 204 No Content some frameworks send
                    return
                body = await _read_at_most(response, MAX_ERROR_BODY)
        except (httpx.InvalidURL, httpx.UnsupportedProtocol) as exc:
            raise _Refused(f"unusable URI: {_clean(str(exc), token)}", retryable=False) from exc
        except httpx.HTTPError as exc:  # timeouts, refused or reset connections, protocol errors
            raise _Refused(f"{type(exc).__name__}: {_clean(str(exc), token)}", retryable=True) from exc
        error = f"HTTP {status}{_oauth_error(body, token)}"
        raise _Refused(error, retryable=status >= 500 or status in RETRYABLE_STATUS)

    async def _record(self, claim: _Claim, outcome: _Outcome) -> bool:
        """Write the outcome and its audit event; False when the lease was lost (another node took the row)."""
        now = self._clock()
        values: dict[str, object] = {"attempts": outcome.attempts, "last_error": outcome.error}
        if outcome.result == "delivered":
            values.update(delivered_at=now, last_error=None)
        elif outcome.result == "retrying":
            values["next_attempt_at"] = now + retry_delay(outcome.attempts)
        else:
            values["next_attempt_at"] = GAVE_UP
        async with self._sessions() as session, session.begin():
            result = await session.execute(
                update(LogoutDelivery)
                .where(LogoutDelivery.id == claim.id, LogoutDelivery.delivered_at.is_(None),
                       LogoutDelivery.next_attempt_at == claim.lease)
                .values(**values)
                .execution_options(synchronize_session=False))
            if result.rowcount != 1:  # type: ignore[attr-defined]
                log.warning("backchannel.lease_lost", extra={"client_id": claim.client_id})
                return False
            detail: dict[str, object] = {"sid": claim.sid, "attempts": outcome.attempts}
            if outcome.result == "delivered":
                record_event(session, "logout.delivered", actor=AUDIT_ACTOR, subject=claim.client_id,
                             detail=detail, clock=now)
            elif outcome.result == "gave_up":
                record_event(session, "logout.gave_up", actor=AUDIT_ACTOR, subject=claim.client_id,
                             detail={**detail, "error": outcome.error}, clock=now)
        level = logging.WARNING if outcome.result == "gave_up" else logging.INFO
        log.log(level, "backchannel.%s", outcome.result,
                extra={"client_id": claim.client_id, "attempts": outcome.attempts, "error": outcome.error})
        return True


async def _read_at_most(response: httpx.Response, limit: int) -> bytes:
    body = b""
    async for chunk in response.aiter_bytes():
        body += chunk
        if len(body) >= limit:
            break
    return body[:limit]


def _oauth_error(body: bytes, token: str) -> str:
    """` error: description` from an OAuth error JSON answer (section 2.8), cleaned; empty when there is none."""
    try:
        parsed = json.loads(body)
    except ValueError:
        return ""
    if not isinstance(parsed, dict) or not isinstance(parsed.get("error"), str):
        return ""
    text = _clean(parsed["error"], token, 64)
    if isinstance(parsed.get("error_description"), str):
        text += f": {_clean(parsed['error_description'], token, 200)}"
    return f" {text}"


def _clean(text: str, token: str, limit: int = 300) -> str:
    """Text from the network made safe to store and log: never the token (the RP may echo it), no other JWT,
    printable, and short. Redacted before it is cut, so no part of a token's signature survives the cut."""
    text = _JWS.sub("[jwt]", text.replace(token, "[logout_token]"))
    return "".join(ch if ch.isprintable() else "?" for ch in text)[:limit]

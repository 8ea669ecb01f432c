"""Rate limits at the web edge: which budget each endpoint spends, by which keys, and who the client is.

The counting itself is storage.ratelimit (domain-free, on the `limits` library; memory or a shared Redis). This
module holds the policy, read from the settings in api.deps:

| budget (setting ACAR_RATE_LIMIT_...) | counted per | where, and when |
|---|---|---|
| AUTHORIZE | client IP | /authorize without a live session, before a pending request is stored |
| PASSKEY_OPTIONS | client IP | /webauthn/login/options, before a challenge is stored |
| PASSKEY_LOGIN | client IP | /webauthn/login/verify, before the assertion is verified |
| CARD_CHALLENGE | client IP | /idcard/webeid/challenge, before a nonce is stored |
| CARD_LOGIN | client IP | /idcard/webeid/login and /idcard/tls/{pending_id}, before the certificate is checked |
| ENROLLMENT, ENROLLMENT_CODE | client IP; the code's public part | POST /webauthn/enrollment, before any hash |
| CLIENT_AUTH_FAILURES | client_id; client IP | /token, /introspect, /revoke: failures count; spent: 429 first |
| INTROSPECTION | client IP; client_id | /introspect, every request |
| ADMIN | client IP | the admin API, before the bearer token is verified |
| (VALIDATION_ANONYMOUS_RATE_LIMIT) | client IP | /api/v1/validations without a token, POST /verify |

A refusal is RateLimited: 429 with Retry-After (RFC 6585 section 4, RFC 9110 section 10.2.3), in the endpoint's
own error form (api.problems). The first refusal of a key in AUDIT_EVERY writes one audit event
"ratelimit.exceeded" (actor "anonymous"; the budget, what was counted and, for an IP or a client, which one; never
a code or a secret), so a flood writes a bounded number of events.

The client IP is the TCP peer, or, when the peer is one of ACAR_TRUSTED_PROXIES, the nearest address in
X-Forwarded-For that is not a trusted proxy (RFC 7239 section 7.4: only what a trusted proxy appended is
believed). IPv6 clients are counted per /64, the block one subscriber usually holds (RFC 6177).
"""

from __future__ import annotations

import ipaddress
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

from starlette.requests import HTTPConnection

from api.errors import RateLimited
from api.metrics.instruments import rate_limited
from idp.sql.enrollment import code_lookup, normalize_code
from storage.audit import AuditSink
from storage.ratelimit import Budget, LimiterUnavailable, RateLimiter

log = logging.getLogger("acar.ratelimit")
Network = ipaddress.IPv4Network | ipaddress.IPv6Network
Scope = Literal["ip", "client", "code"]
Answer = Literal["oauth", "page", "json"]
AUDIT_EVERY = Budget.parse("audit", "1/10minutes")
"""At most one "ratelimit.exceeded" event per budget and key in this window."""
UNAVAILABLE_RETRY_SECONDS = 5


@dataclass(frozen=True, slots=True)
class Budgets:
    """The budgets of api/, one per ACAR_RATE_LIMIT_* setting."""

    authorize: Budget
    passkey_options: Budget
    passkey_login: Budget
    enrollment: Budget
    enrollment_code: Budget
    client_auth_failures: Budget
    introspection: Budget
    admin: Budget
    validation_anonymous: Budget
    """ACAR_VALIDATION_ANONYMOUS_RATE_LIMIT: validations by anyone without an agency's token."""
    card_challenge: Budget
    card_login: Budget


def parse_networks(cidrs: Sequence[str]) -> tuple[Network, ...]:
    return tuple(ipaddress.ip_network(c, strict=False) for c in cidrs)


def _address(text: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    value = text.strip()
    if value.startswith("[") and "]" in value:  # [v6]:port
        value = value[1:value.index("]")]
    elif value.count(":") == 1:  # v4:port
        value = value.split(":", 1)[0]
    try:
        return ipaddress.ip_address(value)
    except ValueError:
        return None


def _trusted(address: ipaddress.IPv4Address | ipaddress.IPv6Address, proxies: Sequence[Network]) -> bool:
    return any(address.version == net.version and address in net for net in proxies)


def client_address(peer: str | None, forwarded_for: Sequence[str], proxies: Sequence[Network]) -> str:
    """The client's address as counted: the peer, or behind trusted proxies the nearest untrusted hop of
    X-Forwarded-For (read right to left); IPv6 as its /64."""
    address = _address(peer) if peer else None
    if address is not None and proxies and _trusted(address, proxies):
        hops = [hop for header in forwarded_for for hop in header.split(",")]
        for hop in reversed(hops):
            found = _address(hop)
            if found is None:
                break  # a hop that is not an address: believe nothing further left
            address = found
            if not _trusted(found, proxies):
                break
    if address is None:
        return peer or "unknown"
    if isinstance(address, ipaddress.IPv6Address):
        if address.ipv4_mapped is not None:
            return str(address.ipv4_mapped)
        return str(ipaddress.IPv6Network((address, 64), strict=False))
    return str(address)


class RateLimits:
    """The budgets of every endpoint on one limiter (api.deps builds it from the settings)."""

    def __init__(self, limiter: RateLimiter, budgets: Budgets, *, trusted_proxies: Sequence[Network],
                 audit: AuditSink) -> None:
        self.limiter = limiter
        self.budgets = budgets
        self.trusted_proxies = tuple(trusted_proxies)
        self._audit = audit

    async def spend_on_code(self, connection: HTTPConnection, code: str, *, answer: Answer) -> None:
        """An activation code's try (the enrollment API and the /enroll form), spent before the service looks the
        code up or runs its scrypt: per client IP, and per typed code (code_key)."""
        await self.spend(self.budgets.enrollment, [("ip", self.client_ip(connection))], answer=answer)
        await self.spend(self.budgets.enrollment_code, [("code", code_key(code))], answer=answer)

    def from_trusted_proxy(self, connection: HTTPConnection) -> bool:
        """Whether the TCP peer is one of ACAR_TRUSTED_PROXIES (what a header of the request is believed by: the
        client IP's X-Forwarded-For here, a forwarded client certificate in api.routes.idcard)."""
        address = _address(connection.client.host) if connection.client else None
        return address is not None and _trusted(address, self.trusted_proxies)

    def client_ip(self, connection: HTTPConnection) -> str:
        peer = connection.client.host if connection.client else None
        return client_address(peer, connection.headers.getlist("x-forwarded-for"), self.trusted_proxies)

    async def spend(self, budget: Budget, keys: Sequence[tuple[Scope, str]], *, answer: Answer) -> None:
        """Spend one of `budget` for each key; RateLimited as soon as one has none left."""
        for scope, value in keys:
            try:
                verdict = await self.limiter.hit(budget, f"{scope}:{value}")
            except LimiterUnavailable as exc:
                raise self._unavailable(exc, answer) from None
            if not verdict.allowed:
                rate_limited(budget.name)
                await self._tripped(budget, scope, value, verdict.retry_after)
                raise RateLimited(verdict.retry_after, answer=answer)

    async def check_failures(self, budget: Budget, keys: Sequence[tuple[Scope, str]], *, answer: Answer) -> None:
        """RateLimited when `count_failure` has blocked one of the keys; spends nothing, and costs a dictionary
        look-up per key in memory, one Redis round trip on Redis (before work whose failures alone count)."""
        try:
            retry_after, index = await self.limiter.blocked(budget, [f"{scope}:{value}" for scope, value in keys])
        except LimiterUnavailable as exc:
            raise self._unavailable(exc, answer) from None
        if index is not None:
            scope, value = keys[index]
            rate_limited(budget.name)
            await self._tripped(budget, scope, value, retry_after)
            raise RateLimited(retry_after, answer=answer)

    async def count_failure(self, budget: Budget, keys: Sequence[tuple[Scope, str]]) -> None:
        """Count a failure (being answered already) against `budget` for each key; a key whose budget is spent
        is blocked, and the next `check_failures` refuses it."""
        for scope, value in keys:
            try:
                verdict = await self.limiter.count(budget, f"{scope}:{value}")
            except LimiterUnavailable:
                log.exception("ratelimit.unavailable")
                return
            if not verdict.allowed:
                await self._tripped(budget, scope, value, verdict.retry_after)

    def _unavailable(self, exc: LimiterUnavailable, answer: Answer) -> RateLimited:
        log.error("ratelimit.unavailable", extra={"error": str(exc)})
        return RateLimited(UNAVAILABLE_RETRY_SECONDS, answer=answer, unavailable=True)

    async def _tripped(self, budget: Budget, scope: Scope, value: str, retry_after: int) -> None:
        """One audit event per budget and key per AUDIT_EVERY: the budget, what was counted, and for an IP or a
        client which one (a code's public part is never written)."""
        try:
            first = await self.limiter.hit(AUDIT_EVERY, f"{budget.name}:{scope}:{value}")
        except LimiterUnavailable:
            return
        if not first.allowed:
            return
        detail: dict[str, object] = {"budget": budget.name, "scope": scope, "retry_after": retry_after}
        subject = value[:200] if scope != "code" else None
        log.warning("ratelimit.exceeded", extra={"budget": budget.name, "scope": scope})
        try:
            await self._audit.record("ratelimit.exceeded", actor="anonymous", subject=subject, detail=detail)
        except Exception:  # the refusal stands even when its audit event cannot be written
            log.exception("ratelimit.audit_failed")


def code_key(code: str) -> str:
    """The key of the per-code budget: the typed code's lookup hash (idp.sql.enrollment.code_lookup, SHA-256, no
    scrypt), as the service reads it; a code has no public part, so this limits retries of one code, and the
    per-IP budget bounds guessing. Never logged or audited."""
    return code_lookup(normalize_code(code))

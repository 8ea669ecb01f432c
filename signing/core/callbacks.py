"""Completion callbacks of signing requests (issue 13, "On completion, a callback whose body is signed").

When a request that named a `callback_url` reaches a final state (completed, failed, rejected, expired), the store
that changes its state records a callback in the same transaction (signing.sql.callbacks.record_callback): the
event's claims, the URL, the client. `CallbackDelivery` (run by `acar worker` and the in-process worker of `acar
serve`) sends it. Every security decision in one place:

- The body is a JWT (RFC 7519) in compact JWS form (RFC 7515), signed by the current token key of Açar's
  TokenKeyService through keys.jose.JwsSigner (so through KeyHandle.sign: an HSM key works), published in
  /jwks.json: the agency verifies it with the same JWKS as Açar's ID tokens. Explicit type `typ:
  signing-callback+jwt` (RFC 8725 section 3.11), so it cannot be taken for an ID or access token, nor one of those
  for it. Claims: iss (the issuer), aud (the agency's client id), iat, exp (the end of the delivery window), jti
  (the callback's id: the agency drops a second delivery of the same jti), and the event: request_id, state,
  documents [{n, sha256 of the signed PDF}] (completed requests; empty otherwise), failure {code, detail} (failed
  requests; null otherwise).
- Sent as `POST <callback_url>` with `Content-Type: application/jwt` (RFC 7519 section 10.3.1), the JWS as the
  whole body. The JWS is signed at the first attempt and stored; every attempt sends exactly those bytes. One
  exception: when the token key that signed it is no longer the current key (a rotation meanwhile), the same claims
  are signed again with the current key and stored before the attempt, because a retired key leaves the JWKS after
  ACAR_TOKEN_MAX_LIFETIME_SECONDS, sooner than a callback may still be retried.
- Delivered on any 2xx answer. Anything else (another status, a timeout, a refused connection, a refused address) is
  retried with exponential backoff and jitter (`retry_delay`) until the delivery window (`max_age`, setting
  ACAR_SIGNING_CALLBACK_MAX_AGE_HOURS) closes: then the callback is expired. Audit events signing.callback.delivered
  and signing.callback.expired. Delivery is at least once: a worker killed after sending and before recording sends
  again once its lease runs out (hence jti).
- Redirects are never followed (the body goes to the URL the agency gave and nowhere else); the answer's body is
  never read beyond MAX_RESPONSE_BYTES (only for the error text); each attempt has a short timeout (`timeout` for
  connect, write and read, ATTEMPT_FACTOR times that in all); no proxy from the environment is used.
- SSRF (server-side request forgery): a callback URL is the agency's choice of where Açar's network sends a request.
  With `refuse_private` (production), the host's addresses are resolved once per attempt and every one must be a
  public address (`ipaddress` is_global, not multicast), or lie in `allowed_networks` (setting
  ACAR_SIGNING_CALLBACK_ALLOWED_NETWORKS: an agency's internal network, named by the operator); the request is then
  sent to that checked address (TLS still verifies the certificate for the URL's host name, through SNI), so a DNS
  answer that changes between the check and the connection (DNS rebinding) cannot point it at the loopback, the
  cloud metadata address or the internal network. In development everything is reachable (agencies' test receivers
  run on loopback). https is required in production (`require_https`), as at creation
  (signing.core.requests.parse_callback).
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import ipaddress
import json
import logging
import math
import random
import secrets
import socket
from collections.abc import Awaitable, Callable, Mapping, Sequence
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass, field
from typing import Any, Final, Literal, Protocol

import httpx

from keys.jose import JwsSigner, b64url_decode

log = logging.getLogger("acar.signing.callbacks")

TYP: Final = "signing-callback+jwt"
"""The JWS header's typ (RFC 8725 section 3.11: explicit typing)."""
CONTENT_TYPE: Final = "application/jwt"
"""RFC 7519 section 10.3.1."""
AUDIT_ACTOR: Final = "signing-callbacks"
MAX_RESPONSE_BYTES: Final = 1024
"""Bytes of an answer's body read at most (for the error text of a refusal); the rest is never read."""
ATTEMPT_FACTOR: Final = 3
"""One attempt may take this many times the timeout in all (connect, write and read each have the timeout), so a
receiver that drips its answer is cut off."""
FIRST_RETRY: Final = 5.0
"""Seconds before the first retry; each further retry waits twice as long ..."""
MAX_RETRY: Final = 3600.0
"""... up to one hour; each delay is then cut by a random part of up to a half (jitter), so the callbacks of many
requests that failed together are not retried together."""

IpNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
IpAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
Result = Literal["delivered", "retrying", "expired"]


def retry_delay(attempts: int, *, first: float = FIRST_RETRY, cap: float = MAX_RETRY) -> dt.timedelta:
    """How long to wait after the `attempts`-th failed attempt: first * 2**(attempts-1), capped, with "equal
    jitter" (between half of it and all of it)."""
    exponent = min(max(attempts, 1) - 1, 30)
    delay = min(first * 2**exponent, cap)
    jitter = random.uniform(0.5, 1.0)  # noqa: S311 - spreading retries in time, not a secret
    return dt.timedelta(seconds=delay * jitter)


@dataclass(frozen=True, slots=True)
class CallbackPolicy:
    """How callbacks are sent (settings ACAR_SIGNING_CALLBACK_*; see module docstring)."""

    issuer: str
    max_age: dt.timedelta
    """The delivery window: from the request's final state; then the callback is expired."""
    timeout: float
    """Seconds for each of connect, write and read of one attempt."""
    refuse_private: bool
    """Refuse addresses that are not public (production), unless in `allowed_networks`."""
    require_https: bool
    allowed_networks: tuple[IpNetwork, ...] = ()
    first_retry: float = FIRST_RETRY
    max_retry: float = MAX_RETRY

    def __post_init__(self) -> None:
        if self.max_age <= dt.timedelta(0) or self.timeout <= 0 or self.first_retry <= 0 or self.max_retry <= 0:
            raise ValueError("the callback policy's durations must be positive")


@dataclass(frozen=True, slots=True)
class ClaimedCallback:
    """A callback this worker claimed: its own as long as `leased_by` still names its claim."""

    id: str
    request_id: str
    client_id: str
    url: str
    claims: Mapping[str, Any]
    body: str | None
    attempts: int
    """Attempts before this one."""
    created_at: dt.datetime
    leased_by: str


@dataclass(frozen=True, slots=True)
class Outcome:
    result: Result
    attempts: int
    status: int | None = None
    error: str | None = None
    next_attempt_at: dt.datetime | None = None


class CallbackStore(Protocol):
    """The callbacks of one unit of work (signing.sql.callbacks.SqlCallbackStore)."""

    async def claim(self, *, now: dt.datetime, lease_until: dt.datetime, leased_by: str,
                    limit: int) -> list[ClaimedCallback]:
        """Take up to `limit` pending callbacks due at `now` by moving them to `lease_until` under this claim."""
    async def save_body(self, callback: ClaimedCallback, body: str, *, now: dt.datetime) -> bool:
        """Keep the signed body, if the claim still holds the callback."""
    async def record(self, callback: ClaimedCallback, outcome: Outcome, *, now: dt.datetime) -> bool:
        """Write an attempt's outcome and, when delivered or expired, its audit event; False when the claim was lost
        (nothing written)."""


class CallbackUnits(Protocol):
    def writing(self) -> AbstractAsyncContextManager[CallbackStore]: ...


SignerSource = Callable[[], Awaitable[JwsSigner]]
"""The current token key's signer (keys.token_keys.TokenKeyService.signer for the first configured algorithm)."""
Resolver = Callable[[str, int], Awaitable[Sequence[str]]]
"""host, port -> the addresses it resolves to (`resolve`)."""


class _Refused(Exception):
    def __init__(self, error: str, status: int | None = None) -> None:
        super().__init__(error)
        self.error = error
        self.status = status


async def resolve(host: str, port: int) -> list[str]:
    """The host's addresses (A and AAAA, through the system resolver in a thread of the event loop's executor)."""
    infos = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return list(dict.fromkeys(str(info[4][0]) for info in infos))


def refused_address(address: IpAddress, allowed: Sequence[IpNetwork]) -> bool:
    """Whether a callback must not be sent to `address` under `refuse_private`: not globally reachable (RFC 6890
    special-purpose registries, as `ipaddress` reads them: loopback, private, link-local with the cloud metadata
    address 169.254.169.254, shared, reserved, documentation) or multicast; an IPv4-mapped IPv6 address counts as
    its IPv4 address. Allowed when inside one of `allowed`."""
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    if any(address in network for network in allowed):
        return False
    return not address.is_global or address.is_multicast


class CallbackDelivery:
    """Sends due callbacks (see module docstring); one per process, run in the background by `run`."""

    def __init__(self, units: CallbackUnits, signer: SignerSource, policy: CallbackPolicy, *,
                 http: httpx.AsyncClient | None = None, resolver: Resolver = resolve,
                 clock: Callable[[], dt.datetime], batch: int = 20, max_concurrency: int = 8,
                 name: str = "callbacks") -> None:
        if batch < 1 or max_concurrency < 1:
            raise ValueError("batch and max_concurrency must be at least 1")
        self._units = units
        self._signer = signer
        self.policy = policy
        self._owns_http = http is None
        self._http = http  # an own client is made at the first delivery: making one loads the CA bundle (~60 ms)
        self._resolve = resolver
        self._clock = clock
        self._batch = batch
        self._max_concurrency = max_concurrency
        self.name = name
        # long enough for the whole batch, attempts waiting for a slot included: another worker never takes a
        # callback over while this one may still send it
        rounds = math.ceil(batch / max_concurrency)
        self._lease = dt.timedelta(seconds=policy.timeout * ATTEMPT_FACTOR * rounds + 60)
        self._wake = asyncio.Event()
        self._stopping = False

    async def aclose(self) -> None:
        if self._owns_http and self._http is not None:
            await self._http.aclose()

    def _client(self) -> httpx.AsyncClient:
        if self._http is None:
            self._http = httpx.AsyncClient(timeout=self.policy.timeout, follow_redirects=False, trust_env=False)
        return self._http

    def kick(self) -> None:
        """Deliver now (a request just finished) instead of at the next tick."""
        self._wake.set()

    def stop(self) -> None:
        """End `run` after the batch in hand (a graceful shutdown, as signing.core.jobs.SigningWorker.stop: a task
        cancelled inside a unit of work could leave SQLite's write lock held)."""
        self._stopping = True
        self._wake.set()

    def resume(self) -> None:
        """Let `run` work again after `stop`. Called before its task is created, never inside `run`: a `stop` that
        comes before the new task's first step (a shutdown right after a start) must still end it."""
        self._stopping = False

    async def run(self, interval: float) -> None:
        """Deliver what is due every `interval` seconds, or at once when kicked; until cancelled. A database outage
        is logged and tried again at the next tick, never ends the loop; `stop` ends it between batches."""
        while not self._stopping:
            self._wake.clear()
            full = False
            try:
                counts = await self.deliver_due()
                full = sum(counts.values()) >= self._batch
            except Exception:
                log.exception("signing.callbacks_failed")
            if full or self._stopping:
                continue
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(interval):
                    await self._wake.wait()

    async def deliver_due(self) -> dict[str, int]:
        """Send the due callbacks (up to one batch): counts of delivered, retrying and expired ones. A failing
        receiver only changes its own callback; a database error propagates."""
        now = self._clock()
        claim_id = f"{self.name}:{secrets.token_hex(6)}"[:64]
        async with self._units.writing() as store:
            claimed = await store.claim(now=now, lease_until=now + self._lease, leased_by=claim_id,
                                        limit=self._batch)
        counts: dict[str, int] = {"delivered": 0, "retrying": 0, "expired": 0}
        if not claimed:
            return counts
        slots = asyncio.Semaphore(self._max_concurrency)

        async def one(callback: ClaimedCallback) -> None:
            async with slots:
                outcome = await self._attempt(callback)
            async with self._units.writing() as store:
                recorded = await store.record(callback, outcome, now=self._clock())
            if recorded:
                counts[outcome.result] += 1
                level = logging.WARNING if outcome.result == "expired" else logging.INFO
                log.log(level, "signing.callback_%s", outcome.result, extra={
                    "request": callback.request_id, "attempts": outcome.attempts, "status": outcome.status,
                    "error": outcome.error})
            else:
                log.warning("signing.callback_lease_lost", extra={"request": callback.request_id})

        try:
            async with asyncio.TaskGroup() as tasks:
                for callback in claimed:
                    tasks.create_task(one(callback))
        except ExceptionGroup as failed:  # only a database error gets here: raised as itself, not in a group
            raise failed.exceptions[0] from None
        return counts

    def _expires_at(self, callback: ClaimedCallback) -> dt.datetime:
        return callback.created_at + self.policy.max_age

    async def _attempt(self, callback: ClaimedCallback) -> Outcome:
        """One attempt; never raises for this callback (whatever fails is the attempt's error, retried)."""
        attempts = callback.attempts + 1
        if self._clock() >= self._expires_at(callback):
            return Outcome("expired", callback.attempts, error="the delivery window closed before an attempt")
        status: int | None = None
        try:
            body = await self._body(callback)
            async with asyncio.timeout(self.policy.timeout * ATTEMPT_FACTOR):
                status = await self._send(callback.url, body)
        except _Refused as refused:
            error, status = refused.error, refused.status
        except TimeoutError:
            error = f"no answer within {self.policy.timeout * ATTEMPT_FACTOR:g} s"
        except httpx.HTTPError as exc:  # timeouts, refused or reset connections, TLS and protocol errors
            error = _clean(f"{type(exc).__name__}: {exc}")
        except OSError as exc:  # the name does not resolve
            error = _clean(f"{type(exc).__name__}: {exc}")
        except Exception as exc:  # the signer, or keeping the body: this callback is retried, the batch goes on
            log.exception("signing.callback_attempt_failed", extra={"request": callback.request_id})
            error = _clean(f"attempt failed: {type(exc).__name__}")
        else:
            return Outcome("delivered", attempts, status=status)
        retry_at = self._clock() + retry_delay(attempts, first=self.policy.first_retry, cap=self.policy.max_retry)
        if retry_at >= self._expires_at(callback):
            return Outcome("expired", attempts, status=status, error=error)
        return Outcome("retrying", attempts, status=status, error=error, next_attempt_at=retry_at)

    async def _body(self, callback: ClaimedCallback) -> str:
        """The stored JWS; signed now (and stored) at the first attempt, or again with the same claims when its key
        is no longer the current one (module docstring)."""
        signer = await self._signer()
        if callback.body is not None and _kid(callback.body) == signer.kid:
            return callback.body
        if callback.body is not None:
            claims = json.loads(b64url_decode(callback.body.split(".")[1]))
        else:
            issued = self._clock()
            claims = {"iss": self.policy.issuer, "aud": callback.client_id, "iat": int(issued.timestamp()),
                      "exp": int(self._expires_at(callback).timestamp()), "jti": callback.id, **callback.claims}
        body = await signer.sign(claims, typ=TYP)
        async with self._units.writing() as store:
            if not await store.save_body(callback, body, now=self._clock()):
                raise _Refused("the claim was lost before sending")
        return body

    async def _send(self, url: str, body: str) -> int:
        """POST the body; the 2xx status, or _Refused with the status and a short error."""
        target = httpx.URL(url)
        scheme = target.scheme
        if scheme != "https" and (self.policy.require_https or scheme != "http"):
            raise _Refused(f"the callback URL must be https, not {scheme}")
        headers = {"Content-Type": CONTENT_TYPE, "Cache-Control": "no-store"}
        if not self.policy.refuse_private:
            return await self._post(target, body, headers, {})
        port = target.port or (443 if scheme == "https" else 80)
        addresses = await self._checked_addresses(target.host, port)
        headers["Host"] = target.netloc.decode("ascii")
        extensions = {"sni_hostname": target.host} if scheme == "https" else {}  # the certificate is verified
        for address in addresses[:-1]:                                         # for the URL's host name
            with contextlib.suppress(httpx.ConnectError):  # the next address of the host (IPv6 and IPv4)
                return await self._post(target.copy_with(host=str(address)), body, headers, extensions)
        return await self._post(target.copy_with(host=str(addresses[-1])), body, headers, extensions)

    async def _post(self, target: httpx.URL, body: str, headers: Mapping[str, str],
                    extensions: Mapping[str, Any]) -> int:
        async with self._client().stream("POST", target, content=body.encode("ascii"), headers=headers,
                                          extensions=dict(extensions), follow_redirects=False) as response:
            status = response.status_code
            if 200 <= status < 300:
                return status
            text = await _read_at_most(response, MAX_RESPONSE_BYTES)
        detail = _clean(text.decode("utf-8", "replace"), 200)
        raise _Refused(f"HTTP {status}" + (f": {detail}" if detail else ""), status)

    async def _checked_addresses(self, host: str, port: int) -> list[IpAddress]:
        """The addresses of `host`, when none of them is refused (module docstring, SSRF)."""
        try:
            addresses = [ipaddress.ip_address(host)]
        except ValueError:
            addresses = [ipaddress.ip_address(a.split("%", 1)[0]) for a in await self._resolve(host, port)]
        if not addresses:
            raise _Refused(f"{host} has no address")
        refused = [str(a) for a in addresses if refused_address(a, self.policy.allowed_networks)]
        if refused:
            raise _Refused(f"{host} resolves to {', '.join(refused[:3])}, not a public address (refused against "
                           "SSRF; ACAR_SIGNING_CALLBACK_ALLOWED_NETWORKS lists internal networks allowed)")
        return addresses


def _kid(body: str) -> str | None:
    try:
        header = json.loads(b64url_decode(body.split(".", 1)[0]))
    except ValueError:
        return None
    kid = header.get("kid") if isinstance(header, dict) else None
    return kid if isinstance(kid, str) else None


async def _read_at_most(response: httpx.Response, limit: int) -> bytes:
    body = b""
    async for chunk in response.aiter_bytes():
        body += chunk
        if len(body) >= limit:
            break
    return body[:limit]


def _clean(text: str, limit: int = 300) -> str:
    """Text from the network made safe to store and log: printable and short."""
    return "".join(ch if ch.isprintable() else "?" for ch in text)[:limit]


@dataclass(frozen=True, slots=True)
class CallbackEvent:
    """The event a callback reports, as the store records it with the final state (the JWT's own claims)."""

    request_id: str
    state: str
    documents: tuple[tuple[int, str], ...] = field(default=())
    """(n, SHA-256 of the signed PDF) of a completed request."""
    failure_code: str | None = None
    failure_detail: str | None = None

    def claims(self) -> dict[str, Any]:
        return {"request_id": self.request_id, "state": self.state,
                "documents": [{"n": n, "sha256": sha256} for n, sha256 in self.documents],
                "failure": {"code": self.failure_code, "detail": self.failure_detail}
                if self.failure_code is not None else None}

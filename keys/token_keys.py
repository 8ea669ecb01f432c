"""Token-signing keys and their lifecycle: next -> current -> retired -> removed.

- The *next* key is published in the JWKS before it signs anything, so relying parties that cache the JWKS
  already know it when it becomes current.
- The *current* key signs new tokens (one per algorithm: ES256 by default, RS256 for clients that need it,
  optionally EdDSA).
- A *retired* key stays published until every token it signed has expired (`remove_after`), then it is
  *removed*: unpublished and its key material destroyed.

The key set lives in the database, so every node of a deployment serves the same JWKS and verifies the
others' tokens; each node keeps a snapshot for `cache_seconds` and reloads early when it meets an unknown kid.
Rotation is a compare-and-set on the current key's state, so two nodes rotating at once rotate once.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from cryptography.hazmat.primitives.asymmetric.types import PublicKeyTypes
from cryptography.hazmat.primitives.serialization import load_der_public_key
from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from keys.errors import InvalidToken, KeyNotFound, RotationTooEarly, UnsupportedAlgorithm
from keys.interfaces import KeyStore
from keys.jose import (
    ALG_KEY_TYPES,
    CLOCK_SKEW_LEEWAY_SECONDS,
    DEFAULT_KEY_TYPE,
    JwsAlg,
    JwsSigner,
    JwsVerifier,
    VerifiedClaims,
    public_jwk,
)
from keys.models import StoredKey, TokenKey
from storage.audit import record_event
from storage.base import utcnow

PUBLISHED_STATES = ("next", "current", "retired")
JWKS_MAX_AGE_SECONDS = 300
"""How long relying parties may cache /jwks.json (its Cache-Control max-age). A next key must have been
published at least this long (plus the nodes' own cache time) before it signs, unless rotation is forced."""
_UNKNOWN_KID_REFRESH_SECONDS = 1.0


@dataclass(frozen=True, slots=True)
class KeySetSnapshot:
    """The published key set as one node last read it from the database."""

    loaded_at: float
    jwks: Mapping[str, Any]
    public_keys: Mapping[str, tuple[PublicKeyTypes, str]]
    signers: Mapping[str, JwsSigner]

    def resolve(self, kid: str) -> tuple[PublicKeyTypes, str] | None:
        return self.public_keys.get(kid)


class TokenKeyService:
    """Creates, rotates, publishes and uses the token-signing keys (see module docstring)."""

    def __init__(
        self,
        session_factory: async_sessionmaker[AsyncSession],
        store: KeyStore,
        *,
        algorithms: Sequence[str],
        rotation_interval: dt.timedelta,
        max_token_lifetime: dt.timedelta,
        cache_seconds: float,
        clock: Callable[[], dt.datetime] = utcnow,
    ) -> None:
        for alg in algorithms:
            if alg not in ALG_KEY_TYPES:
                raise UnsupportedAlgorithm(f"unknown token algorithm {alg}")
        if not algorithms:
            raise UnsupportedAlgorithm("at least one token algorithm is needed")
        self._sessions = session_factory
        self._store = store
        self.algorithms: tuple[JwsAlg, ...] = tuple(algorithms)  # type: ignore[arg-type]
        self.rotation_interval = rotation_interval
        self.max_token_lifetime = max_token_lifetime
        self._cache_seconds = cache_seconds
        self.min_next_age = dt.timedelta(seconds=JWKS_MAX_AGE_SECONDS + cache_seconds)
        self._clock = clock
        self._snapshot: KeySetSnapshot | None = None
        self._lock = asyncio.Lock()
        self._last_forced = 0.0

    # --- lifecycle ---------------------------------------------------------------------------------------

    async def _new_key(self, session: AsyncSession, alg: str, state: str, now: dt.datetime) -> TokenKey:
        handle = await self._store.generate(session, DEFAULT_KEY_TYPE[alg], purpose="token", label=f"token-{alg}")
        row = TokenKey(kid=handle.key_id, alg=alg, state=state, created_at=now,
                       activated_at=now if state == "current" else None)
        session.add(row)
        await session.flush()
        return row

    async def _by_state(self, session: AsyncSession, alg: str, state: str) -> TokenKey | None:
        result = await session.execute(
            select(TokenKey).where(TokenKey.alg == alg, TokenKey.state == state).order_by(TokenKey.created_at)
        )
        return result.scalars().first()

    async def ensure_keys(self, session: AsyncSession, *, actor: str = "system") -> list[str]:
        """Create a current and a next key for each configured algorithm that lacks them."""
        now = self._clock()
        created: list[str] = []
        for alg in self.algorithms:
            for state in ("current", "next"):
                if await self._by_state(session, alg, state) is None:
                    row = await self._new_key(session, alg, state, now)
                    created.append(row.kid)
                    record_event(session, "token_key.created", actor=actor, subject=row.kid,
                                 detail={"alg": alg, "state": state})
        return created

    async def rotate(self, session: AsyncSession, *, algorithms: Iterable[str] | None = None,
                     actor: str = "system", expected: Mapping[str, str | None] | None = None,
                     force: bool = False) -> list[dict[str, str | None]]:
        """Rotate: current -> retired, next -> current, a new next. Returns what changed per algorithm.

        With `expected` (algorithm -> the current kid that was found due), an algorithm rotates only while
        that kid is still current: a scheduler on another node that already rotated it wins, and this call
        leaves it alone, so concurrent schedules rotate once.

        A next key younger than JWKS_MAX_AGE_SECONDS (plus the node cache) is not promoted: an explicit call
        raises RotationTooEarly, the schedule waits. `force` rotates anyway (emergency, e.g. key compromise).
        """
        now = self._clock()
        remove_after = now + self.max_token_lifetime + dt.timedelta(seconds=CLOCK_SKEW_LEEWAY_SECONDS)
        changes: list[dict[str, str | None]] = []
        for alg in algorithms or self.algorithms:
            if alg not in self.algorithms:
                raise UnsupportedAlgorithm(f"{alg} is not a configured token algorithm")
            current = await self._by_state(session, alg, "current")
            if expected is not None and (current.kid if current else None) != expected.get(alg):
                continue  # another node rotated it since it was found due
            nxt = await self._by_state(session, alg, "next")
            if nxt is not None and not force and nxt.created_at > now - self.min_next_age:
                if expected is not None:
                    continue  # the schedule tries again later
                age = int((now - nxt.created_at).total_seconds())
                raise RotationTooEarly(
                    f"the next {alg} key was published {age} s ago; relying parties cache the JWKS for up to "
                    f"{int(self.min_next_age.total_seconds())} s: wait, or force the rotation (key compromise)")
            retired_kid: str | None = None
            if current is not None:
                won = await session.execute(
                    update(TokenKey)
                    .where(TokenKey.kid == current.kid, TokenKey.state == "current")
                    .values(state="retired", retired_at=now, remove_after=remove_after)
                    .execution_options(synchronize_session=False)
                )
                if won.rowcount != 1:  # type: ignore[attr-defined]
                    continue  # another node rotated this algorithm at the same moment
                retired_kid = current.kid
            if nxt is not None:
                await session.execute(
                    update(TokenKey).where(TokenKey.kid == nxt.kid, TokenKey.state == "next")
                    .values(state="current", activated_at=now).execution_options(synchronize_session=False)
                )
                current_kid = nxt.kid
            else:
                current_kid = (await self._new_key(session, alg, "current", now)).kid
            new_next = await self._new_key(session, alg, "next", now)
            change = {"alg": alg, "retired": retired_kid, "current": current_kid, "next": new_next.kid}
            changes.append(change)
            record_event(session, "token_key.rotated", actor=actor, subject=current_kid, detail=dict(change))
        session.expire_all()
        self._snapshot = None
        return changes

    async def rotation_due(self, session: AsyncSession) -> dict[str, str | None]:
        """Algorithm -> current kid (None when there is none) for every algorithm due for rotation."""
        now = self._clock()
        due: dict[str, str | None] = {}
        for alg in self.algorithms:
            current = await self._by_state(session, alg, "current")
            if current is None or current.activated_at is None or current.activated_at + self.rotation_interval <= now:
                due[alg] = current.kid if current else None
        return due

    async def remove_expired(self, session: AsyncSession, *, actor: str = "system") -> list[str]:
        """Unpublish retired keys whose tokens have all expired and destroy their key material."""
        now = self._clock()
        rows = (await session.execute(
            select(TokenKey).where(TokenKey.state == "retired", TokenKey.remove_after <= now)
        )).scalars().all()
        removed = []
        for row in rows:
            row.state = "removed"
            row.removed_at = now
            await self._store.destroy(session, row.kid)
            record_event(session, "token_key.removed", actor=actor, subject=row.kid, detail={"alg": row.alg})
            removed.append(row.kid)
        if removed:
            self._snapshot = None
        return removed

    async def housekeeping(self, *, actor: str = "scheduler") -> dict[str, list[str]]:
        """The automatic schedule: rotate what is due, remove what has expired (one transaction)."""
        async with self._sessions() as session, session.begin():
            due = await self.rotation_due(session)
            rotated = await self.rotate(session, algorithms=list(due), actor=actor, expected=due) if due else []
            removed = await self.remove_expired(session, actor=actor)
        return {"rotated": [str(c["current"]) for c in rotated], "removed": removed}

    # --- the published set -------------------------------------------------------------------------------

    async def refresh(self, *, if_older_than: float | None = None) -> KeySetSnapshot:
        """Reload the published key set from the database (and load the current keys' handles).

        With `if_older_than`, a snapshot loaded by another task while this one waited for the lock is used
        as it is: requests that all find the cache stale at once cause one reload, not one each.
        """
        async with self._lock:
            snap = self._snapshot
            if if_older_than is not None and snap is not None and snap.loaded_at > if_older_than:
                return snap
            now = self._clock()
            async with self._sessions() as session:
                rows = (await session.execute(
                    select(TokenKey, StoredKey.public_key_der)
                    .join(StoredKey, StoredKey.id == TokenKey.kid)
                    .where(TokenKey.state.in_(PUBLISHED_STATES))
                    .order_by(TokenKey.alg, TokenKey.created_at)
                )).all()
                keys: list[dict[str, str]] = []
                public_keys: dict[str, tuple[PublicKeyTypes, str]] = {}
                signers: dict[str, JwsSigner] = {}
                for row, public_der in rows:
                    if row.state == "retired" and row.remove_after is not None and row.remove_after <= now:
                        continue
                    public = load_der_public_key(public_der)
                    public_keys[row.kid] = (public, row.alg)
                    keys.append(public_jwk(public, kid=row.kid, alg=row.alg))
                    if row.state == "current" and row.alg in self.algorithms:
                        handle = await self._store.load(session, row.kid)
                        signers[row.alg] = JwsSigner(handle, row.alg)
            snapshot = KeySetSnapshot(time.monotonic(), {"keys": keys}, public_keys, signers)
            self._snapshot = snapshot
            return snapshot

    async def snapshot(self) -> KeySetSnapshot:
        snap = self._snapshot
        started = time.monotonic()
        if snap is None or started - snap.loaded_at >= self._cache_seconds:
            snap = await self.refresh(if_older_than=started - self._cache_seconds if self._cache_seconds else None)
        return snap

    async def jwks(self) -> Mapping[str, Any]:
        """The JWK Set document (RFC 7517 section 5) of every published key."""
        return (await self.snapshot()).jwks

    async def signer(self, alg: str = "ES256") -> JwsSigner:
        """The signer of the current key for `alg`."""
        signer = (await self.snapshot()).signers.get(alg)
        if signer is None:
            raise KeyNotFound(f"no current {alg} token key (run `acar init` or `acar keys rotate`)")
        return signer

    async def verify(self, token: str, *, issuer: str, audience: str | None, typ: str | None,
                     algorithms: Iterable[str], leeway: int = CLOCK_SKEW_LEEWAY_SECONDS) -> VerifiedClaims:
        """Verify a token signed by one of our published keys, reloading the set once for an unknown kid.

        The policy is always the caller's (STYLE habit 9): issuer, audience, typ and algorithms have no
        defaults; `typ=None` must be said explicitly to accept any typ.
        """
        snap = await self.snapshot()
        algs = tuple(algorithms)
        try:
            return JwsVerifier(snap.resolve, algorithms=algs, issuer=issuer, audience=audience, typ=typ,
                               leeway=leeway).verify(token)
        except InvalidToken as exc:
            if str(exc) != "unknown signing key" or time.monotonic() - self._last_forced < _UNKNOWN_KID_REFRESH_SECONDS:
                raise
        self._last_forced = time.monotonic()
        snap = await self.refresh()
        return JwsVerifier(snap.resolve, algorithms=algs, issuer=issuer, audience=audience, typ=typ,
                           leeway=leeway).verify(token)

    async def loaded(self) -> list[str]:
        """Algorithms whose current key is loaded and able to sign (for readiness)."""
        snap = await self.snapshot()
        return [alg for alg in self.algorithms if alg in snap.signers]

"""Login sessions for single sign-on: one login serves every client until it expires or the user logs out.

The browser holds a random 256-bit value in a Secure, HttpOnly, SameSite=Lax cookie; the database keeps its
SHA-256 only. The public `sid` (OIDC Back-Channel Logout 1.0 section 2.1) is a separate random value.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import secrets
from collections.abc import Callable, Sequence

from idp.core.authorize import token_hash
from idp.core.interfaces import LoginState, OidcStore
from idp.core.loa import LoginMethod

_MAX_COOKIE = 100


class SessionService:
    def __init__(self, *, lifetime: int, clock: Callable[[], dt.datetime]) -> None:
        self._lifetime = dt.timedelta(seconds=lifetime)
        self._clock = clock

    async def current(self, store: OidcStore, cookie: str | None) -> LoginState | None:
        """The live session the cookie names, or None (unknown, ended or expired)."""
        if not cookie or len(cookie) > _MAX_COOKIE:
            return None
        state = await store.get_session(token_hash(cookie))
        if state is None or state.ended_at is not None or state.expires_at <= self._clock():
            return None
        return state

    async def login(self, store: OidcStore, *, person_id: str, method: LoginMethod,
                    current: LoginState | None) -> tuple[str | None, LoginState]:
        """Record a successful login. The same person logging in again (step-up, prompt=login, max_age)
        refreshes auth_time, level and amr of the session they have; anyone else gets a new session, and the
        returned cookie value (None when the cookie stays) must be set."""
        now = self._clock().replace(microsecond=0)
        if current is not None and current.person_id == person_id:
            await store.update_login(current.id, auth_time=now, level=method.level, amr=method.amr)
            await store.audit("session.reauthenticated", actor=person_id, subject=current.sid,
                        detail={"method": method.name, "level": method.level})
            return None, LoginState(id=current.id, sid=current.sid, person_id=person_id, auth_time=now,
                                    expires_at=current.expires_at, level=method.level, amr=method.amr)
        cookie = secrets.token_urlsafe(32)
        state = LoginState(id=token_hash(cookie), sid=secrets.token_urlsafe(16), person_id=person_id, auth_time=now,
                           expires_at=now + self._lifetime, level=method.level, amr=method.amr)
        await store.create_session(state)
        await store.audit("session.started", actor=person_id, subject=state.sid,
                    detail={"method": method.name, "level": method.level})
        return cookie, state


def csrf_for_session(cookie: str, purpose: str) -> str:
    """A CSRF token bound to the session cookie (which an attacker's page cannot read) and to a purpose."""
    return hmac.new(cookie.encode(), purpose.encode(), hashlib.sha256).hexdigest()[:43]


def csrf_matches(cookie: str | None, purpose: str, sent: Sequence[str]) -> bool:
    """Whether a form posted exactly one CSRF token and it is the one `csrf_for_session` binds to this session
    cookie and purpose (compared in constant time)."""
    if not cookie or len(sent) != 1:
        return False
    return hmac.compare_digest(sent[0].encode(), csrf_for_session(cookie, purpose).encode())

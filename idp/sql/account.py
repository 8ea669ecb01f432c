"""What the citizen's account page reads about one person (issue 16): their live login sessions and their access
record (idp.sql.models.AccessRecord). Every statement is bound to the person: a session or record of anyone else
is never found, so a citizen who names another's id gets nothing (the pages answer 404)."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Any

from sqlalchemy import bindparam, func, select

from idp.core.interfaces import LEVELS, Level, LoginState
from idp.sql.models import AccessRecord, LoginSession, OAuthClient
from storage.direct import Transaction, table

_sessions, _access, _clients = table(LoginSession), table(AccessRecord), table(OAuthClient)

LIVE_SESSIONS = select(_sessions.c.id, _sessions.c.sid, _sessions.c.created_at, _sessions.c.auth_time,
                       _sessions.c.expires_at, _sessions.c.level, _sessions.c.amr) \
    .where(_sessions.c.person_id == bindparam("person_id"), _sessions.c.ended_at.is_(None),
           _sessions.c.expires_at > bindparam("now", type_=_sessions.c.expires_at.type)) \
    .order_by(_sessions.c.auth_time.desc(), _sessions.c.sid)
PERSON_SESSION = select(_sessions.c.id, _sessions.c.sid, _sessions.c.person_id, _sessions.c.auth_time,
                        _sessions.c.expires_at, _sessions.c.level, _sessions.c.amr, _sessions.c.ended_at) \
    .where(_sessions.c.person_id == bindparam("person_id"), _sessions.c.sid == bindparam("sid"))
_ACCESS_COLUMNS = (_access.c.id, _access.c.client_id, _clients.c.name, _access.c.kind, _access.c.claims,
                   _access.c.scopes, _access.c.purpose, _access.c.occurred_at)
ACCESS_PAGE = select(*_ACCESS_COLUMNS) \
    .outerjoin(_clients, _clients.c.client_id == _access.c.client_id) \
    .where(_access.c.person_id == bindparam("person_id")) \
    .order_by(_access.c.occurred_at.desc(), _access.c.id.desc()) \
    .limit(bindparam("limit")).offset(bindparam("offset"))
ACCESS_COUNT = select(func.count()).select_from(_access).where(_access.c.person_id == bindparam("person_id"))


@dataclass(frozen=True, slots=True)
class SessionView:
    """A live login session of the person, by its public id (`sid`, OIDC Back-Channel Logout); never the cookie's
    hash, which finds the session."""

    sid: str
    created_at: dt.datetime
    auth_time: dt.datetime
    expires_at: dt.datetime
    level: Level
    amr: tuple[str, ...]
    current: bool


@dataclass(frozen=True, slots=True)
class AccessView:
    """One release of data about the person to a client (idp.sql.models.AccessRecord)."""

    id: str
    client_id: str
    client_name: str
    kind: str
    claims: tuple[str, ...]
    scopes: tuple[str, ...]
    purpose: str | None
    occurred_at: dt.datetime

    def as_json(self) -> dict[str, Any]:
        return {"client_id": self.client_id, "client_name": self.client_name, "kind": self.kind,
                "claims": list(self.claims), "scopes": list(self.scopes), "purpose": self.purpose,
                "occurred_at": self.occurred_at.isoformat()}


class AccountRecords:
    """Reads of the account page, on the request's unit of work."""

    def __init__(self, tx: Transaction) -> None:
        self._tx = tx

    async def sessions(self, person_id: str, *, current_id: str | None, now: dt.datetime) -> list[SessionView]:
        """The person's live sessions (not ended, not expired): the current one first, then the latest sign-in
        first."""
        out = []
        for id_, sid, created_at, auth_time, expires_at, level, amr in await self._tx.all(
                LIVE_SESSIONS, person_id=person_id, now=now):
            out.append(SessionView(sid=sid or "", created_at=created_at, auth_time=auth_time, expires_at=expires_at,
                                   level=level if level in LEVELS else "low", amr=tuple(amr or ()),
                                   current=id_ == current_id))
        return sorted(out, key=lambda s: not s.current)  # stable: the others keep their order

    async def session(self, person_id: str, sid: str) -> LoginState | None:
        """The person's own session with public id `sid` (ended or not); None for anyone else's or an unknown one."""
        if not sid or len(sid) > 64:
            return None
        row = await self._tx.one(PERSON_SESSION, person_id=person_id, sid=sid)
        if row is None:
            return None
        id_, sid_, person, auth_time, expires_at, level, amr, ended_at = row
        return LoginState(id=id_, sid=sid_ or "", person_id=person, auth_time=auth_time, expires_at=expires_at,
                          level=level if level in LEVELS else "low", amr=tuple(amr or ()), ended_at=ended_at)

    async def access_records(self, person_id: str, *, limit: int, offset: int = 0) -> list[AccessView]:
        """The person's access record, the latest first."""
        return [AccessView(id=id_, client_id=client_id, client_name=name or client_id, kind=kind,
                           claims=tuple(claims or ()), scopes=tuple(scopes or ()), purpose=purpose,
                           occurred_at=occurred_at)
                for id_, client_id, name, kind, claims, scopes, purpose, occurred_at in await self._tx.all(
                    ACCESS_PAGE, person_id=person_id, limit=limit, offset=offset)]

    async def access_count(self, person_id: str) -> int:
        row = await self._tx.one(ACCESS_COUNT, person_id=person_id)
        return int(row[0]) if row is not None else 0

"""The request's unit of work: one transaction and the stores on it, for the OIDC, login and passkey routes.

One class, one commit rule (storage.direct.keeps_writes: committed on success and on an error marked `persist`,
rolled back on any other). Two ways to open it:
- `RequestUnit.on(database)`: on the units of work of storage.direct (asyncpg on PostgreSQL), for every endpoint
  that needs only the stores (authorize, token, userinfo, introspection, revocation, login, logout, consent);
  `reading=True` for an endpoint that only reads (the login page, userinfo, introspection).
- `RequestUnit.with_orm(database, sessions, policy)`: inside an ORM session, for the endpoints that also need the
  enrollment service (registration, enrollment, credential management); the stores run the same statements on
  the session's connection, and the transaction begins when the unit opens (it holds what the service does).
"""

from __future__ import annotations

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from api.logging import request_id_var
from idp.sql.enrollment import EnrollmentPolicy, EnrollmentService
from idp.sql.passkeys_store import SqlPasskeyStore
from idp.sql.store import SqlOidcStore
from storage.base import utcnow
from storage.direct import DirectDatabase, Transaction


class RequestUnit:
    """`async with` one request's unit of work (see module docstring); the exception, if any, goes on after it."""

    __slots__ = ("_enrollment", "oidc", "passkeys", "tx")

    def __init__(self, tx: Transaction, *, request_id: str | None,
                 enrollment: EnrollmentService | None = None) -> None:
        self.tx = tx
        self.oidc = SqlOidcStore(tx, request_id=request_id)
        self.passkeys = SqlPasskeyStore(tx, request_id=request_id)
        self._enrollment = enrollment

    @classmethod
    def on(cls, database: DirectDatabase, *, reading: bool = False) -> RequestUnit:
        return cls(database.reading() if reading else database.transaction(), request_id=request_id_var.get())

    @classmethod
    def with_orm(cls, database: DirectDatabase, sessions: async_sessionmaker[AsyncSession],
                 policy: EnrollmentPolicy) -> RequestUnit:
        rid = request_id_var.get()
        session = sessions()
        return cls(database.owning(session), request_id=rid,
                   enrollment=EnrollmentService(session, policy, clock=utcnow, request_id=rid))

    @property
    def enrollment(self) -> EnrollmentService:
        if self._enrollment is None:
            raise RuntimeError("this unit of work was opened without ORM services (RequestUnit.with_orm)")
        return self._enrollment

    async def __aenter__(self) -> RequestUnit:
        if self._enrollment is not None:
            await self.tx.begin()  # the enrollment service works on the unit's session: it begins with the unit
        return self

    async def __aexit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: object) -> None:
        await self.tx.__aexit__(kind, exc, tb)

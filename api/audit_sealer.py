"""The audit trail's sealing schedule: every ACAR_AUDIT_SEAL_SECONDS the events written since the last pass are
sealed into their hash chain and each chain that grew gets a signed checkpoint (storage.audit_chain.seal_all,
keys.audit_checkpoints: the chain head signed with the token key, its time in the signed `iat`).

The schedule is a task of its own beside housekeeping, shaped so that it never holds the database past the
application's life:
- the first pass comes one interval after the start, never at the start: a starting application (or a test's) does
  not take the chain heads' lock (SQLite's write lock) before serving anything;
- each pass is short transactions of storage.audit_chain.SEAL_BATCH events (seal_all), each read, hashed and
  marked SEAL_STEP events at a time, so a pass holds the serving loop for milliseconds, not for a whole batch;
- stopping waits for a pass in hand to finish (at most SEALER_STOP_GRACE_SECONDS), then cancels it: the cancelled
  unit of work rolls back (storage.direct.keeps_writes) and gives its connection back before `stop` returns, so no
  transaction of the sealer outlives the application;
- 0 turns the schedule off (`acar audit verify --seal` then seals); production refuses 0 (api.settings).
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import logging

from sqlalchemy.exc import SQLAlchemyError

from api import migrate
from api.deps import Services, build_audit_checkpoints
from storage.audit_chain import seal_all

log = logging.getLogger("acar.audit")
AUDIT_SEALER_TASK = "audit-sealer"
SEALER_STOP_GRACE_SECONDS = 10.0
"""How long a shutdown waits for a sealing pass in hand before cancelling it (its transaction then rolls back)."""


async def seal_audit_trail(services: Services) -> dict[str, dict[str, object]] | None:
    """One sealing pass: the audit events written since the last pass sealed, each chain that grew checkpointed
    (storage.audit_chain). Each checkpoint is also logged (`audit.checkpoint`), so a copy of the signed heads lives
    outside the database. None when the pass could not run (logged: `audit.seal_failed`, or the schema is behind
    the migrations head, as housekeeping waits)."""
    try:
        behind = await migrate.schema_behind(services.engine)
    except (OSError, SQLAlchemyError) as exc:
        behind = f"database unreachable ({type(exc).__name__})"
    if behind:
        log.warning("audit.seal_waiting", extra={"reason": behind})
        return None
    try:
        sealed = await seal_all(services.direct, build_audit_checkpoints(services.settings, services.token_keys))
    except Exception:
        log.exception("audit.seal_failed")
        return None
    for chain, step in sealed.items():
        log.info("audit.checkpoint", extra={"chain": chain, **step})
    return dict(sealed)


class AuditSealer:
    """The sealing schedule of one application (module docstring): `start`, then `stop` at shutdown. `passed` is
    set after every pass (tests wait for it)."""

    def __init__(self, services: Services, interval: float) -> None:
        self._services = services
        self._interval = interval
        self._stopping = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self.passed = asyncio.Event()

    @property
    def enabled(self) -> bool:
        return self._interval > 0

    def start(self) -> None:
        """Start the schedule (nothing when its interval is 0), in a context of its own: no request's unit of work
        is its outer unit."""
        if self.enabled and self._task is None:
            self._task = asyncio.create_task(self._run(), name=AUDIT_SEALER_TASK, context=contextvars.Context())

    async def _run(self) -> None:
        while True:
            with contextlib.suppress(TimeoutError):  # the interval first: no pass at the start
                async with asyncio.timeout(self._interval):
                    await self._stopping.wait()
            if self._stopping.is_set():
                return
            await seal_audit_trail(self._services)
            self.passed.set()

    async def stop(self, grace: float = SEALER_STOP_GRACE_SECONDS) -> None:
        """End the schedule: between passes at once; a pass in hand may finish within `grace`, else it is cancelled
        and its transaction rolled back before this returns."""
        self._stopping.set()
        task, self._task = self._task, None
        if task is None:
            return
        await asyncio.wait([task], timeout=grace)
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task

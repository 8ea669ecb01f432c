"""The FastAPI application: wiring, lifespan (startup checks, housekeeping schedule), routes."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator

from fastapi import FastAPI
from sqlalchemy.exc import SQLAlchemyError

from api import migrate, problems
from api.deps import Services, build_services
from api.logging import configure_logging
from api.middleware import RequestContextMiddleware
from api.routes import admin, health, keys, pki, tsa
from api.settings import Settings, load_settings
from idp.revocation import TokenRevocations
from keys.software import SoftwareKeyStore

log = logging.getLogger("acar.app")


async def _housekeeping(services: Services, interval: float) -> None:
    """The automatic schedule: token-key rotation and removal (ACAR_TOKEN_KEY_ROTATION_DAYS); CRLs republished
    at half their lifetime and OCSP/TSA certificates renewed before they run out.

    It waits, with one warning per tick, while the database is unreachable or behind the migrations head
    (readyz reports the same): writing to an old schema would only fail.
    """
    while True:
        try:
            behind = await migrate.schema_behind(services.engine)
        except (OSError, SQLAlchemyError) as exc:
            behind = f"database unreachable ({type(exc).__name__})"
        if behind:
            log.warning("housekeeping.waiting", extra={"reason": behind})
            await asyncio.sleep(interval)
            continue
        try:
            result = await services.token_keys.housekeeping()
            if result["rotated"] or result["removed"]:
                log.info("keys.housekeeping", extra=result)
        except Exception:
            log.exception("keys.housekeeping_failed")
        try:
            async with services.sessions() as session, session.begin():
                await TokenRevocations(session).purge_expired()
        except Exception:
            log.exception("tokens.purge_failed")
        try:
            published = await services.pki.housekeeping()
            if any(published.values()):
                log.info("pki.housekeeping", extra=published)
        except Exception:
            log.exception("pki.housekeeping_failed")
        await asyncio.sleep(interval)


async def startup_checks(services: Services) -> None:
    """Fail the start on a wrong master key; tolerate an unreachable database (readyz reports it)."""
    store = services.key_store
    if isinstance(store, SoftwareKeyStore):
        try:
            async with services.sessions() as session:
                count = await store.check_master_key(session)
            log.info("keys.master_key_checked", extra={"keys": count})
        except (OSError, SQLAlchemyError) as exc:
            log.warning("startup.database_not_ready", extra={"error": type(exc).__name__})


def create_app(settings: Settings | None = None, services: Services | None = None) -> FastAPI:
    settings = settings or (services.settings if services else load_settings())
    configure_logging(settings.log_level)

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        own = services is None
        svc = services or build_services(settings)
        app.state.services = svc
        await startup_checks(svc)
        task = asyncio.create_task(_housekeeping(svc, settings.housekeeping_seconds))
        log.info("service.started", extra={"issuer": settings.issuer, "env": settings.env})
        try:
            yield
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
            if own:
                await svc.close()

    app = FastAPI(title="Açar", version="0.1.0", lifespan=lifespan, redoc_url=None,
                  docs_url="/docs" if settings.env == "development" else None,
                  openapi_url="/openapi.json" if settings.env == "development" else None)
    problems.install(app)
    app.include_router(health.router)
    app.include_router(keys.router)
    app.include_router(admin.router)
    app.include_router(tsa.router)
    app.include_router(pki.router)
    app.add_middleware(RequestContextMiddleware, access_log_enabled=settings.access_log)
    return app

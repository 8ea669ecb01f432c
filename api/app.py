"""The FastAPI application: wiring, lifespan (startup checks, housekeeping schedule), routes."""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import datetime as dt
import gc
import inspect
import logging
from collections.abc import AsyncIterator, Callable, Sequence
from typing import TYPE_CHECKING, Any

from fastapi import APIRouter, Depends, FastAPI
from fastapi.staticfiles import StaticFiles
from sqlalchemy.exc import SQLAlchemyError
from starlette.routing import Route

from api import migrate, problems, tracing
from api import openapi as contract
from api.audit_sealer import AuditSealer
from api.deps import Services, build_services, validation_max_body_bytes
from api.edge_text import edge_text
from api.logging import configure_logging
from api.metrics import exposition as metrics_exposition
from api.metrics import instruments as metrics
from api.middleware import BodyLimitMiddleware, MtlsListenerPaths, RequestContextMiddleware, SecurityHeaders
from api.rendering import STATIC, PageContextMiddleware
from api.routes import (
    account,
    admin,
    clients,
    enrollment_admin,
    health,
    idcard,
    interaction,
    keys,
    oidc,
    passkeys,
    pki,
    registry_admin,
    signing,
    tsa,
    validation,
)
from api.routes import approval as approval_routes
from api.routes import director as director_routes
from api.routes import officer as officer_routes
from api.routes import pages as page_routes
from api.routing import PlainMount, Unserved
from api.settings import Settings, load_settings
from idp.sql.backchannel import BackchannelDelivery
from idp.sql.card_login import purge_card_rows
from idp.sql.passkeys_store import purge_passkey_rows
from idp.sql.revocation import TokenRevocations
from idp.sql.store import purge_expired
from keys.software import SoftwareKeyStore
from signing.sql.store import SqlSigningUnits
from storage.audit import purge_audit
from storage.base import utcnow
from storage.direct import SessionTransaction

if TYPE_CHECKING:
    from opentelemetry.sdk.trace.export import SpanExporter

log = logging.getLogger("acar.app")
BACKCHANNEL_TICK_SECONDS = 5.0
"""How often due back-channel logout retries are looked for (a logout itself wakes the worker at once)."""
LOGOUT_DELIVERY_KEPT = dt.timedelta(days=7)
SIGNING_TICK_SECONDS = 5.0
"""How often the in-process signing worker looks for due jobs (a new seal request wakes it at once)."""
SIGNING_WORKER_TASK = "signing-worker"
WORKER_STOP_GRACE_SECONDS = 10.0
"""How long a shutdown waits for the in-process signing worker to finish the document in hand."""


def audit_cutoffs(settings: Settings, now: dt.datetime) -> dict[str, dt.datetime | None]:
    """Before which instants audit events go: ACAR_AUDIT_RETENTION_DAYS for all, and the shorter
    ACAR_AUDIT_ANONYMOUS_RETENTION_DAYS for those of unauthenticated requests; 0 keeps them."""
    days, anonymous = settings.audit_retention_days, settings.audit_anonymous_retention_days
    return {"before": now - dt.timedelta(days=days) if days else None,
            "anonymous_before": now - dt.timedelta(days=anonymous) if anonymous else None}


async def _housekeeping(services: Services, interval: float, backchannel: BackchannelDelivery | None = None,
                        passed: asyncio.Event | None = None) -> None:
    """The automatic schedule: token-key rotation and removal (ACAR_TOKEN_KEY_ROTATION_DAYS); CRLs republished
    at half their lifetime and OCSP/TSA certificates renewed before they run out; the FIDO metadata BLOB re-read
    when its file changed (ACAR_WEBAUTHN_MDS_BLOB_FILE); expired pending requests, challenges (WebAuthn, Web eID)
    and codes purged,
    and sealed audit events past their retention (ACAR_AUDIT_RETENTION_DAYS; sealing itself is a schedule of its
    own, api.audit_sealer).

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
                purged = await purge_expired(session, utcnow())
                purged["revoked_tokens"] = await TokenRevocations(SessionTransaction(session)).purge_expired()
                purged.update(await purge_passkey_rows(session, utcnow()))
                purged.update(await purge_card_rows(session, utcnow()))
                purged.update(await purge_audit(session, **audit_cutoffs(services.settings, utcnow())))
            if backchannel is not None:
                purged["logout_deliveries"] = await backchannel.purge(utcnow() - LOGOUT_DELIVERY_KEPT)
            if any(purged.values()):
                log.info("oidc.purged", extra=purged)
        except Exception:
            log.exception("tokens.purge_failed")
        await _signing_pass(services)
        try:  # the FIDO metadata BLOB, when its file changed (a large file: verified off the event loop)
            await asyncio.to_thread(services.passkeys.rp.attestation.refresh)
        except Exception:
            log.exception("webauthn.mds_refresh_failed")
        try:
            published = await services.pki.housekeeping()
            if any(published.values()):
                log.info("pki.housekeeping", extra=published)
        except Exception:
            log.exception("pki.housekeeping_failed")
        if passed is not None:
            passed.set()  # one whole pass done (tests wait for it before racing the schedule)
        await asyncio.sleep(interval)


async def signing_housekeeping(services: Services, now: dt.datetime) -> dict[str, int]:
    """Sign-mode requests past their expiry expire; the documents' bytes of requests finished more than
    ACAR_SIGNING_RETENTION_HOURS ago are deleted (their digests and the audit trail stay)."""
    retention = dt.timedelta(hours=services.settings.signing_retention_hours)
    async with SqlSigningUnits(services.direct).writing() as store:
        expired = await store.expire_requests(now)
        purged = await store.purge_contents(now - retention, now)
    return {"signing_requests_expired": expired, "signing_requests_purged": purged}


async def _signing_pass(services: Services) -> None:
    try:
        purged = await signing_housekeeping(services, utcnow())
        if any(purged.values()):
            log.info("signing.housekeeping", extra=purged)
    except Exception:
        log.exception("signing.housekeeping_failed")


def _background(svc: Services, settings: Settings, backchannel: BackchannelDelivery,
                passed: asyncio.Event) -> list[asyncio.Task[None]]:
    """The application's background tasks: housekeeping, back-channel logout delivery and, unless separate
    `acar worker` processes sign (ACAR_SIGNING_INPROCESS_WORKER=false), the signing worker and the completion
    callbacks' delivery, in a context of its own (no request's unit of work is its outer unit)."""
    tasks = [asyncio.create_task(_housekeeping(svc, settings.housekeeping_seconds, backchannel, passed)),
             asyncio.create_task(backchannel.run(min(settings.housekeeping_seconds, BACKCHANNEL_TICK_SECONDS)))]
    if settings.signing_inprocess_worker:
        svc.signing.resume()  # these services may have run under an app stopped before (tests start several)
        tasks.append(asyncio.create_task(svc.signing.run(SIGNING_TICK_SECONDS), name=SIGNING_WORKER_TASK,
                                         context=contextvars.Context()))
    return tasks


async def _stop_background(svc: Services, background: list[asyncio.Task[None]]) -> None:
    """The signing worker ends between jobs (SigningWorker.stop) and the callbacks' delivery between batches within a
    grace period; then every task still running is cancelled (a document or callback still in hand: its lease runs
    out and another worker takes it)."""
    svc.signing.stop()
    worker = [task for task in background if task.get_name() == SIGNING_WORKER_TASK]
    if worker:
        await asyncio.wait(worker, timeout=WORKER_STOP_GRACE_SECONDS)
    for running in background:
        running.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await running


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


def _plain_operations(route: Route, tags: Sequence[str]) -> dict[str, Any]:
    """The OpenAPI operations of a plain Starlette route, by method: its name, docstring and path parameters (the
    endpoints read their own requests, so no body or query schema is claimed)."""
    parameters = [{"name": name, "in": "path", "required": True, "schema": {"type": "string"}}
                  for name in route.param_convertors]
    operations: dict[str, Any] = {}
    for method in sorted((route.methods or set()) - {"HEAD"}):
        operation: dict[str, Any] = {"tags": list(tags), "summary": route.name.replace("_", " ").title(),
                                     "operationId": f"{route.name}_{method.lower()}"}
        if route.endpoint.__doc__:
            operation["description"] = inspect.cleandoc(route.endpoint.__doc__)
        if parameters:
            operation["parameters"] = parameters
        operation["responses"] = {"200": {"description": "Successful Response"}}
        operations[method.lower()] = operation
    return operations


def _openapi_with(app: FastAPI, plain: Sequence[tuple[APIRouter, Sequence[Route]]],
                  issuer: str) -> Callable[[], dict[str, Any]]:
    """FastAPI's OpenAPI document of `app`, with the plain routes' operations first (as in the route table),
    each tagged like the FastAPI routes of its module."""
    generate = app.openapi

    def openapi() -> dict[str, Any]:
        schema = generate()  # cached by FastAPI until the route table changes
        paths = {route.path_format: _plain_operations(route, [str(t) for t in router.tags])
                 for router, routes in plain for route in routes}
        schema["paths"] = {**paths, **schema.get("paths", {})}
        # what the server really answers (api.openapi), its cookies named as api.provider.Provider names them
        return contract.complete(schema, app, secure_cookies=issuer.startswith("https://"))

    return openapi


def serving_app() -> FastAPI:
    """The application as `acar serve` runs it in each worker process (uvicorn's and granian's factory): create_app,
    with the heap frozen once the lifespan has started (freeze_heap)."""
    return create_app(freeze_after_start=True)


def freeze_heap() -> None:
    """Once the service graph is built: collect what start-up left over, then freeze what remains (gc.freeze), so
    the cyclic garbage collector never walks the long-lived objects again (the modules, pyHanko, cryptography,
    SQLAlchemy's compiled statements, the templates: hundreds of thousands of objects). Without it every full
    collection, which requests' allocations keep triggering, traversed all of them: about 7-13% of the token
    endpoint's CPU (bench_token_cpu.py, 2026-12-07) and pauses in the tail latency. Objects frozen are still freed
    when their last reference goes; only cycles among them would stay, and start-up's were collected just before."""
    gc.collect()
    gc.freeze()


def _started(settings: Settings, *, freeze: bool) -> None:
    """The lifespan's start-up is done: the heap frozen where asked (freeze_heap), and the start logged."""
    if freeze:
        freeze_heap()
    log.info("service.started", extra={"issuer": settings.issuer, "env": settings.env})


def create_app(settings: Settings | None = None, services: Services | None = None, *,
               span_exporter: SpanExporter | None = None, freeze_after_start: bool = False) -> FastAPI:
    # span_exporter: in place of the OTLP exporter when ACAR_TRACING is on (a test's in-memory one);
    # freeze_after_start: a serving process (serving_app), never a test's app (its garbage would never be collected)
    settings = settings or (services.settings if services else load_settings())
    configure_logging(settings.log_level)

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        own = services is None
        svc = services or build_services(settings)
        app.state.services = svc
        await startup_checks(svc)
        await svc.audit_log.start()  # the group commit's consumers live as long as the application
        backchannel = BackchannelDelivery(svc.sessions, svc.oidc.tokens.logout_token)
        app.state.backchannel = backchannel
        app.state.housekeeping_passed = asyncio.Event()
        background = _background(svc, settings, backchannel, app.state.housekeeping_passed)
        sealer = app.state.audit_sealer = AuditSealer(svc, settings.audit_seal_seconds)
        sealer.start()  # its first pass one interval from now (ACAR_AUDIT_SEAL_SECONDS; 0: off)
        metering = metrics.start()  # the tally's flushes (api.metrics.instruments)
        _started(settings, freeze=freeze_after_start)
        try:
            yield
        finally:
            await sealer.stop()  # a pass in hand finished or rolled back: no transaction of it outlives the app
            await _stop_background(svc, background)
            await backchannel.aclose()
            await svc.audit_log.stop()
            await metrics.stop(metering)  # the last counts of this process
            await tracing.shutdown(app)  # the batch's last spans exported (ACAR_TRACING)
            if own:
                await svc.close()

    # FastAPI's OpenTelemetry integration is off: Açar exports none, and checking for it costs every request
    # (its `enabled` looks the providers up each time); its exception logs would carry exception messages
    app = FastAPI(title="Açar", version="0.1.0", lifespan=lifespan, redoc_url=None,
                  telemetry={"tracing": False, "metrics": False, "logs": False},
                  docs_url="/docs" if settings.env == "development" else None,
                  openapi_url="/openapi.json" if settings.env == "development" else None,
                  dependencies=[Depends(edge_text)])  # text storage cannot hold, refused at the edge (api.edge_text)
    problems.install(app)
    for router in (health.router, keys.router, admin.router, clients.router, oidc.router, interaction.router,
                   idcard.page_router, account.router, page_routes.router, passkeys.router, approval_routes.router,
                   approval_routes.json_router, enrollment_admin.router, officer_routes.router,
                   registry_admin.router, director_routes.router):
        app.include_router(router)
    if settings.dev_login and settings.env != "production":
        app.include_router(interaction.dev_router)  # never registered in production (and the setting is refused)
    app.router.routes.append(PlainMount("/static", StaticFiles(directory=STATIC), name="static",
                                        allows=("GET", "HEAD")))  # api.routing; StaticFiles answers GET and HEAD
    app.include_router(tsa.router)
    app.include_router(pki.router)
    app.include_router(signing.router)
    app.include_router(validation.router)
    app.include_router(validation.page_router)
    # The endpoints of every login and every token, the discovery and JWK Set documents every relying party
    # fetches, and the OCSP responder and the TSA, once each, as plain Starlette routes at the head of the route
    # table: matched first, without FastAPI's request handling (dependency solving, its request and response
    # wrappers), and still under the exception handlers and the router's 405 answers like every other route.
    plain = ((oidc.router, oidc.plain_routes), (interaction.router, interaction.plain_routes),
             (passkeys.router, passkeys.plain_routes), (idcard.router, idcard.plain_routes),
             (keys.router, keys.plain_routes), (pki.router, pki.plain_routes), (tsa.router, tsa.plain_routes))
    app.router.routes[:0] = [route for _, routes in plain for route in routes]
    # ... and right after them, the answer to what no route serves (404, 405): one or two regular expression matches
    # against the table's index instead of a walk through every route (api.routing.Unserved)
    app.router.routes.insert(sum(len(routes) for _, routes in plain), Unserved(app.router))
    # /metrics, outside OpenAPI, for the allowed only; last, where matching it costs no other request anything
    app.router.routes.append(metrics_exposition.route(settings))
    # FastAPI documents only its own routes; /openapi.json (development only) describes these too
    app.openapi = _openapi_with(app, plain, settings.issuer)  # type: ignore[method-assign]  # FastAPI's documented extension point
    # every body capped before any route reads it (innermost: its 413 carries the request id and is logged)
    # ... except the signing API's uploads: PDFs up to ACAR_SIGNING_MAX_DOCUMENT_BYTES each, as multipart parts or
    # base64 in JSON, within ACAR_SIGNING_MAX_REQUEST_BYTES (multipart files are spooled to disk as they arrive)
    # ... and the validation service's: one PDF of that size (api.deps.validation_max_body_bytes)
    app.add_middleware(BodyLimitMiddleware, limit=settings.max_body_bytes,
                       larger={signing.router.prefix: settings.resolved_signing_max_request_bytes,
                               validation.router.prefix: validation_max_body_bytes(settings),
                               "/verify": validation_max_body_bytes(settings)})
    if settings.mtls_port is not None:  # the ID-card login's listener serves that login only
        app.add_middleware(MtlsListenerPaths, port=settings.mtls_port, issuer=settings.issuer_origin)
    app.add_middleware(PageContextMiddleware)  # the request a page answers, for its language (api.rendering)
    app.add_middleware(RequestContextMiddleware, access_log_enabled=settings.access_log,
                       security=SecurityHeaders(https=settings.issuer.startswith("https://")), meter=metrics.HTTP)
    # outermost: its span covers the whole answer, the 500 answered above included; only when ACAR_TRACING is on
    tracing.install(app, settings, span_exporter)
    return app

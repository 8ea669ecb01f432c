"""Anonymous traffic cannot grow the database without bound: what unauthenticated requests store (pending
authorization requests, WebAuthn challenges, failure audit events) is limited per client IP with the default
budgets, and purged on schedule; the audit trail is kept ACAR_AUDIT_RETENTION_DAYS (docs/architecture.md)."""

from __future__ import annotations

import asyncio
import datetime as dt

import httpx
from sqlalchemy import func, select

from api.app import audit_cutoffs, create_app
from api.deps import Services, build_audit_checkpoints
from idp.sql.models import AuthorizationRequest, WebAuthnChallenge
from storage.audit import AuditEvent, purge_audit, record_event
from storage.audit_chain import seal_all, verify_trail
from storage.base import utcnow
from tests.oidc_tools import authorization_params, pkce_pair, register_client

BURST = 300


async def count(services: Services, column: object) -> int:
    async with services.sessions() as session:
        return int((await session.execute(select(func.count(column)))).scalar_one())  # type: ignore[call-overload]


async def test_a_burst_of_anonymous_requests_stays_under_the_documented_bound(
        initialized: Services, client: httpx.AsyncClient) -> None:
    settings = initialized.settings
    per_minute = initialized.ratelimits.budgets.authorize.limits[0]
    assert (per_minute.amount, per_minute.GRANULARITY.name) == (60, "minute")  # the documented default
    rp = await register_client(initialized)
    _verifier, challenge = pkce_pair()
    statuses = []
    for _ in range(BURST):
        r = await client.get("/authorize", params=authorization_params(rp, challenge))
        statuses.append(r.status_code)
    # the sliding window counter (api.ratelimit) weighs the previous minute by the part of it still in the window:
    # a burst that straddles the end of a clock minute may get one request more through (a flake at xx:xx:00)
    allowed = statuses.count(303)
    assert allowed in (60, 61) and statuses.count(429) == BURST - allowed, statuses
    assert settings.rate_limit_authorize == "60/minute;600/hour"
    assert await count(initialized, AuthorizationRequest.id) == allowed

    async with initialized.sessions() as session:
        pending = (await session.execute(select(AuthorizationRequest.id, AuthorizationRequest.csrf_token))).all()
    statuses = []
    for i in range(BURST):
        pending_id, csrf = pending[i % len(pending)]
        r = await client.post("/webauthn/login/options", json={"pending_id": pending_id},
                              headers={"X-CSRF-Token": csrf})
        statuses.append(r.status_code)
    allowed = statuses.count(200)
    assert allowed in (60, 61) and statuses.count(429) == BURST - allowed, statuses
    assert await count(initialized, WebAuthnChallenge.id) == allowed

    # failed logins: each writes an anonymous audit event, at most the budget's worth; the trips one event each
    for _ in range(BURST // 10):
        await client.post("/webauthn/login/verify", json={"pending_id": "p", "ceremony": "c", "credential": {}})
    async with initialized.sessions() as session:
        anonymous = (await session.execute(select(AuditEvent.event_type).where(AuditEvent.actor == "anonymous"))
                     ).scalars().all()
    assert sorted(e for e in anonymous if e == "ratelimit.exceeded") == ["ratelimit.exceeded"] * 2
    assert len(anonymous) <= 2 + 30


async def test_audit_events_are_purged_after_their_retention(initialized: Services) -> None:
    settings = initialized.settings
    assert (settings.audit_retention_days, settings.audit_anonymous_retention_days) == (400, 30)
    now = utcnow()
    ages = {"old-officer": (401, "officer-1"), "kept-officer": (399, "officer-1"),
            "old-anonymous": (31, "anonymous"), "kept-anonymous": (29, "anonymous")}
    async with initialized.sessions() as session, session.begin():
        for subject, (days, actor) in ages.items():
            record_event(session, "test.event", actor=actor, subject=subject, clock=now - dt.timedelta(days=days))
    # retention deletes the oldest sealed part of each hash chain (storage.audit_chain): unsealed events wait
    async with initialized.sessions() as session, session.begin():
        assert await purge_audit(session, **audit_cutoffs(settings, now)) == {"audit_events": 0,
                                                                              "anonymous_audit_events": 0}
    await seal_all(initialized.direct, build_audit_checkpoints(settings, initialized.token_keys))
    async with initialized.sessions() as session, session.begin():
        purged = await purge_audit(session, **audit_cutoffs(settings, now))
    assert purged == {"audit_events": 1, "anonymous_audit_events": 1}
    async with initialized.sessions() as session:
        left = (await session.execute(select(AuditEvent.subject).where(AuditEvent.event_type == "test.event"))
                ).scalars().all()
    assert sorted(left) == ["kept-anonymous", "kept-officer"]
    report = await verify_trail(initialized.direct, build_audit_checkpoints(settings, initialized.token_keys))
    assert report.intact, report.summary()
    # 0 keeps them for ever
    forever = settings.model_copy(update={"audit_retention_days": 0, "audit_anonymous_retention_days": 0})
    assert audit_cutoffs(forever, now) == {"before": None, "anonymous_before": None}


async def test_housekeeping_purges_the_audit_trail(initialized: Services) -> None:
    now = utcnow()
    async with initialized.sessions() as session, session.begin():
        record_event(session, "test.event", actor="anonymous", subject="old", clock=now - dt.timedelta(days=31))
        record_event(session, "test.event", actor="officer-1", subject="recent", clock=now)
    # retention deletes sealed events only: a sealing pass first (what api.audit_sealer's schedule runs; the tests'
    # settings leave it off)
    await seal_all(initialized.direct, build_audit_checkpoints(initialized.settings, initialized.token_keys))
    app = create_app(services=initialized)
    async with app.router.lifespan_context(app):
        await asyncio.wait_for(app.state.housekeeping_passed.wait(), timeout=30)
    async with initialized.sessions() as session:
        left = (await session.execute(select(AuditEvent.subject).where(AuditEvent.event_type == "test.event"))
                ).scalars().all()
    assert left == ["recent"]
    # what is left verifies, nothing is left unsealed
    report = await verify_trail(initialized.direct, build_audit_checkpoints(initialized.settings,
                                                                            initialized.token_keys))
    assert report.intact and report.unsealed == 0, report.summary()

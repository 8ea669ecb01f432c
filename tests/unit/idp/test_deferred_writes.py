"""idp.sql.store defers a pending request, a grant, its code and a session's client to the unit's COMMIT, and
idp.sql.passkeys_store a ceremony's challenge (storage.direct.Transaction.defer): what the unit then does with them
must be what it would be had they been written at once, and a unit that rolls back writes none of them."""

from __future__ import annotations

import datetime as dt

import pytest
from sqlalchemy import func, select

from api.deps import Services
from idp.core.authorize import token_hash
from idp.core.interfaces import CodeRecord, GrantRecord, LoginState, PendingRequest
from idp.core.webauthn import ChallengeRecord
from idp.sql.models import (
    AuthorizationCode,
    AuthorizationRequest,
    Grant,
    LoginSession,
    SessionClient,
    WebAuthnChallenge,
)
from storage.base import utcnow
from tests.oidc_tools import register_client, register_person


def _pending(client_id: str, now: dt.datetime, pending_id: str = "pending-d") -> PendingRequest:
    return PendingRequest(id=pending_id, client_id=client_id, params={"scopes": ["openid"], "state": "s"},
                          csrf_token="csrf", expires_at=now + dt.timedelta(minutes=15))


async def _count(services: Services, model: type) -> int:
    async with services.sessions() as session:
        return int((await session.execute(select(func.count()).select_from(model))).scalar_one())


async def test_a_pending_request_saved_then_changed_in_one_unit_is_stored_as_changed(services: Services) -> None:
    now = utcnow().replace(microsecond=0)
    rp = await register_client(services)
    async with services.oidc.unit_of_work() as unit:
        await unit.oidc.save_pending(_pending(rp.client_id, now))
        await unit.oidc.update_pending(PendingRequest(id="pending-d", client_id=rp.client_id,
                                                      params={"scopes": ["openid"], "state": "changed"},
                                                      csrf_token="csrf", expires_at=now + dt.timedelta(minutes=15)))
        await unit.oidc.save_pending(_pending(rp.client_id, now, "pending-gone"))
        await unit.oidc.delete_pending("pending-gone")
        assert await unit.oidc.get_pending("pending-gone") is None
    async with services.oidc.unit_of_work(reading=True) as unit:
        stored = await unit.oidc.get_pending("pending-d")
        assert stored is not None and stored.params["state"] == "changed"
        assert await unit.oidc.get_pending("pending-gone") is None


async def test_a_code_issued_in_a_unit_is_redeemable_in_it_and_written_only_on_commit(services: Services) -> None:
    now = utcnow().replace(microsecond=0)
    rp = await register_client(services)
    person_id = await register_person(services)
    login = LoginState(id=token_hash("cookie-d"), sid="sid-d", person_id=person_id, auth_time=now,
                       expires_at=now + dt.timedelta(hours=8), level="high", amr=("hwk",))
    grant = GrantRecord(id="grant-d", client_id=rp.client_id, person_id=person_id, session_sid="sid-d", sub="sub-d",
                        scope="openid", claims={"released": ["sub"]}, acr="http://eidas.europa.eu/LoA/high",
                        amr=("hwk",), auth_time=now, expires_at=now + dt.timedelta(days=1))
    code = CodeRecord(code_hash=token_hash("code-d"), grant_id="grant-d", client_id=rp.client_id,
                      redirect_uri="https://rp.example/cb", nonce="", code_challenge="c" * 43,
                      expires_at=now + dt.timedelta(minutes=1), consumed_at=None)

    class Undone(Exception):
        pass

    async def undone() -> None:
        async with services.oidc.unit_of_work() as unit:
            await unit.oidc.create_session(login)
            await unit.oidc.save_pending(_pending(rp.client_id, now))
            await unit.oidc.create_grant(grant)
            await unit.oidc.create_code(code)
            await unit.oidc.add_session_client(login.id, rp.client_id, "sub-d")
            raise Undone

    before = [await _count(services, m) for m in (AuthorizationRequest, Grant, AuthorizationCode, SessionClient)]
    with pytest.raises(Undone):
        await undone()
    assert [await _count(services, m) for m in (AuthorizationRequest, Grant, AuthorizationCode, SessionClient)] \
        == before  # rolled back: none written

    async with services.oidc.unit_of_work() as unit:
        await unit.oidc.create_session(login)
        await unit.oidc.create_grant(grant)
        await unit.oidc.create_code(code)
        await unit.oidc.add_session_client(login.id, rp.client_id, "sub-d")
        redeemed = await unit.oidc.redeem_code(code.code_hash, now)  # the store writes them before reading
        assert redeemed is not None and redeemed[1] is not None and redeemed[1].id == "grant-d"
    async with services.oidc.unit_of_work(reading=True) as unit:
        stored = await unit.oidc.get_code(code.code_hash)
        assert stored is not None and stored.consumed_at is not None
        assert await unit.oidc.get_grant("grant-d") is not None
    assert await _count(services, SessionClient) == before[3] + 1


async def test_a_login_end_defers_its_session_and_the_deletion_of_its_pending_request(services: Services) -> None:
    """A login's end: the session, the grant and the session's client deferred, then the pending request (saved by
    an earlier request) deleted. No table refers to pending requests, so its DELETE is deferred as well and the
    unit writes all of them at its COMMIT (on PostgreSQL one statement with the audit events); a unit that rolls
    back writes no session and keeps the pending request."""
    now = utcnow().replace(microsecond=0)
    rp = await register_client(services)
    person_id = await register_person(services)
    async with services.oidc.unit_of_work() as unit:
        await unit.oidc.save_pending(_pending(rp.client_id, now, "pending-earlier"))
    login = LoginState(id=token_hash("cookie-e"), sid="sid-e", person_id=person_id, auth_time=now,
                       expires_at=now + dt.timedelta(hours=8), level="high", amr=("hwk",))
    grant = GrantRecord(id="grant-e", client_id=rp.client_id, person_id=person_id, session_sid="sid-e", sub="sub-e",
                        scope="openid", claims=None, acr="http://eidas.europa.eu/LoA/high", amr=("hwk",),
                        auth_time=now, expires_at=now + dt.timedelta(days=1))

    class Undone(Exception):
        pass

    async def end(*, fail: bool) -> None:
        async with services.oidc.unit_of_work() as unit:
            await unit.oidc.create_session(login)
            await unit.oidc.create_grant(grant)
            await unit.oidc.add_session_client(login.id, rp.client_id, "sub-e")
            await unit.oidc.delete_pending("pending-earlier")
            assert len(unit.oidc.tx._deferred) == 4  # session, grant, session client, DELETE: for the COMMIT
            assert await unit.oidc.get_pending("pending-earlier") is None
            if fail:
                raise Undone

    with pytest.raises(Undone):
        await end(fail=True)
    assert await _count(services, LoginSession) == 0 and await _count(services, SessionClient) == 0
    async with services.oidc.unit_of_work(reading=True) as unit:
        assert await unit.oidc.get_pending("pending-earlier") is not None  # kept
    await end(fail=False)
    async with services.oidc.unit_of_work(reading=True) as unit:
        assert await unit.oidc.get_pending("pending-earlier") is None
        assert await unit.oidc.get_grant("grant-e") is not None
        stored = await unit.oidc.get_session(login.id)
        assert stored is not None and stored.sid == "sid-e" and stored.amr == ("hwk",)
    assert await _count(services, SessionClient) == 1


async def test_a_session_created_in_a_unit_is_read_and_changed_in_it_as_if_written_at_once(
    services: Services,
) -> None:
    now = utcnow().replace(microsecond=0)
    person_id = await register_person(services)
    login = LoginState(id=token_hash("cookie-f"), sid="sid-f", person_id=person_id, auth_time=now,
                       expires_at=now + dt.timedelta(hours=8), level="substantial", amr=("hwk",))
    async with services.oidc.unit_of_work() as unit:
        await unit.oidc.create_session(login)
        assert [s.sid for s in await unit.oidc.live_sessions(person_id, now)] == ["sid-f"]
        await unit.oidc.update_login(login.id, auth_time=now, level="high", amr=("hwk", "pin"))
        read = await unit.oidc.get_session(login.id)
        assert read is not None and read.level == "high"
        ended = await unit.oidc.end_session(login.id, now)
        assert ended is not None and ended.sid == "sid-f"
    async with services.oidc.unit_of_work(reading=True) as unit:
        assert await unit.oidc.live_sessions(person_id, now) == []


async def test_a_pending_request_saved_and_deleted_in_one_unit_is_never_seen(services: Services) -> None:
    """The parts of one folded statement cannot see each other's rows: a pending request saved in this unit is
    written first, then deleted, not deferred twice."""
    now = utcnow().replace(microsecond=0)
    rp = await register_client(services)
    async with services.oidc.unit_of_work() as unit:
        await unit.oidc.save_pending(_pending(rp.client_id, now, "pending-brief"))
        await unit.oidc.delete_pending("pending-brief")
        await unit.oidc.save_pending(_pending(rp.client_id, now, "pending-kept"))
    async with services.oidc.unit_of_work(reading=True) as unit:
        assert await unit.oidc.get_pending("pending-brief") is None
        assert await unit.oidc.get_pending("pending-kept") is not None


async def test_a_challenge_saved_in_a_unit_is_consumed_in_it_once_and_a_rolled_back_one_is_not_written(
    services: Services,
) -> None:
    now = utcnow().replace(microsecond=0)

    def challenge(challenge_id: str) -> ChallengeRecord:
        return ChallengeRecord(id=challenge_id, challenge=b"c" * 32, purpose="authenticate",
                               user_verification="preferred", expires_at=now + dt.timedelta(minutes=5))

    class Undone(Exception):
        pass

    async def undone() -> None:
        async with services.oidc.unit_of_work() as unit:
            await unit.passkeys.save_challenge(challenge("ch-undone"))
            raise Undone

    before = await _count(services, WebAuthnChallenge)
    with pytest.raises(Undone):
        await undone()
    assert await _count(services, WebAuthnChallenge) == before
    async with services.oidc.unit_of_work() as unit:
        await unit.passkeys.save_challenge(challenge("ch-d"))
        assert await unit.passkeys.challenge_known("ch-d")  # the store writes it before reading
        consumed = await unit.passkeys.consume_challenge("ch-d", now)
        assert consumed is not None and consumed.challenge == b"c" * 32
        assert await unit.passkeys.consume_challenge("ch-d", now) is None  # single use
    assert await _count(services, WebAuthnChallenge) == before + 1

"""Back-channel logout delivery (OIDC Back-Channel Logout 1.0 sections 2.4-2.8) against a real HTTP receiver.

The receiver is a ThreadingHTTPServer on loopback that verifies each logout token with PyJWT as an RP would
(section 2.6) and answers what the test tells it to; time moves by an injected clock, never by sleeping.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import hashlib
import logging
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qs

import httpx
import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import ec
from sqlalchemy import select, text

from api.deps import Services
from idp.sql.backchannel import GAVE_UP, BackchannelDelivery, retry_delay
from idp.sql.models import LoginSession, LogoutDelivery, OAuthClient, Person, SessionClient
from idp.sql.store import SqlOidcStore
from storage.audit import AuditEvent
from tests.clock import Clock
from tests.conftest import TEST_DB
from tests.local_http import QuietHandler, free_port, serving

ISSUER = "https://id.example.az"
EVENT = "http://schemas.openid.net/event/backchannel-logout"
SID = "sid-0123456789"
SESSION_ID = hashlib.sha256(b"cookie value").hexdigest()
T0 = dt.datetime(2026, 3, 1, 12, 0, tzinfo=dt.UTC)


class Signer:
    """The provider's logout token signer (section 2.4), with a key of its own; can be told to fail."""

    def __init__(self) -> None:
        self.key = ec.generate_private_key(ec.SECP256R1())
        self.tokens: list[str] = []
        self.failing: set[str] = set()

    async def __call__(self, *, client_id: str, sub: str, sid: str) -> str:
        if client_id in self.failing:
            raise RuntimeError("key store unavailable")
        now = int(time.time())
        token = jwt.encode({"iss": ISSUER, "aud": client_id, "iat": now, "exp": now + 120, "jti": uuid.uuid4().hex,
                            "sub": sub, "sid": sid, "events": {EVENT: {}}},
                           self.key, algorithm="ES256", headers={"typ": "logout+jwt"})
        self.tokens.append(token)
        return token


@dataclass
class Post:
    client_id: str
    token: str
    claims: dict[str, Any]
    headers: dict[str, str]


@dataclass
class Receiver:
    """RPs' back-channel logout endpoints: POST /rp/<client_id>/logout."""

    public_key: ec.EllipticCurvePublicKey
    port: int = 0
    status: int = 200
    body: str = ""
    """Answer body; `{token}` is replaced by the token received (an RP echoing it in an error)."""
    delay: float = 0.0
    posts: list[Post] = field(default_factory=list)
    invalid: list[str] = field(default_factory=list)
    _running: contextlib.ExitStack | None = None

    def uri(self, client_id: str) -> str:
        return f"http://127.0.0.1:{self.port}/rp/{client_id}/logout"

    def verify(self, client_id: str, token: str) -> dict[str, Any]:
        """What an RP checks (section 2.6), with PyJWT."""
        assert jwt.get_unverified_header(token)["typ"] == "logout+jwt"
        claims: dict[str, Any] = jwt.decode(
            token, self.public_key, algorithms=["ES256"], audience=client_id, issuer=ISSUER,
            options={"require": ["iss", "aud", "iat", "exp", "jti", "sub", "sid", "events"]})
        assert claims["events"] == {EVENT: {}}
        assert "nonce" not in claims
        return claims

    def start(self) -> None:
        receiver = self

        class Handler(QuietHandler):
            def do_POST(self) -> None:  # noqa: N802 - the name http.server dispatches to
                form = parse_qs(self.rfile.read(int(self.headers["Content-Length"])).decode())
                client_id = self.path.split("/")[2]
                token = form["logout_token"][0]
                try:
                    claims = receiver.verify(client_id, token)
                except (AssertionError, jwt.InvalidTokenError) as exc:
                    receiver.invalid.append(repr(exc))
                    self._answer(400, '{"error": "invalid_request"}')
                    return
                receiver.posts.append(Post(client_id, token, claims, dict(self.headers.items())))
                time.sleep(receiver.delay)
                self._answer(receiver.status, receiver.body.replace("{token}", token))

            def _answer(self, status: int, body: str) -> None:
                with contextlib.suppress(OSError):  # the sender may have given up waiting
                    data = body.encode()
                    self.send_response(status)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(data)))
                    self.end_headers()
                    self.wfile.write(data)

        self._running = contextlib.ExitStack()
        server = self._running.enter_context(serving(Handler, self.port, poll_interval=0.02))
        self.port = server.server_address[1]

    def stop(self) -> None:
        if self._running is not None:
            self._running.close()
            self._running = None


@pytest.fixture
def signer() -> Signer:
    return Signer()


@pytest.fixture
def receiver(signer: Signer) -> Iterator[Receiver]:
    rp = Receiver(signer.key.public_key())
    rp.start()
    yield rp
    rp.stop()


@pytest.fixture
def clock() -> Clock:
    return Clock(T0)


@pytest.fixture
async def node(services: Services, signer: Signer, clock: Clock) -> AsyncIterator[
        Callable[..., BackchannelDelivery]]:
    """Builds delivery workers ("nodes") on the test database; closes them afterwards."""
    built: list[BackchannelDelivery] = []

    def build(**kwargs: Any) -> BackchannelDelivery:
        delivery = BackchannelDelivery(services.sessions, signer, clock=clock, **kwargs)
        built.append(delivery)
        return delivery

    yield build
    for delivery in built:
        await delivery.aclose()


async def login_session(services: Services, clients: dict[str, str | None], *, disabled: frozenset[str] = frozenset(),
                        outside: dict[str, str] | None = None) -> None:
    """A person's login session that gave tokens to `clients` (client_id -> backchannel_logout_uri)."""
    async with services.sessions() as session, session.begin():
        person = Person(fin="5ABC12D", given_name="Aysel", family_name="Məmmədova")
        session.add(person)
        for client_id, uri in {**clients, **(outside or {})}.items():
            session.add(OAuthClient(client_id=client_id, name=client_id, auth_method="private_key_jwt",
                                    sector_identifier=f"{client_id}.example.az", backchannel_logout_uri=uri,
                                    disabled_at=T0 if client_id in disabled else None))
        await session.flush()
        session.add(LoginSession(id=SESSION_ID, person_id=person.id, auth_time=T0,
                                 expires_at=T0 + dt.timedelta(hours=8), acr="urn:acar:loa:substantial", sid=SID))
        await session.flush()
        session.add_all(SessionClient(session_id=SESSION_ID, client_id=c, sub=f"sub-{c}") for c in clients)


async def queue_logouts(services: Services, *, session_id: str, sid: str, now: dt.datetime,
                        retry_seconds: int) -> int:
    async with services.direct.transaction() as tx:
        return await SqlOidcStore(tx).queue_logouts(session_id, sid=sid, now=now, retry_seconds=retry_seconds)


async def queue(services: Services, *, now: dt.datetime = T0, retry_seconds: int = 86400) -> int:
    return await queue_logouts(services, session_id=SESSION_ID, sid=SID, now=now, retry_seconds=retry_seconds)


async def rows(services: Services) -> dict[str, LogoutDelivery]:
    async with services.sessions() as session:
        found = (await session.execute(select(LogoutDelivery))).scalars().all()
    return {row.client_id: row for row in found}


async def events(services: Services, event_type: str) -> list[AuditEvent]:
    async with services.sessions() as session:
        found = await session.execute(select(AuditEvent).where(AuditEvent.event_type == event_type)
                                      .order_by(AuditEvent.subject))
        return list(found.scalars().all())


NOTHING = {"delivered": 0, "retrying": 0, "gave_up": 0}


async def test_delivered_once_to_each_client_that_takes_backchannel_logout(
        services: Services, receiver: Receiver, node: Callable[..., BackchannelDelivery], clock: Clock) -> None:
    await login_session(services, {"rp-a": receiver.uri("rp-a"), "rp-b": receiver.uri("rp-b"), "rp-none": None,
                                   "rp-empty": "", "rp-off": receiver.uri("rp-off")},
                        disabled=frozenset({"rp-off"}), outside={"rp-other": receiver.uri("rp-other")})
    assert await queue(services) == 2
    delivery = node()

    assert await delivery.deliver_due() == {"delivered": 2, "retrying": 0, "gave_up": 0}
    clock.now += dt.timedelta(days=2)
    assert await delivery.deliver_due() == NOTHING

    assert receiver.invalid == []
    assert sorted(p.client_id for p in receiver.posts) == ["rp-a", "rp-b"]
    for post in receiver.posts:
        assert (post.claims["sub"], post.claims["sid"], post.claims["aud"]) == (f"sub-{post.client_id}", SID,
                                                                                 post.client_id)
        assert post.headers["Content-Type"] == "application/x-www-form-urlencoded"
        assert post.headers["Cache-Control"] == "no-store"
    stored = await rows(services)
    assert {c: (r.delivered_at, r.attempts, r.last_error) for c, r in stored.items()} == {
        "rp-a": (T0, 1, None), "rp-b": (T0, 1, None)}
    delivered = await events(services, "logout.delivered")
    assert [(e.actor, e.subject, e.detail) for e in delivered] == [
        ("backchannel", "rp-a", {"sid": SID, "attempts": 1}), ("backchannel", "rp-b", {"sid": SID, "attempts": 1})]


async def test_receiver_down_gets_the_token_once_it_is_up(
        services: Services, signer: Signer, node: Callable[..., BackchannelDelivery], clock: Clock) -> None:
    rp = Receiver(signer.key.public_key(), port=free_port())  # nothing listens there yet
    await login_session(services, {"rp-a": rp.uri("rp-a")})
    await queue(services)
    delivery = node()

    assert await delivery.deliver_due() == {"delivered": 0, "retrying": 1, "gave_up": 0}
    row = (await rows(services))["rp-a"]
    assert (row.attempts, row.next_attempt_at, row.delivered_at) == (1, T0 + dt.timedelta(seconds=5), None)
    assert row.last_error is not None and row.last_error.startswith("ConnectError")

    rp.start()
    try:
        assert await delivery.deliver_due() == NOTHING  # not due before its backoff
        clock.now += dt.timedelta(seconds=5)
        assert await delivery.deliver_due() == {"delivered": 1, "retrying": 0, "gave_up": 0}
    finally:
        rp.stop()
    assert [p.client_id for p in rp.posts] == ["rp-a"] and rp.invalid == []
    row = (await rows(services))["rp-a"]
    assert (row.attempts, row.delivered_at, row.last_error) == (2, clock.now, None)


@pytest.mark.parametrize("status", [503, 429])
async def test_transient_failure_retried_with_growing_backoff_until_the_window_closes(
        services: Services, receiver: Receiver, node: Callable[..., BackchannelDelivery], clock: Clock,
        status: int) -> None:
    receiver.status = status
    await login_session(services, {"rp-a": receiver.uri("rp-a")})
    await queue(services, retry_seconds=60)
    delivery = node()

    waits = []
    for _ in range(3):  # attempts at 0 s, 5 s, 15 s
        assert await delivery.deliver_due() == {"delivered": 0, "retrying": 1, "gave_up": 0}
        row = (await rows(services))["rp-a"]
        waits.append(row.next_attempt_at - clock.now)
        assert row.last_error == f"HTTP {status}"
        clock.now = row.next_attempt_at
    assert waits == [dt.timedelta(seconds=s) for s in (5, 10, 20)]
    # the attempt at 35 s fails too; the next would be at 75 s, past give_up_at (60 s): given up now
    assert await delivery.deliver_due() == {"delivered": 0, "retrying": 0, "gave_up": 1}
    row = (await rows(services))["rp-a"]
    assert (row.attempts, row.next_attempt_at, row.delivered_at) == (4, GAVE_UP, None)
    assert len(receiver.posts) == 4
    assert len({p.claims["jti"] for p in receiver.posts}) == 4  # a fresh token at every attempt
    [event] = await events(services, "logout.gave_up")
    assert (event.subject, event.detail) == ("rp-a", {"sid": SID, "attempts": 4, "error": f"HTTP {status}"})


def test_backoff_doubles_from_five_seconds_and_stops_at_one_hour() -> None:
    assert [retry_delay(n).total_seconds() for n in (1, 2, 3, 4, 10, 11, 12, 10_000)] == [
        5, 10, 20, 40, 2560, 3600, 3600, 3600]


async def test_refusal_is_given_up_at_once_and_the_token_is_never_stored(
        services: Services, receiver: Receiver, node: Callable[..., BackchannelDelivery], clock: Clock,
        signer: Signer) -> None:
    receiver.status = 400
    receiver.body = '{"error": "invalid_request", "error_description": "cannot use {token}"}'
    await login_session(services, {"rp-a": receiver.uri("rp-a")})
    await queue(services)
    delivery = node()

    assert await delivery.deliver_due() == {"delivered": 0, "retrying": 0, "gave_up": 1}
    clock.now += dt.timedelta(hours=2)
    assert await delivery.deliver_due() == NOTHING
    assert len(receiver.posts) == 1
    row = (await rows(services))["rp-a"]
    assert row.last_error == "HTTP 400 invalid_request: cannot use [logout_token]"
    assert (row.attempts, row.next_attempt_at) == (1, GAVE_UP)
    [event] = await events(services, "logout.gave_up")
    assert event.detail == {"sid": SID, "attempts": 1, "error": row.last_error}
    [token] = signer.tokens
    async with services.sessions() as session:
        everything = [str(r) for r in (await session.execute(text("SELECT * FROM audit_events"))).all()]
        everything += [str(r) for r in (await session.execute(text("SELECT * FROM logout_deliveries"))).all()]
    assert not any(token in r or token.split(".")[2] in r for r in everything)


async def test_past_give_up_at_the_row_is_given_up_without_another_attempt(
        services: Services, receiver: Receiver, node: Callable[..., BackchannelDelivery], clock: Clock) -> None:
    receiver.status = 503
    await login_session(services, {"rp-a": receiver.uri("rp-a")})
    await queue(services, retry_seconds=60)
    delivery = node()
    assert await delivery.deliver_due() == {"delivered": 0, "retrying": 1, "gave_up": 0}
    receiver.status = 200

    clock.now += dt.timedelta(seconds=61)  # the node was stopped until after the retry window
    assert await delivery.deliver_due() == {"delivered": 0, "retrying": 0, "gave_up": 1}
    assert len(receiver.posts) == 1
    [event] = await events(services, "logout.gave_up")
    assert (event.actor, event.subject, event.detail) == (
        "backchannel", "rp-a", {"sid": SID, "attempts": 1, "error": "HTTP 503"})
    assert event.occurred_at == clock.now


async def test_a_timeout_is_retried(services: Services, receiver: Receiver,
                                    node: Callable[..., BackchannelDelivery]) -> None:
    receiver.delay = 0.5
    await login_session(services, {"rp-a": receiver.uri("rp-a")})
    await queue(services)
    async with httpx.AsyncClient(timeout=0.1) as http:
        assert await node(http=http).deliver_due() == {"delivered": 0, "retrying": 1, "gave_up": 0}
    row = (await rows(services))["rp-a"]
    assert row.last_error is not None and row.last_error.startswith("ReadTimeout")


async def test_a_bad_delivery_does_not_stop_the_others(
        services: Services, receiver: Receiver, node: Callable[..., BackchannelDelivery], signer: Signer,
        caplog: pytest.LogCaptureFixture) -> None:
    signer.failing.add("rp-unsigned")
    await login_session(services, {"rp-a": receiver.uri("rp-a"), "rp-ftp": "ftp://127.0.0.1/logout",
                                   "rp-unsigned": receiver.uri("rp-unsigned")})
    await queue(services)

    with caplog.at_level(logging.ERROR, logger="acar.backchannel"):
        assert await node().deliver_due() == {"delivered": 1, "retrying": 1, "gave_up": 1}
    stored = await rows(services)
    assert stored["rp-a"].delivered_at is not None
    assert (stored["rp-ftp"].next_attempt_at, stored["rp-ftp"].last_error) == (
        GAVE_UP, "unusable URI: Request URL has an unsupported protocol 'ftp://'.")
    assert stored["rp-unsigned"].last_error == "attempt failed: RuntimeError"
    assert [r.getMessage() for r in caplog.records] == ["backchannel.attempt_failed"]


async def test_two_nodes_deliver_each_token_exactly_once(
        services: Services, receiver: Receiver, node: Callable[..., BackchannelDelivery]) -> None:
    receiver.delay = 0.02
    clients = [f"rp-{i:02d}" for i in range(12)]
    await login_session(services, {c: receiver.uri(c) for c in clients})
    await queue(services)
    first, second = node(batch=3, max_concurrency=2), node(batch=3, max_concurrency=2)

    results = await asyncio.gather(*(n.deliver_due() for _ in range(3) for n in (first, second)))

    assert sum(r["delivered"] for r in results) == 12 and all(r["retrying"] == r["gave_up"] == 0 for r in results)
    assert sorted(p.client_id for p in receiver.posts) == clients
    assert len(await events(services, "logout.delivered")) == 12
    assert all(r.delivered_at is not None and r.attempts == 1 for r in (await rows(services)).values())


@pytest.mark.postgresql
async def test_rows_locked_by_another_node_are_skipped(
        services: Services, receiver: Receiver, node: Callable[..., BackchannelDelivery]) -> None:
    """PostgreSQL: a claim in progress elsewhere (FOR UPDATE) is skipped, not waited for (SKIP LOCKED)."""
    assert TEST_DB == "postgresql", "run with ACAR_TEST_DB=postgresql (make test deselects it on SQLite)"
    await login_session(services, {"rp-a": receiver.uri("rp-a"), "rp-b": receiver.uri("rp-b")})
    await queue(services)
    async with services.sessions() as other, other.begin():
        await other.execute(select(LogoutDelivery).where(LogoutDelivery.client_id == "rp-a").with_for_update())
        async with asyncio.timeout(2):
            assert await node().deliver_due() == {"delivered": 1, "retrying": 0, "gave_up": 0}
    assert [p.client_id for p in receiver.posts] == ["rp-b"]


async def _until(condition: Callable[[], bool], seconds: float = 1.5) -> None:
    """Poll for what another thread (the receiver) or task (run) does."""
    async with asyncio.timeout(seconds):
        while not condition():  # noqa: ASYNC110 - the receiver thread has no asyncio.Event to set
            await asyncio.sleep(0.01)


@dataclass
class Passes:
    started: int = 0
    finished: int = 0


def _counting(delivery: BackchannelDelivery, *, fail_first: bool = False) -> Passes:
    """Count the `deliver_due` passes of `run`, and make the first fail (as a database outage would) if asked.

    Tests cancel `run` only after a pass finished, never in the middle of a database call."""
    passes = Passes()
    real: Callable[[], Awaitable[dict[str, int]]] = delivery.deliver_due

    async def deliver_due() -> dict[str, int]:
        passes.started += 1
        try:
            if fail_first and passes.started == 1:
                raise OSError("database unreachable")
            return await real()
        finally:
            passes.finished += 1

    delivery.deliver_due = deliver_due  # type: ignore[method-assign]
    return passes


async def test_kick_wakes_run_at_once(services: Services, receiver: Receiver,
                                      node: Callable[..., BackchannelDelivery]) -> None:
    await login_session(services, {"rp-a": receiver.uri("rp-a")})
    delivery = node()
    passes = _counting(delivery)
    task = asyncio.create_task(delivery.run(interval=3600))
    try:
        await _until(lambda: passes.finished == 1)  # the first pass found nothing; the next tick is an hour away
        await queue(services)
        delivery.kick()
        await _until(lambda: passes.finished == 2)
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
    assert [p.client_id for p in receiver.posts] == ["rp-a"]
    assert passes.started == 2


async def test_run_logs_a_failed_pass_and_goes_on(services: Services, receiver: Receiver,
                                                  node: Callable[..., BackchannelDelivery],
                                                  caplog: pytest.LogCaptureFixture) -> None:
    await login_session(services, {"rp-a": receiver.uri("rp-a")})
    await queue(services)
    delivery = node()
    passes = _counting(delivery, fail_first=True)
    with caplog.at_level(logging.ERROR):
        task = asyncio.create_task(delivery.run(interval=0.05))
        try:
            await _until(lambda: passes.finished == 2)  # cancelled while it waits for the next tick
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
    assert [p.client_id for p in receiver.posts] == ["rp-a"]
    assert [(r.name, r.getMessage()) for r in caplog.records] == [("acar.backchannel", "backchannel.delivery_failed")]


async def test_purge_deletes_finished_rows_older_than_the_cutoff(
        services: Services, node: Callable[..., BackchannelDelivery]) -> None:
    await login_session(services, {c: f"https://{c}.example.az/logout" for c in ("old-ok", "old-gone", "old-due",
                                                                                 "new-ok")})
    day = dt.timedelta(days=1)
    async with services.sessions() as session, session.begin():
        for client_id, created, delivered, next_at in [("old-ok", T0 - 40 * day, T0 - 40 * day, T0 - 40 * day),
                                                       ("old-gone", T0 - 40 * day, None, GAVE_UP),
                                                       ("old-due", T0 - 40 * day, None, T0 - 39 * day),
                                                       ("new-ok", T0 - day, T0 - day, T0 - day)]:
            session.add(LogoutDelivery(client_id=client_id, uri="https://rp.example.az/logout", sub="s", sid=SID,
                                       created_at=created, next_attempt_at=next_at, give_up_at=created + day,
                                       delivered_at=delivered))

    assert await node().purge(T0 - 30 * day) == 2
    assert sorted(await rows(services)) == ["new-ok", "old-due"]


async def test_nothing_is_queued_without_a_backchannel_client_or_for_an_unknown_session(services: Services) -> None:
    await login_session(services, {"rp-a": None})
    assert await queue(services) == 0
    assert await queue_logouts(services, session_id="no-such-session", sid="x", now=T0, retry_seconds=60) == 0
    assert await rows(services) == {}

"""Completion callbacks of signing requests (signing.core.callbacks), both databases, real HTTP on loopback.

A seal request with a callback URL: the receiver gets one POST of a JWT that PyJWT and joserfc verify with the JWKS
of /jwks.json. A receiver failing twice then answering is delivered on the third attempt, the same bytes each time;
one that never answers 2xx expires after the delivery window, audited. No callback URL, no row. Expired, failed and
rejected requests call back with their state; a key rotation meanwhile re-signs the same claims. Redirects are not
followed. The production policy requires https, refuses non-public addresses (SSRF) unless allowed, and over TLS
sends to the checked address while verifying the URL's host name. Concurrent deliveries send each callback once; a
real `acar worker` delivers; the retention deletes finished callbacks. Retries are driven by a hand-moved clock
(tests.clock), never by waiting.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import dataclasses
import datetime as dt
import hashlib
import ipaddress
import json
import signal
import ssl
import threading
from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import jwt
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from fastapi import FastAPI
from joserfc import jwt as jose_jwt
from joserfc.jwk import KeySet
from sqlalchemy import func, select

from api.app import create_app, signing_housekeeping
from api.deps import Services
from keys.models import IssuedCertificate
from signing.core.callbacks import CONTENT_TYPE, TYP, CallbackDelivery, CallbackPolicy
from signing.sql.approval_store import SqlApprovalStore
from signing.sql.callbacks import SqlCallbackUnits
from signing.sql.models import SigningCallback
from storage.audit import AuditEvent
from storage.base import utcnow
from tests.clock import Clock
from tests.functional.helpers import ACAR
from tests.local_http import QuietHandler, serving
from tests.oidc_tools import ISSUER, asgi_browser
from tests.replay import Replays
from tests.signing_tools import Agency, minimal_pdf, prepared, register_agency

API = "/api/v1/signing-requests"


@dataclass
class Post:
    path: str
    headers: dict[str, str]
    body: bytes


@dataclass
class Receiver:
    url: str
    statuses: list[int]
    """The answers in order; the last one repeats."""
    posts: list[Post] = field(default_factory=list)
    location: str | None = None


@contextmanager
def receiver(*statuses: int, location: str | None = None, tls: ssl.SSLContext | None = None) -> Iterator[Receiver]:
    """An agency's callback endpoint on 127.0.0.1 that records every POST and answers `statuses` in turn."""
    found: list[Receiver] = []

    class Handler(QuietHandler):
        def do_POST(self) -> None:  # noqa: N802 - the name http.server calls
            body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
            rec = found[0]
            rec.posts.append(Post(self.path, {k.lower(): v for k, v in self.headers.items()}, body))
            status = rec.statuses[min(len(rec.posts), len(rec.statuses)) - 1]
            self.send_response(status)
            if rec.location is not None:
                self.send_header("Location", rec.location)
            answer = b"x" * 100_000 if status >= 400 else b""  # a long refusal: only its start is read
            self.send_header("Content-Length", str(len(answer)))
            self.end_headers()
            with contextlib.suppress(BrokenPipeError, ConnectionResetError):  # Açar stopped reading a long answer
                self.wfile.write(answer)

    if tls is None:
        with serving(Handler) as server:
            rec = Receiver(url=f"http://127.0.0.1:{server.server_address[1]}/acar/callback",
                           statuses=list(statuses), location=location)
            found.append(rec)
            yield rec
        return
    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.socket = tls.wrap_socket(server.socket, server_side=True)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True)
    thread.start()
    try:
        rec = Receiver(url=f"https://localhost:{server.server_address[1]}/acar/callback", statuses=list(statuses),
                       location=location)
        found.append(rec)
        yield rec
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


def _localhost_tls(directory: Path) -> tuple[ssl.SSLContext, bytes]:
    """A TLS server context with a self-signed certificate for the name localhost only (not for 127.0.0.1), and
    that certificate's PEM for the client to trust."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = dt.datetime.now(dt.UTC)
    certificate = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
                   .serial_number(x509.random_serial_number()).not_valid_before(now - dt.timedelta(minutes=5))
                   .not_valid_after(now + dt.timedelta(hours=1))
                   .add_extension(x509.SubjectAlternativeName([x509.DNSName("localhost")]), critical=False)
                   .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
                   .sign(key, hashes.SHA256()))
    pem = certificate.public_bytes(serialization.Encoding.PEM)
    (directory / "cert.pem").write_bytes(pem)
    (directory / "key.pem").write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                                          serialization.PrivateFormat.PKCS8,
                                                          serialization.NoEncryption()))
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(directory / "cert.pem", directory / "key.pem")
    return context, pem


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


async def _callbacks(services: Services) -> list[SigningCallback]:
    async with services.sessions() as session:
        return list((await session.execute(select(SigningCallback))).scalars().all())


async def _events(services: Services, prefix: str) -> list[AuditEvent]:
    async with services.sessions() as session:
        return list((await session.execute(select(AuditEvent).where(AuditEvent.event_type.startswith(prefix))
                                            .order_by(AuditEvent.id))).scalars().all())


async def _seal(client: httpx.AsyncClient, agency: Agency, callback_url: str | None) -> str:
    body: dict[str, Any] = {"mode": "seal", "level": "B-B",
                            "documents": [{"filename": "a.pdf", "content": _b64(minimal_pdf(1, "Arayış"))},
                                          {"filename": "b.pdf", "content": _b64(minimal_pdf(2, "Müqavilə"))}]}
    if callback_url is not None:
        body["callback_url"] = callback_url
    r = await client.post(API, headers=agency.headers, json=body)
    assert r.status_code == 201, r.text
    return str(r.json()["id"])


def _verified(token: str, jwks: dict[str, Any], audience: str) -> dict[str, Any]:
    """The claims, checked by two JOSE libraries independent of Açar's keys.jose: PyJWT and joserfc."""
    header = jwt.get_unverified_header(token)
    assert header["typ"] == TYP and header["alg"] == "ES256"
    key = jwt.PyJWKSet.from_dict(jwks)[header["kid"]]
    claims: dict[str, Any] = jwt.decode(token, key.key, algorithms=["ES256"], audience=audience, issuer=ISSUER,
                                        options={"require": ["iss", "aud", "iat", "exp", "jti"]})
    other = jose_jwt.decode(token, KeySet.import_key_set(jwks), algorithms=["ES256"])
    jose_jwt.JWTClaimsRegistry(iss={"essential": True, "value": ISSUER},
                               aud={"essential": True, "value": audience}).validate(other.claims)
    assert other.claims == claims and other.header["kid"] == header["kid"]
    return claims


@pytest.fixture
async def manual(initialized: Services) -> AsyncIterator[tuple[FastAPI, httpx.AsyncClient]]:
    """The app without its in-process worker: the test signs with `worker.work_once` and delivers with a
    CallbackDelivery of its own clock, so no background task races it."""
    initialized.settings.signing_inprocess_worker = False
    application = create_app(services=initialized)
    async with application.router.lifespan_context(application), asgi_browser(application) as c:
        yield application, c


async def _sign_all(services: Services) -> None:
    while await services.signing.worker.work_once():
        pass


def _delivery(services: Services, clock: Clock, *, max_age: dt.timedelta = dt.timedelta(hours=24),
              refuse_private: bool = False, require_https: bool = False,
              allowed: tuple[str, ...] = (), http: httpx.AsyncClient | None = None) -> CallbackDelivery:
    policy = CallbackPolicy(issuer=ISSUER, max_age=max_age, timeout=5.0, refuse_private=refuse_private,
                            require_https=require_https,
                            allowed_networks=tuple(ipaddress.ip_network(a) for a in allowed))
    return CallbackDelivery(SqlCallbackUnits(services.direct), lambda: services.token_keys.signer("ES256"), policy,
                            clock=clock, http=http)


async def test_a_completed_seal_request_posts_one_jwt_that_verifies_with_the_jwks(
        client: httpx.AsyncClient, initialized: Services, replays: Replays) -> None:
    await prepared(initialized, replays)
    agency = await register_agency(initialized, client)
    with receiver(204) as agency_side:
        request_id = await _seal(client, agency, agency_side.url)  # the in-process worker signs and delivers
        for _ in range(600):
            rows = await _callbacks(initialized)
            if rows and rows[0].state != "pending":
                break
            await asyncio.sleep(0.05)
        assert [row.state for row in rows] == ["delivered"], [(r.state, r.last_error) for r in rows]
        assert len(agency_side.posts) == 1
    post = agency_side.posts[0]
    assert post.path == "/acar/callback" and post.headers["content-type"] == CONTENT_TYPE
    token = post.body.decode("ascii")
    row = rows[0]
    assert row.body == token and row.attempts == 1 and row.last_status == 204 and row.delivered_at is not None
    done = (await client.get(f"{API}/{request_id}", headers=agency.headers)).json()
    assert done["state"] == "completed"
    jwks = (await client.get("/jwks.json")).json()
    claims = _verified(token, jwks, agency.client_id)
    assert claims["jti"] == row.id and claims["request_id"] == request_id and claims["state"] == "completed"
    assert claims["documents"] == [{"n": d["n"], "sha256": d["signed_sha256"]} for d in done["documents"]]
    assert claims["failure"] is None
    assert claims["exp"] - claims["iat"] <= 24 * 3600
    for n in (1, 2):  # the digests are those of the PDFs the agency downloads
        signed = (await client.get(f"{API}/{request_id}/documents/{n}", headers=agency.headers)).content
        assert hashlib.sha256(signed).hexdigest() == claims["documents"][n - 1]["sha256"]
    delivered = await _events(initialized, "signing.callback.")
    assert [(e.event_type, e.subject, e.detail["attempts"]) for e in delivered] == [
        ("signing.callback.delivered", request_id, 1)]


async def test_failing_twice_then_answering_is_delivered_on_the_third_attempt_with_the_same_body(
        manual: tuple[FastAPI, httpx.AsyncClient], initialized: Services, replays: Replays) -> None:
    _, client = manual
    await prepared(initialized, replays)
    agency = await register_agency(initialized, client)
    with receiver(500, 500, 200) as agency_side:
        request_id = await _seal(client, agency, agency_side.url)
        await _sign_all(initialized)
        clock = Clock()
        delivery = _delivery(initialized, clock)
        gaps = []
        for attempt in (1, 2):
            assert await delivery.deliver_due() == {"delivered": 0, "retrying": 1, "expired": 0}
            (row,) = await _callbacks(initialized)
            assert (row.state, row.attempts, row.last_status) == ("pending", attempt, 500)
            assert row.last_error is not None and row.last_error.startswith("HTTP 500")
            assert len(row.last_error) <= 300  # the refusal's 100 kB body is not kept (nor read beyond 1 KiB)
            assert await delivery.deliver_due() == {"delivered": 0, "retrying": 0, "expired": 0}  # backing off
            gaps.append(row.next_attempt_at - clock.now)
            clock.now = row.next_attempt_at
        assert await delivery.deliver_due() == {"delivered": 1, "retrying": 0, "expired": 0}
        assert await delivery.deliver_due() == {"delivered": 0, "retrying": 0, "expired": 0}
    await delivery.aclose()
    assert dt.timedelta(seconds=2) < gaps[0] <= gaps[1]  # exponential backoff (with jitter)
    (row,) = await _callbacks(initialized)
    assert (row.state, row.attempts, row.last_status, row.last_error) == ("delivered", 3, 200, None)
    assert len(agency_side.posts) == 3
    assert len({post.body for post in agency_side.posts}) == 1  # exactly the stored body, every time
    assert agency_side.posts[0].body.decode() == row.body
    claims = _verified(row.body, (await client.get("/jwks.json")).json(), agency.client_id)
    assert claims["request_id"] == request_id and claims["state"] == "completed"
    events = await _events(initialized, "signing.callback.")
    assert [(e.event_type, e.detail["attempts"], e.detail["status"]) for e in events] == [
        ("signing.callback.delivered", 3, 200)]


async def test_a_receiver_that_never_answers_2xx_expires_after_the_max_age(
        manual: tuple[FastAPI, httpx.AsyncClient], initialized: Services, replays: Replays) -> None:
    _, client = manual
    await prepared(initialized, replays)
    agency = await register_agency(initialized, client)
    with receiver(503) as agency_side:
        request_id = await _seal(client, agency, agency_side.url)
        await _sign_all(initialized)
        clock = Clock()
        delivery = _delivery(initialized, clock, max_age=dt.timedelta(hours=1))
        counts = {"retrying": 0, "expired": 0}
        for _ in range(40):
            result = await delivery.deliver_due()
            assert result["delivered"] == 0
            counts["retrying"] += result["retrying"]
            counts["expired"] += result["expired"]
            (row,) = await _callbacks(initialized)
            if row.state != "pending":
                break
            clock.now = row.next_attempt_at
    await delivery.aclose()
    assert row.state == "expired" and counts["expired"] == 1, (row.state, counts)
    assert row.attempts == len(agency_side.posts) == counts["retrying"] + 1 and row.attempts > 3
    assert clock.now < row.created_at + dt.timedelta(hours=1)  # never an attempt after the window
    assert row.last_status == 503 and row.delivered_at is None
    events = await _events(initialized, "signing.callback.")
    assert [(e.event_type, e.subject) for e in events] == [("signing.callback.expired", request_id)]
    assert events[0].detail["attempts"] == row.attempts and events[0].detail["error"].startswith("HTTP 503")
    clock.now += dt.timedelta(days=2)
    assert await delivery.deliver_due() == {"delivered": 0, "retrying": 0, "expired": 0}  # expired stays expired


async def test_no_callback_url_no_row(manual: tuple[FastAPI, httpx.AsyncClient], initialized: Services,
                                      replays: Replays) -> None:
    _, client = manual
    await prepared(initialized, replays)
    agency = await register_agency(initialized, client)
    request_id = await _seal(client, agency, None)
    await _sign_all(initialized)
    assert (await client.get(f"{API}/{request_id}", headers=agency.headers)).json()["state"] == "completed"
    async with initialized.sessions() as session:
        assert (await session.execute(select(func.count()).select_from(SigningCallback))).scalar_one() == 0


async def test_an_expired_sign_request_calls_back_with_its_state(
        manual: tuple[FastAPI, httpx.AsyncClient], initialized: Services, replays: Replays) -> None:
    _, client = manual
    await prepared(initialized, replays)
    agency = await register_agency(initialized, client, seal=False)
    requests = initialized.signing.requests
    requests.policy = dataclasses.replace(requests.policy, sign_lifetime=dt.timedelta(0))  # expires at once
    with receiver(200) as agency_side:
        r = await client.post(API, headers=agency.headers, json={
            "mode": "sign", "signer_fin": "5abcd12", "callback_url": agency_side.url,
            "documents": [{"content": _b64(minimal_pdf())}]})
        assert r.status_code == 201, r.text
        assert await _callbacks(initialized) == []  # pending: no final state yet
        await signing_housekeeping(initialized, utcnow())  # (or the app's own housekeeping pass got there first)
        (row,) = await _callbacks(initialized)
        assert row.claims["state"] == "expired" and row.state == "pending"
        delivery = _delivery(initialized, Clock())
        assert await delivery.deliver_due() == {"delivered": 1, "retrying": 0, "expired": 0}
        await delivery.aclose()
    claims = _verified(agency_side.posts[0].body.decode(), (await client.get("/jwks.json")).json(),
                       agency.client_id)
    assert (claims["request_id"], claims["state"], claims["documents"], claims["failure"]) == (
        r.json()["id"], "expired", [], None)


async def test_redirects_are_not_followed(manual: tuple[FastAPI, httpx.AsyncClient], initialized: Services,
                                          replays: Replays) -> None:
    _, client = manual
    await prepared(initialized, replays)
    agency = await register_agency(initialized, client)
    with receiver(200) as elsewhere, receiver(307, location=elsewhere.url) as agency_side:
        await _seal(client, agency, agency_side.url)
        await _sign_all(initialized)
        delivery = _delivery(initialized, Clock())
        assert await delivery.deliver_due() == {"delivered": 0, "retrying": 1, "expired": 0}
        await delivery.aclose()
    assert len(agency_side.posts) == 1 and elsewhere.posts == []
    (row,) = await _callbacks(initialized)
    assert row.last_status == 307 and row.state == "pending"


async def test_production_policy_refuses_non_public_addresses_unless_allowed(
        manual: tuple[FastAPI, httpx.AsyncClient], initialized: Services, replays: Replays) -> None:
    _, client = manual
    await prepared(initialized, replays)
    agency = await register_agency(initialized, client)
    with receiver(200) as agency_side:
        by_name = agency_side.url.replace("127.0.0.1", "localhost")  # a name that resolves to the loopback
        await _seal(client, agency, by_name)
        await _sign_all(initialized)
        clock = Clock()
        https_only = _delivery(initialized, clock, require_https=True)
        assert await https_only.deliver_due() == {"delivered": 0, "retrying": 1, "expired": 0}
        (row,) = await _callbacks(initialized)
        assert row.last_error == "the callback URL must be https, not http"
        clock.now = row.next_attempt_at
        refusing = _delivery(initialized, clock, refuse_private=True)
        assert await refusing.deliver_due() == {"delivered": 0, "retrying": 1, "expired": 0}
        (row,) = await _callbacks(initialized)
        assert row.last_error is not None and "not a public address" in row.last_error and row.last_status is None
        assert agency_side.posts == []  # nothing was sent
        clock.now = row.next_attempt_at
        allowing = _delivery(initialized, clock, refuse_private=True, allowed=("127.0.0.0/8", "::1/128"))
        assert await allowing.deliver_due() == {"delivered": 1, "retrying": 0, "expired": 0}
        for delivery in (https_only, refusing, allowing):
            await delivery.aclose()
    (post,) = agency_side.posts
    assert post.headers["host"] == by_name.split("/")[2]  # sent to the checked address, for the URL's host
    assert json.loads(base64.urlsafe_b64decode(post.body.split(b".")[1] + b"==="))["state"] == "completed"


async def test_a_body_signed_before_a_key_rotation_is_signed_again_with_the_same_claims(
        manual: tuple[FastAPI, httpx.AsyncClient], initialized: Services, replays: Replays) -> None:
    """A retired token key leaves the JWKS after ACAR_TOKEN_MAX_LIFETIME_SECONDS: a callback still being retried is
    signed again with the current key, its claims unchanged (same jti: the agency still sees one callback)."""
    _, client = manual
    await prepared(initialized, replays)
    agency = await register_agency(initialized, client)
    with receiver(500, 200) as agency_side:
        await _seal(client, agency, agency_side.url)
        await _sign_all(initialized)
        clock = Clock()
        delivery = _delivery(initialized, clock)
        assert await delivery.deliver_due() == {"delivered": 0, "retrying": 1, "expired": 0}
        async with initialized.sessions() as session, session.begin():
            await initialized.token_keys.rotate(session, algorithms=["ES256"], force=True, actor="test")
        (row,) = await _callbacks(initialized)
        clock.now = row.next_attempt_at
        assert await delivery.deliver_due() == {"delivered": 1, "retrying": 0, "expired": 0}
        await delivery.aclose()
    first, second = (post.body.decode() for post in agency_side.posts)
    (row,) = await _callbacks(initialized)
    assert row.body == second != first
    assert first.split(".")[1] == second.split(".")[1]  # the same claims, byte for byte
    assert jwt.get_unverified_header(second)["kid"] == (await initialized.token_keys.signer("ES256")).kid
    assert jwt.get_unverified_header(first)["kid"] != jwt.get_unverified_header(second)["kid"]
    jwks = (await client.get("/jwks.json")).json()
    assert _verified(first, jwks, agency.client_id) == _verified(second, jwks, agency.client_id)


async def test_a_real_acar_worker_signs_and_calls_back(
        manual: tuple[FastAPI, httpx.AsyncClient], initialized: Services, replays: Replays, cli_env: dict[str, str],
        tmp_path: Path) -> None:
    """`acar worker` (a real process on the same database) runs the callbacks' delivery beside the signing."""
    _, client = manual
    await prepared(initialized, replays)
    agency = await register_agency(initialized, client)
    log = tmp_path / "worker.log"
    with receiver(200) as agency_side, log.open("ab") as out:
        request_id = await _seal(client, agency, agency_side.url)
        worker = await asyncio.create_subprocess_exec(ACAR, "worker", "--interval", "0.2", env=cli_env, stdout=out,
                                                      stderr=out, start_new_session=True)
        try:
            for _ in range(1200):  # until the worker recorded the delivery (the POST alone comes just before)
                if worker.returncode is not None or any(r.state != "pending" for r in await _callbacks(initialized)):
                    break
                await asyncio.sleep(0.05)
            assert worker.returncode is None, log.read_text()
        finally:
            worker.send_signal(signal.SIGTERM)
            assert await asyncio.wait_for(worker.wait(), 30) == 0, log.read_text()
    assert len(agency_side.posts) == 1, log.read_text()
    claims = _verified(agency_side.posts[0].body.decode(), (await client.get("/jwks.json")).json(),
                       agency.client_id)
    assert (claims["request_id"], claims["state"], len(claims["documents"])) == (request_id, "completed", 2)
    (row,) = await _callbacks(initialized)
    assert row.state == "delivered" and row.attempts == 1


async def test_production_policy_over_tls_sends_to_the_checked_address_and_verifies_the_host_name(
        manual: tuple[FastAPI, httpx.AsyncClient], initialized: Services, replays: Replays, tmp_path: Path) -> None:
    """https with the production policy: the request goes to the resolved, checked address, and TLS still verifies
    the certificate for the URL's host name (SNI localhost); a URL naming the address itself does not match that
    certificate and is refused by TLS, so the check is really made."""
    _, client = manual
    await prepared(initialized, replays)
    agency = await register_agency(initialized, client)
    server_tls, pem = _localhost_tls(tmp_path)
    trusting = ssl.create_default_context(cadata=pem.decode())
    with receiver(200, tls=server_tls) as agency_side:
        await _seal(client, agency, agency_side.url.replace("localhost", "127.0.0.1"))  # the address: no match
        await _seal(client, agency, agency_side.url)
        await _sign_all(initialized)
        async with httpx.AsyncClient(verify=trusting, timeout=5, follow_redirects=False, trust_env=False) as http:
            delivery = _delivery(initialized, Clock(), refuse_private=True, require_https=True,
                                 allowed=("127.0.0.0/8", "::1/128"), http=http)
            assert await delivery.deliver_due() == {"delivered": 1, "retrying": 1, "expired": 0}
    rows = {row.url: row for row in await _callbacks(initialized)}
    by_name, by_address = rows[agency_side.url], rows[agency_side.url.replace("localhost", "127.0.0.1")]
    assert by_name.state == "delivered" and by_name.last_status == 200
    assert by_address.state == "pending" and by_address.last_error is not None
    assert "CERTIFICATE_VERIFY_FAILED" in by_address.last_error or "certificate" in by_address.last_error.lower()
    (post,) = agency_side.posts
    assert post.headers["host"] == agency_side.url.split("/")[2]
    assert post.body.decode() == by_name.body


async def test_concurrent_deliveries_send_each_callback_once(
        manual: tuple[FastAPI, httpx.AsyncClient], initialized: Services, replays: Replays) -> None:
    """Three deliveries claiming at once (PostgreSQL: FOR UPDATE SKIP LOCKED; SQLite: one writer at a time) take
    disjoint callbacks: each is POSTed once."""
    _, client = manual
    await prepared(initialized, replays)
    agency = await register_agency(initialized, client)
    with receiver(200) as agency_side:
        ids = [await _seal(client, agency, agency_side.url) for _ in range(6)]
        await _sign_all(initialized)
        clock = Clock()
        policy = CallbackPolicy(issuer=ISSUER, max_age=dt.timedelta(hours=1), timeout=5.0, refuse_private=False,
                                require_https=False)
        deliveries = [CallbackDelivery(SqlCallbackUnits(initialized.direct),
                                       lambda: initialized.token_keys.signer("ES256"), policy, clock=clock, batch=2,
                                       name=f"d{i}") for i in range(3)]
        counts = await asyncio.gather(*(delivery.deliver_due() for delivery in deliveries))
        while sum(c["delivered"] for c in counts) < len(ids):  # a delivery that found none claimable yet
            counts.append(await deliveries[0].deliver_due())
            assert counts[-1]["delivered"], counts
        for delivery in deliveries:
            await delivery.aclose()
    assert sum(c["delivered"] for c in counts) == len(ids) == len(agency_side.posts)
    jwks = (await client.get("/jwks.json")).json()
    seen = [_verified(post.body.decode(), jwks, agency.client_id) for post in agency_side.posts]
    assert sorted(c["request_id"] for c in seen) == sorted(ids) and len({c["jti"] for c in seen}) == len(ids)
    assert {(row.state, row.attempts) for row in await _callbacks(initialized)} == {("delivered", 1)}


async def test_finished_callbacks_go_with_the_retention_pending_ones_stay(
        manual: tuple[FastAPI, httpx.AsyncClient], initialized: Services, replays: Replays) -> None:
    _, client = manual
    await prepared(initialized, replays)
    agency = await register_agency(initialized, client)
    with receiver(200) as delivered_side, receiver(500) as failing_side:
        await _seal(client, agency, delivered_side.url)
        failing = await _seal(client, agency, failing_side.url)
        await _sign_all(initialized)
        delivery = _delivery(initialized, Clock())
        assert await delivery.deliver_due() == {"delivered": 1, "retrying": 1, "expired": 0}
        await delivery.aclose()
    later = utcnow() + dt.timedelta(hours=initialized.settings.signing_retention_hours + 1)
    assert (await signing_housekeeping(initialized, later))["signing_requests_purged"] == 2
    assert [(row.request_id, row.state) for row in await _callbacks(initialized)] == [(failing, "pending")]
    events = await _events(initialized, "signing.callback.")
    assert [e.event_type for e in events] == ["signing.callback.delivered"]  # the trail stays


async def test_a_failed_request_calls_back_with_its_failure(
        manual: tuple[FastAPI, httpx.AsyncClient], initialized: Services, replays: Replays) -> None:
    """A revoked seal fails the request (seal_unusable): the callback carries the failure and no documents."""
    _, client = manual
    await prepared(initialized, replays)
    agency = await register_agency(initialized, client)
    async with initialized.sessions() as session, session.begin():
        serial = (await session.execute(select(IssuedCertificate.serial_hex).where(
            IssuedCertificate.profile == "legal-person-seal"))).scalar_one()
        await initialized.pki.revoke(session, serial, "keyCompromise", actor="test")
    with receiver(200) as agency_side:
        request_id = await _seal(client, agency, agency_side.url)
        await _sign_all(initialized)
        delivery = _delivery(initialized, Clock())
        assert await delivery.deliver_due() == {"delivered": 1, "retrying": 0, "expired": 0}
        await delivery.aclose()
    failed = (await client.get(f"{API}/{request_id}", headers=agency.headers)).json()
    claims = _verified(agency_side.posts[0].body.decode(), (await client.get("/jwks.json")).json(),
                       agency.client_id)
    assert (claims["request_id"], claims["state"], claims["documents"]) == (request_id, "failed", [])
    assert claims["failure"]["code"] == "seal_unusable" == failed["failure"]["code"]
    assert claims["failure"]["detail"] == failed["failure"]["detail"]


async def test_a_rejected_request_calls_back_with_its_state(
        manual: tuple[FastAPI, httpx.AsyncClient], initialized: Services, replays: Replays) -> None:
    """The signer's rejection (the approval's store, its unit) records the callback with the new state."""
    _, client = manual
    await prepared(initialized, replays)
    agency = await register_agency(initialized, client, seal=False)
    with receiver(200) as agency_side:
        r = await client.post(API, headers=agency.headers, json={
            "mode": "sign", "signer_fin": "5abcd12", "callback_url": agency_side.url,
            "documents": [{"content": _b64(minimal_pdf())}]})
        assert r.status_code == 201, r.text
        async with initialized.direct.transaction() as tx:
            assert await SqlApprovalStore(tx).reject_request(r.json()["id"], now=utcnow())
        async with initialized.direct.transaction() as tx:
            assert not await SqlApprovalStore(tx).reject_request(r.json()["id"], now=utcnow())  # decided once
        delivery = _delivery(initialized, Clock())
        assert await delivery.deliver_due() == {"delivered": 1, "retrying": 0, "expired": 0}
        await delivery.aclose()
    (post,) = agency_side.posts
    claims = _verified(post.body.decode(), (await client.get("/jwks.json")).json(), agency.client_id)
    assert (claims["request_id"], claims["state"], claims["documents"], claims["failure"]) == (
        r.json()["id"], "rejected", [], None)


async def test_stop_ends_the_worker_and_the_delivery_between_batches(initialized: Services) -> None:
    """SigningServices.run (the worker and the callbacks' delivery) returns by itself after stop: the app's shutdown
    and acar worker's first signal end it without cancelling a task inside a unit of work."""
    running = asyncio.create_task(initialized.signing.run(0.05))
    await asyncio.sleep(0.2)  # a few idle passes of both loops
    assert not running.done()
    initialized.signing.stop()
    await asyncio.wait_for(running, timeout=30)
    assert running.exception() is None

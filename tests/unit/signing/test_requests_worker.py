"""The durable worker on the real database (both; concurrency on PostgreSQL): every document signed once, leases
taken over after they run out, a lost claim never delivers, refusals fail the request and cancel its other jobs,
transient failures are retried, the retention deletes the bytes and keeps the digests."""

from __future__ import annotations

import asyncio
import datetime as dt
import hashlib
from collections import Counter
from typing import Any, BinaryIO

import pytest
from sqlalchemy import select, update

from api.app import signing_housekeeping
from api.deps import Services
from keys.models import IssuedCertificate
from signing.core.errors import TimestampUnavailable
from signing.core.interfaces import RequestState, RequestView
from signing.core.jobs import SPOOL_BYTES, SigningWorker
from signing.core.pades import SignatureOptions, SignatureResult, SigningCredentials
from signing.core.requests import Submission, SubmittedDocument
from signing.sql.models import SigningDocument, SigningJob
from signing.sql.seals import SealCredentials, assign_seal
from signing.sql.store import CONTENT_CHUNK, SqlSigningUnits
from storage.audit import AuditEvent
from storage.base import utcnow
from tests.conftest import TEST_DB
from tests.pdf_tools import large_pdf
from tests.signing_tools import ORGANIZATION, VOEN, minimal_pdf, prepared, verify_signed

CLIENT = "agency-1"


class Clock:
    def __init__(self) -> None:
        self.now = utcnow()

    def __call__(self) -> dt.datetime:
        return self.now


async def _sealed_request(services: Services, documents: int) -> RequestView:
    async with services.sessions() as session, session.begin():
        await assign_seal(session, ca=services.pki.ca, store=services.key_store, client_id=CLIENT, voen=VOEN,
                          organization=ORGANIZATION, actor="test")
    submission = Submission(mode="seal", documents=[
        SubmittedDocument(f"d{n}.pdf", minimal_pdf(1, f"doc {n}")) for n in range(1, documents + 1)])
    view, created = await services.signing.requests.create(CLIENT, submission)
    assert created and view.state is RequestState.APPROVED
    return view


def _worker(services: Services, name: str, *, engine: Any = None, clock: Any = utcnow,
            lease: float = 60) -> SigningWorker:
    return SigningWorker(SqlSigningUnits(services.direct), engine or services.signing.engine,
                         SealCredentials(services.sessions, services.pki.ca, ttl_seconds=0),
                         lease=dt.timedelta(seconds=lease), name=name, clock=clock)


async def _signed_events(services: Services, request_id: str) -> Counter[int]:
    async with services.sessions() as session:
        details = (await session.execute(select(AuditEvent.detail).where(
            AuditEvent.subject == request_id, AuditEvent.event_type == "signing.document.signed"))).scalars().all()
    return Counter(int(d["n"]) for d in details)


async def _drain(worker: SigningWorker) -> int:
    total = 0
    while done := await worker.work_once():
        total += done
    return total


@pytest.mark.postgresql
async def test_concurrent_workers_sign_each_document_once(initialized: Services) -> None:
    """Four workers claim at once (SELECT ... FOR UPDATE SKIP LOCKED): every document is signed once, by one."""
    assert TEST_DB == "postgresql", "run with ACAR_TEST_DB=postgresql (make test deselects it on SQLite)"
    root = await prepared(initialized)
    view = await _sealed_request(initialized, 16)
    workers = [_worker(initialized, f"w{i}") for i in range(4)]
    counts = await asyncio.gather(*(_drain(w) for w in workers))
    assert sum(counts) == 16
    assert await _signed_events(initialized, view.id) == Counter(range(1, 17))
    async with initialized.sessions() as session:
        jobs = (await session.execute(select(SigningJob.state, SigningJob.attempts))).all()
    assert sorted(jobs) == [("done", 1)] * 16
    done = await initialized.signing.requests.get(view.id, CLIENT)
    assert done.state is RequestState.COMPLETED
    _, signed = await initialized.signing.requests.signed_document(view.id, CLIENT, 7)
    await verify_signed(signed, root)


@pytest.mark.postgresql
async def test_a_job_another_worker_is_claiming_is_skipped_not_waited_for(initialized: Services) -> None:
    assert TEST_DB == "postgresql", "run with ACAR_TEST_DB=postgresql (make test deselects it on SQLite)"
    await prepared(initialized)
    view = await _sealed_request(initialized, 2)
    async with initialized.sessions() as other, other.begin():
        await other.execute(select(SigningJob).where(SigningJob.n == 1).with_for_update())
        async with asyncio.timeout(5):
            assert await _worker(initialized, "w").work_once() == 1
    assert await _signed_events(initialized, view.id) == Counter([2])


async def test_an_expired_lease_is_taken_over_and_the_lost_claim_never_delivers(initialized: Services) -> None:
    await prepared(initialized)
    view = await _sealed_request(initialized, 1)
    clock = Clock()
    units = SqlSigningUnits(initialized.direct)
    async with units.writing() as store:  # worker A claims and "dies" before finishing
        (claimed,) = await store.claim_jobs(now=clock.now, lease_until=clock.now + dt.timedelta(seconds=60),
                                            leased_by="a:1", limit=5)
    b = _worker(initialized, "b", clock=clock)
    assert await b.work_once() == 0  # the lease still holds
    clock.now += dt.timedelta(seconds=61)
    assert await b.work_once() == 1
    async with units.writing() as store:  # A comes back with its output: refused, nothing written
        assert not await store.finish_job(claimed, signed=b"%PDF-late", signed_sha256="0" * 64, now=clock.now,
                                          actor="a")
    request, signed = await initialized.signing.requests.signed_document(view.id, CLIENT, 1)
    assert request.state is RequestState.COMPLETED and signed.startswith(b"%PDF-1.7")
    assert request.documents[0].signed_sha256 != "0" * 64
    assert await _signed_events(initialized, view.id) == Counter([1])


class _Flaky:
    """The service's engine, failing its first `failures` calls as an unreachable TSA would."""

    def __init__(self, engine: Any, failures: int, error: Exception | None = None) -> None:
        self.error = error or ConnectionError("time-stamp authority unreachable")
        self.failures = failures
        self.calls = 0
        self._engine = engine

    async def sign(self, source: BinaryIO, output: BinaryIO, credentials: SigningCredentials,
                   options: SignatureOptions, *, actor: str) -> SignatureResult:
        self.calls += 1
        if self.calls <= self.failures:
            raise self.error
        return await self._engine.sign(source, output, credentials, options, actor=actor)


async def test_a_transient_failure_is_retried_with_backoff(initialized: Services) -> None:
    await prepared(initialized)
    view = await _sealed_request(initialized, 1)
    clock = Clock()
    worker = _worker(initialized, "w", engine=_Flaky(initialized.signing.engine, 1), clock=clock)
    assert await worker.work_once() == 1
    async with initialized.sessions() as session:
        job = (await session.execute(select(SigningJob))).scalar_one()
    assert job.state == "queued" and job.attempts == 1 and "unreachable" in (job.last_error or "")
    assert job.not_before == clock.now + dt.timedelta(seconds=5)
    assert await worker.work_once() == 0  # not due yet
    clock.now += dt.timedelta(seconds=6)
    assert await worker.work_once() == 1
    assert (await initialized.signing.requests.get(view.id, CLIENT)).state is RequestState.COMPLETED


async def test_an_outage_is_retried_until_the_attempts_run_out(initialized: Services) -> None:
    await prepared(initialized)
    view = await _sealed_request(initialized, 1)
    clock = Clock()
    flaky = _Flaky(initialized.signing.engine, 99, TimestampUnavailable("the TSA did not answer"))
    worker = SigningWorker(SqlSigningUnits(initialized.direct), flaky,
                           SealCredentials(initialized.sessions, initialized.pki.ca, ttl_seconds=0),
                           lease=dt.timedelta(seconds=60), max_attempts=2, name="w", clock=clock)
    await worker.work_once()
    clock.now += dt.timedelta(hours=1)
    await worker.work_once()
    failed = await initialized.signing.requests.get(view.id, CLIENT)
    assert failed.state is RequestState.FAILED and failed.failure_code == "timestamp_unavailable"
    assert "after 2 attempts" in (failed.failure_detail or "") and flaky.calls == 2


async def test_an_unusable_seal_fails_the_request_and_cancels_its_other_jobs(initialized: Services) -> None:
    await prepared(initialized)
    view = await _sealed_request(initialized, 3)
    async with initialized.sessions() as session, session.begin():
        serial = (await session.execute(select(IssuedCertificate.serial_hex).where(
            IssuedCertificate.profile == "legal-person-seal"))).scalar_one()
        await initialized.pki.revoke(session, serial, "keyCompromise", actor="test")
    worker = _worker(initialized, "w")
    assert await _drain(worker) == 1  # the first fails the request; the others are cancelled, never claimed
    failed = await initialized.signing.requests.get(view.id, CLIENT)
    assert failed.state is RequestState.FAILED and failed.failure_code == "seal_unusable"
    assert "revoked" in (failed.failure_detail or "")
    async with initialized.sessions() as session:
        states = sorted((await session.execute(select(SigningJob.state))).scalars().all())
        events = (await session.execute(select(AuditEvent.event_type).where(
            AuditEvent.subject == view.id))).scalars().all()
    assert states == ["failed"] * 3
    assert sorted(events) == ["signing.request.created", "signing.request.failed"]


async def test_a_document_larger_than_a_chunk_is_read_and_stored_in_chunks(initialized: Services) -> None:
    """A document over CONTENT_CHUNK (and SPOOL_BYTES: kept in a temporary file while signed) is read back in
    chunks and its signed form written in chunks, in the one transaction that finishes the job: byte for byte."""
    root = await prepared(initialized)
    pdf = large_pdf(CONTENT_CHUNK + 3 * 1024 * 1024)
    assert len(pdf) > CONTENT_CHUNK > SPOOL_BYTES
    async with initialized.sessions() as session, session.begin():
        await assign_seal(session, ca=initialized.pki.ca, store=initialized.key_store, client_id=CLIENT, voen=VOEN,
                          organization=ORGANIZATION, actor="test")
    view, _ = await initialized.signing.requests.create(CLIENT, Submission(
        mode="seal", level="B-B", documents=[SubmittedDocument("large.pdf", pdf)]))
    assert await _drain(_worker(initialized, "w")) == 1
    done = await initialized.signing.requests.get(view.id, CLIENT)
    assert done.state is RequestState.COMPLETED
    _, signed = await initialized.signing.requests.signed_document(view.id, CLIENT, 1)
    assert signed is not None and signed.startswith(pdf) and len(signed) < len(pdf) + 64 * 1024
    assert hashlib.sha256(signed).hexdigest() == done.documents[0].signed_sha256
    await verify_signed(signed, root)


async def test_an_input_that_does_not_match_its_digest_is_never_signed(initialized: Services) -> None:
    """What the worker reads back must be the document submitted (and in sign mode approved): another content
    under the same digest fails the request with input_mismatch and is not signed."""
    await prepared(initialized)
    view = await _sealed_request(initialized, 1)
    async with initialized.sessions() as session, session.begin():
        await session.execute(update(SigningDocument).values(content=minimal_pdf(1, "another document")))
    assert await _drain(_worker(initialized, "w")) == 1
    failed = await initialized.signing.requests.get(view.id, CLIENT)
    assert failed.state is RequestState.FAILED and failed.failure_code == "input_mismatch"
    assert await _signed_events(initialized, view.id) == Counter()


async def test_retention_deletes_the_bytes_and_keeps_the_digests(initialized: Services) -> None:
    await prepared(initialized)
    view = await _sealed_request(initialized, 2)
    await _drain(_worker(initialized, "w"))
    done = await initialized.signing.requests.get(view.id, CLIENT)
    assert done.state is RequestState.COMPLETED
    async with initialized.sessions() as session:  # the inputs went with their signatures
        assert (await session.execute(select(SigningDocument.content))).scalars().all() == [None, None]
    assert await signing_housekeeping(initialized, utcnow()) == {"signing_requests_expired": 0,
                                                                  "signing_requests_purged": 0}
    later = utcnow() + dt.timedelta(hours=initialized.settings.signing_retention_hours, minutes=1)
    assert await signing_housekeeping(initialized, later) == {"signing_requests_expired": 0,
                                                              "signing_requests_purged": 1}
    purged = await initialized.signing.requests.get(view.id, CLIENT)
    assert purged.purged and [d.signed_sha256 for d in purged.documents] == [
        d.signed_sha256 for d in done.documents]
    from signing.core.errors import DocumentDeleted

    with pytest.raises(DocumentDeleted):
        await initialized.signing.requests.signed_document(view.id, CLIENT, 1)
    async with initialized.sessions() as session:
        assert (await session.execute(select(SigningDocument.signed))).scalars().all() == [None, None]
        assert (await session.execute(select(SigningJob))).scalars().all() == []


async def test_pending_sign_requests_expire(initialized: Services) -> None:
    await prepared(initialized)
    view, _ = await initialized.signing.requests.create(CLIENT, Submission(
        mode="sign", signer_fin="5ABCD12", documents=[SubmittedDocument("a.pdf", minimal_pdf())]))
    assert view.state is RequestState.PENDING
    later = view.expires_at + dt.timedelta(seconds=1)
    assert (await signing_housekeeping(initialized, later))["signing_requests_expired"] == 1
    assert (await initialized.signing.requests.get(view.id, CLIENT)).state is RequestState.EXPIRED
    retention = dt.timedelta(hours=initialized.settings.signing_retention_hours, minutes=1)
    assert (await signing_housekeeping(initialized, later + retention))["signing_requests_purged"] == 1
    async with initialized.sessions() as session:  # an expired request's inputs go after the retention too
        assert (await session.execute(select(SigningDocument.content))).scalars().all() == [None]


async def test_a_stop_before_the_first_step_of_run_still_ends_it(initialized: Services) -> None:
    """A shutdown right after a start (the lifespan's stop before the worker's task first ran) ends the worker and
    the callbacks' delivery between jobs, instead of leaving them to the grace period's cancellation; `resume` lets
    a later run work again."""
    signing = initialized.signing
    task = asyncio.create_task(signing.run(3600))
    signing.stop()  # before the task took its first step
    await asyncio.wait_for(task, 10)
    signing.resume()
    task = asyncio.create_task(signing.run(3600))
    await asyncio.sleep(0.2)
    assert not task.done()  # working (waiting for its next tick) again
    signing.stop()
    await asyncio.wait_for(task, 10)

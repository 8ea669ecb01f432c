"""The durable signing worker (issue 13, "Durable work"): approved documents are jobs, signed exactly once.

Any number of workers on any number of nodes run `SigningWorker.run` against one database:

1. Claim: one writing unit takes up to `batch` due jobs (queued and due, or running with a lease that ran out:
   their worker died) with `SELECT ... FOR UPDATE SKIP LOCKED` on PostgreSQL (rows another worker is claiming are
   skipped, never waited for), or under SQLite's single write lock; each gets a lease (`leased_until`) and a
   fresh claim id (`leased_by`), and is committed as running before any signing starts.
2. Sign: the input is read in a reading unit and signed outside any transaction (no lock is held while the key
   store or the TSA work). A large input is read in chunks into a temporary file, and the signed output is
   written to one, then stored in chunks (signing.sql.store.CONTENT_CHUNK): the worker never holds a large
   document more than once beside pyHanko's own buffer (issue 13: under 400 MB while signing a 50 MB PDF).
   What is read back must match the digest submitted (and, in sign mode, approved) before it is signed.
3. Finish: one writing unit writes the signed PDF and marks the job done *only if the claim still holds the job*
   (`WHERE leased_by = <this claim>`); so a worker that was too slow, or killed between signing and committing,
   never delivers: its lease runs out, another claim signs the document again, and only the committed one is
   ever delivered. Each document is signed exactly once in the delivered result.

On behalf of a legal entity (issue 16): before a document of such a request is signed, and again after, just before
the signed document is written, the signer's mandate with the power "sign_declarations" is checked at that moment
(MandateChecker, the registry through api/); a mandate revoked or lapsed since the approval fails the request with
`mandate_invalid` (its reason in the detail and the callback) and nothing is signed or delivered. The signature is
made with the key fixed at the approval (the entity's seal, or the signer's own with a claimed role naming the
entity, signing.core.pades.ClaimedRole); signing.document.signed records the person, entity and mandate.

Failures: a SigningError (the document or the request cannot be signed: a damaged PDF, an unusable certificate)
fails the job, its document and its request with the error's code and detail, and cancels the request's other
jobs. A SigningError of status 503 (no time-stamp, no revocation data: an outage) and anything else (a database
outage, a crash of the engine) is transient: the job is retried with exponential backoff (5 s doubling to 10
minutes) up to `max_attempts`, then fails the request with the error's code (`signing_failed` for the others).
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import hashlib
import io
import logging
import os
import secrets
import socket
import tempfile
from collections.abc import Callable, Mapping
from typing import Any, BinaryIO, Final, Protocol

from signing.core.approval import refusal_detail
from signing.core.errors import MandateInvalid, SigningError
from signing.core.interfaces import (
    ClaimedJob,
    EntityForm,
    JobWork,
    MandateCheck,
    MandateChecker,
    MandateRefusal,
    SigningStore,
    SigningUnits,
)
from signing.core.pades import ClaimedRole, SignatureOptions, SignatureResult, SigningCredentials, VisibleSignature

log = logging.getLogger("acar.signing.worker")

FIRST_RETRY: Final = 5.0
"""Seconds before a transient failure is retried; each retry waits twice as long ..."""
MAX_RETRY: Final = 600.0
"""... up to ten minutes."""
WORKER_ACTOR: Final = "signing-worker"
SPOOL_BYTES: Final = 8 * 1024 * 1024
"""A document larger than this is kept in a temporary file (the system's temporary directory, unlinked at once)
while it is signed, input and output; a smaller one in memory."""
TRANSIENT_STATUS: Final = 503
"""A SigningError with this status (TimestampUnavailable, ValidationDataUnavailable: the TSA or a revocation source
did not answer) is retried like any other transient failure; every other SigningError fails the request."""


class DocumentSigner(Protocol):
    """The PAdES engine (signing.core.pades.PadesEngine.sign)."""

    async def sign(self, source: BinaryIO, output: BinaryIO, credentials: SigningCredentials,
                   options: SignatureOptions, *, actor: str) -> SignatureResult: ...


class CredentialSource(Protocol):
    """The key and certificate chain a request signs with (signing.sql.seals.SealCredentials)."""

    async def credentials(self, key_id: str) -> SigningCredentials: ...


class SigningFailed(SigningError):
    """A document could not be signed after every attempt (transient failures each time)."""

    code = "signing_failed"
    status_code = 500
    title = "The document could not be signed"


def retry_delay(attempts: int) -> dt.timedelta:
    exponent = min(max(attempts, 1) - 1, 20)
    return dt.timedelta(seconds=min(FIRST_RETRY * 2**exponent, MAX_RETRY))


def _buffer(size: int) -> BinaryIO:
    """Where a document of `size` bytes is kept while it is signed (SPOOL_BYTES)."""
    return tempfile.TemporaryFile() if size > SPOOL_BYTES else io.BytesIO()  # the caller closes it


class InputMismatch(SigningError):
    """The input read back from the store is not the document whose digest was submitted and approved."""

    code = "input_mismatch"
    status_code = 500
    title = "The stored document does not match its digest"


def worker_name() -> str:
    """host:pid, as the claims and the logs name this worker."""
    return f"{socket.gethostname()[:40]}:{os.getpid()}"


class SigningWorker:
    """Claims and signs jobs (see module docstring). `run` loops until cancelled; `kick` wakes it at once."""

    def __init__(self, units: SigningUnits, engine: DocumentSigner, credentials: CredentialSource, *,
                 lease: dt.timedelta, batch: int = 1, max_attempts: int = 5, name: str | None = None,
                 clock: Callable[[], dt.datetime], finished: Callable[[], None] | None = None,
                 mandates: MandateChecker | None = None) -> None:
        if batch < 1 or max_attempts < 1 or lease <= dt.timedelta(0):
            raise ValueError("batch and max_attempts must be at least 1 and the lease positive")
        self._units = units
        self._engine = engine
        self._credentials = credentials
        self._lease = lease
        self._batch = batch
        self._max_attempts = max_attempts
        self.name = name or worker_name()
        self._clock = clock
        self._wake = asyncio.Event()
        self._finished = finished
        """Called after a job's outcome is committed (the completion callbacks' delivery is woken by it)."""
        self._stopping = False
        self._mandates = mandates
        """The registry's mandates (requests on behalf of a legal entity); None refuses such requests."""

    def kick(self) -> None:
        """Work now (a request was just stored) instead of at the next tick."""
        self._wake.set()

    def stop(self) -> None:
        """End `run` after the job in hand (a graceful shutdown): a task cancelled inside a unit of work could
        leave its connection mid-transaction (on SQLite, holding the write lock) while the process goes on."""
        self._stopping = True
        self._wake.set()

    def resume(self) -> None:
        """Let `run` work again after `stop`. Called before its task is created, never inside `run`: a `stop` that
        comes before the new task's first step (a shutdown right after a start) must still end it."""
        self._stopping = False

    async def run(self, interval: float) -> None:
        """Sign what is due, then wait `interval` seconds or for a kick; until cancelled. A database outage is
        logged and tried again at the next tick, never ends the loop; `stop` ends it between jobs."""
        while not self._stopping:
            self._wake.clear()
            done = 0
            try:
                done = await self.work_once()
            except Exception:
                log.exception("signing.worker_failed", extra={"worker": self.name})
            if done:
                continue  # more may be due
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(interval):
                    await self._wake.wait()

    async def work_once(self) -> int:
        """Claim one batch and sign it; how many jobs were claimed."""
        now = self._clock()
        claim_id = f"{self.name}:{secrets.token_hex(6)}"[:64]
        async with self._units.writing() as store:
            jobs = await store.claim_jobs(now=now, lease_until=now + self._lease, leased_by=claim_id,
                                          limit=self._batch)
        for job in jobs:
            await self._process(job)
        return len(jobs)

    async def _process(self, job: ClaimedJob) -> None:
        async with self._units.reading() as store:
            work = await store.job_work(job)
            source = await _read_input(store, work) if work is not None else None
        if work is None or source is None:
            return  # the claim was lost, or the document was signed or deleted meanwhile
        with source, _buffer(work.size) as output:
            try:
                represented = await self._representation(work)
                result = await self._sign(work, source, output, represented)
                if represented is not None:  # again: a mandate revoked while the document was signed
                    represented = await self._representation(work)
            except SigningError as exc:
                if exc.status_code != TRANSIENT_STATUS:
                    await self._fail(job, exc.code, exc.detail,
                                     audit=exc.audit if isinstance(exc, MandateInvalid) else None)
                    return
                await self._retry(job, exc.code, f"{exc.code}: {exc.detail}")
                return
            except Exception as exc:  # transient: retried with backoff (module docstring)
                log.exception("signing.attempt_failed", extra={"request": job.request_id, "n": job.n})
                await self._retry(job, SigningFailed.code, f"{type(exc).__name__}: {str(exc)[:300]}")
                return
            source.close()  # the input: only the output is held while it is written
            output.seek(0)
            now = self._clock()
            async with self._units.writing() as store:
                written = await store.finish_job(
                    job, signed=output, signed_sha256=result.sha256, now=now, actor=WORKER_ACTOR,
                    detail={"level": work.level.value,
                            **({**represented.audit(), "form": work.entity_form} if represented is not None else {})})
        if not written:
            log.warning("signing.lease_lost", extra={"request": job.request_id, "n": job.n, "worker": self.name})
        elif self._finished is not None:
            self._finished()

    async def _representation(self, work: JobWork) -> MandateCheck | None:
        """None for a request in the signer's own name; else the signer's valid mandate for the entity now, or
        MandateInvalid (the request fails, nothing is signed)."""
        if work.entity_voen is None:
            return None
        if self._mandates is None or work.signer_fin is None:
            raise MandateInvalid("no registry of mandates is available to this worker",
                                 reason=MandateRefusal.NO_MANDATE)
        check = await self._mandates.check(work.signer_fin, work.entity_voen, at=self._clock())
        if not check.valid:
            reason = check.refusal or MandateRefusal.NO_MANDATE
            raise MandateInvalid(f"at signing time, {refusal_detail(check)} ({reason})", reason=reason,
                                 audit={"representation": {"person_id": check.person_id, "fin": check.fin,
                                                           "voen": check.voen, "refusal": reason.value}})
        return check

    async def _claimed_role(self, work: JobWork, represented: MandateCheck | None) -> ClaimedRole | None:
        """The claimed role of a person-form signature for an entity (its name as configured for signing)."""
        if represented is None or work.entity_form is not EntityForm.PERSON:
            return None
        async with self._units.reading() as store:
            entity = await store.signing_entity(represented.voen)
        organization = entity.organization if entity is not None else represented.entity_name[:64]
        return ClaimedRole(voen=represented.voen, organization=organization)

    async def _sign(self, work: JobWork, source: BinaryIO, output: BinaryIO,
                    represented: MandateCheck | None = None) -> SignatureResult:
        source.seek(0)
        digest = hashlib.sha256()
        while block := source.read(1024 * 1024):
            digest.update(block)
        if digest.hexdigest() != work.sha256:
            raise InputMismatch(f"document {work.n} read back from the store does not match its SHA-256")
        if work.key_id is None:
            raise SigningFailed("the request names no signing key")
        credentials = await self._credentials.credentials(work.key_id)
        visible = None
        if work.placement is not None:
            visible = VisibleSignature(page=work.placement.page, box=work.placement.box)
        options = SignatureOptions(level=work.level, reason=work.reason, location=work.location, visible=visible,
                                   claimed_role=await self._claimed_role(work, represented))
        return await self._engine.sign(source, output, credentials, options,
                                       actor=f"{work.client_id}:{work.request_id}")

    async def _retry(self, job: ClaimedJob, code: str, error: str) -> None:
        """Give the job back for a later attempt, or fail it with `code` once its attempts are spent."""
        if job.attempts >= self._max_attempts:
            await self._fail(job, code, f"document {job.n} could not be signed after {job.attempts} attempts "
                             f"(last: {error})")
            return
        now = self._clock()
        async with self._units.writing() as store:
            await store.retry_job(job, error=error, not_before=now + retry_delay(job.attempts), now=now)

    async def _fail(self, job: ClaimedJob, code: str, detail: str,
                    audit: Mapping[str, Any] | None = None) -> None:
        log.warning("signing.document_failed", extra={"request": job.request_id, "n": job.n, "code": code})
        async with self._units.writing() as store:
            await store.fail_job(job, code=code, detail=detail[:500], now=self._clock(), actor=WORKER_ACTOR,
                                 audit=audit)
        if self._finished is not None:
            self._finished()


async def _read_input(store: SigningStore, work: JobWork) -> BinaryIO | None:
    """The claimed job's input, read chunk by chunk (signing.sql.store.CONTENT_CHUNK) into memory or, when large, a
    temporary file; None when it is gone (signed by another claim, or deleted)."""
    if work.content is None:
        return None
    source = _buffer(work.size)
    source.write(work.content)
    while (offset := source.tell()) < work.size:
        chunk = await store.read_content(work.request_id, work.n, offset)
        if not chunk:
            source.close()
            return None
        source.write(chunk)
    return source

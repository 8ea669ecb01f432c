"""The request service's rules on in-memory stores (signing.core.requests): field checks and their codes, the
Idempotency-Key semantics (same body -> same request, another body -> 409, a concurrent first use), seals, and the
state machine. The SQL store is exercised by test_requests_worker.py and the API tests."""

from __future__ import annotations

import contextlib
import datetime as dt
import hashlib
from collections.abc import AsyncIterator, Mapping
from dataclasses import replace
from typing import Any

import pytest

from signing.core import errors
from signing.core.inspect import InputPolicy
from signing.core.interfaces import (
    DocumentView,
    Mode,
    NewRequest,
    RequestState,
    RequestView,
    Seal,
)
from signing.core.levels import PadesLevel
from signing.core.requests import (
    TRANSITIONS,
    Inspected,
    RequestPolicy,
    RequestService,
    Submission,
    SubmittedDocument,
    body_digest,
    can_move,
    clean_filename,
    parse_callback,
    parse_placement,
    policy_inspector,
)
from tests.pdf_tools import hybrid_reference_pdf, simple_pdf
from tests.signing_tools import minimal_pdf

NOW = dt.datetime(2026, 12, 6, 12, 0, tzinfo=dt.UTC)
POLICY = RequestPolicy(max_documents=3, max_document_bytes=100_000, allow_http_callback=False,
                       sign_lifetime=dt.timedelta(hours=72), seal_lifetime=dt.timedelta(hours=1))


class MemoryStore:
    """The parts of SigningStore the request service uses, on dictionaries; `race` makes the next insert lose to a
    concurrent request that used the same key first."""

    def __init__(self) -> None:
        self.requests: dict[str, NewRequest] = {}
        self.seals: dict[str, Seal] = {}
        self.events: list[tuple[str, str | None]] = []
        self.race: NewRequest | None = None

    def _view(self, request: NewRequest) -> RequestView:
        return RequestView(
            id=request.id, client_id=request.client_id, mode=request.mode, state=request.state, level=request.level,
            signer_fin=request.signer_fin, reason=request.reason, location=request.location,
            created_at=request.created_at, updated_at=request.created_at, expires_at=request.expires_at,
            failure_code=None, failure_detail=None, body_digest=request.body_digest, purged=False,
            documents=tuple(DocumentView(n=d.n, filename=d.filename, pages=d.pages, size=len(d.content),
                                         sha256=d.sha256, state="pending") for d in request.documents))

    async def insert_request(self, request: NewRequest) -> bool:
        if self.race is not None:
            self.requests[self.race.id], self.race = self.race, None
        if any(r.client_id == request.client_id and r.idempotency_key == request.idempotency_key is not None
               for r in self.requests.values()):
            return False
        self.requests[request.id] = request
        return True

    async def request_by_key(self, client_id: str, idempotency_key: str) -> RequestView | None:
        found = [r for r in self.requests.values() if (r.client_id, r.idempotency_key) == (client_id, idempotency_key)]
        return self._view(found[0]) if found else None

    async def get_request(self, request_id: str, client_id: str) -> RequestView | None:
        found = self.requests.get(request_id)
        return self._view(found) if found is not None and found.client_id == client_id else None

    async def seal_of(self, client_id: str) -> Seal | None:
        return self.seals.get(client_id)

    async def audit(self, event_type: str, *, actor: str, subject: str | None = None,
                    detail: Mapping[str, Any] | None = None) -> None:
        self.events.append((event_type, subject))


class MemoryUnits:
    def __init__(self, store: MemoryStore) -> None:
        self.store = store
        self.opened = 0

    @contextlib.asynccontextmanager
    async def writing(self) -> AsyncIterator[Any]:
        self.opened += 1
        yield self.store

    @contextlib.asynccontextmanager
    async def reading(self) -> AsyncIterator[Any]:
        yield self.store


@pytest.fixture
def units() -> MemoryUnits:
    store = MemoryStore()
    store.seals["tax"] = Seal("tax", "1234567891", "Vergilər Nazirliyi", "key-1")
    return MemoryUnits(store)


@pytest.fixture
def service(units: MemoryUnits) -> RequestService:
    return RequestService(units, policy=POLICY, inspector=policy_inspector(InputPolicy(max_bytes=100_000)),
                          clock=lambda: NOW)


def _seal(**fields: Any) -> Submission:
    base: dict[str, Any] = {"mode": "seal", "documents": [SubmittedDocument("a.pdf", minimal_pdf())]}
    return Submission(**{**base, **fields})


async def test_a_seal_request_is_approved_with_the_seal_key(service: RequestService, units: MemoryUnits) -> None:
    pdf = minimal_pdf(2)
    view, created = await service.create("tax", _seal(documents=[SubmittedDocument("dir/ä.pdf", pdf)]))
    assert created and view.state is RequestState.APPROVED and view.level is PadesLevel.B_LT
    stored = units.store.requests[view.id]
    assert stored.key_id == "key-1" and stored.expires_at == NOW + POLICY.seal_lifetime
    assert [(d.filename, d.pages, d.sha256) for d in view.documents] == [("ä.pdf", 2, hashlib.sha256(pdf).hexdigest())]
    assert units.store.events == [("signing.request.created", view.id)]
    assert len(view.id) == 24  # 144 random bits


async def test_a_sign_request_is_pending_for_its_signer(service: RequestService, units: MemoryUnits) -> None:
    view, _ = await service.create("registry", Submission(mode="sign", signer_fin=" 5abcd12 ",
                                                          documents=[SubmittedDocument(None, minimal_pdf())]))
    assert view.state is RequestState.PENDING and view.signer_fin == "5ABCD12"
    assert view.documents[0].filename == "document-1.pdf"
    assert units.store.requests[view.id].key_id is None


@pytest.mark.parametrize(("submission", "error"), [
    (Submission(mode=None, documents=[]), errors.InvalidSigningRequest),
    (_seal(level="B-LTV"), errors.InvalidLevel),
    (_seal(signer_fin="5ABCD12"), errors.InvalidSigningRequest),
    (Submission(mode="sign", documents=[SubmittedDocument("a.pdf", minimal_pdf())]), errors.SignerRequired),
    (Submission(mode="sign", signer_fin="5ABCD1ß", documents=[SubmittedDocument("a.pdf", minimal_pdf())]),
     errors.InvalidFin),
    (_seal(documents=[]), errors.TooManyDocuments),
    (_seal(documents=[SubmittedDocument("a.pdf", minimal_pdf())] * 4), errors.TooManyDocuments),
    (_seal(documents=[SubmittedDocument("a.pdf", b"")]), errors.InvalidDocument),
    (_seal(documents=[SubmittedDocument("a\x00.pdf", minimal_pdf())]), errors.InvalidDocument),
    (_seal(documents=[SubmittedDocument("a.pdf", b"GIF89a")]), errors.SigningError),
    (_seal(documents=[SubmittedDocument("a.pdf", minimal_pdf() + b" " * 100_000)]), errors.SigningError),
    (_seal(placement={"page": 2, "box": [0, 0, 10, 10]}), errors.InvalidPlacement),
    (_seal(callback_url="http://agency.example/cb"), errors.InvalidCallbackUrl),
    (_seal(reason="x" * 201), errors.InvalidSigningRequest),
    (_seal(location="Bakı\nGəncə"), errors.InvalidSigningRequest),
    (_seal(reason="a\x00b"), errors.InvalidSigningRequest),
    (_seal(reason="lone \ud800 surrogate"), errors.InvalidSigningRequest),
    (_seal(reason="\uffff"), errors.InvalidSigningRequest),
    (_seal(callback_url="https://agency.example/\x00"), errors.InvalidCallbackUrl),
    (_seal(callback_url="https://agency.example/ə"), errors.InvalidCallbackUrl),
    (_seal(documents=[SubmittedDocument("a\ud800.pdf", minimal_pdf())]), errors.InvalidDocument),
])
async def test_refusals_name_their_reason_and_store_nothing(service: RequestService, units: MemoryUnits,
                                                            submission: Submission,
                                                            error: type[errors.SigningError]) -> None:
    with pytest.raises(error) as raised:
        await service.create("tax", submission)
    assert raised.value.code and raised.value.detail
    assert units.opened == 0 and units.store.requests == {}  # refused before any unit of work


async def test_the_policy_refuses_a_document_naming_it(service: RequestService) -> None:
    with pytest.raises(errors.SigningError) as raised:
        await service.create("tax", _seal(documents=[SubmittedDocument("a.pdf", minimal_pdf()),
                                                     SubmittedDocument("b.pdf", b"%PDF-1.7 garbage")]))
    assert raised.value.code == "damaged_pdf" and raised.value.detail.startswith("document 2 (b.pdf): ")


async def test_no_seal(service: RequestService, units: MemoryUnits) -> None:
    with pytest.raises(errors.NoSeal, match="acar seal assign other"):
        await service.create("other", _seal())
    units.store.seals["other"] = Seal("other", "1234567891", "X", None)
    with pytest.raises(errors.NoSeal):
        await service.create("other", _seal())


async def test_idempotency_key_same_body_same_request_other_body_refused(service: RequestService,
                                                                          units: MemoryUnits) -> None:
    first, created = await service.create("tax", _seal(reason="A"), idempotency_key="k1")
    again, created_again = await service.create("tax", _seal(reason="A"), idempotency_key="k1")
    assert created and not created_again and again.id == first.id
    with pytest.raises(errors.IdempotencyKeyReused) as raised:
        await service.create("tax", _seal(reason="B"), idempotency_key="k1")
    assert raised.value.status_code == 409
    other_client, created = await service.create("registry", Submission(
        mode="sign", signer_fin="5ABCD12", documents=[SubmittedDocument("a.pdf", minimal_pdf())]),
        idempotency_key="k1")
    assert created and other_client.id != first.id  # keys are per client
    unkeyed = [await service.create("tax", _seal(reason="A")) for _ in range(2)]
    assert unkeyed[0][0].id != unkeyed[1][0].id
    assert len(units.store.requests) == 4


async def test_a_concurrent_first_use_of_a_key_answers_the_winner(service: RequestService,
                                                                  units: MemoryUnits) -> None:
    winner, _ = await service.create("tax", _seal(), idempotency_key="elsewhere")
    units.store.race = replace(units.store.requests.pop(winner.id), idempotency_key="k2")
    view, created = await service.create("tax", _seal(), idempotency_key="k2")
    assert not created and view.id == winner.id
    units.store.race = replace(units.store.requests.pop(winner.id), idempotency_key="k3")
    with pytest.raises(errors.IdempotencyKeyReused):
        await service.create("tax", _seal(reason="another"), idempotency_key="k3")


def test_digest_is_of_the_meaning_not_the_encoding() -> None:
    assert body_digest({"a": 1, "b": [1, "ə"]}) == body_digest({"b": [1, "ə"], "a": 1})
    assert body_digest({"a": 1}) != body_digest({"a": 2})


def test_field_parsers() -> None:
    assert parse_placement({"box": [0, 0, 10.5, 20]}) is not None
    for bad in ({"page": 0, "box": [0, 0, 1, 1]}, {"page": True, "box": [0, 0, 1, 1]}, {"box": [1, 0, 0, 1]},
                {"box": [0, 0, float("inf"), 1]}, {"box": [0, 0, 1]}, {"page": 1, "box": [0, 0, 1, 1], "x": 1}):
        with pytest.raises(errors.InvalidPlacement):
            parse_placement(bad)
    assert parse_callback("http://localhost/cb", allow_http=True) == "http://localhost/cb"
    for bad in ("http://agency.example/cb", "https://user:pw@agency.example/cb", "https://agency.example/#f",
                "/relative", "https://" + "a" * 2000):
        with pytest.raises(errors.InvalidCallbackUrl):
            parse_callback(bad, allow_http=False)
    assert clean_filename("C:\\Users\\x\\müqavilə.pdf", 1) == "müqavilə.pdf"
    assert clean_filename("  ", 3) == "document-3.pdf"


def test_state_machine() -> None:
    assert can_move(RequestState.PENDING, RequestState.APPROVED)
    assert can_move(RequestState.APPROVED, RequestState.SIGNING)
    assert can_move(RequestState.SIGNING, RequestState.COMPLETED)
    assert not can_move(RequestState.COMPLETED, RequestState.SIGNING)
    assert not can_move(RequestState.PENDING, RequestState.COMPLETED)
    assert all(not TRANSITIONS[state] for state in RequestState if state.finished)
    assert set(TRANSITIONS) == set(RequestState)


def test_the_input_policy_inspects_and_repairs() -> None:
    inspect = policy_inspector(InputPolicy(max_bytes=20_000, max_pages=5))
    assert inspect(minimal_pdf(4)) == Inspected(pages=4, sha256=hashlib.sha256(minimal_pdf(4)).hexdigest())
    for refused, code in ((b"\x89PNG", "not_pdf"), (minimal_pdf() + b"%" * 20_000, "too_large"),
                          (minimal_pdf(6), "too_many_pages"),
                          (simple_pdf(catalog_extra=b"/OpenAction << /S /JavaScript /JS (app.alert(1)) >>"),
                           "active_content")):
        with pytest.raises(errors.PdfRefused) as raised:
            inspect(refused)
        assert raised.value.code == code
    hybrid = hybrid_reference_pdf()  # Word's hybrid-reference file: pyHanko will not sign it, qpdf rewrites it
    repaired = inspect(hybrid)
    assert repaired.content is not None and repaired.content != hybrid
    assert repaired.sha256 == hashlib.sha256(repaired.content).hexdigest()
    assert Mode("seal") is Mode.SEAL

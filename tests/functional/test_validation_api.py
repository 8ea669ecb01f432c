"""POST /api/v1/validations through HTTP on the app (both databases): Açar-signed PDFs (the `world` of the PAdES tests,
on the app's own PKI) validated as multipart and as raw application/pdf, the report checked against its OpenAPI
schema; a PDF without signature; refusals as problems and never a 5xx; the anonymous rate limit; an agency's token;
the body bound; validation "as of" a time; the audit row with the digest and no content; the PDF report."""

from __future__ import annotations

import asyncio
import dataclasses
import datetime as dt
import hashlib
import json
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
from sqlalchemy import select

from api.deps import Services
from api.schemas.validation import ValidationReportOut
from signing.core.levels import PadesLevel
from storage.audit import AuditEvent
from storage.ratelimit import Budget
from tests.pades_world import World, run_tool
from tests.signing_tools import minimal_pdf, register_agency

API = "/api/v1/validations"
PROBLEM = "application/problem+json"


@pytest.fixture
async def signed(world: World) -> bytes:
    return await world.sign(minimal_pdf(2, "Arayış"), PadesLevel.B_LT)



@pytest.fixture(autouse=True)
def _pki(world: World) -> World:
    """The app's own PKI (root CA, TSA, OCSP) for every test: the validation trusts the built-in root."""
    return world

async def _events(services: Services) -> list[AuditEvent]:
    async with services.sessions() as session:
        return list((await session.execute(select(AuditEvent).where(
            AuditEvent.event_type == "validation.performed").order_by(AuditEvent.occurred_at))).scalars())


def _passed(report: dict[str, object]) -> None:
    ValidationReportOut.model_validate(report)  # the documented schema, extra members forbidden
    assert report["all_passed"] is True, json.dumps(report, indent=1)[:3000]


async def test_multipart_and_raw_give_the_report_and_an_audit_row_without_content(
        client: httpx.AsyncClient, initialized: Services, signed: bytes) -> None:
    r = await client.post(API, files={"file": ("arayis.pdf", signed, "application/pdf")})
    assert r.status_code == 200, r.text
    assert r.headers["content-type"] == "application/json" and r.headers["cache-control"] == "no-store"
    report = r.json()
    _passed(report)
    digest = hashlib.sha256(signed).hexdigest()
    assert report["document"] == {"sha256": digest, "size": len(signed)}
    [signature] = report["signatures"]
    assert signature["indication"] == "TOTAL-PASSED" and signature["sub_indication"] is None
    assert signature["signer"]["name"] and signature["level"] == "B-LT"
    assert "built-in CA" in report["trust_sources"] and report["embedded_only"] is False

    raw = await client.post(API, content=signed, headers={"Content-Type": "application/pdf"})
    assert raw.status_code == 200, raw.text
    assert raw.json()["document"]["sha256"] == digest and raw.json()["all_passed"] is True

    events = await _events(initialized)
    assert len(events) == 2
    for event in events:
        assert event.actor == "anonymous" and event.subject == digest
        assert event.detail["sha256"] == digest and event.detail["size"] == len(signed)
        assert event.detail["indications"] == {"TOTAL-PASSED": 1, "TOTAL-FAILED": 0, "INDETERMINATE": 0}
        assert len(event.detail["address"]) == 32 and "127.0.0.1" not in json.dumps(event.detail)
        written = json.dumps(event.detail)
        assert len(written) < 600 and "Aray" not in written and "%PDF" not in written  # no content


async def test_a_pdf_without_signature_is_a_report_not_an_error(client: httpx.AsyncClient) -> None:
    r = await client.post(API, content=minimal_pdf(), headers={"Content-Type": "application/pdf"})
    assert r.status_code == 200, r.text
    assert r.json()["signatures"] == [] and r.json()["all_passed"] is False
    ValidationReportOut.model_validate(r.json())


@pytest.mark.parametrize(("body", "content_type", "status", "code"), [
    (b"GIF89a not a pdf", "application/pdf", 415, "not_pdf"),
    (b"%PDF-1.7\n1 0 obj << /Type /Catalog", "application/pdf", 422, None),
    (b"%PDF-1.7\n", "text/plain", 415, "unsupported_media_type"),
    (b"", "application/pdf", 415, "not_pdf"),
])
async def test_refused_input_is_a_problem_never_a_5xx(client: httpx.AsyncClient, body: bytes, content_type: str,
                                                      status: int, code: str | None) -> None:
    r = await client.post(API, content=body, headers={"Content-Type": content_type})
    assert r.status_code == status, r.text
    assert r.headers["content-type"] == PROBLEM
    if code is not None:
        assert r.json()["type"] == f"urn:acar:problem:{code}"


async def test_multipart_refusals(client: httpx.AsyncClient) -> None:
    r = await client.post(API, files={"document": ("a.pdf", minimal_pdf(), "application/pdf")})
    assert r.status_code == 422 and r.json()["code"] == "invalid_request", r.text
    r = await client.post(API, data={"at": "2020-01-01"}, files={"other": ("x", b"x")})
    assert r.status_code == 422, r.text
    r = await client.post(API, data={"at": "yesterday"}, files={"file": ("a.pdf", minimal_pdf(), "application/pdf")})
    assert r.status_code == 422 and "RFC 3339" in r.json()["detail"], r.text
    future = (dt.datetime.now(dt.UTC) + dt.timedelta(days=1)).isoformat()
    r = await client.post(API, params={"at": future}, content=minimal_pdf(),
                          headers={"Content-Type": "application/pdf"})
    assert r.status_code == 422 and "future" in r.json()["detail"], r.text


async def test_a_document_over_the_bound_is_413_while_it_streams(client: httpx.AsyncClient,
                                                                 initialized: Services) -> None:
    initialized.settings.signing_max_document_bytes = 256 * 1024

    async def chunks() -> AsyncIterator[bytes]:  # no Content-Length: the route counts what it spools
        yield minimal_pdf()
        for _ in range(40):
            yield b"%" + b"x" * 8191 + b"\n"

    r = await client.post(API, content=chunks(), headers={"Content-Type": "application/pdf"})
    assert r.status_code == 413 and r.json()["type"] == "urn:acar:problem:too_large", r.text
    assert await _events(initialized) == []


async def test_anonymous_callers_are_rate_limited_and_agencies_are_not(client: httpx.AsyncClient,
                                                                       initialized: Services) -> None:
    limits = initialized.ratelimits
    limits.budgets = dataclasses.replace(limits.budgets,
                                         validation_anonymous=Budget.parse("validation_anonymous", "2/minute"))
    pdf = {"content": minimal_pdf(), "headers": {"Content-Type": "application/pdf"}}
    for _ in range(2):
        assert (await client.post(API, **pdf)).status_code == 200  # type: ignore[arg-type]
    # the third is refused; should a clock minute end in between, the sliding window counter still weighs the
    # previous minute's two almost whole, and the fourth is refused
    answers = [await client.post(API, **pdf) for _ in range(2)]  # type: ignore[arg-type]
    r = next((a for a in answers if a.status_code == 429), answers[-1])
    assert r.status_code == 429 and r.headers["content-type"] == PROBLEM, r.text
    assert int(r.headers["retry-after"]) > 0 and r.json()["code"] == "rate_limited"

    agency = await register_agency(initialized, client, scopes=("signing",), seal=False)
    r = await client.post(API, content=minimal_pdf(), headers={"Content-Type": "application/pdf", **agency.headers})
    assert r.status_code == 200, r.text
    events = await _events(initialized)
    anonymous = 2 + sum(a.status_code == 200 for a in answers)
    assert [e.actor for e in events] == ["anonymous"] * anonymous + [agency.client_id]
    r = await client.post(API, content=minimal_pdf(), headers={"Content-Type": "application/pdf",
                                                               "Authorization": "Bearer not-a-token"})
    assert r.status_code == 401 and "Bearer" in r.headers["www-authenticate"]


async def test_validation_as_of_a_time_uses_the_embedded_data(client: httpx.AsyncClient, signed: bytes) -> None:
    at = dt.datetime.now(dt.UTC)
    r = await client.post(API, data={"at": at.isoformat().replace("+00:00", "Z")},
                          files={"file": ("a.pdf", signed, "application/pdf")})
    assert r.status_code == 200, r.text
    report = r.json()
    ValidationReportOut.model_validate(report)
    assert report["embedded_only"] is True
    assert dt.datetime.fromisoformat(report["validation_time"]) == at
    assert len(report["signatures"]) == 1


async def test_accept_pdf_answers_the_report_as_a_pdf(client: httpx.AsyncClient, signed: bytes,
                                                      tmp_path: Path) -> None:
    r = await client.post(API, content=signed, headers={"Content-Type": "application/pdf",
                                                        "Accept": "application/pdf", "Accept-Language": "ru"})
    assert r.status_code == 200, r.text
    assert r.headers["content-type"] == "application/pdf" and r.headers["content-language"] == "ru"
    assert r.headers["content-disposition"].startswith("attachment;")
    path = tmp_path / "report.pdf"
    path.write_bytes(r.content)
    await run_tool("qpdf", "--check", path)
    text = await run_tool("pdftotext", path, "-")
    assert "Отчёт о проверке подписей" in text.replace("\u00a0", " ") and "Действительна" in text
    assert hashlib.sha256(signed).hexdigest() in text.replace("\n", "")


async def test_concurrent_validations_each_get_their_report(client: httpx.AsyncClient, signed: bytes) -> None:
    unsigned = minimal_pdf(1, "Başqa")
    answers = await asyncio.gather(
        client.post(API, content=signed, headers={"Content-Type": "application/pdf"}),
        client.post(API, content=unsigned, headers={"Content-Type": "application/pdf"}))
    assert [a.json()["document"]["sha256"] for a in answers] == [hashlib.sha256(signed).hexdigest(),
                                                                 hashlib.sha256(unsigned).hexdigest()]


def _hostile() -> list[tuple[str, bytes, str]]:
    from tests import pdf_tools

    catalog = b"<< /Type /Catalog /Pages 2 0 R >>"
    return [
        ("decompression bomb", pdf_tools.flate_bomb_pdf(), "inflation_bomb"),
        ("page tree cycle", pdf_tools.raw_pdf({
            1: catalog, 2: b"<< /Type /Pages /Kids [3 0 R] /Count 1 >>",
            3: b"<< /Type /Pages /Parent 2 0 R /Kids [4 0 R 2 0 R] /Count 1 >>",
            4: b"<< /Type /Page /Parent 3 0 R /MediaBox [0 0 595 842] >>"}), "reference_loop"),
        ("reference loop", pdf_tools.raw_pdf({
            1: b"<< /Type /Catalog /Pages 2 0 R /Lang 5 0 R >>", 2: b"<< /Type /Pages /Kids [3 0 R] /Count 1 >>",
            3: b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 595 842] >>", 5: b"6 0 R", 6: b"7 0 R", 7: b"5 0 R"}),
         "reference_loop"),
        ("too many pages", pdf_tools.simple_pdf(pages=501), "too_many_pages"),
    ]


@pytest.mark.parametrize(("name", "body", "code"), _hostile(), ids=[h[0] for h in _hostile()])
async def test_hostile_input_gets_the_signing_input_policy(client: httpx.AsyncClient, name: str, body: bytes,
                                                          code: str) -> None:
    """Issue 14 "Hostile inputs": the same input policy as signing (pages, loops, decompression bombs): a clear
    problem with the policy's code, never a 5xx (the bomb refused having inflated one bounded chunk)."""
    r = await client.post(API, content=body, headers={"Content-Type": "application/pdf"})
    assert r.status_code == 422, (name, r.text)
    assert r.headers["content-type"] == PROBLEM
    assert r.json()["code"] == code, r.json()

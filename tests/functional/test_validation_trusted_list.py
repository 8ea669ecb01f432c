"""POST /api/v1/validations with ACAR_VALIDATION_TRUSTED_LIST (both databases): the trusted list, an ETSI TS 119 612
list built by tests/trustlist_tools.py and signed by xmlsec1, is what makes a foreign CA trusted and qualified.

The document is signed by pyHanko with a leaf of the corpus PKI (tests/validation_corpus.py: root -> issuing CA,
OCSP and CRLs on loopback, nothing of Açar's keys/), a CA the app does not otherwise trust: without the list the
signature is INDETERMINATE / NO_CERTIFICATE_CHAIN_FOUND; with a list naming its issuing CA as a granted CA/QC service
(QCForESig, QCWithQSCD) it is TOTAL-PASSED, revocation fetched online from the corpus responder, qualified from the
list, and the report's trust_sources name the list. A list whose XML signature does not verify against
ACAR_VALIDATION_TRUSTED_LIST_SIGNERS fails closed: 503 problem+json validation_unavailable (api.validation), never a
500 and never a report with less trust than configured; the next request tries again. The list is read from a file
and from http on loopback.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from api.deps import Services
from api.schemas.validation import ValidationReportOut
from tests.local_http import Route, local_http
from tests.pki_tools import initialize_pki
from tests.signing_tools import minimal_pdf
from tests.trustlist_tools import GRANTED, ListInfo, Operator, Service, Status, tamper
from tests.validation_corpus import CorpusPki, serve, sign_pyhanko

API = "/api/v1/validations"
PROBLEM = "application/problem+json"
NOW = dt.datetime.now(dt.UTC).replace(microsecond=0)
ISSUED = NOW - dt.timedelta(days=1)
SERVICE = "Corpus Qualified CA for electronic signatures"
PDF = {"headers": {"Content-Type": "application/pdf"}}


@pytest.fixture(scope="module")
def corpus() -> Iterator[CorpusPki]:
    """The corpus PKI with its OCSP responder and CRLs on loopback, for the whole module."""
    holder: list[CorpusPki] = []
    with serve(holder) as base:
        holder.append(CorpusPki(base))
        yield holder[0]


@pytest.fixture(scope="module")
async def signed(corpus: CorpusPki) -> bytes:
    """PAdES B-B by pyHanko with a corpus leaf (keyUsage nonRepudiation, no qcStatements)."""
    leaf = corpus.leaf("Leyla Corpus", identifier="PNOAZ-7XK2M9Q")
    return await sign_pyhanko(minimal_pdf(1, "Siyahı"), leaf, "B-B", corpus, fetching=None)  # type: ignore[arg-type]  # B-B fetches nothing


@pytest.fixture(scope="module")
def operator() -> Operator:
    return Operator.create(now=NOW)


@pytest.fixture(scope="module")
def published(operator: Operator, corpus: CorpusPki) -> bytes:
    """The signed list naming the corpus issuing CA as a granted CA/QC service."""
    service = Service(SERVICE, corpus.issuing.certificate, (Status(GRANTED, NOW - dt.timedelta(days=800)),))
    return operator.publish([service], ListInfo(issued=ISSUED))


@pytest.fixture
async def configured(initialized: Services, operator: Operator, tmp_path: Path) -> Services:
    """The built-in CA exists (the validation always trusts its root) and the operator's certificate is the
    configured list signer; each test sets ACAR_VALIDATION_TRUSTED_LIST, read when the service first builds trust."""
    await initialize_pki(initialized)
    initialized.settings.validation_trusted_list_signers = [operator.write_pem(tmp_path / "tlso.pem")]
    return initialized


def use_list(services: Services, location: str | Path) -> None:
    services.settings.validation_trusted_list = str(location)


def the_signature(report: dict[str, object]) -> dict[str, object]:
    ValidationReportOut.model_validate(report)  # the documented schema, extra members forbidden
    [signature] = report["signatures"]  # type: ignore[misc]
    return signature  # type: ignore[no-any-return]


def assert_qualified_from_the_list(report: dict[str, object]) -> None:
    signature = the_signature(report)
    assert signature["indication"] == "TOTAL-PASSED" and signature["sub_indication"] is None, signature
    assert report["all_passed"] is True
    assert signature["qualification"] == {"qualified": True, "type": "esign", "qscd": True,
                                          "source": "trusted-list", "trusted_service": SERVICE}
    assert f"trusted list AZ #12 (issued {ISSUED.date().isoformat()})" in report["trust_sources"]  # type: ignore[operator]
    assert "built-in CA" in report["trust_sources"]  # type: ignore[operator]


async def test_without_a_list_the_foreign_ca_is_not_trusted(client: httpx.AsyncClient, configured: Services,
                                                             signed: bytes) -> None:
    configured.settings.validation_trusted_list_signers = []
    r = await client.post(API, content=signed, **PDF)  # type: ignore[arg-type]
    assert r.status_code == 200, r.text
    signature = the_signature(r.json())
    assert signature["indication"] == "INDETERMINATE", signature
    assert signature["sub_indication"] == "NO_CERTIFICATE_CHAIN_FOUND"
    assert not any(s.startswith("trusted list") for s in r.json()["trust_sources"])


async def test_a_list_in_a_file_makes_the_foreign_ca_trusted_and_qualified(
        client: httpx.AsyncClient, configured: Services, signed: bytes, published: bytes, tmp_path: Path) -> None:
    path = tmp_path / "AZ-TL.xml"
    path.write_bytes(published)
    use_list(configured, path)
    r = await client.post(API, files={"file": ("siyahi.pdf", signed, "application/pdf")})
    assert r.status_code == 200, r.text
    assert_qualified_from_the_list(r.json())
    signer = the_signature(r.json())["signer"]
    assert signer["chain"][-1]["subject"] == "CN=Corpus Issuing CA,O=Corpus test PKI,C=AZ"  # type: ignore[index]


async def test_a_tampered_list_fails_closed_with_503_until_the_genuine_list_is_back(
        client: httpx.AsyncClient, configured: Services, signed: bytes, published: bytes, tmp_path: Path) -> None:
    path = tmp_path / "AZ-TL.xml"
    path.write_bytes(tamper(published, SERVICE.encode(), b"Corpus Qualified CA for anything at all"))
    use_list(configured, path)
    for _ in range(2):  # the failure is the answer until the next attempt (api.validation.TRUST_RETRY)
        r = await client.post(API, content=signed, **PDF)  # type: ignore[arg-type]
        assert r.status_code == 503, r.text
        assert r.headers["content-type"] == PROBLEM
        problem = r.json()
        assert problem["type"] == "urn:acar:problem:validation_unavailable"
        assert problem["code"] == "validation_unavailable" and problem["status"] == 503
        assert "trusted list" in problem["detail"] and "does not verify" in problem["detail"], problem

    path.write_bytes(published)  # the operator puts the genuine list back
    configured.validation.expire()  # ... and the retry comes (a minute later: api.validation.TRUST_RETRY)
    r = await client.post(API, content=signed, **PDF)  # type: ignore[arg-type]
    assert r.status_code == 200, r.text
    assert_qualified_from_the_list(r.json())


async def test_a_list_signed_by_another_operator_fails_closed(client: httpx.AsyncClient, configured: Services,
                                                              signed: bytes, corpus: CorpusPki,
                                                              tmp_path: Path) -> None:
    impostor = Operator.create("Somebody Else's Scheme Operator", now=NOW)
    service = Service(SERVICE, corpus.issuing.certificate, (Status(GRANTED, NOW - dt.timedelta(days=800)),))
    path = tmp_path / "AZ-TL.xml"
    path.write_bytes(impostor.publish([service], ListInfo(issued=ISSUED)))
    use_list(configured, path)
    r = await client.post(API, content=signed, **PDF)  # type: ignore[arg-type]
    assert r.status_code == 503 and r.headers["content-type"] == PROBLEM, r.text
    assert r.json()["code"] == "validation_unavailable"


async def test_a_list_served_over_http(client: httpx.AsyncClient, configured: Services, signed: bytes,
                                       published: bytes) -> None:
    with local_http() as server:
        server.routes["/tl/AZ.xml"] = Route(body=published, headers={"Content-Type": "application/vnd.etsi.tsl+xml"})
        use_list(configured, f"{server.base}/tl/AZ.xml")
        for _ in range(2):
            r = await client.post(API, content=signed, **PDF)  # type: ignore[arg-type]
            assert r.status_code == 200, r.text
            assert_qualified_from_the_list(r.json())
        assert server.count("/tl/AZ.xml") == 1, "the list is kept until TRUSTED_LIST_REFRESH, not fetched per request"



async def test_a_list_that_cannot_be_fetched_fails_closed(client: httpx.AsyncClient, configured: Services,
                                                          signed: bytes) -> None:
    with local_http() as server:
        use_list(configured, f"{server.base}/tl/missing.xml")
        r = await client.post(API, content=signed, **PDF)  # type: ignore[arg-type]
        assert server.count("/tl/missing.xml") == 1
    assert r.status_code == 503 and r.headers["content-type"] == PROBLEM, r.text
    assert r.json()["code"] == "validation_unavailable" and "HTTP status 404" in r.json()["detail"]

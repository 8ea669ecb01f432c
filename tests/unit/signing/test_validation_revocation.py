"""Revocation checked online when the document carries none (issue 14, "Trust": OCSP with CRL fallback), and
never when the validation is "as of" a past date.

The signer certificates here have an AIA OCSP URL that gives no answer, either a port nothing listens on or a
responder answering HTTP 500 (`FAILING_OCSP_PATH`), and a CRL distribution point (RFC 5280 section 4.2.1.13)
that the loopback server of tests/validation_corpus.py serves, or that is on the closed port too. The documents are
PAdES B-B and B-T (ETSI EN 319 142-1 sections 5.2, 5.3): no revocation data embedded, so the validator's
`ValidationDataSource` must fetch it (ETSI TS 119 102-1 section 5.2.6, X.509 certificate validation, with
revocation data gathered as EN 319 102-1 section 5.2.5 allows).

What pyhanko-certvalidator 0.33 does (`pyhanko_certvalidator.validate._check_revocation`), asserted below from the
server's request log: for a certificate whose AIA names an OCSP responder it asks the responder first (one POST,
RFC 6960 appendix A.1); only when that gives no "good" status does it fetch the CRLs of the certificate's
distribution points (GET), and it does not retry the responder. With the CRL_OR_OCSP_REQUIRED rule of
`signing.core.validation`, a CRL alone settles the status. With neither source answering, it reports that no
revocation information could be found (InsufficientRevinfoError), which TS 119 102-1 table 6 names TRY_LATER.

Every network wait is bounded: the closed port refuses at once, and the data source's per-request timeout is
`TIMEOUT` seconds.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from io import BytesIO

import pytest
from pyhanko_certvalidator.fetchers.aiohttp_fetchers import AIOHttpFetcherBackend

from signing.core.inspect import InputPolicy
from signing.core.report import Indication, SignatureKind, SignatureReport, SubIndication, ValidationReport
from signing.core.revocation import ValidationDataSource
from signing.core.trust import TrustPolicy
from signing.core.validation import Validator
from tests.local_http import free_port
from tests.signing_tools import minimal_pdf
from tests.validation_corpus import FAILING_OCSP_PATH, CorpusPki, Leaf, asn1, serving_pki, sign_pyhanko

pytestmark = pytest.mark.nodb  # no database: run once, in the SQLite pass (Makefile)

TIMEOUT = 2.0
"""Seconds one OCSP or CRL request may take (`ValidationDataSource(timeout=...)`)."""


@dataclass(frozen=True)
class Documents:
    pki: CorpusPki
    dead: str
    """http://127.0.0.1:PORT: a port nothing listens on."""
    signed: dict[str, bytes]
    leaves: dict[str, Leaf]


@pytest.fixture(scope="module")
def served() -> Iterator[CorpusPki]:
    with serving_pki() as pki:
        yield pki


@pytest.fixture(scope="module")
async def documents(served: CorpusPki) -> Documents:
    pki = served
    dead = f"http://127.0.0.1:{free_port()}"
    leaves = {
        "ocsp-closed": pki.leaf("Signer, OCSP on a closed port", ocsp_url=f"{dead}/ocsp"),
        "ocsp-500": pki.leaf("Signer, OCSP answering 500", ocsp_url=f"{pki.base}{FAILING_OCSP_PATH}"),
        "revoked": pki.leaf("Revoked Signer, OCSP on a closed port", ocsp_url=f"{dead}/ocsp"),
        "unreachable": pki.leaf("Signer, no revocation source", ocsp_url=f"{dead}/ocsp",
                                crl_url=f"{dead}/crl/issuing.crl"),
    }
    pki.revoke(leaves["revoked"], pki.start - dt.timedelta(minutes=30))
    pdf = minimal_pdf(text="Revocation")
    fetching = AIOHttpFetcherBackend()
    signed: dict[str, bytes] = {}
    try:
        for name, leaf in leaves.items():
            for level in ("B-B", "B-T"):
                signed[f"{name}-{level}"] = await sign_pyhanko(pdf, leaf, level, pki, fetching=fetching)
    finally:
        await fetching.close()
    return Documents(pki=pki, dead=dead, signed=signed, leaves=leaves)


@pytest.fixture(scope="module")
async def validator(documents: Documents) -> AsyncIterator[Validator]:
    fetching = ValidationDataSource(trust_roots=[asn1(documents.pki.root)], timeout=TIMEOUT)
    yield Validator(trust=TrustPolicy(anchors=(asn1(documents.pki.root),), sources=("corpus root",)),
                    input_policy=InputPolicy(refuse_active_content=False), fetching=fetching)
    await fetching.close()


async def validate(documents: Documents, validator: Validator, name: str,
                   at: dt.datetime | None = None) -> tuple[SignatureReport, ValidationReport, list[str]]:
    """The one signature's report and the requests the loopback server answered during the validation."""
    documents.pki.requests.clear()
    report = await validator.validate(BytesIO(documents.signed[name]), at=at)
    log = list(documents.pki.requests)
    signatures = [s for s in report.signatures if s.kind is not SignatureKind.DOCUMENT_TIMESTAMP]
    assert len(signatures) == 1, report.as_json()
    return signatures[0], report, log


def leaf_ocsp_requests(log: list[str]) -> list[int]:
    return [i for i, line in enumerate(log) if line == f"POST {FAILING_OCSP_PATH}"]


@pytest.mark.parametrize("level", ["B-B", "B-T"])
@pytest.mark.parametrize("ocsp", ["ocsp-closed", "ocsp-500"])
async def test_the_crl_stands_in_for_an_unreachable_ocsp_responder(
        documents: Documents, validator: Validator, ocsp: str, level: str) -> None:
    """No embedded revocation data, the signer's OCSP responder down (a closed port, or HTTP 500), its CRL
    served: TOTAL-PASSED, from the CRL fetched online (RFC 5280 section 5: the signer's serial is not listed).
    The 500 responder shows pyhanko-certvalidator's order: one OCSP request for the signer, then the CRL of its
    distribution point; the closed port leaves no trace but the CRL."""
    signature, report, log = await validate(documents, validator, f"{ocsp}-{level}")
    assert signature.indication is Indication.TOTAL_PASSED, signature.as_json()
    assert not report.embedded_only
    assert "GET /crl/issuing.crl" in log, log
    if ocsp == "ocsp-500":
        attempts = leaf_ocsp_requests(log)
        assert len(attempts) == 1, log
        assert attempts[0] < log.index("GET /crl/issuing.crl"), log
    else:
        assert not leaf_ocsp_requests(log), log
    # the TSA's certificate (B-T) has a working responder: its status comes by OCSP, no CRL needed beyond ours
    assert log.count("POST /ocsp") == (1 if level == "B-T" else 0), log


@pytest.mark.parametrize("level", ["B-B", "B-T"])
async def test_a_crl_revocation_before_signing_is_found_without_ocsp(
        documents: Documents, validator: Validator, level: str) -> None:
    """The signer revoked 30 minutes before signing, its OCSP responder on a closed port: the fetched CRL lists
    it, so the signature is not valid. ETSI TS 119 102-1 table 6: REVOKED_NO_POE for a B-B or B-T signature whose
    time-stamp (after the revocation) cannot prove existence before it; REVOKED is the past-validation answer."""
    signature, _, log = await validate(documents, validator, f"revoked-{level}")
    assert signature.indication is not Indication.TOTAL_PASSED
    assert signature.sub_indication in {SubIndication.REVOKED, SubIndication.REVOKED_NO_POE}, signature.as_json()
    assert signature.indication is signature.sub_indication.indication  # type: ignore[union-attr]
    assert "GET /crl/issuing.crl" in log, log


@pytest.mark.parametrize("level", ["B-B", "B-T"])
async def test_no_reachable_revocation_source_is_try_later(
        documents: Documents, validator: Validator, level: str) -> None:
    """Neither the OCSP responder nor the CRL distribution point answers (both on a closed port) and nothing is
    embedded: ETSI TS 119 102-1 table 6 (EN 319 102-1 section 5.2.6), INDETERMINATE / TRY_LATER, with the
    finding "revocation_unavailable" saying why. Only the issuing CA's CRL (served) reaches the server."""
    signature, report, log = await validate(documents, validator, f"unreachable-{level}")
    assert signature.indication is Indication.INDETERMINATE, signature.as_json()
    assert signature.sub_indication is SubIndication.TRY_LATER, signature.as_json()
    assert "revocation_unavailable" in {f.code for f in signature.findings}
    assert not report.all_passed
    assert log and set(log) <= {"GET /crl/root.crl", "POST /ocsp"}, log


@pytest.mark.parametrize("name", ["ocsp-closed-B-T", "ocsp-500-B-B", "revoked-B-T", "unreachable-B-T"])
async def test_as_of_a_past_date_nothing_is_fetched(documents: Documents, validator: Validator,
                                                    name: str) -> None:
    """Validation "as of" a past date (issue 14: from embedded data only; ETSI TS 119 102-1 section 5.6.2.1
    validation time): the same documents, the same validator with its data source, but no request reaches the
    server, and without embedded revocation data the signature does not pass (nor is it TRY_LATER: fetching
    later would not help a validation from embedded data)."""
    at = dt.datetime.now(dt.UTC) - dt.timedelta(seconds=1)
    signature, report, log = await validate(documents, validator, name, at=at)
    assert log == []
    assert report.embedded_only
    assert report.validation_time == at
    assert signature.indication is not Indication.TOTAL_PASSED, signature.as_json()
    assert signature.sub_indication is not SubIndication.TRY_LATER


@pytest.mark.parametrize("allowed", [False, True])
async def test_production_refuses_to_fetch_from_non_public_addresses(documents: Documents, allowed: bool) -> None:
    """SSRF (the URLs are the uploader's choice): with `refuse_private` (production) a certificate's OCSP and CRL
    URLs on the loopback are never requested, and the signature cannot be validated; the operator's
    `allowed_networks` (ACAR_PKI_FETCH_ALLOWED_NETWORKS) lets the same requests go."""
    import ipaddress

    networks = (ipaddress.ip_network("127.0.0.0/8"),) if allowed else ()
    fetching = ValidationDataSource(trust_roots=[asn1(documents.pki.root)], timeout=TIMEOUT, refuse_private=True,
                                    allowed_networks=networks)
    guarded = Validator(trust=TrustPolicy(anchors=(asn1(documents.pki.root),), sources=("corpus root",)),
                        input_policy=InputPolicy(refuse_active_content=False), fetching=fetching)
    try:
        signature, _, log = await validate(documents, guarded, "ocsp-500-B-B")
    finally:
        await fetching.close()
    if allowed:
        assert signature.indication is Indication.TOTAL_PASSED, signature.as_json()
        assert "GET /crl/issuing.crl" in log, log
    else:
        assert log == [], log
        assert signature.indication is Indication.INDETERMINATE, signature.as_json()


async def test_a_validation_stops_at_its_deadline(documents: Documents) -> None:
    """A responder that accepts the connection and never answers (and a CRL server alike): the validation stops at
    its deadline with ValidationTimedOut (503 validation_timeout at the API), not after every fetch's timeout."""
    import socket

    from pyhanko_certvalidator.fetchers.aiohttp_fetchers import AIOHttpFetcherBackend as Backend

    from signing.core.errors import ValidationTimedOut

    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(16)
        url = f"http://127.0.0.1:{silent.getsockname()[1]}"
        leaf = documents.pki.leaf("Signer, silent responder", ocsp_url=f"{url}/ocsp", crl_url=f"{url}/crl.crl")
        backend = Backend()
        try:
            signed = await sign_pyhanko(minimal_pdf(text="Deadline"), leaf, "B-B", documents.pki, fetching=backend)
        finally:
            await backend.close()
        fetching = ValidationDataSource(trust_roots=[asn1(documents.pki.root)], timeout=30.0)
        slow = Validator(trust=TrustPolicy(anchors=(asn1(documents.pki.root),), sources=("corpus root",)),
                         input_policy=InputPolicy(refuse_active_content=False), fetching=fetching, deadline=1.0)
        try:  # without the deadline, each fetch would time out after 30 s and the report say TRY_LATER
            with pytest.raises(ValidationTimedOut):
                await slow.validate(BytesIO(signed))
        finally:
            await fetching.close()

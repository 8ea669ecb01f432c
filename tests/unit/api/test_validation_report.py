"""The report's renderers without the engine: hand-made reports (tests.validation_reports) against the documented
schema, in words in az/en/ru (every code translated, an unknown one in its English message), as a PDF checked by
qpdf and read back by pdftotext; the `at` parameter and the Accept negotiation of the validation API."""

from __future__ import annotations

import datetime as dt
import subprocess
from pathlib import Path

import pytest

from api.i18n import CATALOGS, translator
from api.report_pdf import render_report
from api.report_view import CHANGE_KINDS, FINDING_CODES, ReportText
from api.routes.validation import wants_pdf
from api.schemas.validation import ValidationReportOut
from api.validation import audit_detail, parse_at
from signing.core.errors import InvalidValidationRequest
from signing.core.report import Indication, SubIndication
from tests.validation_reports import NOW, sample_report

pytestmark = pytest.mark.nodb  # no database: run once, in the SQLite pass (Makefile)


def test_the_schema_is_the_wire_form() -> None:
    ValidationReportOut.model_validate(sample_report().as_json())
    ValidationReportOut.model_validate(sample_report(failed=False).as_json())


@pytest.mark.parametrize("lang", ["az", "en", "ru"])
def test_every_code_is_in_words_and_an_unknown_one_in_english(lang: str) -> None:
    words = ReportText(translator(lang))
    report = sample_report()
    failed = report.signatures[1]
    texts = [words.finding(f) for f in failed.findings]
    assert texts[:-1] == [CATALOGS[lang][f"report.finding.{code}"] for code in FINDING_CODES]
    assert texts[-1] == "An English message for a code no catalog knows"
    for indication in Indication:
        assert words.indication(indication) == CATALOGS[lang][f"report.indication.{indication.value}"]
    for sub in SubIndication:
        assert words.sub_indication(sub)
    assert words.summary(report) == CATALOGS[lang]["report.summary.not_passed"].format(passed=1, total=2)


@pytest.mark.parametrize(("lang", "expected"), [
    ("az", ["İmzanın yoxlanılması hesabatı", "Etibarlı deyil", "imzalanmış məzmun dəyişdirilib", "kölgə hücumu",
            "Aysel Məmmədova", "Səhifə 1 / "]),
    ("ru", ["Отчёт о проверке подписей", "Недействительна", "подписанное содержимое изменено", "теневая атака",
            "Страница 1 из"]),
    ("en", ["Signature validation report", "Not valid", "shadow attack", "Page 1 of"]),
])
def test_the_pdf_report_is_a_real_pdf_with_the_text(tmp_path: Path, lang: str, expected: list[str]) -> None:
    path = tmp_path / "report.pdf"
    path.write_bytes(render_report(sample_report(many=6), translator(lang)))
    subprocess.run(["qpdf", "--check", str(path)], check=True, capture_output=True)
    text = subprocess.run(["pdftotext", str(path), "-"], check=True, capture_output=True,
                          text=True).stdout
    flat = " ".join(text.split())
    for phrase in expected:
        assert phrase in flat, (phrase, flat[:2000])
    pages = subprocess.run(["pdfinfo", str(path)], check=True, capture_output=True, text=True).stdout
    assert int(next(line.split()[-1] for line in pages.splitlines() if line.startswith("Pages:"))) > 1


def test_at_is_an_rfc_3339_time_in_the_past() -> None:
    now = dt.datetime(2026, 12, 1, tzinfo=dt.UTC)
    assert parse_at(None, now) is None and parse_at("", now) is None
    assert parse_at("2026-01-31T12:00:00Z", now) == dt.datetime(2026, 1, 31, 12, tzinfo=dt.UTC)
    assert parse_at("2026-01-31T16:00:00.5+04:00", now) == dt.datetime(2026, 1, 31, 12, 0, 0, 500000, tzinfo=dt.UTC)
    assert parse_at("2026-01-31", now) == dt.datetime(2026, 1, 31, tzinfo=dt.UTC)
    for bad in ("2026-01-31T12:00:00", "31.01.2026", "2026-13-01", "2027-01-01T00:00:00Z", "now"):
        with pytest.raises(InvalidValidationRequest):
            parse_at(bad, now)


@pytest.mark.parametrize(("accept", "pdf"), [
    (None, False), ("application/json", False), ("*/*", False), ("application/pdf", True),
    ("application/json;q=0.5, application/pdf", True), ("application/pdf;q=0.2, application/json", False),
    ("application/pdf;q=0", False), ("application/pdf, */*;q=0.1", True)])
def test_accept_negotiation(accept: str | None, pdf: bool) -> None:
    assert wants_pdf(accept) is pdf


def test_the_audit_detail_has_the_digest_and_counts_only() -> None:
    detail = audit_detail(sample_report(), at=NOW, address="a" * 32)
    assert detail == {"sha256": "ef" * 32, "size": 3000, "signatures": 2,
                      "indications": {"TOTAL-PASSED": 1, "TOTAL-FAILED": 1, "INDETERMINATE": 0},
                      "all_passed": False, "embedded_only": False, "at": NOW.isoformat(), "address": "a" * 32}


def test_the_settings_refuse_a_trusted_list_without_signers(tmp_path: Path) -> None:
    from pydantic import ValidationError

    from api.settings import Settings

    listing = tmp_path / "tl.xml"
    listing.write_text("<TrustServiceStatusList/>")
    from cryptography.hazmat.primitives.serialization import Encoding

    from tests.pki_tools import foreign_ca

    signer = tmp_path / "signer.pem"
    signer.write_bytes(foreign_ca()[0].public_bytes(Encoding.PEM))
    empty = tmp_path / "empty.pem"
    empty.write_text("-----BEGIN CERTIFICATE-----\n-----END CERTIFICATE-----\n")
    with pytest.raises(ValidationError, match="not an X.509 certificate"):  # read at start-up, named
        Settings(validation_trusted_list=str(listing), validation_trusted_list_signers=[empty])
    with pytest.raises(ValidationError, match="ACAR_VALIDATION_TRUSTED_LIST_SIGNERS"):
        Settings(validation_trusted_list=str(listing))
    with pytest.raises(ValidationError, match="no such file"):
        Settings(validation_trusted_list=str(tmp_path / "missing.xml"), validation_trusted_list_signers=[signer])
    with pytest.raises(ValidationError, match="cannot be read"):
        Settings(validation_trust_anchors=[tmp_path / "missing.pem"])
    with pytest.raises(ValidationError, match="limits"):
        Settings(validation_anonymous_rate_limit="many")
    assert Settings(validation_trusted_list="https://tl.example.az/tl.xml",
                    validation_trusted_list_signers=[signer]).validation_trusted_list.startswith("https://")
    assert Settings(validation_trusted_list=str(listing), validation_trusted_list_signers=[signer])


def test_every_finding_code_the_engine_can_emit_is_translated() -> None:
    """The codes written as literals in signing/core (Finding("code", ...), the revision review's items) are the
    ones the catalogs translate: a new check gets its words in az/en/ru, none is left to the English message."""
    import re

    core = Path(__file__).resolve().parents[3] / "signing" / "core"
    source = "\n".join(path.read_text() for path in core.glob("*.py"))
    emitted = set(re.findall(r'Finding\(\s*"([a-z_]+)"', source))
    emitted |= set(re.findall(r'"((?:shadow|incremental_save)_[a-z_]+|signature_replaced|modification_not_allowed)"',
                              source))
    assert emitted, "no finding code found in signing/core"
    assert emitted <= set(FINDING_CODES), sorted(emitted - set(FINDING_CODES))


def test_every_change_kind_the_review_names_is_translated() -> None:
    """The kinds signing.core.attacks passes to its `add` (a revision's changes) all have words in az/en/ru."""
    import re

    source = (Path(__file__).resolve().parents[3] / "signing" / "core" / "attacks.py").read_text()
    named = set(re.findall(r'add\(\s*"([a-z-]+)"', source)) | set(re.findall(r'"([a-z-]+)"', source.split(
        "_ALWAYS_ALLOWED", 1)[1].split("\n", 1)[0]))
    assert named, "no change kind found in signing/core/attacks.py"
    assert named <= set(CHANGE_KINDS), sorted(named - set(CHANGE_KINDS))
    for lang in ("az", "en", "ru"):
        assert {f"report.change_kind.{k}" for k in CHANGE_KINDS} <= set(CATALOGS[lang])

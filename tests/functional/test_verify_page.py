"""The /verify page through HTTP on the app: the upload form in az, en and ru saying that nothing is stored, the
double-submit CSRF check, the report of an Açar-signed PDF on the page (status announced, tables with captions),
the PDF report download, and refusals shown as translated messages."""

from __future__ import annotations

import hashlib
import re
from pathlib import Path

import httpx
import pytest

from api.deps import Services
from api.i18n import CATALOGS
from signing.core.levels import PadesLevel
from tests.functional.test_validation_api import _events
from tests.pades_world import World, run_tool
from tests.signing_tools import minimal_pdf

CSRF = re.compile(r'name="csrf_token" value="([^"]+)"')



@pytest.fixture(autouse=True)
def _pki(world: World) -> World:
    """The app's own PKI (root CA, TSA, OCSP) for every test: the validation trusts the built-in root."""
    return world

async def _form(client: httpx.AsyncClient, lang: str = "az") -> str:
    r = await client.get("/verify", headers={"Accept-Language": lang})
    assert r.status_code == 200, r.text
    found = CSRF.search(r.text)
    assert found is not None
    return found.group(1)


@pytest.mark.parametrize("lang", ["az", "en", "ru"])
async def test_the_form_in_each_language_says_nothing_is_stored(client: httpx.AsyncClient, lang: str) -> None:
    r = await client.get("/verify", headers={"Accept-Language": lang})
    assert r.status_code == 200 and r.headers["content-language"] == lang
    catalog = CATALOGS[lang]
    for key in ("verify.title", "verify.privacy", "verify.file.label", "verify.submit", "verify.submit_pdf"):
        assert catalog[key].replace("\u00a0", " ")[:30] in r.text.replace("&#34;", '"').replace("\u00a0", " ")
    assert 'enctype="multipart/form-data"' in r.text and '<label for="verify-file">' in r.text
    assert "acar_verify_csrf=" in r.headers["set-cookie"] and "HttpOnly" in r.headers["set-cookie"]
    assert r.headers["cache-control"] == "no-store" and "script-src 'self'" in r.headers["content-security-policy"]


async def test_a_post_without_the_csrf_token_is_refused(client: httpx.AsyncClient, initialized: Services) -> None:
    await _form(client)
    r = await client.post("/verify", data={"csrf_token": "wrong"},
                          files={"file": ("a.pdf", minimal_pdf(), "application/pdf")})
    assert r.status_code == 403 and CATALOGS["az"]["error.form_expired"] in r.text
    client.cookies.clear()
    r = await client.post("/verify", files={"file": ("a.pdf", minimal_pdf(), "application/pdf")})
    assert r.status_code == 403
    assert await _events(initialized) == []  # nothing validated


async def test_the_report_of_a_signed_pdf_on_the_page(client: httpx.AsyncClient, initialized: Services,
                                                      world: World) -> None:
    signed = await world.sign(minimal_pdf(1, "Arayış"), PadesLevel.B_LT)
    token = await _form(client, "en")
    r = await client.post("/verify", headers={"Accept-Language": "en"}, data={"csrf_token": token, "format": "html"},
                          files={"file": ("arayis.pdf", signed, "application/pdf")})
    assert r.status_code == 200, r.text
    assert 'role="status" id="verify-summary"' in r.text
    assert "1 signature was checked, and it is valid." in r.text  # report.summary.passed.one
    assert hashlib.sha256(signed).hexdigest() in r.text and "TOTAL-PASSED" in r.text
    assert '<caption id="signature-1-chain-caption">' in r.text and '<th scope="col">' in r.text
    assert '<caption id="verify-revisions-caption">' in r.text
    [event] = await _events(initialized)
    assert event.actor == "anonymous" and event.subject == hashlib.sha256(signed).hexdigest()


async def test_the_pdf_report_download_in_azerbaijani(client: httpx.AsyncClient, world: World,
                                                      tmp_path: Path) -> None:
    signed = await world.sign(minimal_pdf(), PadesLevel.B_B)
    token = await _form(client, "az")
    r = await client.post("/verify", headers={"Accept-Language": "az"}, data={"csrf_token": token, "format": "pdf"},
                          files={"file": ("a.pdf", signed, "application/pdf")})
    assert r.status_code == 200 and r.headers["content-type"] == "application/pdf", r.text[:500]
    path = tmp_path / "r.pdf"
    path.write_bytes(r.content)
    await run_tool("qpdf", "--check", path)
    text = await run_tool("pdftotext", path, "-")
    assert "İmzanın yoxlanılması hesabatı" in text and "Etibarlıdır" in text


@pytest.mark.parametrize(("lang", "content", "status", "key"), [
    ("ru", b"not a pdf at all", 415, "verify.error.not_pdf"),
    ("az", b"%PDF-1.7\n1 0 obj << /Type /Catalog", 422, None),
])
async def test_refusals_are_translated_messages(client: httpx.AsyncClient, lang: str, content: bytes, status: int,
                                                key: str | None) -> None:
    token = await _form(client, lang)
    r = await client.post("/verify", headers={"Accept-Language": lang}, data={"csrf_token": token},
                          files={"file": ("x.pdf", content, "application/pdf")})
    assert r.status_code == status, r.text
    assert 'role="alert" id="verify-error"' in r.text and 'aria-invalid="true"' in r.text
    if key is not None:
        assert CATALOGS[lang][key] in r.text


async def test_an_unsigned_pdf_says_it_has_no_signature(client: httpx.AsyncClient) -> None:
    token = await _form(client, "ru")
    r = await client.post("/verify", headers={"Accept-Language": "ru"}, data={"csrf_token": token},
                          files={"file": ("x.pdf", minimal_pdf(), "application/pdf")})
    assert r.status_code == 200 and CATALOGS["ru"]["report.summary.none"] in r.text

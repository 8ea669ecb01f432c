"""signing.core.trustlist and signing.core.trust.load_anchors against real trusted lists: ETSI TS 119 612 XML built by
tests/trustlist_tools.py and signed by the Debian `xmlsec1` tool (XAdES-BES, independent of signxml which the code
verifies with), served from files and over HTTP on loopback."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler
from pathlib import Path

import pytest
from asn1crypto import x509 as asn1_x509
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from signing.core.errors import SigningError, TrustedListInvalid
from signing.core.report import Qualification
from signing.core.trust import TrustPolicy, load_anchors
from signing.core.trustlist import TrustedList, load_trusted_list
from tests.local_http import QuietHandler, Route, free_port, local_http, serving
from tests.trustlist_tools import (
    GRANTED,
    TSL_NS,
    WITHDRAWN,
    ListInfo,
    Service,
    Status,
    build_trusted_list,
    make_ca,
    make_key,
    make_leaf,
    make_tlso,
    sign_with_xmlsec1,
    verify_with_xmlsec1,
)

pytestmark = pytest.mark.nodb  # no database: run once, in the SQLite pass (Makefile)

NOW = dt.datetime.now(dt.UTC).replace(microsecond=0)
GRANTED_SINCE = NOW - dt.timedelta(days=800)
WITHDRAWN_SINCE = NOW - dt.timedelta(days=100)
ISSUED = NOW - dt.timedelta(days=1)


def a1(cert: x509.Certificate) -> asn1_x509.Certificate:
    return asn1_x509.Certificate.load(cert.public_bytes(serialization.Encoding.DER))


@dataclass(frozen=True)
class World:
    tlso: x509.Certificate
    other_tlso: x509.Certificate
    qca: x509.Certificate
    old_ca: x509.Certificate
    seal_ca: x509.Certificate
    alice: x509.Certificate
    """Issued by the granted esig/QSCD service."""
    bob: x509.Certificate
    """Issued by the service withdrawn 100 days ago, 300 days ago (while it was granted)."""
    carol: x509.Certificate
    """Issued by the eseal service without QSCD."""
    stranger: x509.Certificate
    stranger_ca: x509.Certificate
    signed: bytes
    sign: Callable[[bytes], bytes]
    """xmlsec1 --sign with the operator's key."""


@pytest.fixture(scope="module")
def world() -> World:
    tlso, tlso_key = make_tlso("AZ Trusted List Scheme Operator", now=NOW)
    other_tlso, _ = make_tlso("Somebody Else's Scheme Operator", now=NOW)
    qca_key, old_key, seal_key, stranger_key = make_key(), make_key(), make_key(), make_key()
    qca = make_ca("Test Qualified CA", qca_key, now=NOW)
    old_ca = make_ca("Old Qualified CA", old_key, now=NOW)
    seal_ca = make_ca("Seal CA", seal_key, now=NOW)
    stranger_ca = make_ca("Not Listed CA", stranger_key, now=NOW)
    services = [
        Service("Test QCA for qualified signatures", qca, (Status(GRANTED, GRANTED_SINCE),)),
        Service("Old QCA", old_ca, (Status(GRANTED, GRANTED_SINCE), Status(WITHDRAWN, WITHDRAWN_SINCE))),
        Service("Seal CA without QSCD", seal_ca, (Status(GRANTED, GRANTED_SINCE),),
                qualifiers=("QCStatement", "QCForESeal", "QCNoQSCD"), issues="ForeSeals"),
    ]
    xml = build_trusted_list(services, ListInfo(issued=ISSUED))

    def sign(document: bytes) -> bytes:
        return sign_with_xmlsec1(document, tlso, tlso_key)

    return World(tlso=tlso, other_tlso=other_tlso, qca=qca, old_ca=old_ca, seal_ca=seal_ca,
                 alice=make_leaf("Alice", qca, qca_key, now=NOW),
                 bob=make_leaf("Bob", old_ca, old_key, now=NOW, not_before=NOW - dt.timedelta(days=300)),
                 carol=make_leaf("Carol Ltd", seal_ca, seal_key, now=NOW),
                 stranger=make_leaf("Stranger", stranger_ca, stranger_key, now=NOW), stranger_ca=stranger_ca,
                 signed=sign(xml), sign=sign)


def parse(world: World, xml: bytes, signer: x509.Certificate | None = None, at: dt.datetime = NOW) -> TrustedList:
    return TrustedList.parse(xml, [a1(signer or world.tlso)], at=at)


def refusal(world: World, xml: bytes, signer: x509.Certificate | None = None, at: dt.datetime = NOW) -> str:
    with pytest.raises(TrustedListInvalid) as caught:
        parse(world, xml, signer, at)
    assert isinstance(caught.value, SigningError)
    assert caught.value.code == "trusted_list_invalid"
    return caught.value.detail


# --- the signature ------------------------------------------------------------------------------------------------


def test_list_signed_by_the_configured_operator_is_read(world: World) -> None:
    verify_with_xmlsec1(world.signed, world.tlso)  # the tool's own verdict on what it signed
    tl = parse(world, world.signed)
    assert tl.description == f"trusted list AZ #12 (issued {ISSUED.date().isoformat()})"
    assert (tl.territory, tl.sequence_number, tl.issued) == ("AZ", 12, ISSUED)
    assert tl.next_update == ISSUED + dt.timedelta(days=180)
    assert tl.signer.sha256 == a1(world.tlso).sha256
    assert [(s.name, s.provider, s.granted) for s in tl.services] == [
        ("Test QCA for qualified signatures", "Azerbaijan Test TSP", True), ("Old QCA", "Azerbaijan Test TSP", False),
        ("Seal CA without QSCD", "Azerbaijan Test TSP", True)]
    assert tl.services[1].status == WITHDRAWN and tl.services[1].status_since == WITHDRAWN_SINCE
    # every CA/QC service's certificate is an anchor, whatever its status
    assert [c.sha256 for c in tl.anchors] == [a1(c).sha256 for c in (world.qca, world.old_ca, world.seal_ca)]
    policy = TrustPolicy(anchors=(), sources=(), trusted_list=tl)
    assert len(policy.all_anchors) == 3


def test_list_is_read_with_one_of_several_configured_signers(world: World) -> None:
    tl = TrustedList.parse(world.signed, [a1(world.other_tlso), a1(world.tlso)], at=NOW)
    assert tl.signer.sha256 == a1(world.tlso).sha256


def test_list_signed_by_another_key_is_refused(world: World) -> None:
    detail = refusal(world, world.signed, signer=world.other_tlso)
    assert "does not verify with a configured signer certificate" in detail


def test_no_configured_signer_is_refused(world: World) -> None:
    with pytest.raises(TrustedListInvalid, match="no trusted list signer"):
        TrustedList.parse(world.signed, [], at=NOW)


def test_tampered_service_name_is_refused(world: World) -> None:
    assert world.signed.count(b"Test QCA for qualified") == 1
    tampered = world.signed.replace(b"Test QCA for qualified", b"Test QCB for qualified")
    assert len(tampered) == len(world.signed)
    assert "does not verify" in refusal(world, tampered)


def test_unsigned_list_is_refused(world: World) -> None:
    unsigned = build_trusted_list([Service("Unsigned CA", world.qca, (Status(GRANTED, GRANTED_SINCE),))],
                                  ListInfo(issued=ISSUED))
    assert "not signed" in refusal(world, unsigned)


def test_signature_removed_from_a_signed_list_is_refused(world: World) -> None:
    start, end = world.signed.index(b"<ds:Signature"), world.signed.index(b"</ds:Signature>")
    stripped = world.signed[:start] + world.signed[end + len(b"</ds:Signature>"):]
    assert "not signed" in refusal(world, stripped)


def test_list_past_its_next_update_is_refused(world: World) -> None:
    stale = world.sign(build_trusted_list([Service("CA", world.qca, (Status(GRANTED, GRANTED_SINCE),))],
                                          ListInfo(issued=NOW - dt.timedelta(days=200),
                                                   next_update=NOW - dt.timedelta(days=20))))
    verify_with_xmlsec1(stale, world.tlso)  # validly signed, only out of date
    assert "expired" in refusal(world, stale)
    # the same list was fine before its NextUpdate
    assert parse(world, stale, at=NOW - dt.timedelta(days=30)).sequence_number == 12


def test_list_issued_after_the_time_asked_is_refused(world: World) -> None:
    assert "issued" in refusal(world, world.signed, at=ISSUED - dt.timedelta(days=1))


def test_signer_certificate_not_valid_at_the_time_asked_is_refused(world: World) -> None:
    long_lived = world.sign(build_trusted_list([Service("CA", world.qca, (Status(GRANTED, GRANTED_SINCE),))],
                                               ListInfo(issued=ISSUED, next_update=NOW + dt.timedelta(days=900))))
    assert parse(world, long_lived).sequence_number == 12
    # the operator's certificate runs out after 365 days
    assert "does not verify" in refusal(world, long_lived, at=NOW + dt.timedelta(days=400))


@pytest.mark.parametrize(("change", "reason"), [
    ((TSL_NS.encode(), b"urn:example:not-a-tsl#"), "not an ETSI TS 119 612 trusted list"),
    ((b"<tsl:TSLVersionIdentifier>5<", b"<tsl:TSLVersionIdentifier>3<"), "TSLVersionIdentifier 3"),
    ((b"TSLType/EUgeneric", b"TSLType/EUlistofthelists"), "not a trusted list of trust services"),
])
def test_signed_documents_that_are_not_ts_119_612_lists_are_refused(world: World, change: tuple[bytes, bytes],
                                                                    reason: str) -> None:
    xml = build_trusted_list([Service("CA", world.qca, (Status(GRANTED, GRANTED_SINCE),))], ListInfo(issued=ISSUED))
    signed = world.sign(xml.replace(*change))
    verify_with_xmlsec1(signed, world.tlso)
    assert reason in refusal(world, signed)


def test_not_xml_is_refused(world: World) -> None:
    assert "not well-formed XML" in refusal(world, b"%PDF-1.7 not a list")


def test_a_trusted_list_is_only_built_by_parse(world: World) -> None:
    with pytest.raises(TypeError, match="TrustedList.parse"):
        TrustedList(object(), territory="AZ", sequence_number=1, issued=NOW, next_update=NOW,  # type: ignore[arg-type]
                    signer=a1(world.tlso), services=(), registry=None)


# --- XML safety -------------------------------------------------------------------------------------------------


def test_external_entities_are_not_expanded_nor_fetched(world: World, tmp_path: Path) -> None:
    secret = tmp_path / "secret.txt"
    secret.write_text("TOP-SECRET-CONTENT")
    with local_http() as server:
        server.routes["/evil.dtd"] = Route(body=b'<!ENTITY remote "REMOTE-ENTITY">')
        doctype = (f'<!DOCTYPE tsl:TrustServiceStatusList SYSTEM "{server.base}/evil.dtd" [\n'
                   f'<!ENTITY xxe SYSTEM "file://{secret}">\n'
                   '<!ENTITY lol "lol"><!ENTITY lol2 "&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;">\n]>\n')
        xml = build_trusted_list([Service("&xxe;&lol2;", world.qca, (Status(GRANTED, GRANTED_SINCE),))],
                                 ListInfo(issued=ISSUED), doctype=doctype)
        detail = refusal(world, xml)
        # also when the payload sits in a list whose signature covers it
        start = xml.index(b"<tsl:TrustServiceStatusList")
        signed = world.sign(xml[start:])
        signed_doc = xml[:start] + signed[signed.index(b"<tsl:TrustServiceStatusList"):]
        signed_detail = refusal(world, signed_doc)
        assert server.hits == []  # neither the DTD nor anything else was fetched
    assert "DOCTYPE" in detail and "DOCTYPE" in signed_detail
    for text in (detail, signed_detail):
        assert "TOP-SECRET" not in text and "REMOTE-ENTITY" not in text and "lollol" not in text


# --- qualification ------------------------------------------------------------------------------------------------


def test_certificate_of_the_granted_service_is_qualified(world: World) -> None:
    tl = parse(world, world.signed)
    assert tl.qualification([a1(world.alice), a1(world.qca)], NOW) == Qualification(
        qualified=True, qc_type="esign", qscd=True, source="trusted-list",
        trusted_service="Test QCA for qualified signatures")


def test_sie_qualifiers_set_the_type_and_the_device(world: World) -> None:
    tl = parse(world, world.signed)
    assert tl.qualification([a1(world.carol), a1(world.seal_ca)], NOW) == Qualification(
        qualified=True, qc_type="eseal", qscd=False, source="trusted-list", trusted_service="Seal CA without QSCD")


def test_withdrawn_service_qualifies_only_before_its_withdrawal(world: World) -> None:
    tl = parse(world, world.signed)
    path = [a1(world.bob), a1(world.old_ca)]
    assert tl.qualification(path, NOW) == Qualification(
        qualified=False, qc_type=None, qscd=False, source="trusted-list", trusted_service="Old QCA")
    assert tl.qualification(path, WITHDRAWN_SINCE - dt.timedelta(days=50)) == Qualification(
        qualified=True, qc_type="esign", qscd=True, source="trusted-list", trusted_service="Old QCA")
    # and not before the service was granted
    assert tl.qualification(path, GRANTED_SINCE - dt.timedelta(days=1)) is not None
    assert not tl.qualification(path, GRANTED_SINCE - dt.timedelta(days=1)).qualified  # type: ignore[union-attr]


def test_certificate_of_no_listed_service_has_no_answer(world: World) -> None:
    tl = parse(world, world.signed)
    assert tl.qualification([a1(world.stranger), a1(world.stranger_ca)], NOW) is None
    assert tl.qualification([a1(world.qca)], NOW) is None  # the CA itself was issued by no service
    with pytest.raises(ValueError, match="timezone-aware"):
        tl.qualification([a1(world.alice), a1(world.qca)], NOW.replace(tzinfo=None))


# --- loading --------------------------------------------------------------------------------------------------


async def test_load_from_a_file(world: World, tmp_path: Path) -> None:
    path = tmp_path / "AZ-TL.xml"
    path.write_bytes(world.signed)
    tl = await load_trusted_list(str(path), [a1(world.tlso)], at=NOW)
    assert tl.description.startswith("trusted list AZ #12")
    with pytest.raises(TrustedListInvalid, match="cannot be read"):
        await load_trusted_list(str(tmp_path / "missing.xml"), [a1(world.tlso)], at=NOW)
    with pytest.raises(TrustedListInvalid, match="only a file path or an http"):
        await load_trusted_list(f"file://{path}", [a1(world.tlso)], at=NOW)


async def test_load_from_an_http_url(world: World) -> None:
    with local_http() as server:
        server.routes["/tl/AZ.xml"] = Route(body=world.signed, headers={"Content-Type": "application/xml"})
        server.routes["/moved"] = Route(status=302, headers={"Location": "/tl/AZ.xml"})
        server.routes["/to-file"] = Route(status=302, headers={"Location": "file:///etc/passwd"})
        tl = await load_trusted_list(f"{server.base}/tl/AZ.xml", [a1(world.tlso)], at=NOW, timeout=5.0)
        assert tl.sequence_number == 12
        assert (await load_trusted_list(f"{server.base}/moved", [a1(world.tlso)], at=NOW)).territory == "AZ"
        with pytest.raises(TrustedListInvalid, match="redirected to a non-HTTP URL"):
            await load_trusted_list(f"{server.base}/to-file", [a1(world.tlso)], at=NOW)
        with pytest.raises(TrustedListInvalid, match="HTTP status 404"):
            await load_trusted_list(f"{server.base}/nothing", [a1(world.tlso)], at=NOW)
        with pytest.raises(TrustedListInvalid, match="does not verify"):
            await load_trusted_list(f"{server.base}/tl/AZ.xml", [a1(world.other_tlso)], at=NOW)
        assert server.count("/tl/AZ.xml") == 3
        assert "/etc/passwd" not in "".join(server.hits)


async def test_oversized_answer_is_cut_off(world: World) -> None:
    class Endless(QuietHandler):
        def do_GET(self) -> None:  # noqa: N802 - http.server's handler name
            self.send_response(200)
            self.end_headers()
            chunk = b"<a>" + b" " * 65533
            try:
                for _ in range(11 * 1024 * 1024 // len(chunk) + 2):
                    self.wfile.write(chunk)
            except OSError:  # the client hung up, as it should
                pass

    handler: type[BaseHTTPRequestHandler] = Endless
    with serving(handler) as server:
        url = f"http://127.0.0.1:{server.server_address[1]}/tl.xml"
        with pytest.raises(TrustedListInvalid, match="larger than"):
            await load_trusted_list(url, [a1(world.tlso)], at=NOW)


async def test_unreachable_url_is_refused(world: World) -> None:
    with pytest.raises(TrustedListInvalid, match="cannot be fetched"):
        await load_trusted_list(f"http://127.0.0.1:{free_port()}/tl.xml", [a1(world.tlso)], at=NOW, timeout=2.0)


# --- load_anchors -----------------------------------------------------------------------------------------------


def _pem(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)


def test_load_anchors_reads_pem_bundles_and_der(world: World, tmp_path: Path) -> None:
    bundle = tmp_path / "bundle.pem"
    bundle.write_bytes(b"# national roots\n" + _pem(world.qca) + b"\nsubject=...\n" + _pem(world.old_ca))
    der = tmp_path / "seal-ca.cer"
    der.write_bytes(world.seal_ca.public_bytes(serialization.Encoding.DER))
    anchors = load_anchors([bundle, der])
    assert [(c.sha256, source) for c, source in anchors] == [
        (a1(world.qca).sha256, "bundle.pem"), (a1(world.old_ca).sha256, "bundle.pem"),
        (a1(world.seal_ca).sha256, "seal-ca.cer")]
    assert anchors[0][0].subject.human_friendly == a1(world.qca).subject.human_friendly


def test_load_anchors_accepts_a_self_signed_end_entity(world: World, tmp_path: Path) -> None:
    path = tmp_path / "pinned.pem"
    path.write_bytes(_pem(world.tlso))  # self-signed, no basicConstraints: directly trusted
    assert [source for _, source in load_anchors([path])] == ["pinned.pem"]


@pytest.mark.parametrize(("content", "reason"), [
    (b"this is not a certificate", "not an X.509 certificate"),
    (b"", "is empty"),
    (b"  \n", "is empty"),
    (b"-----BEGIN CERTIFICATE-----\n!!!!\n-----END CERTIFICATE-----\n", "trust anchor file"),
    (b"-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n", "PRIVATE KEY block"),
    (b"\x30\x82\x01\x00garbage", "not an X.509 certificate"),
])
def test_load_anchors_refuses_what_is_not_a_certificate(tmp_path: Path, content: bytes, reason: str) -> None:
    path = tmp_path / "anchor.pem"
    path.write_bytes(content)
    with pytest.raises(ValueError, match=reason) as caught:
        load_anchors([path])
    assert str(path) in str(caught.value)


def test_load_anchors_refuses_an_end_entity_issued_by_someone_else(world: World, tmp_path: Path) -> None:
    path = tmp_path / "alice.pem"
    path.write_bytes(_pem(world.alice))
    with pytest.raises(ValueError, match="end-entity certificate issued by") as caught:
        load_anchors([path])
    assert str(path) in str(caught.value)


def test_load_anchors_names_a_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="cannot be read") as caught:
        load_anchors([tmp_path / "nowhere.pem"])
    assert "nowhere.pem" in str(caught.value)

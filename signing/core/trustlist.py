"""An ETSI TS 119 612 trusted list, its signature checked, as a `signing.core.trust.TrustedListView` (issue 14).

A trusted list (ETSI TS 119 612 v2.x, XML namespace http://uri.etsi.org/02231/v2#) names the trust service
providers of a territory and, per service, its type (section 5.5.1; "CA/QC": a CA issuing qualified certificates),
its digital identity (5.5.3: the CA certificates), its status and status history (5.5.4, 5.5.5, 5.6: "granted",
"withdrawn", ...) and the Sie qualifiers (5.5.9.2: QCStatement, QCForESig/QCForESeal/QCForWSA, QCWithQSCD/
QCNoQSCD, ...) that refine what the service's certificates are. pyHanko reads the services into a TSPRegistry
(`pyhanko.sign.validation.qualified.eutl_parse`) and decides the qualified status of a certificate from it with
`QualificationAssessor` (following ETSI TS 119 615 and the CEF eSignature DSS algorithm: the status and qualifiers
of the services on the certificate's path that were "granted" at the time asked). This module adds what a
relying party must check before believing any of it.

Security decisions, in one place:
- Size: at most `MAX_LIST_BYTES` (10 MiB, national lists are well under 1 MiB) from a file or over HTTP.
- XML parsing is lxml with `resolve_entities=False, no_network=True, load_dtd=False`, and a document with a
  DOCTYPE is refused outright (a TS 119 612 list has none): no entity expansion (XXE, "billion laughs"), no DTD or
  entity fetched over the network. pyHanko's own parser (used on the verified bytes) is configured the same way,
  and signxml refuses DTDs and entities too.
- The list must be signed (section 5.7.1: an enveloped XAdES signature, ds:Signature a child of the root) and the
  signature must verify with one of the configured signer certificates (the scheme operator's certificates,
  published out of band, e.g. in the EU list of the lists). The certificate the signature carries is never trusted
  by itself: signxml verifies with the configured certificate, and XAdES SigningCertificate(V2) must name it. The
  signer certificate must be valid at `at`. Digests and signature algorithms are SHA-2 only.
- "See what is signed": everything read from the list is read from the bytes the verified ds:Reference covers
  (signxml's `signed_data`), never from the document as received, so a signature-wrapping attack that puts signed
  content beside unsigned content has no effect.
- Fail closed on time: a list whose NextUpdate (section 5.3.15) is before `at` is refused, as is a closed list (no
  NextUpdate), and one issued after `at` (ListIssueDateTime, 5.3.14). NextUpdate is the latest time the operator
  promises the next issue by; what to do with a list past it is the relying party's choice. For a validation
  service that tells citizens whether a signature is qualified, stale data must not be presented as current: the
  list is refused, the operator sees the refusal when the list is (re)loaded.
- Only TS 119 612 lists: the root element TrustServiceStatusList in the v2 namespace, TSLVersionIdentifier 5
  (TS 119 612 v2.1.1 to v2.2.1) or 6 (v2.3.1), a TSLType that is not a list of the lists, a SchemeTerritory.

`anchors` are the certificates of every CA/QC service of the list, whatever its status: a path is built to them so
that a signature made while a service was granted still finds its issuer after the service was withdrawn; whether
the certificate is qualified at a time is the job of `qualification`, from the status history. (A path to a
withdrawn CA is still a path: the engine's verdict on the signature does not depend on the list's status, only
the qualified status does, as in ETSI TS 119 615.)
"""

from __future__ import annotations

import asyncio
import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Final
from urllib.parse import urljoin, urlsplit

import httpx
from asn1crypto import x509
from cryptography.x509 import load_der_x509_certificate
from lxml import etree
from pyhanko.generated.etsi import ts_119612
from pyhanko.sign.validation.qualified.assess import QualificationAssessor
from pyhanko.sign.validation.qualified.eutl_parse import trust_list_to_registry_unsafe
from pyhanko.sign.validation.qualified.q_status import QualificationResult
from pyhanko.sign.validation.qualified.tsp import CA_QC_URI, QcCertType, TSPRegistry
from pyhanko_certvalidator.authority import AuthorityWithCert, TrustAnchor
from pyhanko_certvalidator.path import ValidationPath
from signxml.algorithms import DigestAlgorithm, SignatureMethod
from signxml.exceptions import InvalidInput, SignXMLException
from signxml.xades.xades import XAdESSignatureConfiguration, XAdESVerifier
from xsdata.formats.dataclass.parsers import XmlParser
from xsdata.formats.dataclass.parsers.config import ParserConfig

from signing.core.errors import TrustedListInvalid
from signing.core.report import Qualification

__all__ = ["MAX_LIST_BYTES", "TrustedList", "TrustedService", "load_trusted_list"]

MAX_LIST_BYTES: Final = 10 * 1024 * 1024
"""The largest trusted list read from a file or over HTTP."""

MAX_REDIRECTS: Final = 3
"""HTTP redirects followed when fetching a list, each to an http or https URL only."""

TSL_NAMESPACE: Final = "http://uri.etsi.org/02231/v2#"
_ROOT_TAG: Final = f"{{{TSL_NAMESPACE}}}TrustServiceStatusList"
_SIGNATURE_TAG: Final = "{http://www.w3.org/2000/09/xmldsig#}Signature"

SUPPORTED_VERSIONS: Final = frozenset({5, 6})
"""TSLVersionIdentifier (TS 119 612 section 5.3.1): 5 in v2.1.1 to v2.2.1, 6 from v2.3.1."""

_SIGNATURE_METHODS: Final = frozenset({
    SignatureMethod.RSA_SHA256, SignatureMethod.RSA_SHA384, SignatureMethod.RSA_SHA512,
    SignatureMethod.ECDSA_SHA256, SignatureMethod.ECDSA_SHA384, SignatureMethod.ECDSA_SHA512,
    SignatureMethod.SHA256_RSA_MGF1, SignatureMethod.SHA384_RSA_MGF1, SignatureMethod.SHA512_RSA_MGF1,
})
_DIGEST_ALGORITHMS: Final = frozenset({DigestAlgorithm.SHA256, DigestAlgorithm.SHA384, DigestAlgorithm.SHA512})

_QC_TYPES: Final = {QcCertType.QC_ESIGN: "esign", QcCertType.QC_ESEAL: "eseal", QcCertType.QC_WEB: "eweb"}
"""pyHanko's QcCertType to the report's names (ETSI EN 319 412-5 section 4.2.3 QcType)."""

_BUILT_BY_PARSE: Final = object()


@dataclass(frozen=True, slots=True)
class TrustedService:
    """A CA/QC service of the list as it stands now (ETSI TS 119 612 section 5.5): its name, provider, current
    status URI and since when, and its certificates (ServiceDigitalIdentity)."""

    name: str
    provider: str
    status: str
    status_since: dt.datetime
    certificates: tuple[x509.Certificate, ...]

    @property
    def granted(self) -> bool:
        return self.status.endswith("/Svcstatus/granted")


class TrustedList:
    """A trusted list whose signature verified with a configured certificate: only `TrustedList.parse` (and
    `load_trusted_list`) build one (STYLE habit 8)."""

    __slots__ = ("_registry", "issued", "next_update", "sequence_number", "services", "signer", "territory")

    def __init__(self, token: object, *, territory: str, sequence_number: int, issued: dt.datetime,
                 next_update: dt.datetime, signer: x509.Certificate, services: tuple[TrustedService, ...],
                 registry: TSPRegistry) -> None:
        if token is not _BUILT_BY_PARSE:
            raise TypeError("a TrustedList is built by TrustedList.parse, which checks its signature")
        self.territory = territory
        self.sequence_number = sequence_number
        self.issued = issued
        self.next_update = next_update
        self.signer = signer
        """The configured certificate the list's signature verified with."""
        self.services = services
        self._registry = registry

    # --- TrustedListView -------------------------------------------------------------------------------------

    @property
    def description(self) -> str:
        return f"trusted list {self.territory} #{self.sequence_number} (issued {self.issued.date().isoformat()})"

    @property
    def anchors(self) -> tuple[x509.Certificate, ...]:
        seen: set[bytes] = set()
        out: list[x509.Certificate] = []
        for service in self.services:
            for cert in service.certificates:
                if cert.sha256 not in seen:
                    seen.add(cert.sha256)
                    out.append(cert)
        return tuple(out)

    def qualification(self, path: Sequence[x509.Certificate], at: dt.datetime) -> Qualification | None:
        """The qualified status of `path[0]` at `at` as this list says (ETSI TS 119 615 as pyHanko's
        QualificationAssessor implements it: the services on the path granted at `at`, their Sie qualifiers
        applied to the certificate, its qcStatements where the list leaves them in force).

        None when no CA/QC service of the list (in any status) has a certificate on the path above `path[0]`;
        else `qualified` False, with the service's name, when no service on the path was granted at `at` or the
        qualifiers say not qualified."""
        if at.tzinfo is None:
            raise ValueError("the time of a qualification must be timezone-aware")
        if not path:
            return None
        issuing = self._service_on_path(path[1:])
        if issuing is None:
            return None
        try:
            result = QualificationAssessor(self._registry).check_entity_cert_qualified(_validation_path(path), at)
        except NotImplementedError:  # several QcTypes in one certificate: pyHanko will not decide, neither do we
            result = None
        if result is None or result.service_definition is None or not result.status.qualified:
            return Qualification(qualified=False, qc_type=None, qscd=False, source="trusted-list",
                                 trusted_service=issuing.name)
        return _qualified(result)

    def _service_on_path(self, issuers: Sequence[x509.Certificate]) -> TrustedService | None:
        """The service whose certificate (same subject and key, as pyHanko's AuthorityWithCert compares) is one of
        `issuers`, nearest the signer first."""
        for cert in issuers:
            wanted = AuthorityWithCert(cert)
            for service in self.services:
                if any(AuthorityWithCert(own) == wanted for own in service.certificates):
                    return service
        return None

    # --- building one -----------------------------------------------------------------------------------------

    @classmethod
    def parse(cls, xml: bytes, signers: Sequence[x509.Certificate], *, at: dt.datetime) -> TrustedList:
        """Check and read a trusted list (see the module docstring for every check); raises TrustedListInvalid
        naming the first check that fails."""
        if at.tzinfo is None:
            raise ValueError("the time a trusted list is checked at must be timezone-aware")
        if not signers:
            raise TrustedListInvalid("no trusted list signer certificate is configured (ETSI TS 119 612 5.7.1)")
        if len(xml) > MAX_LIST_BYTES:
            raise TrustedListInvalid(f"the trusted list is larger than {MAX_LIST_BYTES} bytes")
        root = _safe_xml(xml)
        if root.tag != _ROOT_TAG:
            raise TrustedListInvalid(
                f"not an ETSI TS 119 612 trusted list: the root element is {root.tag}, not {_ROOT_TAG}")
        if root.find(_SIGNATURE_TAG) is None:
            raise TrustedListInvalid("the trusted list is not signed (ETSI TS 119 612 section 5.7.1 requires an "
                                     "enveloped XAdES signature)")
        signed, signer = _verified_content(xml, signers, at)
        tsl = _typed(signed)
        scheme = tsl.scheme_information
        if scheme is None:
            raise TrustedListInvalid("the trusted list has no SchemeInformation (ETSI TS 119 612 section 5.3)")
        version = scheme.tslversion_identifier
        if version not in SUPPORTED_VERSIONS:
            raise TrustedListInvalid(f"TSLVersionIdentifier {version} is not an ETSI TS 119 612 v2 list "
                                     f"(expected one of {sorted(SUPPORTED_VERSIONS)})")
        tsl_type = scheme.tsltype.value if scheme.tsltype is not None else ""
        if not tsl_type or tsl_type.lower().endswith("listofthelists"):
            raise TrustedListInvalid(f"TSLType {tsl_type or '(none)'} is not a trusted list of trust services")
        territory = scheme.scheme_territory.value if scheme.scheme_territory is not None else ""
        if not territory or scheme.tslsequence_number is None or scheme.list_issue_date_time is None:
            raise TrustedListInvalid("the trusted list lacks SchemeTerritory, TSLSequenceNumber or ListIssueDateTime")
        issued = _aware(scheme.list_issue_date_time.to_datetime())
        next_update_xml = scheme.next_update.date_time if scheme.next_update is not None else None
        if next_update_xml is None:
            raise TrustedListInvalid("the trusted list is closed (no NextUpdate, ETSI TS 119 612 section 5.3.15)")
        next_update = _aware(next_update_xml.to_datetime())
        if next_update < at:
            raise TrustedListInvalid(f"the trusted list expired: its NextUpdate {next_update.isoformat()} is before "
                                     f"{at.isoformat()} (ETSI TS 119 612 section 5.3.15)")
        if issued > at:
            raise TrustedListInvalid(f"the trusted list was issued {issued.isoformat()}, after {at.isoformat()}")
        registry, _errors = trust_list_to_registry_unsafe(signed.decode("utf-8"))  # signed bytes only, see above
        return cls(_BUILT_BY_PARSE, territory=territory, sequence_number=scheme.tslsequence_number,
                   issued=issued, next_update=next_update, signer=signer, services=_ca_services(tsl),
                   registry=registry)


async def load_trusted_list(location: str, signers: Sequence[x509.Certificate], *, at: dt.datetime,
                            timeout: float = 10.0) -> TrustedList:  # noqa: ASYNC109 - httpx's per-operation timeout, as the contract names it
    """Read a trusted list from a file path or an http(s) URL and `TrustedList.parse` it.

    Over HTTP: at most `MAX_LIST_BYTES`, `timeout` seconds per operation, no proxy from the environment, up to
    `MAX_REDIRECTS` redirects and only to http or https URLs, a 200 answer required. Raises TrustedListInvalid
    when the list cannot be read, fetched or used."""
    scheme = urlsplit(location).scheme.lower()
    if scheme in {"http", "https"}:
        data = await _fetch(location, per_operation_timeout=timeout)
    elif len(scheme) > 1:  # not a path (a one-letter "scheme" would be a Windows drive)
        raise TrustedListInvalid(f"trusted list location {location}: only a file path or an http(s) URL")
    else:
        data = await asyncio.to_thread(_read_file, Path(location))
    return await asyncio.to_thread(TrustedList.parse, data, signers, at=at)


# --- helpers ---------------------------------------------------------------------------------------------------


def _read_file(path: Path) -> bytes:
    try:
        with path.open("rb") as handle:
            data = handle.read(MAX_LIST_BYTES + 1)
    except OSError as exc:
        raise TrustedListInvalid(f"trusted list file {path}: cannot be read ({exc.strerror or exc})") from exc
    if len(data) > MAX_LIST_BYTES:
        raise TrustedListInvalid(f"trusted list file {path}: larger than {MAX_LIST_BYTES} bytes")
    return data


async def _fetch(url: str, *, per_operation_timeout: float) -> bytes:
    async with httpx.AsyncClient(timeout=per_operation_timeout, follow_redirects=False, trust_env=False) as http:
        for _ in range(MAX_REDIRECTS + 1):
            try:
                async with http.stream("GET", url, headers={"Accept": "application/vnd.etsi.tsl+xml, "
                                                                      "application/xml;q=0.9"}) as response:
                    if response.is_redirect:
                        target = urljoin(url, response.headers.get("Location", ""))
                        if urlsplit(target).scheme.lower() not in {"http", "https"}:
                            raise TrustedListInvalid(f"trusted list {url}: redirected to a non-HTTP URL {target}")
                        url = target
                        continue
                    if response.status_code != httpx.codes.OK:
                        raise TrustedListInvalid(f"trusted list {url}: HTTP status {response.status_code}")
                    data = bytearray()
                    async for chunk in response.aiter_bytes():
                        data += chunk
                        if len(data) > MAX_LIST_BYTES:
                            raise TrustedListInvalid(f"trusted list {url}: larger than {MAX_LIST_BYTES} bytes")
                    return bytes(data)
            except httpx.HTTPError as exc:  # timeouts, refused connections, TLS and protocol errors
                raise TrustedListInvalid(f"trusted list {url}: cannot be fetched ({type(exc).__name__}: {exc})") \
                    from exc
    raise TrustedListInvalid(f"trusted list {url}: more than {MAX_REDIRECTS} redirects")


def _safe_parser() -> etree.XMLParser:
    return etree.XMLParser(resolve_entities=False, no_network=True, load_dtd=False, dtd_validation=False,
                           huge_tree=False, remove_blank_text=False)


def _safe_xml(xml: bytes) -> etree._Element:
    """Parse without entities, DTDs or network; refuse any DOCTYPE (see the module docstring)."""
    try:
        root = etree.fromstring(xml, parser=_safe_parser())
    except etree.XMLSyntaxError as exc:
        raise TrustedListInvalid(f"the trusted list is not well-formed XML ({exc})") from exc
    docinfo = root.getroottree().docinfo
    if docinfo.doctype or docinfo.internalDTD is not None or docinfo.externalDTD is not None:
        raise TrustedListInvalid("the trusted list has a DOCTYPE; ETSI TS 119 612 lists have none and entities "
                                 "are never expanded")
    return root


def _verified_content(xml: bytes, signers: Sequence[x509.Certificate],
                      at: dt.datetime) -> tuple[bytes, x509.Certificate]:
    """The bytes of the TrustServiceStatusList the signature covers, and the configured certificate it verified
    with; the newest certificate is tried first (as pyHanko's trust_list_to_registry does)."""
    config = XAdESSignatureConfiguration(
        require_x509=True,
        location="./",  # enveloped: ds:Signature a child of the root (TS 119 612 section 5.7.1)
        expect_references=True,  # the list and the XAdES SignedProperties, maybe KeyInfo: any number
        signature_methods=_SIGNATURE_METHODS,
        digest_algorithms=_DIGEST_ALGORITHMS,
        verification_time=at,
    )
    failures: list[str] = []
    for signer in sorted(signers, key=lambda c: c.not_valid_before, reverse=True):
        try:
            results = XAdESVerifier().verify(xml, x509_cert=load_der_x509_certificate(signer.dump()),
                                             expect_config=config)
        except (SignXMLException, InvalidInput, ValueError) as exc:
            failures.append(f"{signer.subject.human_friendly}: {exc}")
            continue
        for result in results:
            if result.signed_xml is not None and result.signed_xml.tag == _ROOT_TAG:
                return result.signed_data, signer
        failures.append(f"{signer.subject.human_friendly}: the signature does not cover the TrustServiceStatusList")
    raise TrustedListInvalid("the trusted list's signature does not verify with a configured signer certificate: "
                             + "; ".join(failures))


def _typed(signed: bytes) -> ts_119612.TrustServiceStatusList:
    """pyHanko's generated TS 119 612 classes over the verified bytes (parsed by `_safe_xml` again)."""
    parser = XmlParser(config=ParserConfig(load_dtd=False, process_xinclude=False, fail_on_unknown_properties=False,
                                           fail_on_unknown_attributes=False))
    try:
        return parser.parse(_safe_xml(signed).getroottree(), ts_119612.TrustServiceStatusList)
    except Exception as exc:  # xsdata's parser and converter errors have no common base
        raise TrustedListInvalid(f"the trusted list does not follow the ETSI TS 119 612 schema ({exc})") from exc


def _ca_services(tsl: ts_119612.TrustServiceStatusList) -> tuple[TrustedService, ...]:
    out: list[TrustedService] = []
    providers = tsl.trust_service_provider_list.trust_service_provider if tsl.trust_service_provider_list else ()
    for provider in providers:
        provider_name = _name(provider.tspinformation.tspname if provider.tspinformation else None)
        services = provider.tspservices.tspservice if provider.tspservices else ()
        for service in services:
            info = service.service_information
            if info is None or info.service_type_identifier is None or \
                    info.service_type_identifier.value != CA_QC_URI:
                continue
            identity = info.service_digital_identity
            certs = tuple(x509.Certificate.load(d.x509_certificate)
                          for d in (identity.digital_id if identity else ()) if d.x509_certificate)
            since = info.status_starting_time
            out.append(TrustedService(
                name=_name(info.service_name), provider=provider_name,
                status=info.service_status.value if info.service_status else "",
                status_since=_aware(since.to_datetime()) if since else dt.datetime.min.replace(tzinfo=dt.UTC),
                certificates=certs))
    return tuple(out)


def _name(names: ts_119612.InternationalNamesType | None) -> str:
    """The English name (xml:lang "en"), else the first (TS 119 612 section 5.1.4 multilingual strings)."""
    if names is None or not names.name:
        return "unknown"
    for entry in names.name:
        if entry.lang == "en":
            return str(entry.value)
    return str(names.name[0].value)


def _aware(moment: dt.datetime) -> dt.datetime:
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=dt.UTC)


def _validation_path(path: Sequence[x509.Certificate]) -> ValidationPath:
    """pyHanko's path from the report's: `path[0]` the signer, `path[-1]` the anchor."""
    anchor = TrustAnchor(AuthorityWithCert(path[-1]))
    if len(path) == 1:
        return ValidationPath(anchor, [], None)
    return ValidationPath(anchor, list(path[1:-1]), path[0])


def _qualified(result: QualificationResult) -> Qualification:
    definition = result.service_definition
    return Qualification(qualified=True, qc_type=_QC_TYPES[result.status.qc_type],
                         qscd=result.status.qc_key_security.is_qscd, source="trusted-list",
                         trusted_service=definition.base_info.service_name if definition else None)

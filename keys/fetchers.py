"""Revocation and certificate fetchers that answer Açar's own PKI in process: one mechanism for every validator.

Both validators of the service check certificates that the built-in CA may have issued: signing (B-LT validation
data, signature validation: signing.core.revocation) and the ID-card login (idp.core.certificates, in development
its trust anchor is the built-in root). Such a certificate names the built-in CA's URLs (`keys.ca.PkiUrls`): its
AIA OCSP responder (RFC 6960 appendix A.1; RFC 5280 section 4.2.2.1), its CRL distribution point (RFC 5280 section
4.2.1.13) and its issuer's caIssuers URL (RFC 5280 section 4.2.2.1). Those URLs point at this very service, often
at an address it cannot reach itself (the http port of an https issuer, behind a proxy), so they are answered here:

- `LocalAnswers` answers them from a `LocalPki` (keys.pki.PkiService is one) with the code the /pki routes serve:
  `PkiService.ocsp` (the same signed OCSPResponse, nonce echoed, RFC 8954), `.crl` and `.ca_certificate`. The
  URLs are compared exactly with the ones the CA writes into certificates; nothing else is answered locally.
- `LocalFirstOcspFetcher`, `LocalFirstCrlFetcher` and `LocalFirstCertificateFetcher` are pyhanko-certvalidator's
  aiohttp fetchers with that source put in front of the network call (`_fetch`, `_single_fetch`, `fetch_certs`: the
  fetch-and-cache hooks of pyhanko-certvalidator 0.33, pinned in constraints.txt), so results are cached per
  validation context exactly as theirs are and the caller's FetchBudget still bounds the network requests. A local
  answer is checked like a fetched one: pyhanko-certvalidator verifies the OCSP response's signature, responder
  authorisation (RFC 6960 section 4.2.2.2) and nonce, and the CRL's signature (RFC 5280 section 6.3), because the
  in-process call skips only the transport, not the validation.
- Every other URL goes to the network, after `FetchSource.refused` (a caller's SSRF rule: signing refuses
  non-public addresses in production) has let it pass; the OCSP fetcher's `_remote` hook is where a caller sends
  the request elsewhere (the ID-card login's ACAR_IDCARD_OCSP_URL).
- `LocalAnswers(run=...)`: a runner for the PkiService calls when the validation runs on another event loop than
  the one owning the database connections (signing's thread backend); by default they are awaited where called.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable
from typing import Any, Protocol

from asn1crypto import cms, crl, ocsp, x509
from pyhanko_certvalidator.authority import Authority
from pyhanko_certvalidator.errors import CertificateFetchError, CRLFetchError, OCSPFetchError, OCSPValidationError
from pyhanko_certvalidator.fetchers import Fetchers
from pyhanko_certvalidator.fetchers.aiohttp_fetchers.cert_fetch_client import AIOHttpCertificateFetcher
from pyhanko_certvalidator.fetchers.aiohttp_fetchers.crl_client import AIOHttpCRLFetcher
from pyhanko_certvalidator.fetchers.aiohttp_fetchers.ocsp_client import AIOHttpOCSPFetcher
from pyhanko_certvalidator.fetchers.aiohttp_fetchers.util import LazySession
from pyhanko_certvalidator.fetchers.common_utils import (
    FetchBudget,
    format_ocsp_request,
    process_ocsp_response_data,
)
from pyhanko_certvalidator.util import get_ocsp_urls

from keys.ca import CA_NAMES, PkiUrls
from keys.errors import KeysError
from keys.ocsp import OcspReply

Runner = Callable[[Callable[[], Awaitable[Any]]], Awaitable[Any]]
"""Runs a PkiService call (a coroutine factory) and returns its result: where the database connections live."""


class LocalPki(Protocol):
    """The built-in PKI as the fetchers need it: keys.pki.PkiService is one."""

    urls: PkiUrls

    async def ocsp(self, request_der: bytes) -> OcspReply: ...

    async def crl(self, name: str) -> bytes: ...

    async def ca_certificate(self, name: str) -> bytes: ...


class FetchSource(Protocol):
    """What the local-first fetchers ask before (and instead of) the network: which URLs are answered in process,
    those answers, and whether another URL may be fetched at all."""

    def local_ocsp(self, urls: Iterable[str]) -> bool: ...

    async def ocsp(self, request: ocsp.OCSPRequest) -> ocsp.OCSPResponse: ...

    def local_crl(self, url: str) -> str | None: ...

    async def crl(self, name: str) -> crl.CertificateList: ...

    def local_ca(self, url: str) -> str | None: ...

    async def ca_certificate(self, name: str) -> list[x509.Certificate]: ...

    async def refused(self, url: str) -> str | None: ...


async def _await(call: Callable[[], Awaitable[Any]]) -> Any:
    return await call()


class LocalAnswers:
    """A `FetchSource` answering the URLs of `local` (None: no PKI of our own, everything is fetched) in process,
    through `run` (default: awaited here); `refused` lets every other URL through (subclasses add a rule)."""

    def __init__(self, local: LocalPki | None, *, run: Runner = _await) -> None:
        self._local = local
        self._run = run
        self._ocsp_url = local.urls.ocsp if local is not None else None
        self._crl_urls = {local.urls.crl(name): name for name in CA_NAMES} if local is not None else {}
        self._ca_urls = {local.urls.ca_certificate(name): name for name in CA_NAMES} if local is not None else {}

    async def refused(self, url: str) -> str | None:
        """Why a request to `url` must not leave (None: it may)."""
        del url
        return None

    def local_ocsp(self, urls: Iterable[str]) -> bool:
        """Whether the certificate's AIA OCSP URLs name the built-in responder."""
        return self._ocsp_url is not None and self._ocsp_url in urls

    async def ocsp(self, request: ocsp.OCSPRequest) -> ocsp.OCSPResponse:
        """The built-in responder's answer to `request` (RFC 6960), checked as a fetched one is (responseStatus
        successful, the nonce echoed: RFC 8954); OCSPValidationError otherwise."""
        local, url = self._require(), self._ocsp_url
        assert url is not None  # noqa: S101 - _require: a local PKI has its responder URL
        reply: OcspReply = await self._run(lambda: local.ocsp(request.dump()))
        response: ocsp.OCSPResponse = process_ocsp_response_data(reply.der, ocsp_request=request, ocsp_url=url)
        return response

    def local_crl(self, url: str) -> str | None:
        """The built-in CA whose CRL distribution point `url` is, or None."""
        return self._crl_urls.get(url)

    async def crl(self, name: str) -> crl.CertificateList:
        """The newest CRL of the built-in CA `name` (RFC 5280 section 5); CRLFetchError when there is none."""
        local = self._require()
        try:
            return crl.CertificateList.load(await self._run(lambda: local.crl(name)))
        except KeysError as exc:
            raise CRLFetchError(f"the built-in {name} CA has no CRL: {exc.detail}") from exc
        except Exception as exc:  # the database away, a CRL that does not parse: no CRL from here
            raise CRLFetchError(f"the built-in {name} CA's CRL is unavailable: {type(exc).__name__}") from exc

    def local_ca(self, url: str) -> str | None:
        """The built-in CA whose caIssuers URL `url` is, or None."""
        return self._ca_urls.get(url)

    async def ca_certificate(self, name: str) -> list[x509.Certificate]:
        """The certificate of the built-in CA `name`; CertificateFetchError when it is unavailable."""
        local = self._require()
        try:
            return [x509.Certificate.load(await self._run(lambda: local.ca_certificate(name)))]
        except Exception as exc:  # the database away, no such CA: pyhanko-certvalidator's fetch failure
            raise CertificateFetchError(f"the built-in {name} CA certificate is unavailable: "
                                        f"{type(exc).__name__}") from exc

    def _require(self) -> LocalPki:
        if self._local is None:  # the local_* methods said no: a fetcher asking anyway is a bug
            raise RuntimeError("no built-in PKI to answer in process")
        return self._local


def local_first_fetchers(source: FetchSource, session: LazySession, *, per_request_timeout: float,
                         budget: FetchBudget) -> Fetchers:
    """The three local-first fetchers of one validation on `session`, sharing one `budget`."""
    return Fetchers(
        ocsp_fetcher=LocalFirstOcspFetcher(source, session, per_request_timeout=per_request_timeout, budget=budget),
        crl_fetcher=LocalFirstCrlFetcher(source, session, per_request_timeout=per_request_timeout, budget=budget),
        cert_fetcher=LocalFirstCertificateFetcher(source, session, per_request_timeout=per_request_timeout,
                                                  budget=budget),
    )


class LocalFirstOcspFetcher(AIOHttpOCSPFetcher):
    """pyhanko-certvalidator's OCSP fetcher (nonce requested, RFC 8954); a certificate naming Açar's responder is
    answered in process, any other goes through `_remote`."""

    def __init__(self, source: FetchSource, session: LazySession, *, per_request_timeout: float,
                 budget: FetchBudget) -> None:
        super().__init__(session, per_request_timeout=per_request_timeout, budget=budget)
        self._source = source

    async def _fetch(self, cert: x509.Certificate | cms.AttributeCertificateV2, authority: Authority) -> Any:
        if not self._source.local_ocsp(get_ocsp_urls(cert)):
            return await self._remote(cert, authority)
        request = format_ocsp_request(cert, authority, certid_hash_algo=self.certid_hash_algo,
                                      request_nonces=self.request_nonces)
        try:
            return await self._source.ocsp(request)
        except OCSPValidationError as exc:  # not "successful", or the nonce differs: no usable answer
            raise OCSPFetchError(f"the built-in OCSP responder gave no usable answer: {exc}") from exc

    async def _remote(self, cert: x509.Certificate | cms.AttributeCertificateV2, authority: Authority) -> Any:
        """The certificate's AIA responders over HTTP (RFC 6960 appendix A.1), each first let through by the
        source's `refused`."""
        for url in get_ocsp_urls(cert):
            if (reason := await self._source.refused(url)) is not None:
                raise OCSPFetchError(f"OCSP request not sent: {reason}")
        return await super()._fetch(cert, authority)


class LocalFirstCrlFetcher(AIOHttpCRLFetcher):
    """pyhanko-certvalidator's CRL fetcher; Açar's own distribution points are answered in process."""

    def __init__(self, source: FetchSource, session: LazySession, *, per_request_timeout: float,
                 budget: FetchBudget) -> None:
        super().__init__(session, per_request_timeout=per_request_timeout, budget=budget)
        self._source = source

    async def _single_fetch(self, url: str) -> Any:
        name = self._source.local_crl(url)
        if name is None:
            if (reason := await self._source.refused(url)) is not None:
                raise CRLFetchError(f"CRL request not sent: {reason}")
            return await super()._single_fetch(url)  # type: ignore[no-untyped-call]  # unannotated in pyHanko

        async def task() -> crl.CertificateList:
            return await self._source.crl(name)

        return await self._post_fetch_task(url, task)  # type: ignore[no-untyped-call]  # unannotated in pyHanko


class LocalFirstCertificateFetcher(AIOHttpCertificateFetcher):
    """pyhanko-certvalidator's caIssuers fetcher; Açar's own CA certificates are answered in process."""

    def __init__(self, source: FetchSource, session: LazySession, *, per_request_timeout: float,
                 budget: FetchBudget) -> None:
        super().__init__(session, per_request_timeout=per_request_timeout, budget=budget)
        self._source = source

    async def fetch_certs(self, url: str, url_origin_type: str) -> Any:
        name = self._source.local_ca(url)
        if name is None:
            if (reason := await self._source.refused(url)) is not None:
                raise CertificateFetchError(f"certificate request not sent: {reason}")
            return await super().fetch_certs(url, url_origin_type)  # type: ignore[no-untyped-call]  # unannotated in pyHanko

        async def task() -> list[x509.Certificate]:
            return await self._source.ca_certificate(name)

        return await self._post_fetch_task(url, task)  # type: ignore[no-untyped-call]  # unannotated in pyHanko

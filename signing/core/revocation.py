"""Validation data for B-LT and B-LTA: certificate paths, OCSP responses and CRLs, fetched for the DSS.

- ETSI EN 319 142-1 section 5.4 (B-LT): the document security store (DSS, ISO 32000-2 section 12.8.4.3)
  holds the certificates and the revocation data (OCSP responses, RFC 6960; CRLs, RFC 5280) needed to validate
  the signer's certificate and the signature time-stamp's TSA certificate, so the signature validates offline.
- RFC 5280 section 6 path validation and revocation checking are pyhanko-certvalidator's, on an explicit
  `ValidationContext` per signature (STYLE habit 7): the trust roots given here, fetching allowed, and
  revocation mode "hard-fail" (a certificate whose revocation data cannot be obtained fails the path, so B-LT
  is never written without it).

Decisions, so a reader sees them at one place:
- Açar's own PKI is asked in process, not over HTTP to itself: an OCSP URL, CRL distribution point or
  caIssuers URL equal to one the built-in CA publishes (`keys.ca.PkiUrls`) is answered by `PkiService.ocsp`,
  `.crl` and `.ca_certificate`, the code the /pki routes serve, so the bytes are the same and no request leaves
  the process. The mechanism is keys.fetchers' (shared with the ID-card login, idp.core.certificates): this
  source is a `keys.fetchers.LocalAnswers` and its fetchers are the local-first ones, pyhanko-certvalidator's
  aiohttp fetchers with the local answers put in front of the network call. Every other URL goes through them
  to the network, on one session owned here, with its per-request timeout and its FetchLimits budget per
  signature (a hostile certificate cannot make the service fetch without bound), after the SSRF rule (`refused`).
- A fresh context (and fetcher set) per signature: a context collects every OCSP response and CRL it fetched,
  and all of them go into that signature's DSS, never into another's.
"""

from __future__ import annotations

import asyncio
import contextvars
import ipaddress
import urllib.parse
from collections.abc import Awaitable, Callable, Iterable, Sequence
from typing import Any, Final

from asn1crypto import x509
from pyhanko_certvalidator import ValidationContext
from pyhanko_certvalidator.fetchers import FetcherBackend, Fetchers
from pyhanko_certvalidator.fetchers.aiohttp_fetchers.util import LazySession
from pyhanko_certvalidator.fetchers.api import FetchLimits
from pyhanko_certvalidator.fetchers.common_utils import FetchBudget

from keys.fetchers import LocalAnswers, LocalPki, local_first_fetchers
from signing.core.callbacks import IpNetwork, refused_address, resolve

DEFAULT_FETCH_TIMEOUT: Final = 10.0
"""Seconds one OCSP, CRL or certificate request to another PKI may take."""

FETCH_LIMITS: Final = FetchLimits(max_requests=50, max_cert_requests=10, max_aia_urls_per_object=4)
"""Network requests one signature's validation data may cost: a signer and a TSA path of a few certificates
need a handful; the bound stops a hostile certificate's URLs, not a real PKI."""

REVOCATION_MODE: Final = "hard-fail"
"""pyhanko-certvalidator's revocation mode: without revocation data a path does not validate (B-LT needs it)."""


class ValidationDataSource(LocalAnswers):
    """Builds the validation context of each long-term signature (see module docstring).

    `trust_roots` are the anchors paths must end in (the built-in root, and any other root whose signers or
    TSAs the service accepts); `local` is the built-in PKI answered in process (keys.fetchers.LocalAnswers, its
    calls run on the thread backend's home loop: `_on_home`), or None.
    """

    def __init__(self, *, trust_roots: Sequence[x509.Certificate], local: LocalPki | None = None,
                 timeout: float = DEFAULT_FETCH_TIMEOUT, limits: FetchLimits = FETCH_LIMITS,
                 refuse_private: bool = False, allowed_networks: Sequence[IpNetwork] = (),
                 resolver: Callable[[str, int], Awaitable[list[str]]] = resolve) -> None:
        if not trust_roots:
            raise ValueError("a validation data source needs at least one trust root")
        super().__init__(local, run=self._on_home)
        self.trust_roots = tuple(trust_roots)
        self._refuse_private = refuse_private
        self._allowed_networks = tuple(allowed_networks)
        self._resolver = resolver
        self._timeout = timeout
        self._limits = limits
        self._session = LazySession()  # type: ignore[no-untyped-call]  # unannotated in pyHanko

    def context(self, *, other_certs: Iterable[x509.Certificate] = ()) -> ValidationContext:
        """A fresh validation context, fetching allowed, revocation hard-fail, for one signature."""
        return ValidationContext(
            trust_roots=list(self.trust_roots),
            other_certs=list(other_certs),
            allow_fetching=True,
            revocation_mode=REVOCATION_MODE,
            fetchers=self._fetchers(),
        )

    def _fetchers(self, session: LazySession | None = None) -> Fetchers:
        return local_first_fetchers(self, session or self._session, per_request_timeout=self._timeout,
                                    budget=FetchBudget(self._limits))

    def thread_backend(self, home: asyncio.AbstractEventLoop) -> FetcherBackend:
        """These fetchers for a validation that runs in a worker thread on an event loop of its own (so that its
        CPU work stays off the server's loop, signing.core.validation): an HTTP session of its own for that loop
        (closed with the backend), and the built-in PKI's in-process answers run on `home`, the loop that owns
        the database connections (the worker's loop waits for them)."""
        return _ThreadBackend(self, home)

    async def _on_home(self, call: Callable[[], Awaitable[Any]]) -> Any:
        """`call()` on the loop of the thread backend in use, or here when none is (the server's own loop)."""
        home = _HOME.get()
        if home is None or home is asyncio.get_running_loop():
            return await call()
        return await asyncio.wrap_future(asyncio.run_coroutine_threadsafe(call(), home))  # type: ignore[arg-type]

    async def close(self) -> None:
        """Close the HTTP session used for other PKIs (created again when next needed)."""
        await self._session.close()  # type: ignore[no-untyped-call]  # unannotated in pyHanko

    async def refused(self, url: str) -> str | None:
        """Why a request to `url` (a certificate's OCSP, CRL or caIssuers URL: in a validated document, the
        uploader's choice) must not leave: with `refuse_private` (production), a URL whose host resolves to an
        address that is not public (loopback, private, link-local with the cloud metadata address, ...) unless in
        `allowed_networks`: the SSRF rule of the signing callbacks (signing.core.callbacks.refused_address). None:
        it may be fetched. The resolution is not pinned for the request (aiohttp resolves again), so a DNS answer
        that changes in between is not caught here; the per-request timeout and FetchLimits still bound it."""
        if not self._refuse_private:
            return None
        parsed = urllib.parse.urlsplit(url)
        if parsed.scheme not in ("http", "https") or not parsed.hostname:
            return f"{url!r} is not an http(s) URL"
        try:
            addresses = await self._resolver(parsed.hostname, parsed.port or (443 if parsed.scheme == "https" else 80))
        except OSError as exc:
            return f"{parsed.hostname} does not resolve ({exc})"
        for address in addresses:
            if refused_address(ipaddress.ip_address(address), self._allowed_networks):
                return f"{parsed.hostname} resolves to {address}, not a public address"
        return None


_HOME: contextvars.ContextVar[asyncio.AbstractEventLoop | None] = contextvars.ContextVar("acar_fetch_home",
                                                                                         default=None)
"""The loop that owns the built-in PKI's database connections, while a thread backend's validation runs."""


class _ThreadBackend(FetcherBackend):
    """`ValidationDataSource.thread_backend`: fetchers on the worker loop's own session, local answers on `home`."""

    def __init__(self, source: ValidationDataSource, home: asyncio.AbstractEventLoop) -> None:
        self._source = source
        self._home = home
        self._session = LazySession()  # type: ignore[no-untyped-call]  # unannotated in pyHanko
        _HOME.set(home)  # in the worker loop's context: its tasks (the fetches) inherit it

    def get_fetchers(self) -> Fetchers:
        return self._source._fetchers(self._session)  # the backend is the source's own adapter

    async def close(self) -> None:
        await self._session.close()  # type: ignore[no-untyped-call]  # unannotated in pyHanko

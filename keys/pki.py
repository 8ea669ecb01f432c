"""The PKI service: the CA hierarchy, its CRLs and its OCSP responder, as the API and the CLI use them.

- Revocation and the CRL go together: `revoke` marks the certificate and publishes the issuer's next CRL in
  the same unit of work, under the CA row lock (RFC 5280 section 5.2.3: CRL numbers increase).
- CRLs are also republished once the newest one has used half of its lifetime: on request (`crl`) and by
  `housekeeping`, which also renews the OCSP responder and TSA certificates before they run out.
- The OCSP responder (keys.ocsp) is built once and kept for `cache_seconds`: its key handle, certificate
  and the issuer's CertID hashes stay in memory; a request costs one indexed lookup of the asked serials in
  `statuses` (keys.status_engine for PostgreSQL, keys.status_sqlite for SQLite), which PkiService closes.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import time
from collections.abc import Callable, Sequence
from typing import Final

from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from keys.ca import (
    CA_NAMES,
    ISSUING,
    CertificateAuthorityService,
    CertifiedKey,
    PkiUrls,
)
from keys.crl import DEFAULT_CRL_LIFETIME, CrlPublisher
from keys.errors import CANotInitialized, CertificateNotFound, KeysError
from keys.interfaces import CertificateStatusSource, KeyStore, KeyType
from keys.models import IssuedCertificate
from keys.ocsp import DEFAULT_VALIDITY, TRY_LATER, UNAUTHORIZED, OcspReply, OcspResponder
from keys.profiles import Profile
from storage.base import utcnow

DEFAULT_CACHE_SECONDS: Final = 60.0


class PkiService:
    """The built-in PKI (see module docstring). Methods taking a session flush into the caller's unit of work."""

    def __init__(
        self,
        sessions: async_sessionmaker[AsyncSession],
        store: KeyStore,
        *,
        statuses: CertificateStatusSource,
        issuer_url: str,
        certificate_policy_oid: str,
        organization: str = "Açar",
        ca_key_type: KeyType = "EC-P384",
        service_key_type: KeyType = "EC-P256",
        crl_lifetime: dt.timedelta = DEFAULT_CRL_LIFETIME,
        ocsp_validity: dt.timedelta = DEFAULT_VALIDITY,
        cache_seconds: float = DEFAULT_CACHE_SECONDS,
        clock: Callable[[], dt.datetime] = utcnow,
    ) -> None:
        self._sessions = sessions
        self.urls = PkiUrls(issuer_url.rstrip("/"))
        self.ca = CertificateAuthorityService(
            store, urls=self.urls, certificate_policy_oid=certificate_policy_oid, organization=organization,
            ca_key_type=ca_key_type, service_key_type=service_key_type, clock=clock)
        self.crls = CrlPublisher(lifetime=crl_lifetime, clock=clock)
        self.statuses = statuses
        self.ocsp_validity = ocsp_validity
        self._cache_seconds = cache_seconds
        self._clock = clock
        self._responder: tuple[float, OcspResponder] | None = None
        self._certified: dict[Profile, tuple[float, CertifiedKey]] = {}
        self._lock = asyncio.Lock()

    # --- set-up ----------------------------------------------------------------------------------------------

    async def initialize(self, session: AsyncSession, *, actor: str, create_hierarchy: bool) -> dict[str, list[str]]:
        """What `acar init` does, idempotently: the CAs (development only), service certificates, first CRLs.

        In production the CAs are imported (`acar ca import`); until the issuing CA exists, nothing else is made.
        """
        created = await self.ca.ensure_hierarchy(session, actor=actor) if create_hierarchy else []
        services: list[str] = []
        if await self.ca.exists(session, ISSUING):
            services = [f"{row.profile}:{row.serial_hex}"
                        for row in await self.ca.ensure_service_certificates(session, actor=actor)]
        crls = await self._refresh_crls(session, force=created)
        self.forget()
        return {"ca_created": created, "service_certificates_created": services, "crls_published": crls}

    async def _refresh_crls(self, session: AsyncSession, *, force: Sequence[str] = ()) -> list[str]:
        published = []
        for name in CA_NAMES:
            if not await self.ca.exists(session, name):
                continue
            if name not in force and not self.crls.due(await self.crls.newest(session, name)):
                continue
            ca = await self.ca.load_ca(session, name, for_update=True)
            if name in force or self.crls.due(await self.crls.newest(session, name)):  # re-read under the lock
                await self.crls.publish(session, name, issuer=ca.certificate, handle=ca.handle)
                published.append(name)
        return published

    async def close(self) -> None:
        """Release the status lookups' connection pool."""
        await self.statuses.close()

    def forget(self) -> None:
        """Drop the cached responder and service keys (after init, import, renewal or revocation)."""
        self._responder = None
        self._certified.clear()

    # --- revocation and CRLs ---------------------------------------------------------------------------------

    async def revoke(self, session: AsyncSession, serial: str, reason: str, *, actor: str) -> IssuedCertificate:
        """Revoke a certificate (RFC 5280 section 5.3.1 reason) and publish its issuer's next CRL."""
        row = await self.ca.revoke(session, serial, reason, actor=actor)
        ca = await self.ca.load_ca(session, row.issuer_ca)  # the row lock is held since ca.revoke
        await self.crls.publish(session, ca.name, issuer=ca.certificate, handle=ca.handle)
        if row.profile in (Profile.OCSP_RESPONDER.value, Profile.TSA.value):
            self.forget()
        return row

    async def crl(self, name: str) -> bytes:
        """The newest CRL of a CA (DER), republished first when due (half its lifetime used)."""
        if name not in CA_NAMES:
            raise CertificateNotFound(f"no CA named {name!r}")
        async with self._sessions() as session:
            newest = await self.crls.newest(session, name)
        if newest is not None and not self.crls.due(newest):
            return newest.der
        async with self._sessions() as session, session.begin():
            ca = await self.ca.load_ca(session, name, for_update=True)
            newest = await self.crls.newest(session, name)  # re-read under the lock: another node may have published
            if newest is None or self.crls.due(newest):
                newest = await self.crls.publish(session, name, issuer=ca.certificate, handle=ca.handle)
            return newest.der

    async def ca_certificate(self, name: str) -> bytes:
        """The DER certificate of a CA (what the caIssuers URL serves)."""
        async with self._sessions() as session:
            return (await self.ca.ca_row(session, name)).certificate_der

    # --- the OCSP responder and service keys -----------------------------------------------------------------

    async def certified_key(self, profile: Profile) -> CertifiedKey:
        """The key, certificate and chain of the OCSP responder or the TSA (kept for `cache_seconds`)."""
        cached = self._certified.get(profile)
        if cached is not None and time.monotonic() - cached[0] < self._cache_seconds and self._valid(cached[1]):
            return cached[1]
        async with self._sessions() as session:
            certified = await self.ca.certified_key(session, profile)
        self._certified[profile] = (time.monotonic(), certified)
        return certified

    def _valid(self, certified: CertifiedKey) -> bool:
        return bool(certified.certificate.not_valid_after > self._clock())

    async def tsa_key(self) -> CertifiedKey:
        """The TSA's key handle, certificate (RFC 3161 section 2.3 profile) and chain, for keys.tsa."""
        return await self.certified_key(Profile.TSA)

    async def responder(self) -> OcspResponder:
        """The OCSP responder, built from the database at most every `cache_seconds`."""
        cached = self._responder
        now = time.monotonic()
        if cached is not None and now - cached[0] < self._cache_seconds and cached[1].not_after > self._clock():
            return cached[1]
        async with self._lock:
            cached = self._responder
            if cached is not None and now - cached[0] < self._cache_seconds:
                return cached[1]
            certified = await self.certified_key(Profile.OCSP_RESPONDER)
            responder = OcspResponder(
                issuer_name=ISSUING, issuer_certificate=certified.chain[0], responder_handle=certified.handle,
                responder_certificate=certified.certificate, statuses=self.statuses, validity=self.ocsp_validity,
                clock=self._clock)
            self._responder = (time.monotonic(), responder)
            return responder

    async def ocsp(self, request_der: bytes) -> OcspReply:
        """Answer an OCSP request; without a CA or responder certificate the answer is `unauthorized`."""
        try:
            responder = await self.responder()
        except CANotInitialized:
            return OcspReply(UNAUTHORIZED, "unauthorized")
        except (SQLAlchemyError, KeysError, OSError):
            return OcspReply(TRY_LATER, "try_later")
        return await responder.respond(request_der)

    # --- the schedule ----------------------------------------------------------------------------------------

    async def housekeeping(self, *, actor: str = "scheduler") -> dict[str, list[str]]:
        """Renew service certificates running out and republish CRLs that are due (one transaction)."""
        async with self._sessions() as session, session.begin():
            if not await self.ca.exists(session, ISSUING):
                return {"service_certificates_created": [], "crls_published": []}
            renewed = [f"{row.profile}:{row.serial_hex}"
                       for row in await self.ca.ensure_service_certificates(session, actor=actor)]
            crls = await self._refresh_crls(session)
        if renewed:
            self.forget()
        return {"service_certificates_created": renewed, "crls_published": crls}

"""The PKI service: the CA hierarchy, its CRLs and its OCSP responder, as the API and the CLI use them.

- Revocation and the CRL go together: `revoke` marks the certificate and publishes the issuer's next CRL in
  the same unit of work, under the CA row lock (RFC 5280 section 5.2.3: CRL numbers increase).
- CRLs are also republished once the newest one has used half of its lifetime: on request (`crl`) and by
  `housekeeping`, which also renews the OCSP responder and TSA certificates before they run out.
- The OCSP responder (keys.ocsp) is built once and kept for `cache_seconds`: its key handle, certificate
  and the issuer's CertID hashes stay in memory; a request costs one indexed lookup of the asked serials in
  `statuses` (keys.status.IssuedCertificateStatus, on the database's units of work).
- Offline root: a CA whose key is not in the key store never gets a CRL signed here. Its CRLs are signed at
  the offline ceremony and imported (`import_crl`, checked by keys.crl.verify_crl); `crl` serves the newest
  one, and `housekeeping` logs a warning once it is in the last quarter of its validity (or missing).
- Concurrency: every write path takes the CA row locks first (keys.ca `lock_ca`: FOR UPDATE on PostgreSQL,
  the database write lock on SQLite), always root before issuing, and decides after taking them: two nodes
  (or a CRL request racing the schedule) publish one CRL and renew a service certificate once. Should a
  publication still fail on the database (a lock held past SQLite's busy_timeout), `crl` serves the newest
  CRL while it is valid instead of failing.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import time
from collections.abc import Callable, Sequence
from typing import Final

from sqlalchemy.exc import IntegrityError, OperationalError, SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from keys.ca import (
    CA_NAMES,
    ISSUING,
    SUPERSEDED_KEY_GRACE,
    CertificateAuthorityService,
    CertifiedKey,
    LoadedCA,
    PkiUrls,
)
from keys.crl import DEFAULT_CRL_LIFETIME, CrlPublisher, verify_crl
from keys.errors import CANotInitialized, CAUnusable, CertificateNotFound, InvalidCrl, KeysError
from keys.interfaces import CertificateStatusSource, KeyStore, KeyType
from keys.models import CertificateAuthority, CRLRecord, IssuedCertificate
from keys.ocsp import DEFAULT_VALIDITY, TRY_LATER, UNAUTHORIZED, OcspReply, OcspResponder
from keys.profiles import SERVICE_PROFILES, CertificatePolicy, Profile
from storage.audit import record_event
from storage.base import utcnow

log = logging.getLogger("acar.pki")

DEFAULT_CACHE_SECONDS: Final = 60.0


class PkiService:
    """The built-in PKI (see module docstring). Methods taking a session flush into the caller's unit of work."""

    def __init__(
        self,
        sessions: async_sessionmaker[AsyncSession],
        store: KeyStore,
        *,
        statuses: CertificateStatusSource,
        pki_base_url: str,
        policy: CertificatePolicy,
        organization: str = "Açar",
        ca_key_type: KeyType = "EC-P384",
        service_key_type: KeyType = "EC-P256",
        crl_lifetime: dt.timedelta = DEFAULT_CRL_LIFETIME,
        ocsp_validity: dt.timedelta = DEFAULT_VALIDITY,
        cache_seconds: float = DEFAULT_CACHE_SECONDS,
        superseded_key_grace: dt.timedelta = SUPERSEDED_KEY_GRACE,
        clock: Callable[[], dt.datetime] = utcnow,
    ) -> None:
        if superseded_key_grace.total_seconds() <= cache_seconds:
            raise ValueError("superseded_key_grace must be longer than cache_seconds: a node may sign with a "
                             "cached service key until its cache expires")
        self._sessions = sessions
        self.urls = PkiUrls(pki_base_url.rstrip("/"))
        self.ca = CertificateAuthorityService(
            store, urls=self.urls, policy=policy, organization=organization,
            ca_key_type=ca_key_type, service_key_type=service_key_type, superseded_key_grace=superseded_key_grace,
            clock=clock)
        self.crls = CrlPublisher(lifetime=crl_lifetime, clock=clock)
        self.statuses = statuses
        self.ocsp_validity = ocsp_validity
        self._cache_seconds = cache_seconds
        self._clock = clock
        self._responder: tuple[float, OcspResponder] | None = None
        self._lock = asyncio.Lock()

    # --- set-up ----------------------------------------------------------------------------------------------

    async def initialize(self, session: AsyncSession, *, actor: str, create_hierarchy: bool) -> dict[str, list[str]]:
        """What `acar init` does, idempotently: the CAs (development only), service certificates, first CRLs.

        In production the CAs are imported (`acar ca import`); until the issuing CA exists, nothing else is made.
        """
        created = await self.ca.ensure_hierarchy(session, actor=actor) if create_hierarchy else []
        services: list[str] = []
        cas = await self._lock_all(session)
        if ISSUING in cas:
            services = [f"{row.profile}:{row.serial_hex}"
                        for row in await self.ca.ensure_service_certificates(session, actor=actor)]
        crls = await self._refresh_crls(session, actor=actor, force=created)
        self.forget()
        return {"ca_created": created, "service_certificates_created": services, "crls_published": crls}

    async def _cas(self, session: AsyncSession) -> dict[str, CertificateAuthority]:
        """The CAs that exist, by name."""
        return {name: await self.ca.ca_row(session, name) for name in CA_NAMES if await self.ca.exists(session, name)}

    async def _lock_all(self, session: AsyncSession) -> dict[str, CertificateAuthority]:
        """Lock every existing CA row, root first (one order everywhere, so two writers never deadlock).

        The lock is the first statement of the transaction (no existence check before it, see keys.ca).
        """
        locked = {}
        for name in CA_NAMES:
            try:
                locked[name] = await self.ca.ca_row(session, name, for_update=True)
            except CANotInitialized:
                continue
        return locked

    async def _refresh_crls(self, session: AsyncSession, *, actor: str, force: Sequence[str] = ()) -> list[str]:
        """Publish the CRLs that are due (or forced) of the CAs whose key is online; the caller holds the locks."""
        published = []
        for name, row in (await self._cas(session)).items():
            if row.key_id is None:
                continue  # the key is offline: its CRLs are signed there and imported (`import_crl`)
            if name in force or self.crls.due(await self.crls.newest(session, name)):
                ca = await self.ca.load_ca(session, name, for_update=True)
                await self._publish_crl(session, ca, actor=actor)
                published.append(name)
        return published

    async def _publish_crl(self, session: AsyncSession, ca: LoadedCA, *, actor: str) -> None:
        """Sign and store the CA's next CRL (RFC 5280 section 5) with its online key, audited as crl.published in
        the same transaction (a signature made with a CA key)."""
        record = await self.crls.publish(session, ca.name, issuer=ca.certificate, handle=ca.handle)
        record_event(session, "crl.published", actor=actor, subject=ca.name,
                     detail={"crl_number": record.number, "next_update": record.next_update.isoformat()})

    def _warn_if_expiring(self, name: str, newest: CRLRecord | None) -> None:
        """The offline CA's newest CRL is missing or in its last quarter: somebody must sign the next one."""
        if not self.crls.expiring(newest):
            return
        detail = {"ca": name, "crl_number": newest.number if newest else None,
                  "next_update": newest.next_update.isoformat() if newest else None,
                  "action": f"sign a new {name} CRL offline and run `acar crl import --ca {name} FILE`"}
        log.warning("pki.offline_crl_expiring", extra=detail)

    async def close(self) -> None:
        """Release the status lookups' connection pool."""
        await self.statuses.close()

    def forget(self) -> None:
        """Drop the cached OCSP responder (after init, import, renewal or revocation)."""
        self._responder = None

    # --- revocation and CRLs ---------------------------------------------------------------------------------

    async def revoke(self, session: AsyncSession, serial: str, reason: str, *, actor: str) -> IssuedCertificate:
        """Revoke a certificate (RFC 5280 section 5.3.1 reason) and publish its issuer's next CRL."""
        row = await self.ca.revoke(session, serial, reason, actor=actor)
        ca = await self.ca.load_ca(session, row.issuer_ca)  # the row lock is held since ca.revoke
        await self._publish_crl(session, ca, actor=actor)
        if row.profile in SERVICE_PROFILES:  # a StrEnum: the stored value compares equal
            self.forget()
        return row

    async def crl(self, name: str) -> bytes:
        """The newest CRL of a CA (DER), republished first when due (half its lifetime used).

        A CA whose key is offline: the newest imported CRL, never re-signed (CANotInitialized before the first).
        """
        if name not in CA_NAMES:
            raise CertificateNotFound(f"no CA named {name!r}")
        async with self._sessions() as session:
            row = await self.ca.ca_row(session, name)
            newest = await self.crls.newest(session, name)
        if row.key_id is None:
            if newest is None:
                raise CANotInitialized(f"the {name} CA key is offline and no {name} CRL has been imported yet "
                                       f"(`acar crl import --ca {name} FILE`)")
            return newest.der
        if newest is not None and not self.crls.due(newest):
            return newest.der
        try:
            async with self._sessions() as session, session.begin():
                ca = await self.ca.load_ca(session, name, for_update=True)
                newest = await self.crls.newest(session, name)  # re-read under the lock: another node published?
                if newest is None or self.crls.due(newest):
                    newest = await self.crls.publish(session, name, issuer=ca.certificate, handle=ca.handle)
                return newest.der
        except (IntegrityError, OperationalError) as exc:  # another writer won or held the lock too long
            async with self._sessions() as session:
                newest = await self.crls.newest(session, name)
            if newest is None or newest.next_update <= self._clock():
                raise
            log.warning("pki.crl_publication_deferred", extra={"ca": name, "error": type(exc).__name__})
            return newest.der

    async def import_crl(self, session: AsyncSession, name: str, data: bytes, *,
                         actor: str) -> tuple[CRLRecord, list[str]]:
        """Import a CRL signed offline for a CA whose key is offline (keys.crl.verify_crl checks it).

        Certificates recorded as issued by that CA (the issuing CA, for the root) that the CRL lists are marked
        revoked. Returns the stored CRL and the serials newly revoked. Raises InvalidCrl in one line.
        """
        if not await self.ca.key_offline(session, name):
            raise InvalidCrl(f"the {name} CA key is online: the service signs the {name} CRLs itself")
        row = await self.ca.ca_row(session, name, for_update=True)  # imports of one CA one after the other
        newest = await self.crls.newest(session, name)
        verified = verify_crl(data, ca_name=name, issuer_der=row.certificate_der,
                              current_number=newest.number if newest else None, now=self._clock())
        record = await self.crls.store_imported(session, name, verified)
        revoked = await self.ca.apply_crl(session, name, verified, actor=actor)
        record_event(session, "crl.imported", actor=actor, subject=name,
                     detail={"crl_number": verified.number, "this_update": verified.this_update.isoformat(),
                             "next_update": verified.next_update.isoformat(), "entries": len(verified.revoked),
                             "newly_revoked": revoked})
        self.forget()
        return record, revoked

    async def ca_certificate(self, name: str) -> bytes:
        """The DER certificate of a CA (what the caIssuers URL serves)."""
        async with self._sessions() as session:
            return (await self.ca.ca_row(session, name)).certificate_der

    # --- the OCSP responder and service keys -----------------------------------------------------------------

    async def certified_key(self, profile: Profile) -> CertifiedKey:
        """The key, certificate and chain of the OCSP responder or the TSA, read from the database."""
        async with self._sessions() as session:
            return await self.ca.certified_key(session, profile)

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
        """Renew service certificates running out, destroy superseded service keys, republish CRLs that are due
        (one transaction, under the CA row locks), and warn about an offline CA's CRL running out.

        A read without locks decides first whether there is anything to do, so idle nodes take no lock.
        """
        result: dict[str, list[str]] = {"service_certificates_created": [], "service_keys_destroyed": [],
                                        "crls_published": []}
        async with self._sessions() as session:
            cas = await self._cas(session)
            work = ISSUING in cas and await self.ca.service_work_due(session)
            for name, row in cas.items():
                newest = await self.crls.newest(session, name)
                if row.key_id is None:
                    self._warn_if_expiring(name, newest)
                elif self.crls.due(newest):
                    work = True
        if not work:
            return result
        async with self._sessions() as session, session.begin():
            cas = await self._lock_all(session)  # first, so every decision below is taken under the locks
            if ISSUING in cas:
                try:
                    renewed = await self.ca.ensure_service_certificates(session, actor=actor)
                except CAUnusable as exc:  # a revoked or expired issuing CA: nothing to renew it with
                    log.warning("pki.service_certificates_not_renewed", extra={"reason": exc.detail})
                    renewed = []
                result["service_certificates_created"] = [f"{row.profile}:{row.serial_hex}" for row in renewed]
                result["service_keys_destroyed"] = await self.ca.destroy_superseded_keys(session, actor=actor)
            result["crls_published"] = await self._refresh_crls(session, actor=actor)
        if result["service_certificates_created"] or result["service_keys_destroyed"]:
            self.forget()
        return result

"""The composition root: the only place that turns Settings into services (STYLE habit 4)."""

from __future__ import annotations

import asyncio
import datetime as dt
import ipaddress
import logging
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, BinaryIO

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from api.settings import Settings
from keys.interfaces import KeyStore
from storage import create_engine, create_session_factory, is_sqlite
from storage.direct import DirectDatabase, PostgresDirect, SessionDirect

log = logging.getLogger("acar.deps")

if TYPE_CHECKING:  # the services' modules are imported by the builders that need them (the CLI builds a few)
    from pyhanko.sign.timestamps import TimeStamper

    from api.provider import Provider
    from api.ratelimit import RateLimits
    from api.routes.approval import Approval
    from api.validation import ReportValidator, ValidationService
    from idp.core.interfaces import Subject
    from idp.core.webauthn import PasskeyService
    from idp.sql.card_login import CardLoginService
    from idp.sql.clients import CachedClientDirectory
    from idp.sql.enrollment import EnrollmentPolicy
    from keys.audit_checkpoints import TokenKeyCheckpoints
    from keys.pki import PkiService
    from keys.token_keys import TokenKeyService
    from keys.tsa import TimestampService, TsaCredentials
    from signing.core.callbacks import CallbackDelivery
    from signing.core.inspect import InputPolicy
    from signing.core.jobs import SigningWorker
    from signing.core.pades import PadesEngine, SignatureOptions, SignatureResult, SigningCredentials
    from signing.core.requests import RequestService
    from signing.core.revocation import ValidationDataSource
    from signing.core.timestamps import UrlTimeStamper
    from signing.core.trust import TrustedListView, TrustPolicy
    from storage.audit import AuditSink, GroupCommitAuditLog


@dataclass
class Services:
    settings: Settings
    engine: AsyncEngine
    sessions: async_sessionmaker[AsyncSession]
    key_store: KeyStore
    token_keys: TokenKeyService
    pki: PkiService  # the CA hierarchy, CRLs and OCSP responder (keys.pki)
    owns_key_store: bool  # False when the caller passed the store in and closes it itself
    tsa: TimestampService  # the RFC 3161 TSA: answers and audits in one call (over a keys.tsa.TsaProvider)
    direct: DirectDatabase  # units of work on the driver itself, for the hot paths (storage.direct)
    audit_log: GroupCommitAuditLog  # group commit for hot endpoints' audit events (TSA, client_credentials)
    clients: CachedClientDirectory  # registered OIDC clients, cached ACAR_KEY_CACHE_SECONDS (idp.sql.clients)
    oidc: Provider  # the OpenID Connect provider (api.provider over idp/)
    passkeys: PasskeyService  # WebAuthn ceremonies and credential management (idp.core.webauthn)
    enrollment_policy: EnrollmentPolicy  # activation codes and enrollments (idp.sql.enrollment)
    ratelimits: RateLimits  # per-IP/client/code budgets on memory or a shared Redis (api.ratelimit)
    signing: SigningServices  # signing requests and the durable worker (signing/)
    validation: ValidationService  # PDF signature validation and its audit (api.validation, signing.core.validation)
    card: CardLogins  # the ID-card login's verifiers and service (idp.sql.card_login), built at first use
    approval: Approval | None = None  # the signer's approval pages (api.routes.approval); None: answered 503

    async def close(self) -> None:
        await self.card.aclose()
        await self.signing.close()
        await self.audit_log.stop()
        await self.ratelimits.limiter.close()
        if self.owns_key_store:
            self.key_store.close()
        await self.pki.close()
        await self.direct.close()
        await self.engine.dispose()


def build_key_store(settings: Settings) -> KeyStore:
    """The configured key backend; a missing or malformed master key raises MasterKeyError."""
    if settings.key_backend == "pkcs11":
        from keys.pkcs11 import Pkcs11KeyStore

        return Pkcs11KeyStore(  # an unset module, label or PIN is a BackendError naming the setting
            module_path=str(settings.pkcs11_module or ""),
            token_label=settings.pkcs11_token_label,
            pin=settings.resolved_pkcs11_pin(),
        )
    from keys.software import MasterKey, SoftwareKeyStore

    return SoftwareKeyStore(MasterKey.from_file(settings.resolved_master_key_file))


def build_direct(settings: Settings, engine: AsyncEngine,
                 sessions: async_sessionmaker[AsyncSession]) -> DirectDatabase:
    """Units of work (storage.direct): on PostgreSQL an asyncpg pool of their own, on SQLite ORM sessions.

    Database connections per process: the ORM pool's ACAR_DATABASE_POOL_SIZE, up to as many again in a burst,
    plus ACAR_DATABASE_DIRECT_POOL_SIZE on PostgreSQL (defaults 5 + 5 + 10 = at most 20)."""
    if is_sqlite(settings.resolved_database_url):
        return SessionDirect(sessions)
    return PostgresDirect(engine, pool_size=settings.database_direct_pool_size)


def build_services(settings: Settings, *, key_store: KeyStore | None = None) -> Services:
    """The whole service graph (`acar serve`, the tests); the CLI's commands build only their pieces."""
    from api.provider import build_provider
    from idp.sql.clients import CachedClientDirectory
    from keys.ca import ISSUING, ROOT
    from keys.serials import SerialAllocator
    from keys.tsa import TimestampService, TsaProvider
    from storage.audit import GroupCommitAuditLog

    engine, sessions = build_database(settings)
    direct = build_direct(settings, engine, sessions)
    store = key_store or build_key_store(settings)
    token_keys = build_token_keys(settings, sessions, store)
    pki = build_pki(settings, sessions, store, direct)
    provider = TsaProvider(
        _tsa_credentials(pki, sessions),
        policy_oid=settings.tsa_policy_oid,
        serials=SerialAllocator(sessions, purpose="tsa"),
        statuses=pki.statuses,  # revocation of the TSA certificate, as the OCSP responder reads it
        issuer=ISSUING,
        issuer_parent=ROOT,
        refresh_seconds=settings.key_cache_seconds,  # how soon every node stops using a revoked TSA certificate
    )
    audit_log = GroupCommitAuditLog(direct)
    timestamps = TimestampService(provider, audit_log)
    clients = CachedClientDirectory(sessions, ttl_seconds=settings.key_cache_seconds)
    oidc = build_provider(settings, clients=clients, token_keys=token_keys, sessions=sessions, direct=direct,
                          audit_log=audit_log)
    signing = build_signing(settings, sessions, direct, pki, timestamps, token_keys=token_keys)
    return Services(settings=settings, engine=engine, sessions=sessions, key_store=store, token_keys=token_keys,
                    pki=pki, owns_key_store=key_store is None, tsa=timestamps, direct=direct,
                    audit_log=audit_log, clients=clients, oidc=oidc,
                    passkeys=build_passkeys(settings), enrollment_policy=build_enrollment_policy(settings),
                    ratelimits=build_ratelimits(settings, audit_log),
                    signing=signing,
                    validation=build_validation(settings, pki, signing.engine.validation_data, audit_log),
                    card=CardLogins(settings, pki), approval=build_approval(settings, pki, store, sessions))


def build_approval(settings: Settings, pki: PkiService, key_store: KeyStore,
                   sessions: async_sessionmaker[AsyncSession] | None = None) -> Approval:
    """The signer's approval pages: sign-mode requests on the signing tables (signing.sql.approval_store), page
    previews under the default bounds (signing.core.preview), at ACAR_SIGNING_APPROVAL_LEVEL; an approved request
    is signed with the signer's own key, made on first use by the built-in CA (signing.sql.signers), or, on behalf
    of a legal entity, as its configuration says, after its mandate is checked in the registry (api.mandates)."""
    from api.logging import request_id_var
    from api.mandates import RegistryMandates
    from api.routes.approval import Approval
    from keys.profiles import NaturalPerson
    from signing.core.approval import ApprovalService
    from signing.core.preview import PreviewPolicy, PreviewRenderer
    from signing.sql.approval_store import SqlApprovalStore
    from signing.sql.signers import signer_key
    from storage.base import utcnow

    async def signer_keys(session: AsyncSession, subject: Subject) -> str:
        person = NaturalPerson.create(fin=subject.fin, given_name=subject.given_name, surname=subject.family_name)
        return (await signer_key(session, ca=pki.ca, store=key_store, person=person,
                                 actor=subject.person_id)).key_id

    mandates = RegistryMandates(sessions) if sessions is not None else None  # None: entity requests refused
    return Approval(service=ApprovalService(clock=utcnow, mandates=mandates),
                    stores=lambda tx: SqlApprovalStore(tx, request_id=request_id_var.get()),
                    previews=PreviewRenderer(PreviewPolicy()), level=settings.signing_approval_level,
                    signer_keys=signer_keys)


class SigningEngine:
    """The PAdES engine (signing.core.pades) of this process, built at its first signature: its validation data
    trusts the built-in root, read from the database then (not at start-up, when the CA may not exist yet).
    Time-stamps come from the built-in TSA in process (audited through the group commit, which must be running);
    the built-in PKI's OCSP, CRLs and certificates are answered in process too (signing.core.revocation)."""

    def __init__(self, pki: PkiService, tsa: TimestampService, *, tsa_url: str = "",
                 trust_roots: Sequence[Path] = (), refuse_private: bool = False,
                 allowed_networks: Sequence[str] = ()) -> None:
        self._pki = pki
        self._refuse_private = refuse_private
        self._allowed_networks = tuple(ipaddress.ip_network(cidr, strict=False) for cidr in allowed_networks)
        self._tsa = tsa
        self._tsa_url = tsa_url
        self._trust_roots = tuple(trust_roots)
        self._timestamper: UrlTimeStamper | None = None
        self._engine: PadesEngine | None = None
        self._validation: ValidationDataSource | None = None
        self._building = asyncio.Lock()

    async def engine(self) -> PadesEngine:
        if self._engine is None:
            async with self._building:
                if self._engine is None:
                    from asn1crypto import x509

                    from signing.core.pades import PadesEngine
                    from signing.core.revocation import ValidationDataSource
                    from signing.core.timestamps import ServiceTimeStamper, UrlTimeStamper
                    from signing.core.trust import load_anchors

                    roots = [x509.Certificate.load(await self._pki.ca_certificate("root")),
                             *(cert for cert, _ in load_anchors(self._trust_roots))]
                    self._validation = ValidationDataSource(trust_roots=roots, local=self._pki,
                                                            refuse_private=self._refuse_private,
                                                            allowed_networks=self._allowed_networks)
                    timestamper: TimeStamper = ServiceTimeStamper(self._tsa)
                    if self._tsa_url:
                        timestamper = self._timestamper = UrlTimeStamper(self._tsa_url)
                    self._engine = PadesEngine(timestamper=timestamper, validation=self._validation)
        return self._engine

    async def validation_data(self) -> ValidationDataSource:
        """The validation data source of this engine (the built-in PKI answered in process), for the validation
        service's revocation checks (api.validation)."""
        await self.engine()
        assert self._validation is not None  # noqa: S101 - engine() sets it
        return self._validation

    async def sign(self, source: BinaryIO, output: BinaryIO, credentials: SigningCredentials,
                   options: SignatureOptions, *, actor: str) -> SignatureResult:
        return await (await self.engine()).sign(source, output, credentials, options, actor=actor)

    async def close(self) -> None:
        if self._validation is not None:
            await self._validation.close()
        if self._timestamper is not None:
            await self._timestamper.close()


CARD_FETCH_TIMEOUT = 5.0
"""Seconds an OCSP or CRL request of the ID-card login may take (a card login waits for it)."""
CARD_REVOCATION_CACHE_SECONDS = 3600
"""Upper bound for a cached revocation verdict of an ID card (an OCSP response's nextUpdate may shorten it)."""
CARD_ANCHOR_RETRY_SECONDS = 5.0
"""In development without configured anchors: how long "the built-in CA does not exist yet" is believed."""


class CardLogins:
    """The ID-card login of this process (issue 15): one CertificateVerifier and one WebEidVerifier (their OCSP
    cache and HTTP client) behind one CardLoginService, built at first use from

    - ACAR_IDCARD_TRUST_ANCHORS and ACAR_IDCARD_INTERMEDIATES (RFC 5280 section 6.1.1 (d)); none configured, in
      development only, the built-in CA's root, with its issuing CA offered for path building, once `acar init` has
      made them (read from the database then, not at start-up, like SigningEngine);
    - ACAR_IDCARD_REQUIRED_POLICIES, ACAR_IDCARD_OCSP_URL, ACAR_IDCARD_REVOCATION_SOFT_FAIL (fail closed unless set);
    - the built-in PKI (PkiService), when its CA exists, as `CardPolicy.local`: certificates it issued get their
      OCSP and CRL answers in process (keys.fetchers), not over HTTP to URLs this service may not reach itself;
    - the issuer's origin (the login page's, where the extension runs) as the Web eID token's signed origin;
    - ACAR_IDCARD_AUTO_PROVISION and ACAR_IDCARD_CHALLENGE_SECONDS.

    `service()` is None while there is no anchor: ID-card login is then neither offered nor answered."""

    def __init__(self, settings: Settings, pki: PkiService, *,
                 clock: Callable[[], dt.datetime] | None = None) -> None:
        from storage.base import utcnow

        self._settings = settings
        self._pki = pki
        self._clock = clock or utcnow
        self._service: CardLoginService | None = None
        self._absent_until = 0.0
        self._building = asyncio.Lock()

    async def service(self) -> CardLoginService | None:
        if self._service is None and asyncio.get_running_loop().time() >= self._absent_until:
            async with self._building:
                if self._service is None:
                    self._service = await self._build()
                    if self._service is None:
                        self._absent_until = asyncio.get_running_loop().time() + CARD_ANCHOR_RETRY_SECONDS
        return self._service

    async def trust(self) -> tuple[tuple[bytes, ...], tuple[bytes, ...]]:
        """The DER trust anchors and intermediates of the ID-card login (both empty: no ID-card login); ValueError
        naming a configured file that cannot be read (the mTLS listener's start refuses it: api.server)."""
        from idp.core.certificates import load_certificates
        from keys.ca import ISSUING, ROOT
        from keys.errors import KeysError

        settings = self._settings
        try:  # read at start-up too (api.settings): ValueError naming the file
            anchors = load_certificates(settings.idcard_trust_anchors)
            intermediates = load_certificates(settings.idcard_intermediates)
        except OSError as exc:
            raise ValueError(f"cannot read {exc.filename}: {exc.strerror}") from None
        if not anchors and settings.env == "development":
            try:
                anchors = (await self._pki.ca_certificate(ROOT),)
                intermediates = (*intermediates, await self._pki.ca_certificate(ISSUING))
            except KeysError:  # no built-in CA yet (`acar init`): no anchor
                return (), ()
        return anchors, intermediates

    async def _build(self) -> CardLoginService | None:
        from idp.core.certificates import CardPolicy, CertificateVerifier
        from idp.core.webeid import WebEidVerifier
        from idp.sql.card_login import CardLoginService

        settings = self._settings
        try:
            anchors, intermediates = await self.trust()
        except ValueError:  # a file broken since start-up: no anchor (and no 500), logged
            log.exception("idcard.trust_unreadable")
            return None
        if not anchors:
            return None
        policy = CardPolicy(anchors=anchors, intermediates=intermediates,
                            required_policies=frozenset(settings.idcard_required_policies),
                            ocsp_url=settings.idcard_ocsp_url or None,
                            soft_fail=settings.idcard_revocation_soft_fail,
                            fetch_timeout=CARD_FETCH_TIMEOUT, cache_seconds=CARD_REVOCATION_CACHE_SECONDS,
                            local=self._pki if await self._builtin_ca_exists() else None)
        certificates = CertificateVerifier(policy, clock=self._clock)
        return CardLoginService(certificates=certificates,
                                webeid=WebEidVerifier(certificates, origin=settings.issuer_origin),
                                auto_provision=settings.idcard_auto_provision,
                                challenge_lifetime=dt.timedelta(seconds=settings.idcard_challenge_seconds),
                                clock=self._clock)

    async def _builtin_ca_exists(self) -> bool:
        """Whether the built-in CA (`acar init`, `acar ca import`) exists: then the certificates it issued, naming
        its OCSP responder and CRLs, get their revocation status in process (keys.fetchers), like signing's."""
        from keys.ca import ROOT
        from keys.errors import KeysError

        try:
            await self._pki.ca_certificate(ROOT)
        except KeysError:
            return False
        return True

    async def aclose(self) -> None:
        if self._service is not None:
            await self._service.certificates.aclose()
            self._service = None


def validation_input_policy(settings: Settings) -> InputPolicy:
    """The input policy of validation: signing's bounds (ACAR_SIGNING_MAX_DOCUMENT_BYTES, ACAR_SIGNING_MAX_PAGES), but
    active content is reported, not refused: a signed document is judged as it is (issue 14 "Hostile inputs")."""
    from signing.core.inspect import InputPolicy

    return InputPolicy(max_bytes=settings.signing_max_document_bytes, max_pages=settings.signing_max_pages,
                       refuse_active_content=False)


def validation_max_body_bytes(settings: Settings) -> int:
    """The edge's body limit of POST /api/v1/validations and /verify: one document of the largest size and 64 KiB
    for the multipart framing and the small fields."""
    return settings.signing_max_document_bytes + 64 * 1024


async def load_trusted_list(location: str, signers: Sequence[Path]) -> TrustedListView:
    """The trusted list at `location` (file or http(s) URL), its XML signature checked against the certificates of
    `signers` (signing.core.trustlist; ETSI TS 119 612 section 5.7.1): TrustedListInvalid otherwise."""
    from signing.core.trust import load_certificates
    from signing.core.trustlist import load_trusted_list as load
    from storage.base import utcnow

    return await load(location, [cert for cert, _ in load_certificates(signers)], at=utcnow(),
                      timeout=TRUSTED_LIST_TIMEOUT)


TRUSTED_LIST_TIMEOUT = 30.0
"""Seconds the trusted list's download may take."""


def build_validation(settings: Settings, pki: PkiService, fetching: Callable[[], Awaitable[ValidationDataSource]],
                     audit: AuditSink) -> ValidationService:
    """The validation service: trust in the built-in root CA, ACAR_SIGNING_TRUST_ROOTS, ACAR_VALIDATION_TRUST_ANCHORS
    and the trusted list of ACAR_VALIDATION_TRUSTED_LIST; revocation data fetched through `fetching`'s
    ValidationDataSource (the server's: the signing engine's, with the built-in PKI in process);
    validation.performed audited through `audit`."""
    from api.report_view import BUILT_IN_CA
    from api.validation import ValidationService
    from signing.core.errors import SigningError, ValidationUnavailable
    from signing.core.trust import TrustPolicy, load_anchors
    from storage.base import utcnow

    policy = validation_input_policy(settings)

    async def trust() -> TrustPolicy:
        from asn1crypto import x509 as ax509

        try:
            root = ax509.Certificate.load(await pki.ca_certificate("root"))
        except Exception as exc:  # noqa: BLE001 - no built-in CA yet (`acar init`): nothing to trust by default
            raise ValidationUnavailable(f"the built-in CA cannot be read ({type(exc).__name__})") from None
        try:  # checked at start-up (api.settings); a file changed since is no anchor, and no 500
            anchors = [(root, BUILT_IN_CA), *load_anchors(settings.signing_trust_roots),
                       *load_anchors(settings.validation_trust_anchors)]
        except ValueError as exc:
            raise ValidationUnavailable(f"a trust anchor file cannot be used: {exc}") from None
        trusted_list = None
        if settings.validation_trusted_list:
            try:
                trusted_list = await load_trusted_list(settings.validation_trusted_list,
                                                       settings.validation_trusted_list_signers)
            except (SigningError, OSError, ValueError) as exc:
                raise ValidationUnavailable(f"the trusted list cannot be used: {exc}") from None
        return TrustPolicy(anchors=tuple(cert for cert, _ in anchors), sources=tuple(name for _, name in anchors),
                           trusted_list=trusted_list)

    async def validator(trust: TrustPolicy) -> ReportValidator:
        from signing.core.validation import Validator

        return Validator(trust=trust, input_policy=policy, fetching=await fetching(), clock=utcnow)

    return ValidationService(trust=trust, validator=validator, audit=audit,
                             address_key=settings.pairwise_salt.get_secret_value().encode())


@dataclass
class SigningServices:
    """The signing service's pieces (signing/): the agency API's requests, the engine and the worker that signs."""

    requests: RequestService
    engine: SigningEngine
    worker: SigningWorker
    callbacks: CallbackDelivery  # the requests' completion callbacks (signing.core.callbacks)

    async def run(self, interval: float) -> None:
        """The worker and the callbacks' delivery, each polling every `interval` seconds, until cancelled or
        stopped."""
        async with asyncio.TaskGroup() as tasks:
            tasks.create_task(self.worker.run(interval))
            tasks.create_task(self.callbacks.run(interval))

    def stop(self) -> None:
        """End `run` gracefully: the worker after the document in hand, the delivery after the batch in hand."""
        self.worker.stop()
        self.callbacks.stop()

    def resume(self) -> None:
        """Ready `run` to work after an earlier `stop` (before its task is created: see SigningWorker.resume)."""
        self.worker.resume()
        self.callbacks.resume()

    async def close(self) -> None:
        await self.callbacks.aclose()
        await self.engine.close()


def build_signing(settings: Settings, sessions: async_sessionmaker[AsyncSession], direct: DirectDatabase,
                  pki: PkiService, tsa: TimestampService, *, token_keys: TokenKeyService,
                  worker_name: str | None = None) -> SigningServices:
    """Signing requests (ACAR_SIGNING_* bounds) and the worker, on `direct`'s units of work, sealing with the keys
    the built-in CA certified (signing.sql.seals); the completion callbacks signed with the token keys."""
    from api.logging import request_id_var
    from api.mandates import RegistryMandates
    from signing.core.inspect import InputPolicy
    from signing.core.jobs import SigningWorker
    from signing.core.requests import RequestPolicy, RequestService, policy_inspector
    from signing.sql.seals import SealCredentials
    from signing.sql.store import SqlSigningUnits
    from storage.base import utcnow

    units = SqlSigningUnits(direct, request_id=request_id_var.get)
    callbacks = build_callbacks(settings, direct, token_keys, name=worker_name)
    policy = RequestPolicy(
        max_documents=settings.signing_max_documents, max_document_bytes=settings.signing_max_document_bytes,
        allow_http_callback=settings.env == "development",
        sign_lifetime=dt.timedelta(hours=settings.signing_request_lifetime_hours),
        seal_lifetime=dt.timedelta(hours=settings.signing_request_lifetime_hours))
    inputs = InputPolicy(max_bytes=settings.signing_max_document_bytes, max_pages=settings.signing_max_pages,
                         refuse_active_content=settings.signing_refuse_active_content)
    registry = RegistryMandates(sessions)  # legal entities and mandates (issue 16), idp's registry seen from api/
    requests = RequestService(units, policy=policy, inspector=policy_inspector(inputs), clock=utcnow,
                              registry=registry)
    engine = SigningEngine(pki, tsa, tsa_url=settings.signing_tsa_url, trust_roots=settings.signing_trust_roots,
                           refuse_private=settings.env == "production",
                           allowed_networks=settings.pki_fetch_allowed_networks)
    worker = SigningWorker(units, engine,
                           SealCredentials(sessions, pki.ca, ttl_seconds=settings.key_cache_seconds),
                           lease=dt.timedelta(seconds=settings.signing_lease_seconds), name=worker_name, clock=utcnow,
                           finished=callbacks.kick, mandates=registry)
    return SigningServices(requests=requests, engine=engine, worker=worker, callbacks=callbacks)


def build_callbacks(settings: Settings, direct: DirectDatabase, token_keys: TokenKeyService, *,
                    name: str | None = None) -> CallbackDelivery:
    """The completion callbacks' delivery (ACAR_SIGNING_CALLBACK_*): JWTs signed by the first token algorithm's
    current key; in production https only and no non-public address outside ACAR_SIGNING_CALLBACK_ALLOWED_NETWORKS."""

    from signing.core.callbacks import CallbackDelivery, CallbackPolicy
    from signing.sql.callbacks import SqlCallbackUnits
    from storage.base import utcnow

    production = settings.env == "production"
    policy = CallbackPolicy(
        issuer=settings.issuer, max_age=dt.timedelta(hours=settings.signing_callback_max_age_hours),
        timeout=settings.signing_callback_timeout_seconds, refuse_private=production, require_https=production,
        allowed_networks=tuple(ipaddress.ip_network(cidr, strict=False)
                               for cidr in settings.signing_callback_allowed_networks))
    alg = token_keys.algorithms[0]
    return CallbackDelivery(SqlCallbackUnits(direct), lambda: token_keys.signer(alg), policy, clock=utcnow,
                            name=f"callbacks:{name}" if name else "callbacks")


def build_ratelimits(settings: Settings, audit: AuditSink) -> RateLimits:
    """The rate limits (ACAR_RATE_LIMIT_*, ACAR_TRUSTED_PROXIES) on ACAR_RATE_LIMIT_STORAGE."""
    from api.ratelimit import Budgets, RateLimits, parse_networks
    from storage.ratelimit import Budget, RateLimiter

    budgets = Budgets(
        authorize=Budget.parse("authorize", settings.rate_limit_authorize),
        passkey_options=Budget.parse("passkey_options", settings.rate_limit_passkey_options),
        passkey_login=Budget.parse("passkey_login", settings.rate_limit_passkey_login),
        enrollment=Budget.parse("enrollment", settings.rate_limit_enrollment),
        enrollment_code=Budget.parse("enrollment_code", settings.rate_limit_enrollment_code),
        client_auth_failures=Budget.parse("client_auth_failures", settings.rate_limit_client_auth_failures),
        introspection=Budget.parse("introspection", settings.rate_limit_introspection),
        admin=Budget.parse("admin", settings.rate_limit_admin),
        validation_anonymous=Budget.parse("validation_anonymous", settings.validation_anonymous_rate_limit),
        card_challenge=Budget.parse("card_challenge", settings.rate_limit_card_challenge),
        card_login=Budget.parse("card_login", settings.rate_limit_card_login),
    )
    limiter = RateLimiter(settings.rate_limit_storage, prefix=settings.rate_limit_prefix)
    return RateLimits(limiter, budgets, trusted_proxies=parse_networks(settings.trusted_proxies), audit=audit)


def build_passkeys(settings: Settings) -> PasskeyService:
    """The WebAuthn relying party, with the attestation trust of ACAR_WEBAUTHN_ATTESTATION_ROOTS_FILE and the
    FIDO metadata BLOB of ACAR_WEBAUTHN_MDS_BLOB_FILE (idp.core.attestation). With neither, no passkey reaches
    level high (fail closed); a trust file that cannot be read stops the start (AttestationConfigError)."""
    from idp.core.attestation import build_trust
    from idp.core.webauthn import PasskeyService, RelyingParty
    from storage.base import utcnow

    trust = build_trust(roots_file=settings.webauthn_attestation_roots_file,
                        blob_file=settings.webauthn_mds_blob_file, mds_root_file=settings.webauthn_mds_root_file,
                        allowlist=settings.webauthn_aaguid_allowlist, clock=utcnow)
    return PasskeyService(RelyingParty(
        id=settings.resolved_webauthn_rp_id, name=settings.webauthn_rp_name,
        origins=settings.resolved_webauthn_origins,
        challenge_seconds=settings.webauthn_challenge_seconds, attestation=trust), clock=utcnow)


def build_enrollment_policy(settings: Settings) -> EnrollmentPolicy:
    from idp.sql.enrollment import EnrollmentPolicy

    return EnrollmentPolicy(code_lifetime=dt.timedelta(hours=settings.activation_code_lifetime_hours),
                            enrollment_lifetime=dt.timedelta(seconds=settings.enrollment_lifetime_seconds))


def _tsa_credentials(
    pki: PkiService, sessions: async_sessionmaker[AsyncSession]
) -> Callable[[], Awaitable[TsaCredentials]]:
    """The TSA's newest valid key, certificate and chain as the issuing CA certified them (`acar init` creates
    them), read from the database at each refresh of the TsaProvider (not through PkiService's own cache)."""

    from keys.profiles import Profile

    async def load() -> TsaCredentials:
        async with sessions() as session:
            return await pki.ca.certified_key(session, Profile.TSA)  # a keys.ca.CertifiedKey is a TsaCredentials

    return load


async def readiness(services: Services) -> list[str]:
    """Reasons the service is not ready: database unreachable, migrations behind, signing keys not loaded, the
    shared rate-limit storage (Redis) unreachable."""
    from api import migrate

    try:
        async with services.engine.connect() as connection:
            await connection.execute(text("SELECT 1"))
    except Exception:  # noqa: BLE001 - any driver failure means "database unreachable"
        return ["database unreachable"]
    reasons = []
    behind = await migrate.schema_behind(services.engine)
    if behind:
        reasons.append(behind)
        return reasons
    try:
        loaded = await services.token_keys.loaded()
    except Exception:  # noqa: BLE001 - a key that cannot be loaded is the reason itself
        loaded = []
    missing = [alg for alg in services.token_keys.algorithms if alg not in loaded]
    if missing:
        reasons.append("token signing keys not loaded: " + ", ".join(missing))
    if services.ratelimits.limiter.shared and not await services.ratelimits.limiter.check():
        reasons.append("rate-limit storage unreachable (ACAR_RATE_LIMIT_STORAGE)")
    return reasons


# --- narrow builders: one piece each, for callers that need a few services, not the whole graph (`acar`) ---


def build_database(settings: Settings) -> tuple[AsyncEngine, async_sessionmaker[AsyncSession]]:
    """The ORM engine and its session factory on ACAR_DATABASE_URL; the caller disposes of the engine."""
    engine = create_engine(settings.resolved_database_url, pool_size=settings.database_pool_size)
    return engine, create_session_factory(engine)


def build_audit_checkpoints(settings: Settings, token_keys: TokenKeyService) -> TokenKeyCheckpoints:
    """The signer of the audit chain's checkpoints (keys.audit_checkpoints): the token keys, this issuer."""
    from keys.audit_checkpoints import TokenKeyCheckpoints

    return TokenKeyCheckpoints(token_keys, issuer=settings.issuer)


def build_token_keys(
    settings: Settings, sessions: async_sessionmaker[AsyncSession], store: KeyStore
) -> TokenKeyService:
    """The token-signing keys (ACAR_TOKEN_KEY_* settings)."""
    from keys.token_keys import TokenKeyService

    return TokenKeyService(
        sessions,
        store,
        algorithms=settings.token_key_algorithms,
        rotation_interval=dt.timedelta(days=settings.token_key_rotation_days),
        max_token_lifetime=dt.timedelta(seconds=settings.token_max_lifetime_seconds),
        cache_seconds=settings.key_cache_seconds,
    )


def build_pki(settings: Settings, sessions: async_sessionmaker[AsyncSession], store: KeyStore,
              direct: DirectDatabase) -> PkiService:
    """The CA hierarchy, CRLs and OCSP responder (status lookups on `direct`'s reading units)."""
    from keys.pki import PkiService
    from keys.profiles import CertificatePolicy, Profile
    from keys.status import IssuedCertificateStatus

    return PkiService(
        sessions,
        store,
        statuses=IssuedCertificateStatus(direct),
        pki_base_url=settings.resolved_pki_base_url,
        policy=CertificatePolicy(
            policy_oid=settings.certificate_policy_oid, cps_url=settings.resolved_pki_cps_url,
            pds_url=settings.resolved_pki_pds_url,
            qualified=frozenset(map(Profile, settings.resolved_qualified_profiles))),
        cache_seconds=settings.key_cache_seconds,
    )

"""The one settings class. Only api/ reads the environment (prefix ACAR_).

Development defaults work out of the box (SQLite under ./var, issuer http://localhost:8000). In production
(ACAR_ENV=production) the class fails closed: an http issuer, SQLite or a missing master key stop the start
with one line naming the setting.
"""

from __future__ import annotations

import importlib.util
import ipaddress
import re
from collections.abc import Callable
from pathlib import Path
from typing import Literal
from urllib.parse import urlsplit

from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from storage.ratelimit import REDIS_SCHEMES, Budget

_OID_RE = re.compile(r"^[0-2](\.(0|[1-9][0-9]*))+$")
_DOMAIN_RE = re.compile(r"^(?=.{1,253}$)([a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?)(\.[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?)*$")
_DEFAULT_PORTS = {"http": 80, "https": 443}
_TOKEN_RE = re.compile(r"^[!#$%&'*+.^_`|~0-9A-Za-z-]{1,64}$")
_RESERVED_HEADERS = frozenset({"host", "cookie", "authorization", "content-type", "content-length", "origin",
                               "x-forwarded-for", "user-agent", "accept"})


def web_origin(url: str) -> str:
    """The origin of an http(s) URL serialised as a browser writes it (RFC 6454 section 6.2): lowercase scheme and
    host, the port only when it is not the scheme's default, no path and no trailing slash."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    if ":" in host:
        host = f"[{host}]"  # an IPv6 literal
    port = parts.port
    return f"{parts.scheme}://{host}" + (f":{port}" if port and port != _DEFAULT_PORTS[parts.scheme] else "")


def _base_url(value: str, schemes: tuple[str, ...], *, origin: bool, what: str) -> str:
    """A configured base URL (RFC 3986): "" stays unset; otherwise one of `schemes` with a host, no userinfo, query
    or fragment, and with `origin` no path either (RFC 6454). The trailing "/" is dropped, as paths are appended."""
    if not value:
        return value
    parts = urlsplit(value)
    if (parts.scheme not in schemes or not parts.hostname or parts.query or parts.fragment or "@" in parts.netloc
            or (origin and parts.path not in ("", "/"))):
        raise ValueError(f"{value!r} is not {what}")
    return value.rstrip("/")


MAX_TOKEN_LIFETIME_CEILING = 86400
"""No configuration may issue tokens that live longer than a day (revocations are kept this long)."""
PLACEHOLDER_OID_ARC = "1.3.6.1.4.1.99999."
"""The development policy OIDs live under this placeholder arc; production must use its registered arc."""


DEV_PAIRWISE_SALT = "development-pairwise-salt-not-for-production"


class SettingsError(Exception):
    """A setting is missing or unsafe; the message names the ACAR_ variable."""


def read_secret_file(path: Path, variable: str) -> str:
    """The first line of a secret file, stripped (what `echo secret > file` or a Kubernetes secret holds)."""
    try:
        lines = path.read_text().strip().splitlines()
    except OSError as exc:
        raise SettingsError(f"{variable}: cannot read {path}: {exc.strerror}") from None
    if not lines or not lines[0].strip():
        raise SettingsError(f"{variable}: {path} is empty")
    return lines[0].strip()


TRACING_MODULES = ("opentelemetry.sdk", "opentelemetry.exporter.otlp.proto.http")
"""What ACAR_TRACING needs: the `tracing` extra (opentelemetry-sdk and the OTLP/HTTP exporter)."""


def check_tracing_installed(find_spec: Callable[[str], object] = importlib.util.find_spec) -> None:
    """Refuse ACAR_TRACING without the `tracing` extra, in one line naming the install command. Only looks the
    modules up (nothing of OpenTelemetry's SDK is imported here)."""
    for name in TRACING_MODULES:
        try:
            found = find_spec(name)
        except ImportError:
            found = None
        if found is None:
            raise SettingsError(f"ACAR_TRACING needs OpenTelemetry's SDK and OTLP exporter ({name} is missing): "
                                "pip install 'acar[tracing]'")


SECRET_FILE_SETTINGS = ("database_url", "pairwise_salt", "rate_limit_storage")
"""Settings that hold a secret (a password in a URL, a salt), each also read from a file named by ACAR_<NAME>_FILE
(a Docker or Kubernetes secret under /run/secrets): a secret need not appear in the environment listing."""


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="ACAR_", extra="ignore")

    database_url_file: Path | None = None
    """A file whose first line is ACAR_DATABASE_URL (instead of the variable)."""
    pairwise_salt_file: Path | None = None
    """A file whose first line is ACAR_PAIRWISE_SALT."""
    rate_limit_storage_file: Path | None = None
    """A file whose first line is ACAR_RATE_LIMIT_STORAGE (a Redis URL with a password)."""

    @model_validator(mode="before")
    @classmethod
    def _secret_files(cls, data: object) -> object:
        """ACAR_<NAME>_FILE read into ACAR_<NAME> before the fields are checked (the value's own rules apply)."""
        if not isinstance(data, dict):
            return data
        for name in SECRET_FILE_SETTINGS:
            path = data.get(f"{name}_file")
            if not path:
                continue
            variable = f"ACAR_{name.upper()}"
            if data.get(name):
                raise SettingsError(f"{variable} and {variable}_FILE are both set; set one of them")
            data[name] = read_secret_file(Path(path), f"{variable}_FILE")
        return data

    env: Literal["development", "production"] = "development"
    issuer: str = "http://localhost:8000"
    data_dir: Path = Path("var")
    database_url: str = ""
    master_key_file: Path | None = None
    database_pool_size: int = Field(default=5, ge=1, le=100)
    """Connections of the ORM's pool (SQLAlchemy; it may open as many again for a burst): pages, the CLI, admin."""
    database_direct_pool_size: int = Field(default=10, ge=1, le=100)
    """PostgreSQL connections of the units of work on asyncpg (storage.direct): every hot path, OCSP included."""
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    access_log: bool = True

    # abuse resistance at the edge (api.middleware.BodyLimitMiddleware, api.server)
    max_body_bytes: int = Field(default=1024 * 1024, ge=64 * 1024, le=1024 * 1024 * 1024)
    """Largest request body on any route, refused with 413 before it is read (RFC 9110 section 15.5.14)."""
    header_timeout_seconds: float = Field(default=10.0, gt=0, le=300)
    """A request's head (request line and header fields) must arrive whole within this deadline (slowloris)."""
    keep_alive_seconds: int = Field(default=5, ge=1, le=300)
    """An idle kept-alive connection is closed after this long (RFC 9112 section 9.3)."""
    max_connections: int = Field(default=1000, ge=10, le=100_000)
    """Open connections (or requests in progress) per server process above which a request is answered 503."""
    server: Literal["uvicorn", "granian"] = "uvicorn"
    """The HTTP server of `acar serve` (its --server overrides this): uvicorn, or granian (api.server.serve_granian;
    no mTLS listener)."""
    # TLS termination by `acar serve` and its mTLS listener for ID-card login (api.server; issue 15)
    tls_cert_file: Path | None = None
    """PEM certificate chain (leaf first) `acar serve` presents; with ACAR_TLS_KEY_FILE it speaks HTTPS itself
    (TLS 1.2 and 1.3 only, RFC 9325). Unset: plain HTTP behind a TLS-terminating proxy."""
    tls_key_file: Path | None = None
    """The PEM private key of ACAR_TLS_CERT_FILE."""
    mtls_port: int | None = Field(default=None, ge=1, le=65535)
    """A second listener of `acar serve` (same host, same certificate) that requests an optional TLS client
    certificate, verified against the ID-card trust anchors and intermediates (ID-card login by mutual TLS)."""
    mtls_public_url: str = ""
    """The origin browsers reach the mTLS listener at (the ID-card login form posts there), on the issuer's host
    (another port: the post needs the browser's host-only cookies); unset, https://<the issuer's host>:<ACAR_MTLS_PORT>
    (resolved_mtls_public_url)."""

    @field_validator("tls_cert_file", "tls_key_file")
    @classmethod
    def _tls_file(cls, value: Path | None) -> Path | None:
        """A file that exists (that it loads is checked when `acar serve` builds its TLS contexts)."""
        if value is not None and not value.is_file():
            raise ValueError(f"no such file: {value}")
        return value

    @field_validator("mtls_public_url")
    @classmethod
    def _mtls_public_url(cls, value: str) -> str:
        """An https origin (scheme, host and port; a trailing "/" dropped): the login form's action is built on it."""
        return _base_url(value, ("https",), origin=True,
                         what="an https origin such as https://login.example.az:8443 (no path)")

    @model_validator(mode="after")
    def _tls_pair(self) -> Settings:
        if (self.tls_cert_file is None) != (self.tls_key_file is None):
            raise ValueError("ACAR_TLS_CERT_FILE and ACAR_TLS_KEY_FILE must be set together (or neither)")
        if self.mtls_port is not None and self.tls_cert_file is None:
            raise ValueError("ACAR_MTLS_PORT needs ACAR_TLS_CERT_FILE and ACAR_TLS_KEY_FILE: the mTLS listener "
                             "speaks TLS with them (behind a TLS-terminating proxy, leave ACAR_MTLS_PORT unset)")
        mtls_host, issuer_host = urlsplit(self.mtls_public_url).hostname, urlsplit(self.issuer).hostname
        if self.mtls_public_url and mtls_host != issuer_host:
            # the form post must carry the browser's __Host- cookies (the pending request's browser binding), and
            # cookies are per host, not per port (RFC 6265 section 8.5): on another host every login would expire
            raise ValueError(f"ACAR_MTLS_PUBLIC_URL ({self.mtls_public_url}) must be on the issuer's host "
                             f"{issuer_host} (another port): cookies are per host, not per port")
        return self

    @property
    def resolved_mtls_public_url(self) -> str | None:
        """ACAR_MTLS_PUBLIC_URL, else https://<the issuer's host>:<ACAR_MTLS_PORT>; None without either."""
        if self.mtls_public_url:
            return self.mtls_public_url
        if self.mtls_port is None:
            return None
        host = urlsplit(self.issuer).hostname or "localhost"
        host = f"[{host}]" if ":" in host else host
        return f"https://{host}" + ("" if self.mtls_port == _DEFAULT_PORTS["https"] else f":{self.mtls_port}")

    # keys/: backend selection and the PKCS#11 module (RFC-free, vendor-neutral configuration)
    key_backend: Literal["software", "pkcs11"] = "software"
    pkcs11_module: Path | None = None
    pkcs11_token_label: str = ""
    pkcs11_pin: SecretStr = SecretStr("")
    pkcs11_pin_file: Path | None = None

    # token-signing keys
    token_key_algorithms: list[Literal["ES256", "RS256", "EdDSA"]] = Field(default=["ES256", "RS256"])
    token_key_rotation_days: float = Field(default=30.0, gt=0)
    token_max_lifetime_seconds: int = Field(default=3600, ge=60, le=MAX_TOKEN_LIFETIME_CEILING)
    key_cache_seconds: float = Field(default=5.0, ge=0, le=300)
    housekeeping_seconds: float = Field(default=60.0, gt=0, le=3600)

    # OpenID Connect provider (idp/)
    access_token_lifetime_seconds: int = Field(default=600, ge=60, le=MAX_TOKEN_LIFETIME_CEILING)
    id_token_lifetime_seconds: int = Field(default=600, ge=60, le=MAX_TOKEN_LIFETIME_CEILING)
    authorization_code_lifetime_seconds: int = Field(default=60, ge=10, le=600)
    refresh_token_lifetime_seconds: int = Field(default=14 * 86400, ge=300, le=90 * 86400)
    refresh_reuse_grace_seconds: int = Field(default=0, ge=0, le=120)
    """0 (the default): any reuse of a rotated refresh token revokes its whole family at once (RFC 9700 section
    4.14.2). Above 0: a reuse within this window (a client retrying a lost answer) gets the same successor again,
    never a new family; a later reuse revokes the family."""
    session_lifetime_seconds: int = Field(default=8 * 3600, ge=300, le=7 * 86400)
    interaction_lifetime_seconds: int = Field(default=900, ge=60, le=3600)
    backchannel_logout_retry_seconds: int = Field(default=86400, ge=60, le=7 * 86400)
    """How long undelivered back-channel logout tokens are retried before giving up."""
    pairwise_salt: SecretStr = SecretStr(DEV_PAIRWISE_SALT)
    """Secret mixed into pairwise subject identifiers (OIDC Core 8.1); never change it once in use."""
    acr_low: str = "http://eidas.europa.eu/LoA/low"
    acr_substantial: str = "http://eidas.europa.eu/LoA/substantial"
    acr_high: str = "http://eidas.europa.eu/LoA/high"
    dev_login: bool = False
    """Development-only login shortcut (a form taking a FIN); refused in production."""
    # passkeys (WebAuthn Level 2) and enrollment
    webauthn_rp_id: str = ""
    """The relying party id: the issuer's host or a registrable suffix of it (WebAuthn Level 2 section 5.1.2);
    unset, the issuer's host (resolved_webauthn_rp_id)."""
    webauthn_rp_name: str = "Açar"
    webauthn_origins: list[str] = Field(default=[])
    """Origins allowed in clientDataJSON and the Origin header besides the issuer's own (exact match, WebAuthn
    Level 2 section 7.1 step 9; resolved_webauthn_origins)."""
    webauthn_challenge_seconds: int = Field(default=300, ge=30, le=900)
    webauthn_aaguid_allowlist: list[str] = Field(default=[])
    """When not empty, only these authenticator models (AAGUIDs) can reach level high (docs/assurance.md)."""
    webauthn_attestation_roots_file: Path | None = None
    """PEM bundle of attestation root certificates trusted for every model (level high needs attestation)."""
    webauthn_mds_blob_file: Path | None = None
    """A FIDO Metadata Service (MDS3) BLOB, read from this file (never downloaded) and re-read when it changes."""
    webauthn_mds_root_file: Path | None = None
    """The PEM root certificate(s) the MDS BLOB's signing chain must validate to."""
    activation_code_lifetime_hours: int = Field(default=72, ge=1, le=30 * 24)
    signing_approval_level: Literal["low", "substantial", "high"] = "high"
    """The level of assurance a signer signs in and approves a sign-mode request at (api.routes.approval)."""
    enrollment_lifetime_seconds: int = Field(default=900, ge=60, le=3600)
    # rate limits (storage.ratelimit over the `limits` library) and the audit trail's retention
    rate_limit_storage: str = "memory://"
    """memory:// (this process only) or redis://host:port/db (rediss://, redis+unix://): nodes on one Redis share
    every budget."""
    rate_limit_prefix: str = Field(default="acar", pattern=r"^[A-Za-z0-9_.:-]{1,64}$")
    """Prefix of the counters' keys in the storage (deployments sharing one Redis keep apart)."""
    trusted_proxies: list[str] = Field(default=[])
    """CIDRs of the reverse proxies whose X-Forwarded-For is believed (RFC 7239 section 7.4); none by default."""
    rate_limit_authorize: str = "60/minute;600/hour"
    """Per client IP: authorization requests without a live session (each may store a pending request)."""
    rate_limit_passkey_options: str = "60/minute;600/hour"
    """Per client IP: passkey login options (each stores a WebAuthn challenge)."""
    rate_limit_passkey_login: str = "30/minute;300/hour"
    """Per client IP: passkey login verifications."""
    rate_limit_enrollment: str = "20/minute;100/hour"
    """Per client IP: activation code submissions (each costs an scrypt hash)."""
    rate_limit_enrollment_code: str = "10/hour"
    """Per activation code (its public part): submissions, whatever the IP."""
    rate_limit_client_auth_failures: str = "10/minute;100/hour"
    """Per client_id and per client IP: failed client authentications at /token, /introspect and /revoke."""
    rate_limit_introspection: str = "600/minute"
    """Per client IP and per client_id: introspection requests."""
    rate_limit_admin: str = "300/minute"
    """Per client IP: admin API requests."""
    audit_retention_days: int = Field(default=400, ge=0, le=100 * 366)
    """Audit events older than this are deleted by housekeeping; 0 keeps them for ever."""
    audit_anonymous_retention_days: int = Field(default=30, ge=0, le=100 * 366)
    """Audit events of unauthenticated requests (actor "anonymous") are deleted after this many days; 0: the
    general retention applies."""
    audit_seal_seconds: float = Field(default=60.0, ge=0, le=3600)
    """How often the audit events written meanwhile are sealed into their hash chain and the chain head gets a
    signed checkpoint (api.audit_sealer; the first pass one interval after the start). Events not sealed yet can be
    changed unseen: this is the window. 0 turns the schedule off (`acar audit verify --seal` seals), refused in
    production."""
    # signing service (signing/): the agency API's bounds, the durable worker, the retention of documents
    signing_max_document_bytes: int = Field(default=50 * 1024 * 1024, ge=1024, le=1024 * 1024 * 1024)
    """Largest PDF a signing request may carry (refused with 413 problem too_large)."""
    signing_max_documents: int = Field(default=20, ge=1, le=1000)
    """Most documents in one signing request."""
    signing_max_pages: int = Field(default=500, ge=1, le=100_000)
    """Most pages of one document (the input policy, signing.core.inspect)."""
    signing_refuse_active_content: bool = True
    """Refuse documents with JavaScript, launch actions or embedded files; false reports them as findings only."""
    signing_max_request_bytes: int | None = Field(default=None, ge=64 * 1024, le=4 * 1024 * 1024 * 1024)
    """Largest body of POST /api/v1/signing-requests (the edge's 413). Unset: one document of the largest size as
    base64 in JSON plus 1 MiB for the fields (resolved_signing_max_request_bytes)."""
    signing_inprocess_worker: bool = True
    """`acar serve` signs approved documents itself (the embedded setup is one command); false when separate
    `acar worker` processes do it."""
    signing_lease_seconds: float = Field(default=300.0, ge=1, le=86400)
    """How long a worker holds a claimed job; a job of a worker that died is taken again after this."""
    signing_retention_hours: float = Field(default=72.0, ge=0, le=24 * 3660)
    """Documents' bytes (inputs and signed outputs) are deleted this long after their request finished; the
    digests and the audit trail stay."""
    signing_request_lifetime_hours: float = Field(default=72.0, gt=0, le=24 * 90)
    """How long a sign-mode request waits for its signer's approval before it expires."""
    signing_tsa_url: str = ""
    """An external RFC 3161 time-stamp authority (RFC 3161 section 3.4, over http or https) for B-T and above;
    unset, the built-in TSA stamps in process (keys.tsa.TimestampService: each time-stamp audited)."""
    signing_trust_roots: list[Path] = Field(default_factory=list)
    """Certificate files (PEM or DER) of further trust anchors for the validation data of B-LT signatures: the
    root of an external TSA's chain (ACAR_SIGNING_TSA_URL). The built-in root is always trusted."""
    # validation service (issue 14): what POST /api/v1/validations, /verify and `acar validate` trust
    validation_trust_anchors: list[Path] = Field(default_factory=list)
    """Certificate files (PEM bundles or DER) of further trust anchors for validation (RFC 5280 section 6.1.1 (d)),
    beside the built-in root and ACAR_SIGNING_TRUST_ROOTS."""
    validation_trusted_list: str = ""
    """An ETSI TS 119 612 trusted list (a file path or an http(s) URL) whose CA services become anchors and say
    which certificates are qualified; empty: none. Its XML signature must verify against
    ACAR_VALIDATION_TRUSTED_LIST_SIGNERS."""
    validation_trusted_list_signers: list[Path] = Field(default_factory=list)
    """Certificate files of the trusted list's signers (the scheme operator's keys): required with a list."""
    validation_anonymous_rate_limit: str = "20/minute;200/hour"
    """Per client IP: validations without an agency's access token (the API and the /verify page)."""
    signing_callback_max_age_hours: float = Field(default=24.0, gt=0, le=24 * 30)
    """A request's completion callback is retried (with backoff) for this long after the request finished, then
    given up (signing.callback.expired)."""
    signing_callback_timeout_seconds: float = Field(default=10.0, ge=1, le=60)
    """Connect, write and read timeout of one callback attempt (three times this in all)."""
    signing_callback_allowed_networks: list[str] = Field(default=[])
    """CIDRs of internal networks callbacks may reach in production (an agency's receiver on a private address);
    any other non-public address (loopback, private, link-local, reserved) is refused there (SSRF). Development
    reaches every address."""
    pki_fetch_allowed_networks: list[str] = Field(default=[])
    """CIDRs of internal networks whose OCSP responders, CRLs and CA certificates may be fetched in production (a
    national CA's responder on an internal network); the URLs come from the certificates of the documents being
    signed or validated (uploaded by anyone), so any other non-public address is refused there (SSRF). Development
    reaches every address."""
    # Prometheus metrics at /metrics (issue 17; api.metrics, docs/metrics.md)
    metrics_allowed_networks: list[str] = Field(default=["127.0.0.0/8", "::1/128"])
    """CIDRs whose TCP peers may read /metrics without a token (loopback by default; empty: none). A request a proxy
    forwarded (its peer one of ACAR_TRUSTED_PROXIES, or carrying X-Forwarded-For, Forwarded or X-Real-IP) never
    qualifies by its address: scrape each node directly. Everyone else gets 404."""
    metrics_token_file: Path | None = None
    """A file holding the bearer token (at least 32 characters) that reads /metrics from any address."""
    metrics_dir: Path | None = None
    """Where `acar serve` and `acar worker` keep prometheus_client's multiprocess files (default
    ACAR_DATA_DIR/metrics): a directory of its own per start, its files removed once no process holds it."""
    # OpenTelemetry tracing (issue 17; api.tracing, docs/metrics.md): off unless asked for, and then needs the
    # `tracing` extra (pip install 'acar[tracing]')
    tracing: bool = False
    """A server span per HTTP request, exported over OTLP/HTTP (api.tracing.TracingMiddleware); off: not installed."""
    otlp_endpoint: str = ""
    """The OTLP/HTTP collector's base URL (http://collector:4318; spans go to <it>/v1/traces). Set, it wins over
    OTEL_EXPORTER_OTLP_TRACES_ENDPOINT and OTEL_EXPORTER_OTLP_ENDPOINT; unset, the SDK reads those (then
    http://localhost:4318/v1/traces)."""
    tracing_sample_ratio: float = Field(default=1.0, ge=0.0, le=1.0)
    """The share of traces started here that are recorded (a trace an incoming traceparent continues follows its
    parent's sampled flag). 1.0: whoever turns tracing on wants to see the requests; lower it for volume."""
    # ID-card login (issue 15): the national ID card's authentication certificate, over mutual TLS or Web eID
    idcard_trust_anchors: list[Path] = Field(default_factory=list)
    """Certificate files (PEM bundles or DER) of the national ID-card root CAs (RFC 5280 section 6.1.1 (d)). Empty:
    none, except in development, where the built-in CA's root is the anchor once `acar init` made it. ID-card login
    is offered only when there is an anchor."""
    idcard_intermediates: list[Path] = Field(default_factory=list)
    """Certificate files of the ID-card issuing CAs, offered for path building (a card sends only its own
    certificate)."""
    idcard_required_policies: list[str] = Field(default=[])
    """Certificate policy OIDs of which an ID-card certificate must carry at least one (RFC 5280 section 4.2.1.4);
    empty: any policy."""
    idcard_ocsp_url: str = ""
    """An OCSP responder asked instead of the one the certificate names (its AIA, RFC 6960 section 3.1)."""
    idcard_revocation_soft_fail: bool = False
    """Accept a certificate whose revocation status no OCSP responder or CRL gives (an outage), audited as
    revocation "soft-fail"; false (the default) refuses it: fail closed."""
    idcard_auto_provision: bool = False
    """Register an unknown card holder from the certificate (names and identifier, audited); false: refused."""
    idcard_challenge_seconds: int = Field(default=300, ge=30, le=900)
    """Lifetime of a Web eID challenge nonce (single use)."""
    idcard_client_cert_header: str | None = None
    """The request header in which a reverse proxy forwards the client certificate (nginx: $ssl_client_escaped_cert,
    URL-encoded PEM), believed only from ACAR_TRUSTED_PROXIES; unset: no header is read."""
    rate_limit_card_challenge: str = "60/minute;600/hour"
    """Per client IP: Web eID challenges (each stores a nonce)."""
    rate_limit_card_login: str = "30/minute;300/hour"
    """Per client IP: ID-card logins (Web eID tokens and mutual-TLS form posts), before the certificate is checked."""
    # PKI
    certificate_policy_oid: str = "1.3.6.1.4.1.99999.1.1"
    """The national certificate policy OID, in every certificate the issuing CA issues beside the ETSI policy of
    its profile (keys.profiles.CertificatePolicy)."""
    tsa_policy_oid: str = "1.3.6.1.4.1.99999.1.2"
    pki_base_url: str = ""
    """Base of the CRL distribution point and AIA (OCSP, caIssuers) URLs written into certificates; unset, the
    issuer's host over plain http (resolved_pki_base_url). http in production: ETSI EN 319 412-2 GEN-4.3.11-4
    wants an http or ldap CRL distribution point (the objects are signed, TLS adds nothing but a loop)."""
    pki_cps_url: str = ""
    """The certification practice statement, the CPS qualifier of the national policy; unset, <issuer>/pki/cps."""
    pki_pds_url: str = ""
    """The English PKI disclosure statement, QcPDS of qualified certificates (EN 319 412-5 section 4.3.4: https);
    unset, <issuer>/pki/pds/en."""
    qualified_profiles: list[Literal["natural-person-signing", "legal-person-seal"]] | None = None
    """Profiles issued as qualified certificates under national law (qcStatements QcCompliance, QcSSCD, QcType,
    QcPDS, QcCClegislation AZ; policy QCP-n-qscd / QCP-l-qscd); the others get NCP. Unset, it follows the key
    backend (resolved_qualified_profiles): both signing profiles with an HSM (pkcs11), none with the software
    key store, since QcSSCD would claim a qualified signature creation device the software store is not."""

    @field_validator("certificate_policy_oid", "tsa_policy_oid")
    @classmethod
    def _oid(cls, value: str) -> str:
        if not _OID_RE.fullmatch(value):
            raise ValueError("must be a dotted-decimal object identifier such as 1.3.6.1.4.1.12345.1.1")
        return value

    @field_validator("issuer")
    @classmethod
    def _issuer_is_url(cls, value: str) -> str:
        parts = urlsplit(value)
        if parts.scheme not in ("http", "https") or not parts.netloc or parts.query or parts.fragment:
            raise ValueError("must be an absolute http(s) URL without query or fragment")
        return value.rstrip("/")

    @field_validator("pki_base_url", "pki_cps_url", "pki_pds_url", "signing_tsa_url")
    @classmethod
    def _pki_url(cls, value: str) -> str:
        """Empty (derived from the issuer) or an absolute http(s) URL without query or fragment."""
        if not value:
            return value
        parts = urlsplit(value)
        if parts.scheme not in ("http", "https") or not parts.hostname or parts.query or parts.fragment:
            raise ValueError("must be an absolute http(s) URL without query or fragment")
        return value.rstrip("/")

    @field_validator("signing_trust_roots", "validation_trust_anchors")
    @classmethod
    def _anchor_files(cls, value: list[Path]) -> list[Path]:
        """Each a PEM bundle or DER file of CA or self-signed certificates (signing.core.trust.load_anchors, RFC
        5280 section 6.1.1 (d)), read at start-up so that a wrong file stops the start naming it."""
        if not value:  # none configured (the default): nothing to read, nor to import
            return value
        from signing.core.trust import load_anchors

        load_anchors(value)
        return value

    @field_validator("idcard_trust_anchors", "idcard_intermediates")
    @classmethod
    def _idcard_certificates(cls, value: list[Path]) -> list[Path]:
        """Each a PEM bundle or DER file of certificates (idp.core.certificates.load_certificates), read at start-up
        so that a wrong file stops the start naming it."""
        if not value:  # none configured (the default): nothing to read, nor to import
            return value
        from idp.core.certificates import load_certificates

        try:
            load_certificates(value)
        except OSError as exc:
            raise ValueError(f"cannot read {exc.filename}: {exc.strerror}") from None
        return value

    @field_validator("idcard_required_policies")
    @classmethod
    def _policy_oids(cls, value: list[str]) -> list[str]:
        for oid in value:
            if not _OID_RE.fullmatch(oid):
                raise ValueError(f"{oid!r} is not a dotted-decimal object identifier such as 1.3.6.1.4.1.12345.1.1")
        return value

    @field_validator("idcard_ocsp_url")
    @classmethod
    def _ocsp_url(cls, value: str) -> str:
        """Empty or an absolute http(s) URL (RFC 6960 appendix A.1: OCSP over HTTP)."""
        if not value:
            return value
        parts = urlsplit(value)
        if parts.scheme not in ("http", "https") or not parts.hostname or parts.fragment:
            raise ValueError("must be an absolute http(s) URL")
        return value

    @field_validator("idcard_client_cert_header")
    @classmethod
    def _header_name(cls, value: str | None) -> str | None:
        """A header field name (RFC 9110 section 5.1: a token), lowercase as ASGI gives header names."""
        if value is None:
            return None
        if not _TOKEN_RE.fullmatch(value):
            raise ValueError("must be a header name such as X-SSL-Client-Cert")
        if value.lower() in _RESERVED_HEADERS:
            raise ValueError(f"{value} is a header every client sends; name the proxy's own header")
        return value.lower()

    @field_validator("validation_trusted_list_signers")
    @classmethod
    def _certificate_files(cls, value: list[Path]) -> list[Path]:
        """Each a PEM bundle or DER file of certificates (the trusted list's signers may be end-entity ones)."""
        from signing.core.trust import load_certificates

        load_certificates(value)
        return value

    @field_validator("webauthn_origins")
    @classmethod
    def _origins(cls, value: list[str]) -> list[str]:
        """Each an origin as browsers serialize it into clientDataJSON (HTML Standard "ASCII serialization of an
        origin"): scheme, host and port only; a trailing "/" is dropped."""
        origins = []
        for item in value:
            parts = urlsplit(item)
            if (parts.scheme not in ("http", "https") or not parts.hostname or parts.path not in ("", "/")
                    or parts.query or parts.fragment or "@" in parts.netloc):
                raise ValueError(f"{item!r} is not an origin such as https://login.example.az (no path)")
            origins.append(item.rstrip("/"))
        return origins

    @field_validator("webauthn_rp_id")
    @classmethod
    def _rp_id(cls, value: str) -> str:
        """A domain without scheme or port (WebAuthn Level 2 section 5.1.2: "a valid domain string")."""
        if value and not _DOMAIN_RE.fullmatch(value.lower()):
            raise ValueError("must be a domain such as login.example.az (no scheme, port or path)")
        return value.lower()

    @field_validator("acr_low", "acr_substantial", "acr_high")
    @classmethod
    def _acr_uri(cls, value: str) -> str:
        if not value or any(c.isspace() for c in value) or len(value) > 100:
            raise ValueError("must be a URI without spaces, at most 100 characters")
        return value

    @field_validator("rate_limit_authorize", "rate_limit_passkey_options", "rate_limit_passkey_login",
                     "rate_limit_enrollment", "rate_limit_enrollment_code", "rate_limit_client_auth_failures",
                     "rate_limit_introspection", "rate_limit_admin", "validation_anonymous_rate_limit",
                     "rate_limit_card_challenge", "rate_limit_card_login")
    @classmethod
    def _rate_limit(cls, value: str) -> str:
        try:
            Budget.parse("check", value)
        except ValueError:
            raise ValueError("must be limits such as 10/minute or 10/minute;100/hour") from None
        return value

    @field_validator("rate_limit_storage")
    @classmethod
    def _rate_limit_storage(cls, value: str) -> str:
        if value.split("://", 1)[0].lower() not in ("memory", *REDIS_SCHEMES) or "://" not in value:
            raise ValueError("must be memory:// or a redis://host:port/db URL")
        return value

    @field_validator("trusted_proxies", "signing_callback_allowed_networks", "pki_fetch_allowed_networks",
                     "metrics_allowed_networks")
    @classmethod
    def _cidrs(cls, value: list[str]) -> list[str]:
        for cidr in value:
            try:
                ipaddress.ip_network(cidr, strict=False)
            except ValueError:
                raise ValueError(f"{cidr!r} is not an IP network such as 10.0.0.0/8") from None
        return value

    @field_validator("otlp_endpoint")
    @classmethod
    def _otlp_endpoint(cls, value: str) -> str:
        """An http(s) base URL without credentials, query or fragment (a trailing "/" dropped)."""
        return _base_url(value, ("http", "https"), origin=False,
                         what="an http(s) URL such as http://collector:4318")

    @model_validator(mode="after")
    def _tracing_installed(self) -> Settings:
        if self.tracing:
            check_tracing_installed()
        return self

    @model_validator(mode="after")
    def _distinct_acr(self) -> Settings:
        if len(set(self.acr_values.values())) != 3:
            raise ValueError("ACAR_ACR_LOW, ACAR_ACR_SUBSTANTIAL and ACAR_ACR_HIGH must be distinct")
        return self

    @field_validator("validation_trusted_list")
    @classmethod
    def _trusted_list(cls, value: str) -> str:
        """Empty, an http(s) URL, or a file that exists."""
        if not value:
            return value
        parts = urlsplit(value)
        if parts.scheme in ("http", "https"):
            if not parts.hostname or parts.fragment:
                raise ValueError("must be an absolute http(s) URL or a file path")
            return value
        if not Path(value).is_file():
            raise ValueError(f"no such file: {value}")
        return value

    @model_validator(mode="after")
    def _trusted_list_signers(self) -> Settings:
        if self.validation_trusted_list and not self.validation_trusted_list_signers:
            raise ValueError("ACAR_VALIDATION_TRUSTED_LIST_SIGNERS must name the certificate files the trusted list's "
                             "signature is checked against (ETSI TS 119 612 section 5.7)")
        return self

    @model_validator(mode="after")
    def _mds_files(self) -> Settings:
        if self.webauthn_mds_blob_file is not None and self.webauthn_mds_root_file is None:
            raise ValueError("ACAR_WEBAUTHN_MDS_ROOT_FILE must be set with ACAR_WEBAUTHN_MDS_BLOB_FILE (the BLOB "
                             "is verified against it)")
        return self

    @property
    def acr_values(self) -> dict[str, str]:
        """Level of assurance name -> its acr URI, in increasing order."""
        return {"low": self.acr_low, "substantial": self.acr_substantial, "high": self.acr_high}

    @property
    def issuer_origin(self) -> str:
        """The origin of the issuer's pages, as a browser writes it (scheme, lowercase host, non-default port)."""
        return web_origin(self.issuer)

    @property
    def resolved_webauthn_rp_id(self) -> str:
        """ACAR_WEBAUTHN_RP_ID, else the issuer's host."""
        return self.webauthn_rp_id or (urlsplit(self.issuer).hostname or "")

    @property
    def resolved_webauthn_origins(self) -> tuple[str, ...]:
        """The issuer's origin (the pages that run the ceremonies are the issuer's), then the origins
        ACAR_WEBAUTHN_ORIGINS adds (WebAuthn Level 2 section 7.1 step 9: each compared exactly)."""
        return (self.issuer_origin, *(o for o in dict.fromkeys(self.webauthn_origins) if o != self.issuer_origin))

    @property
    def resolved_signing_max_request_bytes(self) -> int:
        """ACAR_SIGNING_MAX_REQUEST_BYTES, else one document of ACAR_SIGNING_MAX_DOCUMENT_BYTES in base64 (4 bytes
        per 3, RFC 4648 section 4) plus 1 MiB for the other fields and the multipart framing."""
        if self.signing_max_request_bytes is not None:
            return self.signing_max_request_bytes
        return -(-self.signing_max_document_bytes // 3) * 4 + 1024 * 1024

    @property
    def resolved_pki_base_url(self) -> str:
        """ACAR_PKI_BASE_URL, else the issuer over http: the same URL for an http issuer (development), the
        issuer's host and path on port 80 for an https one (the proxy serves /pki/ without TLS)."""
        if self.pki_base_url:
            return self.pki_base_url
        parts = urlsplit(self.issuer)
        if parts.scheme == "http":
            return self.issuer
        host = parts.hostname or ""
        return f"http://{f'[{host}]' if ':' in host else host}{parts.path}".rstrip("/")

    @property
    def resolved_pki_cps_url(self) -> str:
        return self.pki_cps_url or f"{self.issuer}/pki/cps"

    @property
    def resolved_pki_pds_url(self) -> str:
        return self.pki_pds_url or f"{self.issuer}/pki/pds/en"

    @property
    def resolved_qualified_profiles(self) -> tuple[str, ...]:
        """ACAR_QUALIFIED_PROFILES, else both signing profiles (keys.profiles.DEFAULT_QUALIFIED: why) when the keys
        live in an HSM (pkcs11) and none with the software key store: EN 319 412-5 section 4.2.2 QcSSCD and the
        QCP-n-qscd / QCP-l-qscd policies (EN 319 411-2) assert a qualified device, which a software key is not."""
        if self.qualified_profiles is not None:
            return tuple(self.qualified_profiles)
        return ("natural-person-signing", "legal-person-seal") if self.key_backend == "pkcs11" else ()

    @property
    def resolved_database_url(self) -> str:
        if self.database_url:
            return self.database_url
        return f"sqlite+aiosqlite:///{(self.data_dir / 'acar.sqlite3').resolve()}"

    @property
    def resolved_metrics_dir(self) -> Path:
        return self.metrics_dir or self.data_dir / "metrics"

    @property
    def resolved_master_key_file(self) -> Path:
        return self.master_key_file or self.data_dir / "master.key"

    def check_production(self) -> None:
        """Refuse unsafe values in production, naming the setting (STYLE habit 5)."""
        if self.env != "production":
            return
        if not self.issuer.startswith("https://"):
            raise SettingsError(f"ACAR_ISSUER must be an https URL in production (got {self.issuer})")
        if not self.database_url or self.database_url.startswith("sqlite"):
            raise SettingsError("ACAR_DATABASE_URL must point at PostgreSQL in production (SQLite is for development): "
                                "set it, or ACAR_DATABASE_URL_FILE to a secret file holding it")
        if not self.database_url.startswith("postgresql"):
            raise SettingsError("ACAR_DATABASE_URL must be a postgresql+asyncpg:// URL in production")
        for name in ("certificate_policy_oid", "tsa_policy_oid"):
            if getattr(self, name).startswith(PLACEHOLDER_OID_ARC):
                raise SettingsError(
                    f"ACAR_{name.upper()} is the development placeholder; set the registered policy OID"
                )
        if self.audit_seal_seconds == 0:
            raise SettingsError("ACAR_AUDIT_SEAL_SECONDS must be above 0 in production: an unsealed audit trail is "
                                "not tamper-evident")
        self._check_production_pki()
        if self.key_backend == "software":
            if self.master_key_file is None:
                raise SettingsError(
                    "ACAR_MASTER_KEY_FILE must be set in production (the software key store's master key)"
                )
            if not self.master_key_file.is_file():
                raise SettingsError(f"ACAR_MASTER_KEY_FILE: no such file {self.master_key_file} (production master "
                                    "keys are provisioned, not generated: mount the key file as a secret)")
        elif not (self.pkcs11_module and self.pkcs11_token_label and (self.pkcs11_pin.get_secret_value()
                                                                          or self.pkcs11_pin_file)):
            raise SettingsError(
                "ACAR_PKCS11_MODULE, ACAR_PKCS11_TOKEN_LABEL and ACAR_PKCS11_PIN (or ACAR_PKCS11_PIN_FILE) must be set "
                "for the pkcs11 key backend"
            )
        self._check_production_idp()

    def _check_production_pki(self) -> None:
        if not self.resolved_pki_base_url.startswith("http://"):
            raise SettingsError("ACAR_PKI_BASE_URL must be an http URL in production (ETSI EN 319 412-2 "
                                f"GEN-4.3.11-4: an http or ldap CRL distribution point; got {self.pki_base_url})")
        if self.resolved_qualified_profiles and not self.resolved_pki_pds_url.startswith("https://"):
            raise SettingsError("ACAR_PKI_PDS_URL must be an https URL in production (ETSI EN 319 412-5 section "
                                f"4.3.4; got {self.resolved_pki_pds_url})")
        if self.resolved_qualified_profiles and self.key_backend == "software":
            raise SettingsError("ACAR_QUALIFIED_PROFILES must be [] with the software key store in production: a "
                                "qualified certificate asserts a qualified signature creation device (ETSI EN 319 "
                                "412-5 QcSSCD); use the pkcs11 backend with a certified HSM")

    def _check_production_idp(self) -> None:
        origins = self.resolved_webauthn_origins
        if any(not origin.startswith("https://") for origin in origins):
            raise SettingsError("ACAR_WEBAUTHN_ORIGINS must list https origins only in production")
        host, rp_id = urlsplit(self.issuer).hostname or "", self.resolved_webauthn_rp_id
        # WebAuthn Level 2 section 5.1.2: the RP ID is the origin's effective domain or a registrable domain
        # suffix of it; without the public suffix list, a single label (a top-level domain) is refused
        if host != rp_id and (not host.endswith("." + rp_id) or "." not in rp_id):
            raise SettingsError(f"ACAR_WEBAUTHN_RP_ID must be the issuer's host {host} or a registrable parent "
                                f"domain of it (got {rp_id})")
        if self.idcard_client_cert_header and not self.trusted_proxies:
            raise SettingsError(f"ACAR_IDCARD_CLIENT_CERT_HEADER ({self.idcard_client_cert_header}) needs "
                                "ACAR_TRUSTED_PROXIES in production: a client certificate header is believed only "
                                "from a trusted reverse proxy, and with none every sender would be refused")
        if self.dev_login:
            raise SettingsError("ACAR_DEV_LOGIN is a development shortcut and cannot be enabled in production")
        salt = self.pairwise_salt.get_secret_value()
        if salt == DEV_PAIRWISE_SALT or len(salt) < 32:
            raise SettingsError("ACAR_PAIRWISE_SALT must be set to a secret of at least 32 characters in production")

    def resolved_pkcs11_pin(self) -> str:
        """The token PIN: ACAR_PKCS11_PIN_FILE (first line) when set, else ACAR_PKCS11_PIN."""
        if self.pkcs11_pin_file is None:
            return self.pkcs11_pin.get_secret_value()
        try:
            lines = self.pkcs11_pin_file.read_text().strip().splitlines()
        except OSError as exc:
            raise SettingsError(f"ACAR_PKCS11_PIN_FILE: cannot read {self.pkcs11_pin_file}: {exc.strerror}") from None
        return lines[0].strip() if lines else ""


def load_settings() -> Settings:
    """Read and check the settings; raise SettingsError with one line naming the offending variable."""
    from pydantic import ValidationError

    try:
        settings = Settings()
    except ValidationError as exc:
        err = exc.errors()[0]
        name = "ACAR_" + str(err["loc"][0]).upper() if err["loc"] else "ACAR_*"
        raise SettingsError(f"{name}: {err['msg']}") from None
    settings.check_production()
    return settings

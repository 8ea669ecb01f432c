from __future__ import annotations

from pathlib import Path

import pytest

from api.settings import Settings, SettingsError, load_settings


def test_development_defaults() -> None:
    s = Settings()
    assert s.env == "development"
    assert s.issuer == "http://localhost:8000"
    assert s.resolved_database_url.startswith("sqlite+aiosqlite:///")
    assert s.resolved_database_url.endswith("var/acar.sqlite3")
    s.check_production()  # nothing to refuse in development


def _prod(tmp_path: Path, **overrides: object) -> Settings:
    key = tmp_path / "master.key"
    key.write_text("x")
    values: dict[str, object] = {
        "env": "production", "issuer": "https://login.gov.az",
        "database_url": "postgresql+asyncpg://acar@db/acar", "master_key_file": key,
        "certificate_policy_oid": "1.3.6.1.4.1.61234.1.1", "tsa_policy_oid": "1.3.6.1.4.1.61234.1.2",
        "pairwise_salt": "a-production-secret-of-at-least-32-chars",
        "webauthn_rp_id": "login.gov.az", "webauthn_origins": ["https://login.gov.az"],
    }
    values.update(overrides)
    return Settings(**values)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("overrides", "names"),
    [
        ({"issuer": "http://login.gov.az"}, "ACAR_ISSUER"),
        ({"database_url": ""}, "ACAR_DATABASE_URL"),
        ({"database_url": "sqlite+aiosqlite:///x.db"}, "ACAR_DATABASE_URL"),
        ({"master_key_file": None}, "ACAR_MASTER_KEY_FILE"),
        ({"master_key_file": Path("/nonexistent/master.key")}, "ACAR_MASTER_KEY_FILE"),
        ({"key_backend": "pkcs11"}, "ACAR_PKCS11_MODULE"),
        ({"certificate_policy_oid": "1.3.6.1.4.1.99999.1.1"}, "ACAR_CERTIFICATE_POLICY_OID"),
        ({"tsa_policy_oid": "1.3.6.1.4.1.99999.1.2"}, "ACAR_TSA_POLICY_OID"),
        ({"dev_login": True}, "ACAR_DEV_LOGIN"),
        ({"pairwise_salt": "development-pairwise-salt-not-for-production"}, "ACAR_PAIRWISE_SALT"),
        ({"pairwise_salt": "short"}, "ACAR_PAIRWISE_SALT"),
        ({"audit_seal_seconds": 0}, "ACAR_AUDIT_SEAL_SECONDS"),
        ({"webauthn_origins": ["http://login.gov.az"]}, "ACAR_WEBAUTHN_ORIGINS"),
        ({"webauthn_rp_id": "example.az"}, "ACAR_WEBAUTHN_RP_ID"),
        ({"pki_base_url": "https://pki.gov.az"}, "ACAR_PKI_BASE_URL"),
        ({"pki_pds_url": "http://pki.gov.az/pds/en", "qualified_profiles": ["legal-person-seal"]}, "ACAR_PKI_PDS_URL"),
    ],
)
def test_production_refuses_unsafe_values(tmp_path: Path, overrides: dict[str, object], names: str) -> None:
    with pytest.raises(SettingsError) as info:
        _prod(tmp_path, **overrides).check_production()
    assert str(info.value).startswith(names)
    assert "\n" not in str(info.value)


def test_production_accepts_safe_values(tmp_path: Path) -> None:
    _prod(tmp_path).check_production()


@pytest.mark.parametrize(("issuer", "pki_base_url", "resolved"), [
    ("http://localhost:8000", "", "http://localhost:8000"),  # development: as before, under the issuer
    ("https://login.gov.az", "", "http://login.gov.az"),  # the issuer's host over plain http
    ("https://login.gov.az:8443/acar", "", "http://login.gov.az/acar"),
    ("https://login.gov.az", "http://pki.gov.az/", "http://pki.gov.az"),
])
def test_pki_urls_follow_the_issuer_unless_set(issuer: str, pki_base_url: str, resolved: str) -> None:
    s = Settings(issuer=issuer, pki_base_url=pki_base_url)
    assert s.resolved_pki_base_url == resolved
    assert s.resolved_pki_cps_url == f"{s.issuer}/pki/cps" and s.resolved_pki_pds_url == f"{s.issuer}/pki/pds/en"


def test_production_accepts_http_pki_urls_under_an_https_issuer(tmp_path: Path) -> None:
    """ETSI EN 319 412-2 GEN-4.3.11-4: the CRL distribution point is http (or ldap), whatever the issuer."""
    _prod(tmp_path, pki_base_url="http://pki.gov.az").check_production()
    _prod(tmp_path, qualified_profiles=[], pki_pds_url="http://pki.gov.az/pds").check_production()


def test_qualified_profiles_follow_the_key_backend_unless_set(tmp_path: Path) -> None:
    """QcSSCD (ETSI EN 319 412-5 section 4.2.2) claims a qualified device: only an HSM key is qualified by default,
    and production refuses a qualified profile on the software key store."""
    assert Settings().resolved_qualified_profiles == ()
    assert Settings(key_backend="pkcs11").resolved_qualified_profiles == ("natural-person-signing", "legal-person-seal")
    assert Settings(qualified_profiles=["legal-person-seal"]).resolved_qualified_profiles == ("legal-person-seal",)
    assert Settings(key_backend="pkcs11", qualified_profiles=[]).resolved_qualified_profiles == ()
    with pytest.raises(SettingsError, match="ACAR_QUALIFIED_PROFILES must be \\[\\] with the software key store"):
        _prod(tmp_path, qualified_profiles=["natural-person-signing"]).check_production()


def test_load_settings_names_the_bad_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ACAR_ISSUER", "not a url")
    with pytest.raises(SettingsError, match="^ACAR_ISSUER: "):
        load_settings()
    monkeypatch.setenv("ACAR_ISSUER", "https://login.gov.az")
    monkeypatch.setenv("ACAR_TOKEN_KEY_ROTATION_DAYS", "soon")
    with pytest.raises(SettingsError, match="^ACAR_TOKEN_KEY_ROTATION_DAYS: "):
        load_settings()


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("ACAR_TOKEN_KEY_ROTATION_DAYS", "0"),
        ("ACAR_TOKEN_MAX_LIFETIME_SECONDS", "5"),
        ("ACAR_KEY_CACHE_SECONDS", "-1"),
        ("ACAR_HOUSEKEEPING_SECONDS", "0"),
        ("ACAR_CERTIFICATE_POLICY_OID", "not.an.oid"),
        ("ACAR_TSA_POLICY_OID", "3.1"),
        ("ACAR_KEY_BACKEND", "floppy"),
        ("ACAR_RATE_LIMIT_STORAGE", "memcached://127.0.0.1"),
        ("ACAR_RATE_LIMIT_STORAGE", "127.0.0.1:6379"),
        ("ACAR_RATE_LIMIT_PREFIX", "has spaces"),
        ("ACAR_TRUSTED_PROXIES", '["10.0.0.0/8", "proxy.example"]'),
        ("ACAR_RATE_LIMIT_ADMIN", "lots"),
        ("ACAR_RATE_LIMIT_ENROLLMENT", "3/fortnight"),
        ("ACAR_AUDIT_RETENTION_DAYS", "-1"),
        ("ACAR_AUDIT_SEAL_SECONDS", "-1"),
        ("ACAR_PKI_BASE_URL", "pki.gov.az"),
        ("ACAR_PKI_CPS_URL", "https://pki.gov.az/cps?x=1"),
        ("ACAR_PKI_PDS_URL", "ftp://pki.gov.az/pds"),
        ("ACAR_QUALIFIED_PROFILES", '["authentication"]'),
    ],
)
def test_out_of_range_values_are_refused_naming_the_variable(
    monkeypatch: pytest.MonkeyPatch, variable: str, value: str
) -> None:
    monkeypatch.setenv(variable, value)
    with pytest.raises(SettingsError, match=f"^{variable}: "):
        load_settings()


def test_levels_of_assurance_must_have_distinct_uris() -> None:
    with pytest.raises(ValueError, match="distinct"):
        Settings(acr_low="urn:x", acr_substantial="urn:x")


# --- WebAuthn follows the issuer ---------------------------------------------------------------------------------

@pytest.mark.parametrize(("issuer", "rp_id", "origin"), [
    ("http://localhost:8000", "localhost", "http://localhost:8000"),
    ("http://localhost:9000", "localhost", "http://localhost:9000"),
    ("https://login.gov.az", "login.gov.az", "https://login.gov.az"),
    ("https://Login.Gov.az:443/acar", "login.gov.az", "https://login.gov.az"),
    ("https://login.gov.az:8443/", "login.gov.az", "https://login.gov.az:8443"),
])
def test_webauthn_rp_id_and_origins_follow_the_issuer(issuer: str, rp_id: str, origin: str) -> None:
    """Unset, the RP ID is the issuer's host and the only origin the issuer's (WebAuthn Level 2 sections 5.1.2
    and 7.1 step 9): ACAR_ISSUER alone is a working configuration."""
    s = Settings(issuer=issuer)
    assert s.resolved_webauthn_rp_id == rp_id
    assert s.resolved_webauthn_origins == (origin,)
    assert s.issuer_origin == origin


def test_webauthn_origins_add_to_the_issuers() -> None:
    s = Settings(issuer="https://login.gov.az", webauthn_rp_id="gov.az", webauthn_origins=["https://app.gov.az"])
    assert s.resolved_webauthn_rp_id == "gov.az"
    assert s.resolved_webauthn_origins == ("https://login.gov.az", "https://app.gov.az")
    listed = Settings(issuer="https://login.gov.az", webauthn_origins=["https://login.gov.az/", "https://app.gov.az"])
    assert listed.resolved_webauthn_origins == ("https://login.gov.az", "https://app.gov.az")


@pytest.mark.parametrize(("variable", "value"), [
    ("ACAR_WEBAUTHN_ORIGINS", '["https://login.gov.az/path"]'),
    ("ACAR_WEBAUTHN_ORIGINS", '["login.gov.az"]'),
    ("ACAR_WEBAUTHN_ORIGINS", '["https://login.gov.az?x=1"]'),
    ("ACAR_WEBAUTHN_RP_ID", "https://login.gov.az"),
    ("ACAR_WEBAUTHN_RP_ID", "login.gov.az:443"),
])
def test_malformed_webauthn_settings_are_refused(monkeypatch: pytest.MonkeyPatch, variable: str, value: str) -> None:
    monkeypatch.setenv(variable, value)
    with pytest.raises(SettingsError, match=f"^{variable}: "):
        load_settings()


@pytest.mark.parametrize(("overrides", "names"), [
    ({"webauthn_origins": ["http://app.gov.az"]}, "ACAR_WEBAUTHN_ORIGINS"),  # an added origin without TLS
    ({"webauthn_rp_id": "az"}, "ACAR_WEBAUTHN_RP_ID"),  # a top-level domain: not registrable
    ({"webauthn_rp_id": "ogin.gov.az"}, "ACAR_WEBAUTHN_RP_ID"),  # a string suffix, not a domain suffix
])
def test_production_refuses_webauthn_settings_that_cannot_work(tmp_path: Path, overrides: dict[str, object],
                                                               names: str) -> None:
    with pytest.raises(SettingsError) as info:
        _prod(tmp_path, **overrides).check_production()
    assert str(info.value).startswith(names)


def test_production_accepts_the_webauthn_defaults(tmp_path: Path) -> None:
    s = _prod(tmp_path, webauthn_rp_id="", webauthn_origins=[])
    s.check_production()
    assert s.resolved_webauthn_origins == ("https://login.gov.az",)
    _prod(tmp_path, webauthn_rp_id="gov.az",
          webauthn_origins=["https://login.gov.az", "https://app.gov.az"]).check_production()


# --- the README documents every setting --------------------------------------------------------------------------

README = Path(__file__).resolve().parents[3] / "README.md"
INTERNAL_SETTINGS: dict[str, str] = {}
"""Settings deliberately left out of the README table, each with the reason (none today: every ACAR_ setting is
one a deployer may need)."""


def _readme_settings() -> set[str]:
    """The ACAR_ variables named in the first column of the README's settings table."""
    import re

    text = README.read_text(encoding="utf-8")
    table = text[text.index("Environment variables with the prefix `ACAR_`"):]
    rows = [line for line in table.splitlines() if line.startswith("| `ACAR_")]
    return {name for row in rows for name in re.findall(r"`(ACAR_[A-Z0-9_]+)`", row.split("|")[1])}


def test_every_setting_is_in_the_readme_table() -> None:
    fields = {f"ACAR_{name.upper()}" for name in Settings.model_fields}
    documented = _readme_settings()
    assert fields - documented - set(INTERNAL_SETTINGS) == set(), "add these to the README settings table"
    assert documented - fields == set(), "the README names settings that do not exist"
    assert set(INTERNAL_SETTINGS) <= fields

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
        ({"webauthn_origins": ["http://login.gov.az"]}, "ACAR_WEBAUTHN_ORIGINS"),
        ({"webauthn_rp_id": "example.az"}, "ACAR_WEBAUTHN_RP_ID"),
        ({"webauthn_high_requires_attestation": True}, "ACAR_WEBAUTHN_AAGUID_ALLOWLIST"),
    ],
)
def test_production_refuses_unsafe_values(tmp_path: Path, overrides: dict[str, object], names: str) -> None:
    with pytest.raises(SettingsError) as info:
        _prod(tmp_path, **overrides).check_production()
    assert str(info.value).startswith(names)
    assert "\n" not in str(info.value)


def test_production_accepts_safe_values(tmp_path: Path) -> None:
    _prod(tmp_path).check_production()


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

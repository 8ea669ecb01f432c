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

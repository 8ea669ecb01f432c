"""Secrets as files (Docker and Kubernetes secrets under /run/secrets): ACAR_<NAME>_FILE holds ACAR_<NAME>."""

from __future__ import annotations

from pathlib import Path

import pytest

from api.settings import SECRET_FILE_SETTINGS, Settings, SettingsError, load_settings

pytestmark = pytest.mark.nodb


def test_each_secret_is_read_from_its_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    values = {"database_url": "postgresql+asyncpg://acar:s3cret@db/acar",
              "pairwise_salt": "a-production-secret-of-at-least-32-chars",
              "rate_limit_storage": "redis://:s3cret@redis:6379/0"}
    assert set(values) == set(SECRET_FILE_SETTINGS)
    for name, value in values.items():
        monkeypatch.delenv(f"ACAR_{name.upper()}", raising=False)
        secret = tmp_path / name
        secret.write_text(value + "\n")  # as `echo value > file` writes it
        monkeypatch.setenv(f"ACAR_{name.upper()}_FILE", str(secret))
    settings = load_settings()
    assert settings.database_url == values["database_url"]
    assert settings.pairwise_salt.get_secret_value() == values["pairwise_salt"]
    assert settings.rate_limit_storage == values["rate_limit_storage"]


def test_a_file_value_meets_the_settings_own_rules(tmp_path: Path) -> None:
    secret = tmp_path / "storage"
    secret.write_text("ftp://nowhere\n")
    with pytest.raises(ValueError, match="must be memory:// or a redis"):
        Settings(rate_limit_storage_file=secret)


@pytest.mark.parametrize(("content", "reason"), [(None, "cannot read"), ("", "is empty"), ("\n\n", "is empty")])
def test_an_unusable_file_is_one_line_naming_the_variable(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                          content: str | None, reason: str) -> None:
    secret = tmp_path / "database_url"
    if content is not None:
        secret.write_text(content)
    monkeypatch.setenv("ACAR_DATABASE_URL_FILE", str(secret))
    monkeypatch.delenv("ACAR_DATABASE_URL", raising=False)
    with pytest.raises(SettingsError, match=f"^ACAR_DATABASE_URL_FILE: .*{reason}") as refused:
        load_settings()
    assert "\n" not in str(refused.value)


def test_the_variable_and_its_file_together_are_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    secret = tmp_path / "salt"
    secret.write_text("x" * 40)
    monkeypatch.setenv("ACAR_PAIRWISE_SALT", "y" * 40)
    monkeypatch.setenv("ACAR_PAIRWISE_SALT_FILE", str(secret))
    with pytest.raises(SettingsError, match="ACAR_PAIRWISE_SALT and ACAR_PAIRWISE_SALT_FILE are both set"):
        load_settings()

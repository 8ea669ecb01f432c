from __future__ import annotations

import json
from pathlib import Path

import pytest
from sqlalchemy import func, select

from api.deps import Services
from idp.models import Person
from tests.functional.helpers import acar_env, acar_json, run_acar


async def _persons(services: Services) -> int:
    async with services.sessions() as session:
        return (await session.execute(select(func.count()).select_from(Person))).scalar_one()


async def test_init_is_idempotent_and_creates_keys(cli_env: dict[str, str]) -> None:
    first = acar_json(cli_env, "init")
    assert len(first["token_keys_created"]) == 4  # current + next for ES256 and RS256
    again = acar_json(cli_env, "init")
    assert again["token_keys_created"] == []
    keys = acar_json(cli_env, "keys", "list")
    assert sorted(k["state"] for k in keys) == ["current", "current", "next", "next"]


async def test_person_add_and_show(cli_env: dict[str, str], services: Services) -> None:
    out = run_acar(cli_env, "person", "add", "--fin", "5ABC12D", "--given-name", "Aysel",
                   "--family-name", "Məmmədova", "--birthdate", "1990-02-03")
    added = json.loads(out.stdout)
    assert added["fin"] == "5ABC12D" and added["family_name"] == "Məmmədova"
    shown = acar_json(cli_env, "person", "show", "5abc12d")
    assert shown == added
    assert await _persons(services) == 1


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--fin", "12345", "--given-name", "A", "--family-name", "B"], "FIN must be exactly 7"),
        (["--fin", "12345678", "--given-name", "A", "--family-name", "B"], "FIN must be exactly 7"),
        (["--fin", "AB-1234", "--given-name", "A", "--family-name", "B"], "FIN must be exactly 7"),
        (["--fin", "1234567", "--given-name", "A", "--family-name", "B", "--birthdate", "03.02.1990"],
         "YYYY-MM-DD"),
        (["--fin", "1234567", "--given-name", " ", "--family-name", "B"], "given name must not be empty"),
    ],
)
async def test_person_add_bad_input_fails_in_one_line_and_writes_nothing(
    cli_env: dict[str, str], services: Services, args: list[str], message: str
) -> None:
    proc = run_acar(cli_env, "person", "add", *args, check=False)
    assert proc.returncode == 1
    assert proc.stdout == ""
    assert proc.stderr.count("\n") == 1 and message in proc.stderr
    assert proc.stderr.startswith("acar: error: ")
    assert await _persons(services) == 0


async def test_person_add_duplicate(cli_env: dict[str, str], services: Services) -> None:
    run_acar(cli_env, "person", "add", "--fin", "1234567", "--given-name", "A", "--family-name", "B")
    proc = run_acar(cli_env, "person", "add", "--fin", "1234567", "--given-name", "C", "--family-name", "D",
                    check=False)
    assert proc.returncode == 1 and "already registered" in proc.stderr
    assert await _persons(services) == 1


async def test_person_show_unknown(cli_env: dict[str, str]) -> None:
    proc = run_acar(cli_env, "person", "show", "7654321", "--json", check=False)
    assert proc.returncode == 1
    assert proc.stderr.strip() == "acar: error: no person with FIN 7654321"


async def test_usage_errors_exit_2_in_one_line(cli_env: dict[str, str]) -> None:
    proc = run_acar(cli_env, "person", "add", "--fin", "1234567", check=False)
    assert proc.returncode == 2
    assert proc.stderr.count("\n") == 1 and "required" in proc.stderr


def test_production_with_http_issuer_refuses_to_start(tmp_path: Path) -> None:
    key = tmp_path / "master.key"
    key.write_text("x")
    env = acar_env({"ACAR_ENV": "production", "ACAR_ISSUER": "http://login.example.az",
                    "ACAR_DATABASE_URL": "postgresql+asyncpg://acar@127.0.0.1/acar",
                    "ACAR_MASTER_KEY_FILE": str(key)})
    proc = run_acar(env, "serve", "--port", "1", check=False)
    assert proc.returncode == 1
    assert proc.stderr == "acar: error: ACAR_ISSUER must be an https URL in production (got http://login.example.az)\n"


def test_production_with_sqlite_refuses_to_start(tmp_path: Path) -> None:
    env = acar_env({"ACAR_ENV": "production", "ACAR_ISSUER": "https://login.example.az"})
    proc = run_acar(env, "serve", check=False)
    assert proc.returncode == 1
    assert proc.stderr.startswith("acar: error: ACAR_DATABASE_URL must point at PostgreSQL")


def test_missing_master_key_is_a_clear_error_not_a_new_key(tmp_path: Path) -> None:
    missing = tmp_path / "nothing" / "master.key"
    env = acar_env({"ACAR_DATA_DIR": str(tmp_path), "ACAR_MASTER_KEY_FILE": str(missing)})
    proc = run_acar(env, "serve", "--port", "1", check=False)
    assert proc.returncode == 1
    assert "ACAR_MASTER_KEY_FILE" in proc.stderr and "does not exist" in proc.stderr
    assert not missing.exists()

"""`acar`: the installed command for start-up and help; everything else in-process (the installed command's
`acar init` on a database without keys runs as `acar start serve` in tests/functional/test_oidc_flows.py)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from sqlalchemy import func, select

from api.cli import build_parser
from api.deps import Services
from idp.sql.models import Person
from tests.functional.helpers import InProcessAcar, acar_env, run_acar
from tests.signing_tools import minimal_pdf


async def _persons(services: Services) -> int:
    async with services.sessions() as session:
        return (await session.execute(select(func.count()).select_from(Person))).scalar_one()


async def test_init_is_idempotent_and_creates_keys(acar: InProcessAcar) -> None:
    first = acar.json("init")
    assert len(first["token_keys_created"]) == 4  # current + next for ES256 and RS256
    again = acar.json("init")
    assert again["token_keys_created"] == []
    keys = acar.json("keys", "list")
    assert sorted(k["state"] for k in keys) == ["current", "current", "next", "next"]


def test_help_runs_the_installed_command() -> None:
    proc = run_acar(acar_env({}), "--help")
    assert proc.stdout.startswith("usage: acar ") and "enroll-code" in proc.stdout and proc.stderr == ""


def test_the_cli_module_imports_no_third_party_package() -> None:
    """`acar --help` stays fast (issue 11: under 0.3 s) because api.cli imports only the standard library at the
    top; a command imports what it uses. A top-level import of the service graph (settings, SQLAlchemy, FastAPI,
    prometheus_client) cost about a second."""
    import subprocess
    import sys

    probe = ("import sys, api.cli; print(' '.join(sorted({m.split('.')[0] for m in sys.modules} & "
             "{'sqlalchemy', 'pydantic', 'pydantic_settings', 'fastapi', 'starlette', 'prometheus_client', "
             "'cryptography', 'storage', 'idp', 'keys', 'signing'})))")
    proc = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True, timeout=60)
    assert proc.stdout.strip() == ""


def test_a_database_command_imports_no_web_framework(acar: InProcessAcar, services: Services) -> None:
    """A command that only reads the database (`acar client list`) imports no FastAPI, Starlette or WebAuthn
    library: the check of every argument (api.text.refusal) once imported FastAPI and, through api.errors, the
    WebAuthn library, about a third of every command's 1.5 s."""
    import subprocess
    import sys

    probe = ("import sys; from api.cli import main; code = main(['client', 'list', '--json']); "
             "print(code, *sorted({m.split('.')[0] for m in sys.modules} & {'fastapi', 'starlette', 'webauthn'}))")
    proc = subprocess.run([sys.executable, "-c", probe], env=acar_env(acar.env), capture_output=True, text=True,
                          check=True, timeout=60)
    assert proc.stdout.strip().splitlines()[-1] == "0", proc.stdout + proc.stderr


async def test_person_add_and_show(acar: InProcessAcar, services: Services) -> None:
    out = acar("person", "add", "--fin", "5ABC12D", "--given-name", "Aysel",
                   "--family-name", "Məmmədova", "--birthdate", "1990-02-03")
    added = json.loads(out.stdout)
    assert added["fin"] == "5ABC12D" and added["family_name"] == "Məmmədova"
    shown = acar.json("person", "show", "5abc12d")
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
    acar: InProcessAcar, services: Services, args: list[str], message: str
) -> None:
    proc = acar("person", "add", *args, check=False)
    assert proc.returncode == 1
    assert proc.stdout == ""
    assert proc.stderr.count("\n") == 1 and message in proc.stderr
    assert proc.stderr.startswith("acar: error: ")
    assert await _persons(services) == 0


async def test_person_add_duplicate(acar: InProcessAcar, services: Services) -> None:
    acar("person", "add", "--fin", "1234567", "--given-name", "A", "--family-name", "B")
    proc = acar("person", "add", "--fin", "1234567", "--given-name", "C", "--family-name", "D", check=False)
    assert proc.returncode == 1 and "already registered" in proc.stderr
    assert await _persons(services) == 1


async def test_person_show_unknown(acar: InProcessAcar) -> None:
    proc = acar("person", "show", "7654321", "--json", check=False)
    assert proc.returncode == 1
    assert proc.stderr.strip() == "acar: error: no person with FIN 7654321"


async def test_usage_errors_exit_2_in_one_line(acar: InProcessAcar) -> None:
    proc = acar("person", "add", "--fin", "1234567", check=False)
    assert proc.returncode == 2
    assert proc.stderr.count("\n") == 1 and "required" in proc.stderr


def test_production_with_http_issuer_refuses_to_start(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    key = tmp_path / "master.key"
    key.write_text("x")
    env = acar_env({"ACAR_ENV": "production", "ACAR_ISSUER": "http://login.example.az",
                    "ACAR_DATABASE_URL": "postgresql+asyncpg://acar@127.0.0.1/acar",
                    "ACAR_MASTER_KEY_FILE": str(key)})
    proc = InProcessAcar(env, monkeypatch, capsys)("serve", "--port", "1", check=False)
    assert proc.returncode == 1
    assert proc.stderr == "acar: error: ACAR_ISSUER must be an https URL in production (got http://login.example.az)\n"


def test_production_with_sqlite_refuses_to_start(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    env = acar_env({"ACAR_ENV": "production", "ACAR_ISSUER": "https://login.example.az"})
    proc = InProcessAcar(env, monkeypatch, capsys)("serve", check=False)
    assert proc.returncode == 1
    assert proc.stderr.startswith("acar: error: ACAR_DATABASE_URL must point at PostgreSQL")


def test_missing_master_key_is_a_clear_error_not_a_new_key(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    missing = tmp_path / "nothing" / "master.key"
    env = acar_env({"ACAR_DATA_DIR": str(tmp_path), "ACAR_MASTER_KEY_FILE": str(missing)})
    proc = InProcessAcar(env, monkeypatch, capsys)("serve", "--port", "1", check=False)
    assert proc.returncode == 1
    assert "ACAR_MASTER_KEY_FILE" in proc.stderr and "does not exist" in proc.stderr
    assert not missing.exists()


def _commands(parser: argparse.ArgumentParser, prefix: tuple[str, ...] = ()) -> set[str]:
    """Every runnable command of the parser, as "keys rotate"."""
    found: set[str] = set()
    for action in parser._actions:  # argparse keeps its subcommands only here
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                found |= _commands(sub, (*prefix, name))
    return found or {" ".join(prefix)}


@pytest.mark.parametrize("position", ["before", "after"])
async def test_every_command_answers_json_wherever_the_flag_stands(
    acar: InProcessAcar, services: Services, tmp_path: Path, position: str
) -> None:
    """`acar --json CMD` and `acar CMD --json`: stdout is one JSON document, or empty beside a one-line error."""
    ran: set[str] = set()

    def run(command: str, *options: str, refused: str | None = None) -> Any:
        words = command.split()
        proc = acar(*(["--json", *words, *options] if position == "before" else [*words, *options, "--json"]),
                    check=refused is None)
        ran.add(command)
        if refused is not None:
            assert proc.returncode == 1 and proc.stdout == ""
            assert proc.stderr.startswith("acar: error: ") and proc.stderr.count("\n") == 1 and refused in proc.stderr
            return None
        assert proc.stdout.count("\n") == 1 and proc.stderr == ""
        return json.loads(proc.stdout)

    public_key = tmp_path / "subject.pub"
    public_key.write_bytes(ec.generate_private_key(ec.SECP256R1()).public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo))

    assert len(run("init")["token_keys_created"]) == 4
    assert run("migrate")["schema"]
    run("serve", "--port", "0", refused="--port must be between 1 and 65535")
    # the container entrypoint prepares (init's summary on stderr), then runs the command, which refuses here
    words = ["start", "worker", "--interval", "0"]
    proc = acar(*(["--json", *words] if position == "before" else [*words, "--json"]), check=False)
    ran.add("start")
    assert proc.returncode == 1 and proc.stdout == ""
    assert proc.stderr.splitlines()[-1] == "acar: error: --interval must be positive"
    assert run("keys rotate", "--alg", "ES256", "--force")[0]["alg"] == "ES256"
    assert {key["alg"] for key in run("keys list")} == {"ES256", "RS256"}
    assert run("person add", "--fin", "5ABC12D", "--given-name", "Aysel", "--family-name", "Məmmədova")["fin"] == \
        "5ABC12D"
    assert run("person show", "5ABC12D")["given_name"] == "Aysel"
    people = tmp_path / "people.csv"
    people.write_text("fin,given_name,family_name\n6XYZ789,Rəşad,Əliyev\n", encoding="utf-8")
    assert run("import", "persons", str(people))["imported"] == 1
    words = ["import", "persons", str(people)]  # again: refused, its report on stdout beside the one-line error
    proc = acar(*(["--json", *words] if position == "before" else [*words, "--json"]), check=False)
    assert proc.returncode == 1 and proc.stderr.startswith("acar: error: the persons file was not imported")
    assert proc.stderr.count("\n") == 1 and json.loads(proc.stdout)["problems"][0]["line"] == 2
    assert run("person set-status", "6XYZ789", "suspended")["status"] == "suspended"
    assert run("entity add", "--voen", "1400057421", "--name", "Açar MMC", "--legal-form", "MMC")["status"] == "active"
    assert run("entity show", "1400057421")["legal_form"] == "MMC"
    assert run("entity set-status", "1400057421", "active")["status"] == "active"
    assert run("entity set-director", "1400057421", "5ABC12D")["director_fin"] == "5ABC12D"
    mandate = run("mandate grant", "--fin", "5ABC12D", "--voen", "1400057421", "--power", "sign_declarations",
                  "--granted-by", "officer-1")
    assert [m["id"] for m in run("mandate list", "--fin", "5ABC12D")] == [mandate["id"]]
    assert run("mandate revoke", mandate["id"])["revoked_by"] == "cli"
    assert run("role grant", "5ABC12D", "agency_admin", "--agency", "1400057421")["scope"] == "acar:role:agency_admin"
    assert [(r["role"], r["agency_voen"]) for r in run("role list", "5ABC12D")] == [("agency_admin", "1400057421")]
    assert run("role revoke", "5ABC12D", "agency_admin", "--agency", "1400057421")["revoked"] is True
    run("role grant", "5ABC12D", "agency_admin", refused="needs the agency")
    assert run("enroll-code", "--fin", "5ABC12D")["fin"] == "5ABC12D"
    minted = run("admin token", "--subject", "operator")
    assert run("admin revoke-token", minted["jti"]) == {"jti": minted["jti"], "revoked": True}
    serial = run("cert issue", "--profile", "authentication", "--fin", "5ABC12D", "--given-name", "Aysel",
                 "--surname", "Məmmədova", "--public-key", str(public_key))["serial"]
    assert run("cert show", serial)["status"] == "valid"
    assert run("cert revoke", serial, "--reason", "keyCompromise")["reason"] == "keyCompromise"
    run("ca import", "--name", "issuing", "--cert", str(public_key), refused="the issuing CA needs its key")
    run("crl import", "--ca", "root", str(tmp_path / "missing.crl"), refused="FILE: cannot read")
    client_id = run("client add", "--name", "Portal", "--redirect-uri", "https://portal.example/cb")["client_id"]
    assert [c["client_id"] for c in run("client list")] == [client_id]
    assert run("client show", client_id)["name"] == "Portal"
    assert run("client rotate-secret", client_id)["client_secret"]
    assert run("client update", client_id, "--no-introspect-clients")["introspect_clients"] == []
    assert run("seal assign", client_id, "--voen", "1234567891", "--organization", "Portal")["new_key"] is True
    run("entity-signing show", "1400057421", refused="has no signing configuration")
    assert run("entity-signing set", "1400057421", "--form", "seal")["organization"] == "Açar MMC"
    assert run("entity-signing show", "1400057421")["form"] == "seal"
    run("worker", "--interval", "0", refused="--interval must be positive")
    assert run("client disable", client_id)["disabled"] is True
    unsigned = tmp_path / "unsigned.pdf"
    unsigned.write_bytes(minimal_pdf())
    # validate's exit code is its verdict (0 only when every signature passes): a PDF without signatures is 1
    words = ["validate", str(unsigned)]
    proc = acar(*(["--json", *words] if position == "before" else [*words, "--json"]), check=False)
    ran.add("validate")
    assert proc.returncode == 1 and proc.stdout.count("\n") == 1 and proc.stderr == ""
    assert json.loads(proc.stdout)["signatures"] == []
    # so is audit verify's (0: every chain intact), after sealing what the commands above recorded
    report = run("audit verify", "--seal")
    assert report["intact"] is True and report["unsealed"] == 0 and report["chains"][1]["checkpoints"] == 1

    assert ran == _commands(build_parser())


async def test_a_command_builds_only_what_it_uses(acar: InProcessAcar, tmp_path: Path) -> None:
    """The person registry and client list never open the key store; a command that signs does, and says so."""
    env = {**acar.env, "ACAR_MASTER_KEY_FILE": str(tmp_path / "nowhere" / "master.key")}
    assert acar.json("person", "add", "--fin", "5ABC12D", "--given-name", "A", "--family-name", "B", env=env)["fin"] \
        == "5ABC12D"
    assert acar.json("client", "list", env=env) == []
    refused = acar("keys", "rotate", check=False, env=env)
    assert refused.returncode == 1 and refused.stderr.startswith("acar: error: ACAR_MASTER_KEY_FILE")
    assert not (tmp_path / "nowhere").exists()

"""Property-based fuzzing of the published contract: schemathesis generates requests for every operation of a real
`acar serve`'s /openapi.json (on PostgreSQL, where a NUL once answered 500), without and with an admin token (and
the signing API with an agency's token), and checks every answer: no 5xx, and status code, content type and body
as the document says.

Bounded for the test suite: a fixed seed, ACAR_FUZZ_EXAMPLES examples per operation (default 25), per
generation mode (schema-valid and schema-invalid requests) and per credential set (none, an admin token).
`make fuzz` runs a longer one. A conformance failure fails the test unless
tests/functional/schemathesis_allow.toml lists it (operation and check) with its reason; a 5xx is never allowed.
The operations come from the document itself, so an operation added later is fuzzed without anyone listing it.
"""

from __future__ import annotations

import os
import tomllib
from collections import defaultdict
from pathlib import Path
from typing import Any

import pytest
import requests
import schemathesis
from hypothesis import HealthCheck, Phase, given, seed, settings
from hypothesis.errors import Unsatisfiable
from schemathesis.checks import not_a_server_error
from schemathesis.core.failures import Failure, FailureGroup
from schemathesis.generation.modes import GenerationMode
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from tests.functional.helpers import Server, acar_env, acar_json, run_acar

pytestmark = pytest.mark.postgresql
ALLOW_LIST = Path(__file__).with_name("schemathesis_allow.toml")
CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance, response_schema_conformance]
EXAMPLES = int(os.environ.get("ACAR_FUZZ_EXAMPLES", "25"))
SEED = int(os.environ.get("ACAR_FUZZ_SEED", "19"))


def _allowed() -> dict[tuple[str, str], str]:
    """(operation label, check name) -> reason, from the allow-list; an entry without a reason is refused."""
    entries = tomllib.loads(ALLOW_LIST.read_text())["allow"]
    allowed = {}
    for entry in entries:
        assert entry.get("reason", "").strip(), f"allow-list entry without a reason: {entry}"
        allowed[entry["operation"], entry["check"]] = entry["reason"]
    return allowed


def _fuzz(operation: Any, mode: GenerationMode, base: str, headers: dict[str, str],
          found: dict[tuple[str, str], list[str]]) -> int:
    """Run the bounded examples of one operation; record each failure by (operation, check)."""
    calls = 0

    @seed(SEED)
    @settings(max_examples=EXAMPLES, deadline=None, derandomize=True, database=None,
              phases=[Phase.explicit, Phase.generate], suppress_health_check=list(HealthCheck))
    @given(case=operation.as_strategy(generation_mode=mode))
    def run(case: Any) -> None:
        nonlocal calls
        calls += 1
        response = case.call(base_url=base, headers=headers, timeout=10)
        try:
            case.validate_response(response, checks=CHECKS, headers=headers)
        except FailureGroup as group:
            for failure in group.exceptions:
                _record(operation.label, failure, response, found)
        except Failure as failure:
            _record(operation.label, failure, response, found)

    try:
        run()
    except Unsatisfiable:
        assert mode is GenerationMode.NEGATIVE, operation.label  # nothing in the operation to make invalid
    return calls


def _stateful(schema: Any, base: str, headers: dict[str, str], found: dict[tuple[str, str], list[str]]) -> int:
    """Follow the document's links (a registered client shown, disabled, its secret rotated) in bounded random
    sequences, checked like every other call; returns how many linked calls found what they were linked to."""
    linked = 0

    class Machine(schema.as_state_machine()):  # type: ignore[misc]
        def get_call_kwargs(self, case: Any) -> dict[str, Any]:
            return {"base_url": base, "headers": headers, "timeout": 10}

        def validate_response(self, response: Any, case: Any, additional_checks: Any = None,
                              **kwargs: Any) -> None:
            nonlocal linked
            if case.operation.path.startswith("/admin/clients/{client_id}") and response.status_code == 200:
                linked += 1
            try:
                case.validate_response(response, checks=CHECKS, headers=headers)
            except FailureGroup as group:
                for failure in group.exceptions:
                    _record(case.operation.label, failure, response, found)

    Machine.run(settings=settings(max_examples=max(EXAMPLES // 2, 5), stateful_step_count=6, deadline=None,
                                  derandomize=True, database=None, phases=[Phase.generate],
                                  suppress_health_check=list(HealthCheck)))
    return linked


def _record(label: str, failure: Failure, response: Any, found: dict[tuple[str, str], list[str]]) -> None:
    check = failure.checks[0] if failure.checks else type(failure).__name__
    if response.status_code >= 500:
        check = "not_a_server_error"
    found[label, check].append(f"{response.status_code} {failure.title}: {str(failure.message)[:300]}")


def test_the_published_contract_holds_under_fuzzing(pg_database_url: str, master_key_file: Path,
                                                     tmp_path: Path) -> None:
    issuer = "http://localhost:8000"
    env = acar_env({"ACAR_DATABASE_URL": pg_database_url, "ACAR_MASTER_KEY_FILE": str(master_key_file),
                    "ACAR_DATA_DIR": str(tmp_path / "data"), "ACAR_KEY_CACHE_SECONDS": "0", "ACAR_ISSUER": issuer,
                    "ACAR_ENV": "development", "ACAR_ACCESS_LOG": "false",
                    # one client sending thousands of requests a minute: every budget wide open, or the admin
                    # API's would refuse the stateful run (the limits have their own tests: test_rate_limits.py)
                    **dict.fromkeys((f"ACAR_RATE_LIMIT_{name}" for name in (
                        "AUTHORIZE", "PASSKEY_OPTIONS", "PASSKEY_LOGIN", "ENROLLMENT", "ENROLLMENT_CODE",
                        "CLIENT_AUTH_FAILURES", "INTROSPECTION", "ADMIN")), "1000000/minute")})
    run_acar(env, "init")
    admin = acar_json(env, "admin", "token", "--subject", "fuzzer", "--scope", "acar:admin",
                      "--ttl", "3600")["access_token"]
    agency = acar_json(env, "client", "add", "--name", "Fuzzing agency", "--grant-type", "client_credentials",
                       "--scope", "signing")
    acar_json(env, "seal", "assign", agency["client_id"], "--voen", "1234567891", "--organization", "Fuzz")
    server = Server(env, log_path=tmp_path / "server.log")
    try:
        server.wait_ready()
        schema = schemathesis.openapi.from_url(server.base + "/openapi.json")
        operations = [result.ok() for result in schema.get_all_operations()]
        documented = requests.get(server.base + "/openapi.json", timeout=10).json()["paths"]
        assert len(operations) == sum(len(ops) for ops in documented.values()) > 30
        found: dict[tuple[str, str], list[str]] = defaultdict(list)
        calls = 0
        for headers in ({}, {"Authorization": f"Bearer {admin}"}):
            for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):
                for operation in operations:
                    calls += _fuzz(operation, mode, server.base, headers, found)
        # the signing API with an agency's own token (client_credentials, scope signing): its real bodies
        token = requests.post(server.base + "/token", data={"grant_type": "client_credentials"}, timeout=10,
                              auth=(agency["client_id"], agency["client_secret"])).json()["access_token"]
        for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):
            for operation in operations:
                if operation.path.startswith("/api/v1/"):
                    calls += _fuzz(operation, mode, server.base, {"Authorization": f"Bearer {token}"}, found)
        linked = _stateful(schema, server.base, {"Authorization": f"Bearer {admin}"}, found)
    finally:
        server.stop()
    assert linked > 0, "the stateful run never followed a registration to its client"
    print(f"schemathesis: {len(operations)} operations, {calls} calls, {sum(map(len, found.values()))} failures")
    assert calls >= len(operations) * 4
    allowed = _allowed()
    server_errors = {key: cases for key, cases in found.items() if key[1] == "not_a_server_error"}
    assert not server_errors, f"5xx answers: {server_errors}\n{server.log()}"
    refused = {key: cases[:3] for key, cases in found.items() if key not in allowed}
    assert not refused, "conformance failures not in schemathesis_allow.toml:\n" + "\n".join(
        f"{op} [{check}]: {cases}" for (op, check), cases in refused.items())

"""`acar` on each key backend.

A wrong master key stops `acar serve` before it listens, in one line; `acar init` and `acar keys rotate` refuse
it without writing (`acar` in-process). The PKCS#11 backend on a SoftHSM2 token: `acar start serve` (a real
process) creates the token keys on the token, is ready and publishes them, and what it and this process sign
verifies with PyJWT against its JWKS; the PIN and module errors come from a real C_Login and module load in this
process (the PIN error's wording says the token refused it: a login this process already held would be refused
in other words). A SoftHSM2 configuration other than this process's needs a process of its own (SoftHSM2 reads
it once per process).
"""

from __future__ import annotations

import signal
from pathlib import Path

import httpx
import jwt
import pytest
from pkcs11 import Attribute

from keys.pkcs11 import Pkcs11KeyStore
from keys.software import MasterKey
from tests.functional.helpers import InProcessAcar, Server, run_acar
from tests.local_http import free_port
from tests.softhsm import SoftHsmToken

ISSUER = "http://localhost:8000"


def _one_line_error(stderr: str, *fragments: str) -> None:
    assert stderr.startswith("acar: error: ") and stderr.count("\n") == 1, stderr
    for fragment in fragments:
        assert fragment in stderr, stderr


def test_wrong_master_key_stops_serve_init_and_rotate_in_one_line(acar: InProcessAcar, tmp_path: Path) -> None:
    acar("init")
    keys_before = acar.json("keys", "list")
    other = tmp_path / "other.key"
    MasterKey.create_file(other)
    wrong = {**acar.env, "ACAR_MASTER_KEY_FILE": str(other)}

    port = free_port()
    serve = acar("serve", "--port", str(port), check=False, env=wrong)
    assert serve.returncode == 1 and serve.stdout == ""
    _one_line_error(serve.stderr, "ACAR_MASTER_KEY_FILE")
    with pytest.raises(httpx.ConnectError):
        httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1)

    for command in (["init"], ["keys", "rotate"]):
        proc = acar(*command, check=False, env=wrong)
        assert proc.returncode == 1, proc.stdout
        _one_line_error(proc.stderr, "ACAR_MASTER_KEY_FILE")
    assert acar.json("keys", "list") == keys_before  # nothing created, nothing rotated


def test_malformed_master_key_stops_serve_in_one_line(acar: InProcessAcar, tmp_path: Path) -> None:
    bad = tmp_path / "bad.key"
    bad.write_text("c2hvcnQ=\n")  # base64 of 5 bytes
    proc = acar("serve", "--port", str(free_port()), check=False, env={**acar.env, "ACAR_MASTER_KEY_FILE": str(bad)})
    assert proc.returncode == 1
    _one_line_error(proc.stderr, "ACAR_MASTER_KEY_FILE", "must hold 32 bytes, holds 5")


@pytest.mark.pkcs11
def test_pkcs11_backend_init_and_serve(acar: InProcessAcar, softhsm_token: SoftHsmToken, tmp_path: Path) -> None:
    env = {**acar.env, **softhsm_token.acar_env(), "ACAR_ISSUER": ISSUER}
    assert acar.json("keys", "list", env=env) == []
    server = Server(env, log_path=tmp_path / "server.log", init=True)  # `acar init`, then `acar serve`
    try:
        server.wait_ready()
        keys = acar.json("keys", "list", env=env)  # what init created: current + next for ES256 and RS256
        assert sorted((k["alg"], k["state"]) for k in keys) == [
            ("ES256", "current"), ("ES256", "next"), ("RS256", "current"), ("RS256", "next")]
        created = [k["kid"] for k in keys]
        login = Pkcs11KeyStore(module_path=softhsm_token.module, token_label=softhsm_token.label,
                               pin=softhsm_token.pin)
        try:  # an independent look at the token: each key pair is there, its private half sensitive
            for kid in created:
                objects = softhsm_token.objects(kid)
                assert set(objects) == {"private", "public"}
                assert objects["private"][Attribute.SENSITIVE] is True
        finally:
            login.close()

        ready = httpx.get(server.base + "/readyz")
        assert ready.status_code == 200 and ready.json() == {"status": "ready"}
        jwks = httpx.get(server.base + "/jwks.json").json()
        assert {k["kid"] for k in jwks["keys"]} == set(created)

        # signed on the token by another process (the CLI, in this one), then by the server; both verify with PyJWT
        bootstrap = acar.json("admin", "token", "--subject", "operator", "--scope", "acar:admin", env=env)
        minted = httpx.post(server.base + "/admin/tokens",
                            headers={"Authorization": f"Bearer {bootstrap['access_token']}"},
                            json={"subject": "clerk", "scope": "acar:cert:revoke", "ttl_seconds": 300})
        assert minted.status_code == 200, minted.text
        keyset = {k.key_id: k for k in jwt.PyJWKSet.from_dict(jwks).keys}
        for token in (bootstrap["access_token"], minted.json()["access_token"]):
            kid = jwt.get_unverified_header(token)["kid"]
            assert kid in created
            claims = jwt.decode(token, key=keyset[kid], algorithms=["ES256"], audience=ISSUER + "/admin",
                                issuer=ISSUER)
            assert claims["sub"] in ("operator", "clerk")
    finally:
        code = server.stop(signal.SIGINT)  # clean shutdown: the store logs out of the token
    assert code == 0, server.log()


@pytest.mark.pkcs11
def test_pkcs11_pin_from_a_file(acar: InProcessAcar, softhsm_token: SoftHsmToken, tmp_path: Path) -> None:
    """ACAR_PKCS11_PIN_FILE keeps the PIN out of the environment; a wrong or unreadable file is one line."""
    env = {k: v for k, v in {**acar.env, **softhsm_token.acar_env()}.items() if k != "ACAR_PKCS11_PIN"}
    env["ACAR_KEY_BACKEND"] = "pkcs11"
    pin_file = tmp_path / "pin"
    pin_file.write_text(softhsm_token.pin + "\n")
    # a command that uses the keys logs in to the token (`acar keys list` reads the database only)
    rotated = acar.json("keys", "rotate", "--alg", "ES256", env={**env, "ACAR_PKCS11_PIN_FILE": str(pin_file)})
    assert [change["alg"] for change in rotated] == ["ES256"]
    pin_file.write_text("000000\n")
    proc = acar("keys", "rotate", check=False, env={**env, "ACAR_PKCS11_PIN_FILE": str(pin_file)})
    assert proc.returncode == 1
    _one_line_error(proc.stderr, "ACAR_PKCS11_PIN: the token")
    proc = acar("keys", "rotate", check=False, env={**env, "ACAR_PKCS11_PIN_FILE": str(tmp_path / "missing")})
    assert proc.returncode == 1
    _one_line_error(proc.stderr, "ACAR_PKCS11_PIN_FILE: cannot read")


@pytest.mark.pkcs11
@pytest.mark.parametrize(("override", "setting"), [  # the other settings' errors: tests/unit/keys/test_pkcs11.py
    ({"ACAR_PKCS11_PIN": "000000"}, "ACAR_PKCS11_PIN: the token"),  # a real C_Login, refused by the token
    ({"ACAR_PKCS11_MODULE": "/nonexistent/libpkcs11.so"}, "ACAR_PKCS11_MODULE: cannot use the PKCS#11 module"),
])
def test_pkcs11_misconfiguration_stops_serve_in_one_line(
    acar: InProcessAcar, softhsm_token: SoftHsmToken, override: dict[str, str], setting: str
) -> None:
    env = {**acar.env, **softhsm_token.acar_env(), **override}
    port = free_port()
    proc = acar("serve", "--port", str(port), check=False, env=env)
    assert proc.returncode == 1 and proc.stdout == ""
    _one_line_error(proc.stderr, setting)
    with pytest.raises(httpx.ConnectError):
        httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1)


@pytest.mark.pkcs11
def test_token_without_eddsa_refuses_ed25519_keys_clearly(
    acar: InProcessAcar, softhsm_token: SoftHsmToken, tmp_path: Path
) -> None:
    # the same token, seen through a SoftHSM2 configuration that does not offer EdDSA (as some HSMs do not)
    conf = tmp_path / "softhsm2-no-eddsa.conf"
    conf.write_text(softhsm_token.conf.read_text() + "slots.mechanisms = -CKM_EC_EDWARDS_KEY_PAIR_GEN,CKM_EDDSA\n")
    env = {**acar.env, **softhsm_token.acar_env(), "SOFTHSM2_CONF": str(conf),
           "ACAR_TOKEN_KEY_ALGORITHMS": '["ES256", "EdDSA"]'}
    proc = run_acar(env, "init", check=False)  # a process of its own: SoftHSM2 reads SOFTHSM2_CONF once per process
    assert proc.returncode == 1
    _one_line_error(proc.stderr, "the token cannot generate Ed25519 keys: it does not offer CKM_EDDSA")
    assert acar.json("keys", "list", env={**env, "ACAR_TOKEN_KEY_ALGORITHMS": '["ES256"]'}) == []  # init wrote nothing

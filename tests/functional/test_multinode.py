"""Two real server processes sharing one PostgreSQL: identical JWKS, each verifies the other's tokens,
and a rotation made from the command line reaches both. The logs never carry a token or a secret."""

from __future__ import annotations

import json
from pathlib import Path

import httpx
import jwt as pyjwt
import pytest

from tests.functional.helpers import Server, acar_env, acar_json, run_acar

pytestmark = pytest.mark.multinode


def _mint(base: str, bearer: str, scope: str = "acar:cert:revoke", subject: str = "clerk") -> str:
    r = httpx.post(base + "/admin/tokens", headers={"Authorization": f"Bearer {bearer}"},
                   json={"subject": subject, "scope": scope, "ttl_seconds": 600})
    assert r.status_code == 200, r.text
    return str(r.json()["access_token"])


def _authenticated(base: str, bearer: str) -> bool:
    """The node accepted the token: revoking a serial nobody issued is 404, not 401/403."""
    r = httpx.post(base + "/admin/certificates/00ff/revoke", headers={"Authorization": f"Bearer {bearer}"},
                   json={"reason": "keyCompromise"})
    assert r.status_code in (401, 404), r.text
    return r.status_code == 404


def _verify_independently(token: str, jwks: dict[str, object], issuer: str) -> dict[str, object]:
    kid = pyjwt.get_unverified_header(token)["kid"]
    key = {k.key_id: k for k in pyjwt.PyJWKSet.from_dict(jwks).keys}[kid]
    return pyjwt.decode(token, key=key.key, algorithms=["ES256"], audience=issuer + "/admin", issuer=issuer)


def test_two_nodes_share_keys_and_verify_each_other(pg_database_url: str, master_key_file: Path,
                                                   tmp_path: Path) -> None:
    issuer = "http://localhost:8000"
    env = acar_env({"ACAR_DATABASE_URL": pg_database_url, "ACAR_MASTER_KEY_FILE": str(master_key_file),
                    "ACAR_DATA_DIR": str(tmp_path / "data"), "ACAR_KEY_CACHE_SECONDS": "0", "ACAR_ISSUER": issuer})
    run_acar(env, "init")
    bootstrap = acar_json(env, "admin", "token", "--subject", "operator", "--scope", "acar:admin")["access_token"]
    a = Server(env, log_path=tmp_path / "a.log")
    b = Server(env, log_path=tmp_path / "b.log")
    minted: list[str] = [bootstrap]
    try:
        a.wait_ready()
        b.wait_ready()
        jwks_a = httpx.get(a.base + "/jwks.json").json()
        jwks_b = httpx.get(b.base + "/jwks.json").json()
        assert jwks_a == jwks_b and len(jwks_a["keys"]) == 4

        # a token minted by node A is accepted by node B, and the other way round
        from_a = _mint(a.base, bootstrap)
        from_b = _mint(b.base, bootstrap)
        minted += [from_a, from_b]
        assert _authenticated(b.base, from_a) and _authenticated(a.base, from_b)
        for token in minted:
            assert _verify_independently(token, jwks_b, issuer)["iss"] == issuer
        assert pyjwt.decode(from_a, options={"verify_signature": False})["act"]["sub"] == "operator"

        # rotation from the CLI (a third process): both nodes serve the same new set, old tokens still work
        old_kid = pyjwt.get_unverified_header(from_a)["kid"]
        early = run_acar(env, "keys", "rotate", "--alg", "ES256", check=False)
        assert early.returncode == 1 and "published" in early.stderr and "force" in early.stderr
        changes = acar_json(env, "keys", "rotate", "--alg", "ES256", "--force")
        assert changes[0]["retired"] == old_kid
        jwks_a = httpx.get(a.base + "/jwks.json").json()
        jwks_b = httpx.get(b.base + "/jwks.json").json()
        assert jwks_a == jwks_b
        assert {old_kid, changes[0]["current"], changes[0]["next"]} <= {k["kid"] for k in jwks_a["keys"]}
        assert _authenticated(b.base, from_a)  # the old-key token still authenticates at node B
        after = _mint(b.base, bootstrap)
        minted.append(after)
        assert pyjwt.get_unverified_header(after)["kid"] == changes[0]["current"]
        assert _authenticated(a.base, after)  # the new-key token from B is accepted by A
        for token in minted:
            _verify_independently(token, jwks_a, issuer)

        # bad tokens are refused with problem+json, never a 500
        r = httpx.post(a.base + "/admin/tokens", headers={"Authorization": "Bearer " + from_a[:-4] + "AAAA"},
                       json={"subject": "x", "scope": "acar:cert:revoke"})
        assert r.status_code == 401 and r.headers["content-type"] == "application/problem+json"
        r = httpx.post(b.base + "/admin/tokens", headers={"Authorization": f"Bearer {from_a}"},
                       json={"subject": "x", "scope": "acar:cert:revoke"})
        assert r.status_code == 403 and r.json()["type"] == "urn:acar:problem:insufficient_scope"
        r = httpx.post(b.base + "/admin/tokens", headers={"Authorization": f"Bearer {bootstrap}"},
                       json={"subject": "x", "scope": "acar:token:mint"})
        assert r.status_code == 403 and "acar admin token" in r.json()["detail"]
    finally:
        a.stop()
        b.stop()

    # no token, no master key and no private key ever reaches the logs
    logs = (tmp_path / "a.log").read_text() + (tmp_path / "b.log").read_text()
    lines = [json.loads(line) for line in logs.splitlines() if line.strip()]
    assert any(e.get("path") == "/admin/tokens" and e.get("request_id") for e in lines)
    secret = master_key_file.read_text().strip()
    for token in minted:
        assert token not in logs
        assert token.split(".")[2] not in logs
    assert secret not in logs
    assert "PRIVATE KEY" not in logs

"""`acar client`: the command in-process on the test database."""

from __future__ import annotations

import base64
import json
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric import ec
from jwt.algorithms import ECAlgorithm

from api.deps import Services
from idp.core.client_auth import ClientAuthenticator
from tests.functional.helpers import InProcessAcar


async def test_add_prints_the_secret_once_and_it_authenticates(acar: InProcessAcar, services: Services) -> None:
    added = acar.json("client", "add", "--name", "Agency portal", "--redirect-uri", "https://portal.example/cb",
                      "--redirect-uri", "https://portal.example/cb2", "--post-logout-redirect-uri",
                      "https://portal.example/bye", "--scope", "openid profile", "--scope", "fin")
    client_id, secret = added["client_id"], added["client_secret"]
    assert secret and added["auth_method"] == "client_secret_basic" and added["sector_identifier"] == "portal.example"
    assert added["grant_types"] == ["authorization_code", "refresh_token"]
    assert added["scopes"] == ["fin", "openid", "profile"] and added["subject_type"] == "pairwise"

    shown = acar("client", "show", client_id, "--json")
    assert "client_secret" not in json.loads(shown.stdout) and secret not in shown.stdout + shown.stderr
    assert "sha256:" not in shown.stdout
    listed = acar("client", "list", "--json")
    assert [c["client_id"] for c in json.loads(listed.stdout)] == [client_id] and secret not in listed.stdout

    auth = ClientAuthenticator(services.clients, issuer=services.settings.issuer, endpoints=[])

    async def fresh(*_: object) -> bool:
        return True

    basic = "Basic " + base64.b64encode(f"{client_id}:{secret}".encode()).decode()
    assert (await auth.authenticate({}, basic, replay=fresh)).client_id == client_id

    rotated = acar.json("client", "rotate-secret", client_id)
    assert rotated["client_id"] == client_id and rotated["client_secret"] not in ("", secret)
    disabled = acar.json("client", "disable", client_id)
    assert disabled["disabled"] is True and "client_secret" not in disabled


def test_human_output(acar: InProcessAcar, tmp_path: Path) -> None:
    jwk = {**ECAlgorithm.to_jwk(ec.generate_private_key(ec.SECP256R1()).public_key(), as_dict=True), "kid": "k1"}
    jwks_file = tmp_path / "jwks.json"
    jwks_file.write_text(json.dumps({"keys": [jwk]}))
    out = acar("client", "add", "--name", "Tax system", "--grant-type", "client_credentials",
               "--scope", "tax:read", "--auth-method", "private_key_jwt", "--jwks-file", str(jwks_file))
    lines = dict(line.split(": ", 1) for line in out.stdout.splitlines())
    assert lines["name"] == "Tax system" and lines["auth_method"] == "private_key_jwt"
    assert lines["sector_identifier"] == lines["client_id"] and "client_secret" not in lines
    assert json.loads(lines["jwks"]) == {"keys": [jwk]}
    out = acar("client", "add", "--name", "Portal", "--redirect-uri", "http://localhost:8080/cb")
    assert "client_secret: " in out.stdout and "shown only this once" in out.stderr
    listed = acar("client", "list").stdout.splitlines()
    assert len(listed) == 2 and any(line.endswith("active  Tax system") for line in listed)


def test_bad_input_is_one_line_and_writes_nothing(acar: InProcessAcar, tmp_path: Path) -> None:
    bad = acar("client", "add", "--name", "X", "--redirect-uri", "http://portal.example/cb", check=False)
    assert bad.returncode == 1 and bad.stdout == ""
    assert bad.stderr.splitlines() == [bad.stderr.strip()]
    assert bad.stderr.startswith("acar: error: redirect_uris: http://portal.example/cb must use https")
    for args in (["--redirect-uri", "https://a.example/cb", "--scope", "profile"],
                 ["--redirect-uri", "https://a.example/cb#x"],
                 ["--redirect-uri", "https://a.example/cb", "--redirect-uri", "https://b.example/cb"],
                 ["--auth-method", "private_key_jwt", "--redirect-uri", "https://a.example/cb"],
                 ["--redirect-uri", "https://a.example/cb", "--jwks-file", str(tmp_path / "missing.json")]):
        out = acar("client", "add", "--name", "X", *args, check=False)
        assert out.returncode == 1 and len(out.stderr.splitlines()) == 1 and out.stderr.startswith("acar: error: ")
    usage = acar("client", "add", "--name", "X", "--grant-type", "implicit", check=False)
    assert usage.returncode == 2 and len(usage.stderr.splitlines()) == 1
    assert json.loads(acar("client", "list", "--json").stdout) == []

    for command in ("show", "disable", "rotate-secret"):
        missing = acar("client", command, "nobody", check=False)
        assert missing.returncode == 1 and missing.stderr.strip() == "acar: error: no client 'nobody' is registered"


def test_introspect_clients_on_add_and_update(acar: InProcessAcar) -> None:
    """RFC 7662 section 4: which other clients' tokens a client may introspect, set by `client add` and `update`."""
    portal = acar.json("client", "add", "--name", "Portal", "--redirect-uri", "https://portal.example/cb")
    mobile = acar.json("client", "add", "--name", "Mobile", "--redirect-uri", "https://m.portal.example/cb")
    api = acar.json("client", "add", "--name", "Benefits API", "--grant-type", "client_credentials",
                    "--scope", "benefits:read", "--introspect-client", portal["client_id"])
    assert api["introspect_clients"] == [portal["client_id"]]
    updated = acar.json("client", "update", api["client_id"], "--introspect-client", portal["client_id"],
                        "--introspect-client", mobile["client_id"])
    assert updated["introspect_clients"] == sorted([portal["client_id"], mobile["client_id"]])
    assert acar.json("client", "show", api["client_id"])["introspect_clients"] == updated["introspect_clients"]
    cleared = acar.json("client", "update", api["client_id"], "--no-introspect-clients")
    assert cleared["introspect_clients"] == []
    unknown = acar("client", "update", api["client_id"], "--introspect-client", "nobody", check=False)
    assert unknown.returncode == 1 and "introspect_clients: no client 'nobody' is registered" in unknown.stderr
    public = acar("client", "add", "--name", "SPA", "--redirect-uri", "https://spa.example/cb", "--auth-method",
                  "none", "--introspect-client", portal["client_id"], check=False)
    assert public.returncode == 1 and "a public client (auth_method none) cannot introspect" in public.stderr
    nothing = acar("client", "update", api["client_id"], check=False)
    assert nothing.returncode == 1 and "nothing to change" in nothing.stderr

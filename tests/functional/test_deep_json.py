"""A client's JSON nested too deeply (RFC 8259 section 9; api.text.parse_json, MAX_JSON_DEPTH) gets each endpoint's
own refusal, never a 500: json.loads raises RecursionError past the interpreter's recursion limit ("[" * 100000 fits
every body limit), and a document just under it used to blow the recursive walks that followed it (the text check
of api.text.refused_json). Through HTTP on every kind of endpoint that reads JSON: a FastAPI route (FastAPI decodes,
api.edge_text.edge_text checks), the login pages' JSON endpoints (api.json_endpoints), the signing API's JSON body and
multipart placement, and the CLI's --jwks-file."""

from __future__ import annotations

import base64
import json
import sys
from typing import Any

import httpx
import pytest

from api.auth import mint_admin_token
from api.deps import Services
from api.text import MAX_JSON_DEPTH, TOO_DEEP, refused_json, too_deep
from tests.functional.helpers import InProcessAcar
from tests.passkey_tools import refused
from tests.signing_tools import minimal_pdf, prepared, register_agency

PROBLEM = "application/problem+json"
JSON = {"Content-Type": "application/json"}
HUGE = 30_000
"""Far past any recursion limit, and still within every JSON body limit (64 KiB the smallest)."""


def nested(depth: int, inner: str = "1") -> str:
    """`inner` inside `depth` arrays."""
    return "[" * depth + inner + "]" * depth


def near_the_limit() -> range:
    """Depths around the interpreter's recursion limit: where json.loads still decodes and a recursive walk of the
    decoded value (from a deeper stack) does not."""
    limit = sys.getrecursionlimit()
    return range(limit - 120, limit + 10, 2)


@pytest.mark.nodb
def test_the_depth_measure_and_the_text_check_walk_any_depth() -> None:
    deep: Any = "\x00"
    for _ in range(50_000):  # far past the recursion limit: both walks are iterative
        deep = [deep]
    assert too_deep(deep) and not too_deep([[1]] * 3) and not too_deep("x")
    assert too_deep(json.loads(nested(MAX_JSON_DEPTH + 1))) and not too_deep(json.loads(nested(MAX_JSON_DEPTH)))
    found = refused_json(deep, ("body",))
    assert found is not None and found[1] == "contains U+0000 (NUL)" and found[0] == ("body", *[0] * 50_000)
    # document order, keys first, the path given as a prefix
    assert refused_json({"a": ["ok", {"b\ud800": 1}], "c": "\x00"}, ("body",)) == (
        ("body", "a", 1, "b\\ud800"), "key contains an unpaired surrogate")
    assert refused_json({"a": ["ok", {"b": "\x00"}], "c": "\x00"}) == (("a", 1, "b"), "contains U+0000 (NUL)")


@pytest.mark.asyncio
async def test_a_fastapi_json_route(client: httpx.AsyncClient, initialized: Services) -> None:
    """POST /admin/clients: FastAPI decodes the body, edge_text refuses it past MAX_JSON_DEPTH; past the recursion
    limit it is FastAPI's unreadable body (api.bodies), answered after authentication like malformed JSON."""
    minted = await mint_admin_token(initialized, subject="operator", scopes={"acar:client:manage"}, ttl_seconds=600)
    bearer = {"Authorization": f"Bearer {minted['access_token']}", **JSON}
    valid = '{"name": "Agency portal", "redirect_uris": ["https://portal.example/cb"], "extra": DEEP}'
    for depth in (MAX_JSON_DEPTH + 1, HUGE, *near_the_limit()):
        r = await client.post("/admin/clients", content=valid.replace("DEEP", nested(depth)), headers=bearer)
        assert r.status_code == 422 and r.headers["content-type"] == PROBLEM, (depth, r.status_code, r.text[:300])
        assert r.json()["type"] == "urn:acar:problem:invalid_request", depth
        assert r.json()["detail"] == f"the body {TOO_DEEP}", depth
    # authentication first: without credentials the answer is 401, whatever the body
    r = await client.post("/admin/clients", content=nested(HUGE), headers=JSON)
    assert r.status_code == 401 and r.headers["content-type"] == PROBLEM, r.text
    # within the depth limit the body reaches the schema, which refuses the unknown member
    r = await client.post("/admin/clients", content=valid.replace("DEEP", nested(MAX_JSON_DEPTH - 2)), headers=bearer)
    assert r.status_code == 422 and r.json()["errors"] == [{"field": "extra", "message": "Extra inputs are not "
                                                                                         "permitted"}], r.text
    r = await client.post("/admin/clients", content=valid.replace(', "extra": DEEP', ""), headers=bearer)
    assert r.status_code == 201, r.text


@pytest.mark.asyncio
@pytest.mark.parametrize("path", ["/webauthn/login/options", "/webauthn/login/verify", "/webauthn/enrollment",
                                  "/idcard/webeid/challenge", "/idcard/webeid/login"])
async def test_the_login_json_endpoints(http: httpx.AsyncClient, path: str) -> None:
    """api.json_endpoints.read_json: invalid_request naming the depth, before anything else is looked at (the
    pending request here does not exist: a body that is read answers request_expired or code_invalid)."""
    for depth in (MAX_JSON_DEPTH + 1, HUGE, *near_the_limit()):
        body = '{"pending_id": "no-such-request", "code": "ABCD-EFGH", "token": DEEP}'.replace("DEEP", nested(depth))
        r = await http.post(path, content=body, headers=JSON)
        problem = refused(r, 400, "invalid_request")
        assert problem["detail"] == f"the body {TOO_DEEP}", (depth, problem)


@pytest.mark.asyncio
async def test_the_signing_api(client: httpx.AsyncClient, initialized: Services) -> None:
    """The JSON body (invalid_request) and the multipart placement (invalid_placement), with nothing stored."""
    await prepared(initialized)
    agency = await register_agency(initialized, client)
    api = "/api/v1/signing-requests"
    document = base64.b64encode(minimal_pdf()).decode()
    for depth in (MAX_JSON_DEPTH + 1, HUGE):
        body = ('{"mode": "seal", "documents": [{"filename": "a.pdf", "content": "PDF"}], "placement": DEEP}'
                .replace("PDF", document).replace("DEEP", nested(depth)))
        problem = refused(await client.post(api, content=body, headers={**agency.headers, **JSON}), 422,
                          "invalid_request")
        assert problem["detail"] == f"the body {TOO_DEEP}", problem
        r = await client.post(api, headers=agency.headers, data={"mode": "seal", "placement": nested(depth)},
                              files=[("document", ("a.pdf", minimal_pdf(), "application/pdf"))])
        problem = refused(r, 422, "invalid_placement")
        assert problem["detail"].startswith(f"placement {TOO_DEEP}"), problem
    r = await client.get(api + "/none", headers=agency.headers)
    assert r.status_code == 404  # and the well-formed requests still work:
    r = await client.post(api, headers=agency.headers, data={"mode": "seal", "placement": '{"page": 1, "box": '
                                                                                             '[50, 50, 250, 110]}'},
                          files=[("document", ("a.pdf", minimal_pdf(), "application/pdf"))])
    assert r.status_code == 201, r.text


def test_the_cli_jwks_file(acar: InProcessAcar, tmp_path: Any) -> None:
    path = tmp_path / "jwks.json"
    for depth in (MAX_JSON_DEPTH + 1, HUGE):
        path.write_text('{"keys": DEEP}'.replace("DEEP", nested(depth)))
        result = acar("client", "add", "--name", "n", "--auth-method", "private_key_jwt", "--grant-type",
                      "client_credentials", "--scope", "s", "--jwks-file", str(path), check=False)
        assert result.returncode == 1 and TOO_DEEP in result.stderr and "Traceback" not in result.stderr, result
    assert json.loads(acar("client", "list", "--json").stdout) == []

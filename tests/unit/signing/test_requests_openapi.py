"""The signing API in the published OpenAPI document (api.openapi): its bearer scheme, both body types, and every
refusal's code taken from the error classes, so the document cannot drift from what the routes answer."""

from __future__ import annotations

import warnings
from typing import Any

from api.app import create_app
from api.settings import Settings

PROBLEM = "application/problem+json"


def _codes(response: dict[str, Any]) -> set[str]:
    return set(response["content"][PROBLEM]["schema"]["allOf"][1]["properties"]["code"]["enum"])


def test_the_signing_operations_are_documented(settings: Settings) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        doc = create_app(settings).openapi()
    paths = doc["paths"]
    create = paths["/api/v1/signing-requests"]["post"]
    follow = paths["/api/v1/signing-requests/{request_id}"]["get"]
    download = paths["/api/v1/signing-requests/{request_id}/documents/{n}"]["get"]
    assert doc["components"]["securitySchemes"]["agencyBearer"]["scheme"] == "bearer"
    for operation in (create, follow, download):
        assert operation["security"] == [{"agencyBearer": []}]
        for status in ("401", "403", "default"):
            assert list(operation["responses"][status]["content"]) == [PROBLEM]
    body = create["requestBody"]["content"]
    assert set(body) == {"application/json", "multipart/form-data"}
    assert body["application/json"]["schema"] == {"$ref": "#/components/schemas/SigningRequestCreate"}
    json_body = doc["components"]["schemas"]["SigningRequestCreate"]
    assert json_body["properties"]["level"]["anyOf"][0]["enum"] == ["B-B", "B-T", "B-LT", "B-LTA"]
    assert json_body["examples"] and "DocumentIn" in doc["components"]["schemas"]
    assert body["multipart/form-data"]["schema"]["required"] == ["mode", "document"]
    assert {p["name"] for p in create["parameters"]} == {"Idempotency-Key"}
    assert {"201", "200", "409", "413", "415", "422"} <= set(create["responses"])
    assert _codes(create["responses"]["409"]) == {"idempotency_key_reused", "no_seal"}
    assert {"invalid_level", "invalid_fin", "signer_required", "invalid_document", "too_many_documents",
            "damaged_pdf", "active_content", "inflation_bomb"} <= _codes(create["responses"]["422"])
    assert create["responses"]["201"]["links"]["GetSigningRequest"]["operationId"] == follow["operationId"]
    assert _codes(follow["responses"]["404"]) == {"not_found"}
    assert list(download["responses"]["200"]["content"]) == ["application/pdf"]
    assert _codes(download["responses"]["409"]) == {"not_completed"}
    assert _codes(download["responses"]["410"]) == {"document_deleted"}

"""Schemas of the agency signing API (/api/v1/signing-requests)."""

from __future__ import annotations

import datetime as dt
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from signing.core.interfaces import Mode, RequestState, RequestView
from signing.core.levels import PadesLevel
from signing.core.requests import MAX_CALLBACK_URL, MAX_FILENAME, MAX_TEXT


class PlacementIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    page: int = Field(default=1, ge=1, le=100_000, description="1-based page number")
    box: list[float] = Field(min_length=4, max_length=4, description="[x1, y1, x2, y2] in PDF points, x1 < x2, "
                             "y1 < y2 (ISO 32000-1 section 8.3.2.3)")


class DocumentIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    filename: str | None = Field(default=None, max_length=MAX_FILENAME)
    content: str = Field(min_length=1, description="the PDF, base64 (RFC 4648 section 4)")


class SigningRequestCreate(BaseModel):
    """A signing request as JSON (the same fields as the multipart form, documents as base64)."""

    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [
        {"mode": "seal", "reason": "Arayış", "location": "Bakı", "level": "B-LT",
         "documents": [{"filename": "arayis.pdf", "content": "JVBERi0xLjcK..."}]},
        {"mode": "sign", "signer_fin": "5ABCD12", "level": "B-T", "placement": {"page": 1, "box": [50, 50, 250, 110]},
         "callback_url": "https://agency.example/signed",
         "documents": [{"filename": "contract.pdf", "content": "JVBERi0xLjcK..."}]},
        {"mode": "sign", "signer_fin": "5ABCD12", "entity_voen": "1234567891", "reason": "ƏDV bəyannaməsi",
         "documents": [{"filename": "edv.pdf", "content": "JVBERi0xLjcK..."}]},
    ]})

    mode: str = Field(description="seal: the agency's own seal; sign: the person named by signer_fin",
                      json_schema_extra={"enum": [m.value for m in Mode]})
    documents: list[DocumentIn] = Field(min_length=1, max_length=1000)
    signer_fin: str | None = Field(default=None, max_length=16, description="sign mode: the signer's FIN")
    entity_voen: str | None = Field(
        default=None, max_length=16, description="sign mode on behalf of a legal entity: its VÖEN (10 digits); the "
        "signer (signer_fin) must hold a valid mandate with the power sign_declarations, checked at the approval and "
        "at signing time (docs/signing.md, \"Signing for a legal entity\")")
    reason: str | None = Field(default=None, max_length=MAX_TEXT)
    location: str | None = Field(default=None, max_length=MAX_TEXT)
    level: str | None = Field(default=None, max_length=8, description="PAdES baseline level (default B-LT)",
                              json_schema_extra={"anyOf": [{"type": "string",
                                                            "enum": [level.value for level in PadesLevel]},
                                                           {"type": "null"}]})
    placement: PlacementIn | None = Field(default=None, description="a visible signature; invisible without")
    callback_url: str | None = Field(default=None, max_length=MAX_CALLBACK_URL,
                                     description="https URL told when the request finishes")


class DocumentOut(BaseModel):
    n: int
    filename: str
    sha256: str = Field(description="SHA-256 (hex) of the document as submitted")
    pages: int
    size: int
    state: str = Field(json_schema_extra={"enum": ["pending", "signed", "failed"]})
    signed_sha256: str | None = Field(default=None, description="SHA-256 (hex) of the signed PDF")
    findings: list[str] = Field(default_factory=list, description="what the input policy reported")


class Failure(BaseModel):
    code: str
    detail: str | None


class SigningRequestOut(BaseModel):
    id: str
    state: str = Field(json_schema_extra={"enum": [s.value for s in RequestState]})
    mode: str = Field(json_schema_extra={"enum": [m.value for m in Mode]})
    level: str
    approval_url: str | None = Field(default=None, description="sign mode: the page the signer opens")
    entity_voen: str | None = Field(default=None, description="the legal entity the signer signs for, if any")
    created_at: dt.datetime
    updated_at: dt.datetime
    expires_at: dt.datetime
    failure: Failure | None = None
    documents_deleted: bool = Field(default=False, description="the retention ran out: the digests stay")
    documents: list[DocumentOut]

    @classmethod
    def of(cls, view: RequestView, *, issuer: str) -> SigningRequestOut:
        failure = Failure(code=view.failure_code, detail=view.failure_detail) if view.failure_code else None
        return cls(id=view.id, state=view.state.value, mode=view.mode.value, level=view.level.value,
                   approval_url=f"{issuer}/sign/{view.id}" if view.mode is Mode.SIGN else None,
                   created_at=view.created_at, updated_at=view.updated_at, expires_at=view.expires_at,
                   entity_voen=view.entity_voen, failure=failure, documents_deleted=view.purged, documents=[
                       DocumentOut(n=d.n, filename=d.filename, sha256=d.sha256, pages=d.pages, size=d.size,
                                   state=d.state, signed_sha256=d.signed_sha256, findings=list(d.findings))
                       for d in view.documents])


MULTIPART_FORM: dict[str, Any] = {
    "type": "object", "required": ["mode", "document"],
    "properties": {
        "mode": {"type": "string", "enum": [m.value for m in Mode]},
        "document": {"type": "array", "items": {"type": "string", "format": "binary"}, "minItems": 1,
                     "description": "one part per PDF, named document, with its filename"},
        "signer_fin": {"type": "string", "maxLength": 16},
        "entity_voen": {"type": "string", "maxLength": 16},
        "reason": {"type": "string", "maxLength": MAX_TEXT},
        "location": {"type": "string", "maxLength": MAX_TEXT},
        "level": {"type": "string", "enum": [level.value for level in PadesLevel]},
        "placement": {"type": "string", "description": 'JSON: {"page": 1, "box": [x1, y1, x2, y2]}'},
        "callback_url": {"type": "string", "maxLength": MAX_CALLBACK_URL},
    },
}
"""The multipart/form-data body of POST /api/v1/signing-requests (read by hand in api.routes.signing)."""

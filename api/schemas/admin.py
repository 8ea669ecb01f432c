"""Schemas of the admin API."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

from api.settings import MAX_TOKEN_LIFETIME_CEILING


class TokenMintRequest(BaseModel):
    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [
        {"subject": "registrar", "scope": "acar:cert:revoke", "ttl_seconds": 300}]})

    subject: str = Field(min_length=1, max_length=200, description="who will use the token (an operator id)")
    scope: str = Field(min_length=1, max_length=500, description="space-separated admin scopes")
    ttl_seconds: int = Field(default=900, ge=1, le=MAX_TOKEN_LIFETIME_CEILING)


class TokenMintResponse(BaseModel):
    access_token: str
    token_type: str
    expires_in: int
    scope: str
    kid: str
    jti: str

"""Schemas of the enrollment admin API (activation codes)."""

from __future__ import annotations

import datetime as dt

from pydantic import BaseModel, ConfigDict, Field

FIN_PATTERN = "^[0-9A-Za-z]{7}$"
"""keys.identifiers.normalize_fin: seven Latin letters or digits (upper-cased when stored)."""


class EnrollmentCodeRequest(BaseModel):
    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [{"fin": "5ABC7DE"}]})

    fin: str = Field(min_length=1, max_length=32, description="the person's FIN (seven Latin letters or digits)",
                     json_schema_extra={"pattern": FIN_PATTERN})
    revoke_credentials: bool = Field(default=False, description="recovery: remove every passkey the person has")


class PersonSummary(BaseModel):
    id: str
    fin: str | None
    given_name: str
    family_name: str


class EnrollmentCodeIssued(BaseModel):
    code: str = Field(description="XXXX-XXXX-XXXX-XXXX-XXXX: 20 symbols of Crockford's base32 (100 random bits), "
                                  "shown only in this answer; the person types it on /enroll")
    code_id: str = Field(description="the code's id in the audit trail (enrollment.*); not part of the code")
    expires_at: dt.datetime
    person: PersonSummary
    credentials_revoked: int

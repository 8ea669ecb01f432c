"""Schemas of the registry's admin API: persons, legal entities, mandates and staff roles (docs/registry.md)."""

from __future__ import annotations

import datetime as dt

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field

from api.schemas.enrollment import FIN_PATTERN
from idp.sql.persons import CATEGORIES, DOCUMENT_TYPES, STATUSES
from idp.sql.registry import ENTITY_STATUSES, POWERS
from idp.sql.roles import ROLES

VOEN_PATTERN = "^[0-9]{10}$"
"""keys.identifiers.check_voen: ten digits whose last is the check digit."""
_FIN = Field(min_length=1, max_length=32, description="the person's FIN (seven Latin letters or digits)",
             json_schema_extra={"pattern": FIN_PATTERN})
_VOEN = Field(min_length=1, max_length=32, description="the entity's VÖEN (ten digits)",
              json_schema_extra={"pattern": VOEN_PATTERN})


class PersonCreate(BaseModel):
    """A person to register (idp.sql.persons.check_person: a citizen by FIN, a foreigner or stateless person by FIN
    or identity document)."""

    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [
        {"fin": "5ABC7DE", "given_name": "Aysel", "family_name": "Məmmədova", "birthdate": "1990-04-01"}]})

    given_name: str = Field(min_length=1, max_length=200)
    family_name: str = Field(min_length=1, max_length=200)
    fin: str | None = Field(default=None, max_length=32, json_schema_extra={"pattern": FIN_PATTERN})
    birthdate: dt.date | None = None
    category: str = Field(default="citizen", max_length=16, json_schema_extra={"enum": list(CATEGORIES)})
    document_type: str | None = Field(default=None, max_length=32, json_schema_extra={"enum": list(DOCUMENT_TYPES)})
    document_country: str | None = Field(default=None, max_length=3, description="ISO 3166-1 alpha-3")
    document_number: str | None = Field(default=None, max_length=20)
    given_name_cyrillic: str | None = Field(default=None, max_length=200)
    family_name_cyrillic: str | None = Field(default=None, max_length=200)


class PersonView(BaseModel):
    id: str
    fin: str | None
    category: str
    given_name: str
    family_name: str
    birthdate: dt.date | None
    document_type: str | None
    document_country: str | None
    document_number: str | None
    status: str
    given_name_cyrillic: str | None
    family_name_cyrillic: str | None


class PersonStatusChange(BaseModel):
    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [{"status": "suspended"}]})

    status: str = Field(max_length=16, json_schema_extra={"enum": list(STATUSES)})


class EntityCreate(BaseModel):
    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [
        {"voen": "1400057421", "name": "Nümunə MMC", "legal_form": "MMC"}]})

    voen: str = _VOEN
    name: str = Field(min_length=1, max_length=500)
    legal_form: str = Field(min_length=1, max_length=64)
    status: str = Field(default="active", max_length=16, json_schema_extra={"enum": list(ENTITY_STATUSES)})
    director_fin: str | None = Field(default=None, min_length=1, max_length=32,
                                     description="the FIN of the entity's director (a registered, active person)")


class EntityView(BaseModel):
    id: str
    voen: str
    name: str
    legal_form: str
    status: str
    director_fin: str | None = None


class EntityDirectorChange(BaseModel):
    """The entity's director: a registered, active person's FIN, or null for none."""

    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [{"fin": "5ABC7DE"}, {"fin": None}]})

    fin: str | None = Field(min_length=1, max_length=32)


class EntityStatusChange(BaseModel):
    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [{"status": "liquidated"}]})

    status: str = Field(max_length=16, json_schema_extra={"enum": list(ENTITY_STATUSES)})


class MandateCreate(BaseModel):
    """A mandate granted by an officer (granted_via officer; granted_by names the acting staff member)."""

    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [
        {"fin": "5ABC7DE", "voen": "1400057421", "powers": ["sign_declarations"]}]})

    fin: str = _FIN
    voen: str = _VOEN
    powers: list[str] = Field(min_length=1, max_length=len(POWERS),
                              json_schema_extra={"items": {"type": "string", "enum": list(POWERS)}})
    valid_from: AwareDatetime | None = Field(default=None, description="RFC 3339 with an offset; default: now")
    valid_to: AwareDatetime | None = Field(default=None, description="exclusive, as valid_from; default: open-ended")


class MandateView(BaseModel):
    id: str
    person_id: str
    fin: str | None
    voen: str
    entity_name: str
    powers: list[str]
    valid_from: dt.datetime
    valid_to: dt.datetime | None
    granted_by: str
    granted_via: str
    revoked_at: dt.datetime | None
    revoked_by: str | None


class RoleChange(BaseModel):
    """A staff role to grant or revoke: agency_voen for an agency administrator only."""

    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [
        {"fin": "5ABC7DE", "role": "registration_officer"},
        {"fin": "5ABC7DE", "role": "agency_admin", "agency_voen": "1400057421"}]})

    fin: str = _FIN
    role: str = Field(max_length=32, json_schema_extra={"enum": list(ROLES)})
    agency_voen: str | None = Field(default=None, max_length=32, json_schema_extra={"pattern": VOEN_PATTERN})


class RoleView(BaseModel):
    id: str
    person_id: str
    role: str
    agency_voen: str | None
    scope: str = Field(description="the scope a client asks for to receive a token in this role (idp.core.roles)")


class RoleRevoked(BaseModel):
    revoked: bool = Field(description="false when the person did not hold the role")

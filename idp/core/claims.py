"""Scopes, claims and the `claims` request parameter (OIDC Core 5.1, 5.4, 5.5).

Citizens' attributes leave Açar only when (1) the client is registered for the scope that carries them and
(2) the citizen consented to that client receiving them. National attributes have scopes of their own:
`fin` (the personal identification number) and `birthdate`.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from idp.core.errors import InvalidRequest
from idp.core.interfaces import Subject

SCOPE_CLAIMS: Mapping[str, tuple[str, ...]] = {
    "openid": ("sub",),
    "profile": ("name", "given_name", "family_name"),
    "fin": ("fin",),
    "birthdate": ("birthdate",),
    "represents": ("represents",),
}
"""Scopes that release personal claims (OIDC Core 5.4 for profile; fin and birthdate are national)."""
OIDC_SCOPES = (*SCOPE_CLAIMS, "offline_access")
CLAIM_SCOPE = {claim: scope for scope, claims in SCOPE_CLAIMS.items() for claim in claims}
SUPPORTED_CLAIMS = ("sub", "iss", "aud", "exp", "iat", "auth_time", "nonce", "acr", "amr", "sid", "azp",
                    *(c for s in SCOPE_CLAIMS.values() for c in s if c != "sub"))
MAX_CLAIMS_PARAMETER = 4096
REPRESENTS = "represents"
"""Representation at login (docs/registry.md): the scope a client is registered for and requests to receive the
`represents` claim, the entity the person chose to act for. Other clients never see the choice."""
REPRESENT_POWER = "represent_at_login"
"""The mandate power that allows a person to log in as an entity's representative (idp.sql.registry.POWERS)."""


@dataclass(frozen=True, slots=True)
class ClaimsRequest:
    """The parsed `claims` parameter: claim name -> request object (None when `null`), per target."""

    userinfo: Mapping[str, Mapping[str, Any] | None]
    id_token: Mapping[str, Mapping[str, Any] | None]

    def names(self) -> set[str]:
        return set(self.userinfo) | set(self.id_token)

    def as_json(self) -> dict[str, Any]:
        return {"userinfo": dict(self.userinfo), "id_token": dict(self.id_token)}

    @classmethod
    def from_json(cls, value: Mapping[str, Any] | None) -> ClaimsRequest:
        value = value or {}
        return cls(userinfo=value.get("userinfo", {}), id_token=value.get("id_token", {}))


EMPTY_CLAIMS = ClaimsRequest({}, {})


def _member(value: object, where: str) -> dict[str, Mapping[str, Any] | None]:
    if not isinstance(value, dict):
        raise InvalidRequest(f"claims.{where} must be a JSON object")
    out: dict[str, Mapping[str, Any] | None] = {}
    for name, request in value.items():
        if request is not None:
            if not isinstance(request, dict):
                raise InvalidRequest(f"claims.{where}.{name} must be null or an object")
            if "essential" in request and not isinstance(request["essential"], bool):
                raise InvalidRequest(f"claims.{where}.{name}.essential must be a boolean")
            if "values" in request and not isinstance(request["values"], list):
                raise InvalidRequest(f"claims.{where}.{name}.values must be an array")
        out[str(name)] = request
    return out


def parse_claims_parameter(raw: str | None) -> ClaimsRequest:
    """OIDC Core 5.5: a JSON object with optional `userinfo` and `id_token` members."""
    if not raw:
        return EMPTY_CLAIMS
    if len(raw) > MAX_CLAIMS_PARAMETER:
        raise InvalidRequest("claims parameter is too long")
    try:
        value = json.loads(raw)
    except ValueError:
        raise InvalidRequest("claims parameter is not JSON") from None
    except RecursionError:  # "[[[[...": nesting past the recursion limit, within MAX_CLAIMS_PARAMETER
        raise InvalidRequest("claims parameter is JSON nested too deeply (RFC 8259 section 9)") from None
    if not isinstance(value, dict) or set(value) - {"userinfo", "id_token"}:
        raise InvalidRequest("claims must be an object with userinfo and/or id_token members")
    return ClaimsRequest(userinfo=_member(value.get("userinfo", {}), "userinfo"),
                         id_token=_member(value.get("id_token", {}), "id_token"))


def releasable(scopes: Iterable[str], claims: ClaimsRequest, allowed_scopes: Iterable[str]) -> set[str]:
    """The person claims a request may receive: from its scopes and its claims parameter, limited to what the
    client is registered for."""
    allowed = set(allowed_scopes)
    names = {c for s in scopes if s in allowed for c in SCOPE_CLAIMS.get(s, ())}
    names |= {c for c in claims.names() if CLAIM_SCOPE.get(c) in allowed}
    return names


def person_claims(subject: Subject, names: Iterable[str]) -> dict[str, Any]:
    """The values of the named person claims that the person has (sub is set by the caller)."""
    wanted = set(names)
    out: dict[str, Any] = {}
    if "name" in wanted:
        out["name"] = f"{subject.given_name} {subject.family_name}"
    if "given_name" in wanted:
        out["given_name"] = subject.given_name
    if "family_name" in wanted:
        out["family_name"] = subject.family_name
    if "fin" in wanted and subject.fin:
        out["fin"] = subject.fin
    if "birthdate" in wanted and subject.birthdate:
        out["birthdate"] = subject.birthdate.isoformat()
    return out


CLAIM_DESCRIPTIONS: Mapping[str, str] = {
    "sub": "an identifier for you at this service (agencies of other sectors get a different one)",
    "name": "your full name",
    "given_name": "your given name",
    "family_name": "your family name",
    "fin": "your personal identification number (FIN)",
    "birthdate": "your date of birth",
    "represents": "the organisation you choose to act for, if you act for one",
}
"""Plain words for the consent page (translated with the pages)."""

"""Role scopes: a person's access token may carry a staff role only while the person holds it.

The admin API accepts a person's RFC 9068 access token issued by this IdP when it carries a role scope
(`acar:role:registration_officer`, `acar:role:agency_admin`, `acar:role:system_admin`); a client is registered for
the role scopes it may ask for. RFC 6749 section 3.3: "The authorization server MAY fully or partially ignore the
scope requested by the client, based on the authorization server policy or the resource owner's instructions. If
the issued access token scope is different from the one requested by the client, the authorization server MUST
include the "scope" response parameter". A role scope the person does not hold is therefore dropped (never an
error), when the code is issued and again when each access token is issued, and the token response's `scope` says
what was granted. The roles are in idp.sql.roles (StaffRole rows); the core reads them through
`OidcStore.staff_roles` / `TokenStore.staff_roles` only for a request naming a role scope, so the token endpoint
makes no extra query otherwise. Holding the scope is not enough at the admin API: it checks the role again at
every request (api.auth).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Final

ROLE_SCOPE_PREFIX: Final = "acar:role:"
REGISTRATION_OFFICER: Final = "registration_officer"
AGENCY_ADMIN: Final = "agency_admin"
SYSTEM_ADMIN: Final = "system_admin"
STAFF_ROLES: Final = (REGISTRATION_OFFICER, AGENCY_ADMIN, SYSTEM_ADMIN)
ROLE_SCOPES: Final = {role: ROLE_SCOPE_PREFIX + role for role in STAFF_ROLES}
"""The scope of each staff role (idp.sql.models.StaffRole.role)."""


def is_role_scope(scope: str) -> bool:
    return scope.startswith(ROLE_SCOPE_PREFIX)


def role_of_scope(scope: str) -> str | None:
    """The staff role a scope names (None for any other scope, or an unknown role)."""
    role = scope.removeprefix(ROLE_SCOPE_PREFIX) if is_role_scope(scope) else None
    return role if role in STAFF_ROLES else None


def names_role(scopes: Iterable[str]) -> bool:
    """Whether any scope is a role scope (only then are the person's roles read)."""
    return any(is_role_scope(s) for s in scopes)


def held_scopes(scopes: Iterable[str], held_roles: Iterable[str]) -> list[str]:
    """`scopes` in their order without the role scopes of roles the person does not hold (RFC 6749 section 3.3:
    a narrower grant than requested)."""
    held = set(held_roles)
    return [s for s in scopes if not is_role_scope(s) or role_of_scope(s) in held]

"""Schemas of the client registry's admin API (OIDC Dynamic Client Registration metadata names)."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from idp.core.interfaces import AUTH_METHODS, GRANT_TYPES, Client
from idp.sql.clients import DEFAULT_GRANT_TYPES, ID_TOKEN_ALGS, ClientRegistration, default_scopes

_URI = Field(default=None, max_length=2000)


class ClientCreate(BaseModel):
    """A registration request. Field rules (https redirect URIs, grant and method combinations) are checked by
    idp.sql.clients.validate_registration, whose 422 problem names the field."""

    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [
        {"name": "Agency portal", "redirect_uris": ["https://portal.example/cb"],
         "post_logout_redirect_uris": ["https://portal.example/bye"], "scopes": ["openid", "profile", "fin"]},
        {"name": "Tax system", "grant_types": ["client_credentials"], "scopes": ["tax:read"],
         "auth_method": "client_secret_post", "subject_type": "public"},
    ]})

    name: str = Field(min_length=1, max_length=200)
    redirect_uris: list[str] = Field(default_factory=list, max_length=100)
    post_logout_redirect_uris: list[str] = Field(default_factory=list, max_length=100)
    grant_types: list[str] = Field(default_factory=lambda: list(DEFAULT_GRANT_TYPES), max_length=10,
                                   json_schema_extra={"items": {"type": "string", "enum": list(GRANT_TYPES)}})
    scopes: list[str] | None = Field(default=None, max_length=100,
                                     description="default: openid profile, or none for a client_credentials client")
    auth_method: str = Field(default="client_secret_basic", max_length=32,
                             description="client_secret_basic, client_secret_post, private_key_jwt or none",
                             json_schema_extra={"enum": list(AUTH_METHODS)})
    subject_type: str = Field(default="pairwise", max_length=16, description="pairwise or public",
                              json_schema_extra={"enum": ["pairwise", "public"]})
    jwks: dict[str, Any] | None = Field(default=None, description="private_key_jwt: the client's public JWK Set")
    jwks_uri: str | None = _URI
    sector_identifier_uri: str | None = _URI
    backchannel_logout_uri: str | None = _URI
    id_token_alg: str = Field(default="ES256", max_length=16, description="ES256, RS256 or EdDSA",
                              json_schema_extra={"enum": list(ID_TOKEN_ALGS)})
    introspect_clients: list[str] = Field(default_factory=list, max_length=100, description=(
        "clients whose tokens this client may introspect besides its own (RFC 7662 section 4)"))
    purpose: str | None = Field(default=None, max_length=500, description=(
        "what the agency uses citizens' data for: shown to each citizen in their access record"))
    agency_voen: str | None = Field(default=None, max_length=10, description=(
        "the VÖEN of the agency owning the client (its agency administrators manage it); an agency administrator "
        "may omit it: their own agency is taken"))

    def registration(self) -> ClientRegistration:
        return ClientRegistration(
            name=self.name, redirect_uris=self.redirect_uris, post_logout_redirect_uris=self.post_logout_redirect_uris,
            grant_types=self.grant_types,
            scopes=self.scopes if self.scopes is not None else default_scopes(self.grant_types),
            auth_method=self.auth_method,
            subject_type=self.subject_type, jwks=self.jwks, jwks_uri=self.jwks_uri,
            sector_identifier_uri=self.sector_identifier_uri, backchannel_logout_uri=self.backchannel_logout_uri,
            id_token_alg=self.id_token_alg, introspect_clients=self.introspect_clients, purpose=self.purpose,
            agency_voen=self.agency_voen,
        )


class ClientUpdate(BaseModel):
    """A change to a registered client: the fields given are replaced."""

    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [
        {"introspect_clients": ["c_5f2b0c1e9a7d4b3f"]}]})

    introspect_clients: list[str] | None = Field(default=None, max_length=100, description=(
        "clients whose tokens this client may introspect besides its own (RFC 7662 section 4); [] for none"))
    agency_voen: str | None = Field(default=None, max_length=10, description=(
        "the VÖEN of the agency owning the client; \"\" for none (a system administrator or acar:admin only)"))


class ClientView(BaseModel):
    """A registered client: never its secret nor the secret's hash."""

    client_id: str
    name: str
    auth_method: str
    redirect_uris: list[str]
    post_logout_redirect_uris: list[str]
    grant_types: list[str]
    scopes: list[str]
    subject_type: str
    sector_identifier: str
    sector_identifier_uri: str | None
    jwks: dict[str, Any] | None
    jwks_uri: str | None
    backchannel_logout_uri: str | None
    id_token_alg: str
    introspect_clients: list[str]
    purpose: str | None = Field(description="the stated purpose of its use of citizens' data; null: none stated")
    agency_voen: str | None = Field(description="the agency owning the client; null: system administrators only")
    disabled: bool

    @classmethod
    def of(cls, client: Client) -> ClientView:
        return cls(
            client_id=client.client_id, name=client.name, auth_method=client.auth_method,
            redirect_uris=list(client.redirect_uris), post_logout_redirect_uris=list(client.post_logout_redirect_uris),
            grant_types=[g for g in GRANT_TYPES if g in client.grant_types], scopes=sorted(client.scopes),
            subject_type=client.subject_type, sector_identifier=client.sector_identifier,
            sector_identifier_uri=client.sector_identifier_uri,
            jwks=dict(client.jwks) if client.jwks is not None else None, jwks_uri=client.jwks_uri,
            backchannel_logout_uri=client.backchannel_logout_uri, id_token_alg=client.id_token_alg,
            introspect_clients=sorted(client.introspect_clients), purpose=client.purpose,
            agency_voen=client.agency_voen, disabled=client.disabled,
        )


class ClientCreated(ClientView):
    client_secret: str | None = Field(
        description="client_secret_basic/post only: shown this once, only its hash is kept")


class ClientSecret(BaseModel):
    client_id: str
    client_secret: str = Field(description="shown this once, only its hash is kept")

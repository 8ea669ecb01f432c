"""The client registry's admin API: register, list, show, update, disable clients and rotate their secrets.

Bearer admin tokens with scope acar:client:manage (or acar:admin), or a staff member's token (api.auth.CLIENTS): a
system administrator manages every client, an agency administrator only the clients its agency owns
(`agency_voen`): another agency's client answers 404, as an unknown one does, so its existence is not disclosed.
Errors are RFC 9457 problems. Secrets appear only in the answers that create them, with Cache-Control: no-store.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Request, Response

from api.auth import CLIENTS, AdminPrincipal, require_permission
from api.deps import Services
from api.errors import ApiProblem
from api.logging import request_id_var
from api.schemas.clients import ClientCreate, ClientCreated, ClientSecret, ClientUpdate, ClientView
from api.web import NO_STORE
from idp.core.errors import ClientNotFound, InvalidClientMetadata
from idp.core.interfaces import Client
from idp.core.roles import is_role_scope
from idp.sql.clients import ClientRegistry

router = APIRouter(prefix="/admin/clients", tags=["clients"])
Manager = Annotated[AdminPrincipal, Depends(require_permission(CLIENTS))]


def _forbidden(detail: str) -> ApiProblem:
    return ApiProblem(403, "forbidden", "Forbidden", detail)


async def _managed(registry: ClientRegistry, client_id: str, principal: AdminPrincipal) -> Client:
    """The client, when the caller may manage it; ClientNotFound (404) for an unknown client and for another
    agency's, alike."""
    client = await registry.get(client_id)
    if client is None or not principal.manages(client.agency_voen):
        raise ClientNotFound(f"no client {client_id!r} is registered")
    return client


async def _introspectable(registry: ClientRegistry, client_ids: list[str], principal: AdminPrincipal) -> None:
    """An agency administrator names only its own agency's clients in introspect_clients (RFC 7662 section 4: whose
    tokens a client may introspect): another agency's client is refused as an unknown one is (422, the same words),
    so that neither its tokens nor its existence is disclosed."""
    if principal.agencies is None:
        return
    for client_id in client_ids:
        client = await registry.get(client_id)
        if client is None or not principal.manages(client.agency_voen):
            raise InvalidClientMetadata(f"introspect_clients: no client {client_id!r} is registered")


@router.post("", status_code=201, response_model=ClientCreated)
async def register_client(body: ClientCreate, request: Request, response: Response,
                          principal: Manager) -> ClientCreated:
    """Register a client; 201 with its client_id and, for client_secret_basic/post, its secret (shown once).

    An agency administrator registers clients for its own agency only (agency_voen omitted: theirs) and no client
    with a role scope (acar:role:*): 403 otherwise, and nothing is written."""
    services: Services = request.app.state.services
    registration = body.registration()
    if principal.agencies is not None:
        if body.agency_voen is None and len(principal.agencies) == 1:
            body = body.model_copy(update={"agency_voen": next(iter(principal.agencies))})
            registration = body.registration()
        elif body.agency_voen is None or body.agency_voen.strip() not in principal.agencies:
            raise _forbidden("an agency administrator registers clients for their own agency only")
        if any(is_role_scope(s) for s in registration.scopes):
            raise _forbidden("only a system administrator registers a client for role scopes")
    async with services.sessions() as session, session.begin():
        registry = ClientRegistry(session, signing_algs=services.settings.token_key_algorithms)
        await _introspectable(registry, body.introspect_clients, principal)
        client, secret = await registry.add(registration, actor=principal.actor, request_id=request_id_var.get())
    services.clients.invalidate(client.client_id)
    response.headers.update(NO_STORE)
    return ClientCreated(**ClientView.of(client).model_dump(), client_secret=secret)


@router.get("", response_model=list[ClientView])
async def list_clients(request: Request, principal: Manager) -> list[ClientView]:
    """Every client (an agency administrator: its agency's clients only)."""
    services: Services = request.app.state.services
    async with services.sessions() as session:
        registry = ClientRegistry(session)
        if principal.agencies is None:
            return [ClientView.of(c) for c in await registry.list()]
        return [ClientView.of(c) for agency in sorted(principal.agencies)
                for c in await registry.list(agency_voen=agency)]


@router.get("/{client_id}", response_model=ClientView)
async def show_client(client_id: str, request: Request, principal: Manager) -> ClientView:
    services: Services = request.app.state.services
    async with services.sessions() as session:
        client = await _managed(ClientRegistry(session), client_id, principal)
    return ClientView.of(client)


@router.patch("/{client_id}", response_model=ClientView)
async def update_client(client_id: str, body: ClientUpdate, request: Request, principal: Manager) -> ClientView:
    """Replace the given settings of a client: introspect_clients (RFC 7662 section 4) and agency_voen (the owning
    agency: a system administrator or a machine token only, 403 for an agency administrator)."""
    services: Services = request.app.state.services
    if body.agency_voen is not None and principal.agencies is not None:
        raise _forbidden("only a system administrator moves a client to another agency")
    async with services.sessions() as session, session.begin():
        registry = ClientRegistry(session)
        client = await _managed(registry, client_id, principal)
        if body.introspect_clients is not None:
            await _introspectable(registry, body.introspect_clients, principal)
            client = await registry.set_introspect_clients(client_id, body.introspect_clients,
                                                           actor=principal.actor, request_id=request_id_var.get())
        if body.agency_voen is not None:
            client = await registry.set_agency(client_id, body.agency_voen or None, actor=principal.actor,
                                               request_id=request_id_var.get())
    services.clients.invalidate(client_id)
    return ClientView.of(client)


@router.post("/{client_id}/disable", response_model=ClientView)
async def disable_client(client_id: str, request: Request, principal: Manager) -> ClientView:
    """Disable a client: its grants are revoked and its tokens refused at once on every node; it can no longer
    authenticate at once on this node (within ACAR_KEY_CACHE_SECONDS on the others)."""
    services: Services = request.app.state.services
    async with services.sessions() as session, session.begin():
        registry = ClientRegistry(session)
        await _managed(registry, client_id, principal)
        client = await registry.disable(client_id, actor=principal.actor, request_id=request_id_var.get())
    services.clients.invalidate(client_id)
    return ClientView.of(client)


@router.post("/{client_id}/secret", response_model=ClientSecret)
async def rotate_secret(client_id: str, request: Request, response: Response, principal: Manager) -> ClientSecret:
    """Give the client a new secret (the old one stops working); the new one is shown this once."""
    services: Services = request.app.state.services
    async with services.sessions() as session, session.begin():
        registry = ClientRegistry(session)
        await _managed(registry, client_id, principal)
        secret = await registry.rotate_secret(client_id, actor=principal.actor, request_id=request_id_var.get())
    services.clients.invalidate(client_id)
    response.headers.update(NO_STORE)
    return ClientSecret(client_id=client_id, client_secret=secret)

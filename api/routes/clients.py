"""The client registry's admin API: register, list, show, update, disable clients and rotate their secrets.

Bearer admin tokens with scope acar:client:manage (or acar:admin); errors are RFC 9457 problems. Secrets appear
only in the answers that create them, with Cache-Control: no-store.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Request, Response

from api.auth import CLIENT_SCOPE, AdminPrincipal, require_scope
from api.deps import Services
from api.logging import request_id_var
from api.schemas.clients import ClientCreate, ClientCreated, ClientSecret, ClientUpdate, ClientView
from api.web import NO_STORE
from idp.core.errors import ClientNotFound
from idp.sql.clients import ClientRegistry

router = APIRouter(prefix="/admin/clients", tags=["clients"])
Manager = Annotated[AdminPrincipal, Depends(require_scope(CLIENT_SCOPE))]


@router.post("", status_code=201, response_model=ClientCreated)
async def register_client(body: ClientCreate, request: Request, response: Response,
                          principal: Manager) -> ClientCreated:
    """Register a client; 201 with its client_id and, for client_secret_basic/post, its secret (shown once)."""
    services: Services = request.app.state.services
    async with services.sessions() as session, session.begin():
        registry = ClientRegistry(session, signing_algs=services.settings.token_key_algorithms)
        client, secret = await registry.add(body.registration(), actor=f"admin:{principal.subject}",
                                            request_id=request_id_var.get())
    services.clients.invalidate(client.client_id)
    response.headers.update(NO_STORE)
    return ClientCreated(**ClientView.of(client).model_dump(), client_secret=secret)


@router.get("", response_model=list[ClientView])
async def list_clients(request: Request, principal: Manager) -> list[ClientView]:
    services: Services = request.app.state.services
    async with services.sessions() as session:
        return [ClientView.of(c) for c in await ClientRegistry(session).list()]


@router.get("/{client_id}", response_model=ClientView)
async def show_client(client_id: str, request: Request, principal: Manager) -> ClientView:
    services: Services = request.app.state.services
    async with services.sessions() as session:
        client = await ClientRegistry(session).get(client_id)
    if client is None:
        raise ClientNotFound(f"no client {client_id!r} is registered")
    return ClientView.of(client)


@router.patch("/{client_id}", response_model=ClientView)
async def update_client(client_id: str, body: ClientUpdate, request: Request, principal: Manager) -> ClientView:
    """Replace the given settings of a client (today: introspect_clients, RFC 7662 section 4)."""
    services: Services = request.app.state.services
    async with services.sessions() as session, session.begin():
        registry = ClientRegistry(session)
        client = await registry.get(client_id)
        if client is None:
            raise ClientNotFound(f"no client {client_id!r} is registered")
        if body.introspect_clients is not None:
            client = await registry.set_introspect_clients(client_id, body.introspect_clients,
                                                           actor=f"admin:{principal.subject}",
                                                           request_id=request_id_var.get())
    services.clients.invalidate(client_id)
    return ClientView.of(client)


@router.post("/{client_id}/disable", response_model=ClientView)
async def disable_client(client_id: str, request: Request, principal: Manager) -> ClientView:
    """Disable a client: its grants are revoked and its tokens refused at once on every node; it can no longer
    authenticate at once on this node (within ACAR_KEY_CACHE_SECONDS on the others)."""
    services: Services = request.app.state.services
    async with services.sessions() as session, session.begin():
        client = await ClientRegistry(session).disable(client_id, actor=f"admin:{principal.subject}",
                                                       request_id=request_id_var.get())
    services.clients.invalidate(client_id)
    return ClientView.of(client)


@router.post("/{client_id}/secret", response_model=ClientSecret)
async def rotate_secret(client_id: str, request: Request, response: Response, principal: Manager) -> ClientSecret:
    """Give the client a new secret (the old one stops working); the new one is shown this once."""
    services: Services = request.app.state.services
    async with services.sessions() as session, session.begin():
        secret = await ClientRegistry(session).rotate_secret(client_id, actor=f"admin:{principal.subject}",
                                                             request_id=request_id_var.get())
    services.clients.invalidate(client_id)
    response.headers.update(NO_STORE)
    return ClientSecret(client_id=client_id, client_secret=secret)

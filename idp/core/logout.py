"""RP-Initiated Logout 1.0 and the start of Back-Channel Logout 1.0.

The end_session endpoint trusts a post_logout_redirect_uri only when the client is identified (by a valid
id_token_hint we issued, or by client_id) and the URI is exactly one it registered (RP-Initiated Logout
section 3). Ending a session revokes its grants (except offline_access) and queues a logout token for every
client of the session that registered a back-channel logout URI; delivery is durable (idp.sql.backchannel).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from idp.core.authorize import ErrorPage, IdTokenHintVerifier
from idp.core.interfaces import Client, ClientDirectory, LoginState, OidcStore

LOGOUT_PARAMETERS = frozenset({"id_token_hint", "logout_hint", "client_id", "post_logout_redirect_uri", "state",
                               "ui_locales"})
"""The request parameters of RP-Initiated Logout 1.0 section 2: the only names an error page may repeat back."""


@dataclass(frozen=True, slots=True)
class LogoutRequest:
    client: Client | None
    post_logout_redirect_uri: str | None
    state: str | None
    ui_locales: str | None
    hint_sid: str | None
    hint_sub: str | None


async def validate_logout(  # noqa: PLR0911 - one early answer per RP-Initiated Logout section 3 rule
        params: Mapping[str, Sequence[str]], *, clients: ClientDirectory,
                          verify_hint: IdTokenHintVerifier) -> LogoutRequest | ErrorPage:
    for name in sorted(LOGOUT_PARAMETERS & params.keys()):
        # only this endpoint's own names are checked (and named on the page): other parameters are ignored, as
        # OAuth ignores unrecognized parameters (RFC 6749 section 3.1), and the error page never shows text that came
        # with the request (content injection)
        if len(params[name]) > 1:
            return ErrorPage("invalid_request", f"{name} is repeated")
    one = {k: v[0] for k, v in params.items() if v and k in LOGOUT_PARAMETERS}
    client: Client | None = None
    hint_sid = hint_sub = None
    hint = one.get("id_token_hint")
    if hint:
        try:
            claims = await verify_hint(hint)
        except Exception:  # noqa: BLE001 - any failure: the hint cannot be trusted
            return ErrorPage("invalid_request", "id_token_hint is not a valid ID token of this provider")
        aud = claims.get("aud")
        auds = aud if isinstance(aud, list) else [aud]
        client_id = one.get("client_id")
        if client_id and client_id not in auds:
            return ErrorPage("invalid_request", "client_id does not match the id_token_hint")
        client = await clients.get(str(auds[0]))
        hint_sid = str(claims["sid"]) if "sid" in claims else None
        hint_sub = str(claims.get("sub"))
    elif one.get("client_id"):
        client = await clients.get(one["client_id"][:64])
        if client is None:
            return ErrorPage("invalid_client", "the service that sent you here is not registered")
    redirect = one.get("post_logout_redirect_uri")
    if redirect is not None:
        if client is None:
            return ErrorPage("invalid_request", "post_logout_redirect_uri needs id_token_hint or client_id")
        if redirect not in client.post_logout_redirect_uris:
            return ErrorPage("invalid_request", "post_logout_redirect_uri is not registered for this service")
    return LogoutRequest(client=client, post_logout_redirect_uri=redirect, state=one.get("state"),
                         ui_locales=one.get("ui_locales"), hint_sid=hint_sid, hint_sub=hint_sub)


async def end_session(store: OidcStore, session: LoginState, *, now: dt.datetime, retry_seconds: int,
                      reason: str = "logout", actor: str | None = None) -> int:
    """End the login session: revoke its grants (except offline_access) and queue back-channel logout tokens
    (Back-Channel Logout 1.0 section 2.7: the OP "SHOULD" tell every RP of the session). Returns how many tokens
    were queued.

    Its person logs out (the default), or someone else ends it (`actor`, with a `reason`): the person suspended or
    deceased (idp.sql.persons.PersonService.set_status), which is audited with the reason."""
    ended = await store.end_session(session.id, now)
    if ended is None:
        return 0
    await store.revoke_session_grants(session.sid, now, reason)
    queued = await store.queue_logouts(session.id, sid=session.sid, now=now, retry_seconds=retry_seconds)
    detail: dict[str, object] = {"backchannel": queued}
    if reason != "logout":
        detail["reason"] = reason
    await store.audit("session.ended", actor=actor or session.person_id, subject=session.sid, detail=detail)
    return queued

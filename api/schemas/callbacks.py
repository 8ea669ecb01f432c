"""The completion callback in the OpenAPI document (OpenAPI 3.1 section 4.8.18, Callback Object): what Açar POSTs to
a request's `callback_url` once it reaches a final state (signing.core.callbacks, docs/signing.md)."""

from __future__ import annotations

from typing import Any, Final

from signing.core.callbacks import CONTENT_TYPE, TYP

COMPLETION_CALLBACK: Final[dict[str, Any]] = {
    "completion": {
        "{$request.body#/callback_url}": {
            "post": {
                "summary": "Completion callback",
                "description": (
                    "Sent once the request is completed, failed, rejected or expired. The body is a JWT in compact "
                    f"JWS form (RFC 7515), `typ` `{TYP}`, signed with a key of the issuer's JWKS (/jwks.json): "
                    "verify alg, kid, typ, iss (the issuer), aud (your client_id) and exp. Claims: iat, exp, jti "
                    "(drop a jti seen before: delivery is at least once), request_id, state, documents [{n, sha256 "
                    "of the signed PDF}] (completed requests), failure {code, detail} (failed requests; else null). "
                    "Any 2xx answer ends the delivery; anything else, a timeout or a connection error is retried "
                    "with exponential backoff until ACAR_SIGNING_CALLBACK_MAX_AGE_HOURS. Redirects are not followed."),
                "operationId": "signing_request_completion_callback",
                "requestBody": {"required": True, "content": {CONTENT_TYPE: {"schema": {
                    "type": "string", "pattern": r"^[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+$",
                    "description": "the compact JWS"}}}},
                "responses": {"2XX": {"description": "Received: the callback is not sent again"}},
            },
        },
    },
}

"""The exceptions api/ raises itself, each carrying its wire form (STYLE habit 6).

Exceptions only: api.problems turns them (and the errors of idp/ and keys/) into responses.
"""

from __future__ import annotations

from starlette.exceptions import HTTPException

from idp.core.errors import InvalidToken
from idp.core.webauthn import PasskeyError


class ApiProblem(Exception):
    """A problem raised by api/ itself (authentication, malformed bodies): an RFC 9457 problem+json answer."""

    def __init__(self, status: int, code: str, title: str, detail: str, headers: dict[str, str] | None = None):
        super().__init__(detail)
        self.status, self.code, self.title, self.detail, self.headers = status, code, title, detail, headers


class ContentTooLarge(HTTPException):
    """RFC 9110 section 15.5.14, 413 Content Too Large: "the request content is larger than the server is willing
    or able to process. The server MAY terminate the request, if the protocol version in use allows it; otherwise,
    the server MAY close the connection." Raised by the receive channel of api.middleware.BodyLimitMiddleware once
    a streamed body passes the limit; the answer closes the connection, so the rest of the body is never read.

    A Starlette HTTPException so that every body reader lets it through to api.problems (FastAPI answers any other
    exception of a body read with its own 400)."""

    def __init__(self, limit: int) -> None:
        super().__init__(413, f"the request body is larger than {limit} bytes", headers={"Connection": "close"})
        self.limit = limit


class BearerTokenMissing(InvalidToken):
    """A protected resource (userinfo) was called without a Bearer access token. RFC 6750 section 3.1: "If the
    request lacks any authentication information (e.g., the client was unaware that authentication is necessary
    or attempted using an unsupported authentication method), the resource server SHOULD NOT include an error
    code or other error information" in its challenge."""


class InvalidPageRequest(Exception):
    """A request to a page (authorization, logout, the interaction and account forms) that cannot be read: not
    form encoding, too large, too many parameters. Answered with the translated invalid_request error page,
    never with JSON, since a browser shows it to a citizen (api.web.read_page_form)."""

    error = "invalid_request"
    status_code = 400

    def __init__(self, description: str) -> None:
        super().__init__(description)
        self.description = description


class CsrfRefused(PasskeyError):
    """The X-CSRF-Token header is missing or wrong (a wrong Origin is idp.core.webauthn.WrongOrigin)."""

    code = "csrf"
    title = "The request could not be verified"
    status_code = 403


class LoginRequired(PasskeyError):
    """A passkey endpoint acting for the signed-in person was called without a live login session."""

    code = "login_required"
    title = "Sign-in required"
    status_code = 401


class RateLimited(Exception):
    """A budget of api.ratelimit is spent: 429 Too Many Requests with Retry-After (RFC 6585 section 4: "The 429
    status code indicates that the user has sent too many requests in a given amount of time"; Retry-After in
    seconds, RFC 9110 section 10.2.3). `unavailable`: the limiter's storage did not answer, 503 (fail closed).

    `answer` is the endpoint's error form: "oauth" (RFC 6749 section 5.2 error JSON, error
    temporarily_unavailable), "page" (the translated error page), "json" (RFC 9457 problem+json with the member
    "code": "rate_limited", or the translated page when the request accepts text/html)."""

    code = "rate_limited"
    title = "Too many requests"

    def __init__(self, retry_after: int, *, answer: str, unavailable: bool = False) -> None:
        super().__init__("too many requests; try again later")
        self.retry_after, self.answer, self.unavailable = retry_after, answer, unavailable
        self.status_code = 503 if unavailable else 429
        self.description = ("the service is temporarily unavailable; try again later" if unavailable
                            else "too many requests; try again later")


class CardLoginUnavailable(PasskeyError):
    """ID-card login was asked for on a server that has no ID-card trust anchor (ACAR_IDCARD_TRUST_ANCHORS; in
    development the built-in CA's root once `acar init` made it): it is not offered there (api.routes.idcard)."""

    code = "card_login_unavailable"
    title = "ID-card sign-in is not available"
    status_code = 404

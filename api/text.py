"""Text a client sends, checked once at the edge for what the databases and JSON can hold.

Refused wherever a client's text enters (path parameters, query, form fields and their names, HTTP Basic
credentials after percent-decoding, every string of a JSON body, command-line arguments), before any database
call, so nothing is half-written (and so is a percent-escape in a query or form that is not UTF-8: NOT_UTF8):

- U+0000: PostgreSQL's text types cannot hold it ("invalid byte sequence for encoding UTF8: 0x00"), so it
  would reach the database and fail there with a 500;
- unpaired surrogates U+D800..U+DFFF: not Unicode scalar values, so UTF-8 cannot encode them (RFC 3629 section
  3) and JSON leaves their handling "unpredictable" (RFC 8259 section 8.2); stored, they break every later read;
- noncharacters (U+FDD0..U+FDEF and the last two code points of every plane): "permanently reserved for
  internal use" (Unicode 15.0 section 23.7), never identifiers, URIs or names in an interchange.

Each endpoint answers in its own error format: `InvalidRequest`/`InvalidClient` (RFC 6749 section 5.2 error
JSON) on the OAuth endpoints, the invalid_request error page on pages, an RFC 9457 problem (422, as FastAPI's
own validation errors) elsewhere. `api.edge_text.edge_text` is the application-wide dependency of the FastAPI
routes; the form and query readers of api.web and the plain routes call the functions here. This module imports no
web framework: `acar` checks every command-line argument with `refusal`.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
from collections.abc import Container, Iterable, Mapping, Sequence
from typing import Any
from urllib.parse import unquote_plus

_REFUSED = re.compile(
    "[\x00\ud800-\udfff\ufdd0-\ufdef\ufffe\uffff"
    + "".join(f"{chr(plane * 0x10000 + 0xFFFE)}{chr(plane * 0x10000 + 0xFFFF)}" for plane in range(1, 17))
    + "]"
)
NOT_UTF8 = "has a percent-escape that is not UTF-8"
"""Why a form field or query parameter is refused whose percent-escapes decode to bytes that are not UTF-8 (RFC 3629
section 3: a lone or cut sequence, an overlong form, an encoded surrogate): malformed text, never taken as U+FFFD."""
PAGE_TAGS = frozenset({"pages", "interaction"})
"""Tags of the FastAPI routers whose endpoints are pages a browser shows: refused text there is the translated
invalid_request error page, never JSON."""


def refusal(value: str) -> str | None:
    """Why `value` cannot be accepted as text, or None when it can. Most text a client sends is ASCII, where NUL is
    the only refused character: `str.isascii` reads a flag CPython keeps on the string, and `in` is one memchr,
    so such text skips the pattern."""
    if value.isascii() and "\x00" not in value:
        return None
    found = _REFUSED.search(value)
    if found is None:
        return None
    char = found.group()
    if char == "\x00":
        return "contains U+0000 (NUL)"
    if "\ud800" <= char <= "\udfff":
        return "contains an unpaired surrogate"
    return f"contains the noncharacter U+{ord(char):04X}"


def refused_param(params: Mapping[str, Sequence[str]]) -> tuple[str, str] | None:
    """The first parameter (name, reason) whose name or any value is refused, or None."""
    for name, values in params.items():
        reason = refusal(name)
        if reason is not None:
            return "a parameter name", reason
        for value in values:
            reason = refusal(value)
            if reason is not None:
                return name, reason
    return None


def describe(found: tuple[str, str]) -> str:
    name, reason = found
    return f"{name} {reason}" if name == "a parameter name" else f"parameter {name} {reason}"


MAX_JSON_DEPTH = 32
"""The deepest nesting of arrays and objects a client's JSON may have (RFC 8259 section 9: "An implementation may
set limits on the maximum depth of nesting"). Every JSON Açar reads is a few levels deep (a WebAuthn credential 4,
a signing request 3, a JWK Set 4); past this a document is refused before any code walks it, so no recursion over a
client's document (this module's, pydantic's, a library's, json.dumps in a log) can reach the interpreter's limit."""
NOT_JSON = "is not JSON encoded in UTF-8 (RFC 8259 section 8.1)"
TOO_DEEP = f"is JSON nested more than {MAX_JSON_DEPTH} levels deep (RFC 8259 section 9)"


class UnreadableJson(ValueError):
    """A client's JSON that parse_json refuses: `reason` (NOT_JSON or TOO_DEEP) completes a sentence about what
    was sent ("the body ...", "placement ...")."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def parse_json(data: bytes | bytearray | str, *, max_depth: int = MAX_JSON_DEPTH) -> Any:
    """The one way a client's JSON is decoded (every endpoint reading JSON itself; edge_text checks what FastAPI
    decoded with too_deep): the decoded value, or UnreadableJson when `data` is not UTF-8 (RFC 8259 section 8.1),
    not JSON, or nested deeper than `max_depth`. json.loads recurses once per level of nesting, so "[[[[..." within
    any body limit raises RecursionError, refused here as TOO_DEEP instead of a 500."""
    try:
        value = json.loads(data)
    except RecursionError:  # nesting past the interpreter's recursion limit
        raise UnreadableJson(TOO_DEEP) from None
    except ValueError:  # JSONDecodeError and UnicodeDecodeError alike
        raise UnreadableJson(NOT_JSON) from None
    if too_deep(value, max_depth):
        raise UnreadableJson(TOO_DEEP)
    return value


def too_deep(value: Any, max_depth: int = MAX_JSON_DEPTH) -> bool:
    """Whether a decoded JSON value nests arrays and objects more than `max_depth` levels (a scalar: 0, [] and {}:
    1). Iterative, so any depth json.loads produced is measured without recursion."""
    stack: list[tuple[Any, int]] = [(value, 0)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, dict):
            children: Iterable[Any] = item.values()
        elif isinstance(item, list):
            children = item
        else:
            continue
        if depth + 1 > max_depth:
            return True
        stack.extend((child, depth + 1) for child in children if isinstance(child, (dict, list)))
    return False


_Link = tuple[Any, str | int] | None
"""A location in a JSON document as a linked list (parent's link, key): built in constant time per value."""


def _location(link: _Link) -> tuple[str | int, ...]:
    keys: list[str | int] = []
    while link is not None:
        link, key = link
        keys.append(key)
    return tuple(reversed(keys))


def refused_json(value: Any, path: tuple[str | int, ...] = ()) -> tuple[tuple[str | int, ...], str] | None:
    """The first (location, reason) of a refused string (a key or a value) in a decoded JSON document, in document
    order (a value's keys before its members). Iterative: a document of any depth is walked without recursion."""
    root: _Link = None
    for key in path:
        root = (root, key)
    stack: list[tuple[_Link, Any]] = [(root, value)]
    while stack:
        link, item = stack.pop()
        if isinstance(item, str):
            reason = refusal(item)
            if reason is not None:
                return _location(link), reason
            continue
        members: list[tuple[str | int, Any]]
        if isinstance(item, dict):
            for key in item:
                reason = refusal(key)
                if reason is not None:
                    return (*_location(link), key.encode("utf-8", "backslashreplace").decode()), "key " + reason
            members = list(item.items())
        elif isinstance(item, list):
            members = list(enumerate(item))
        else:
            continue
        stack.extend(((link, key), member) for key, member in reversed(members))
    return None


def refused_basic(authorization: str | None) -> str | None:
    """Why the client id or secret of HTTP Basic credentials, percent-decoded (RFC 6749 section 2.3.1), is
    refused; None when it is not (credentials that cannot be decoded at all are left to the authenticator)."""
    scheme, _, value = (authorization or "").strip().partition(" ")
    if scheme.lower() != "basic":
        return None
    try:
        decoded = base64.b64decode(value.strip(), validate=True).decode("utf-8")
    except (binascii.Error, ValueError):
        return None
    if "%" not in decoded:  # nothing to percent-decode: the credentials are this text
        reason = refusal(decoded)
        return "a Basic credential " + reason if reason is not None else None
    client_id, _, secret = decoded.partition(":")
    for part in (client_id, secret):
        try:
            decoded_part = unquote_plus(part, errors="strict")
        except UnicodeDecodeError:
            return "a Basic credential " + NOT_UTF8
        reason = refusal(part) or refusal(decoded_part)
        if reason is not None:
            return "a Basic credential " + reason
    return None


def not_utf8_param(query: str, names: Container[str]) -> str | None:
    """The first of `names` whose value in the raw query string `query` has a percent-escape that is not UTF-8
    (NOT_UTF8), or None. Only fields with an escape are decoded, and only those `names` declares."""
    if "%" not in query:
        return None
    for field in query.split("&"):
        if "%" in field:
            name, _, value = field.partition("=")
            name = unquote_plus(name)
            if name in names:
                try:
                    unquote_plus(value, errors="strict")
                except UnicodeDecodeError:
                    return name
    return None

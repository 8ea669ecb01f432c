"""A person's signature history (issue 16, the citizen's account page): the documents of the signing requests that
named them as signer (`signing_requests.signer_fin`), whatever became of them. Every statement is bound to the
person's FIN, so a request of anyone else is never found."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Any

from sqlalchemy import bindparam, select

from signing.sql.models import SigningDocument, SigningRequest
from storage.direct import Transaction, table

_requests, _documents = table(SigningRequest), table(SigningDocument)

_COLUMNS = (_requests.c.id, _documents.c.n, _requests.c.client_id, _requests.c.state, _requests.c.reason,
            _requests.c.created_at, _requests.c.purged_at, _documents.c.filename, _documents.c.state,
            _documents.c.sha256, _documents.c.signed_sha256, _documents.c.signed_at,
            _documents.c.signed.is_not(None).label("retained"))
HISTORY = select(*_COLUMNS).join(_documents, _documents.c.request_id == _requests.c.id) \
    .where(_requests.c.signer_fin == bindparam("fin"), _requests.c.mode == "sign") \
    .order_by(_requests.c.created_at.desc(), _requests.c.id, _documents.c.n) \
    .limit(bindparam("limit"))
SIGNED_DOCUMENT = select(_documents.c.filename, _documents.c.signed, _requests.c.purged_at) \
    .join(_requests, _requests.c.id == _documents.c.request_id) \
    .where(_requests.c.signer_fin == bindparam("fin"), _requests.c.mode == "sign",
           _requests.c.id == bindparam("request_id"), _documents.c.n == bindparam("n"))


@dataclass(frozen=True, slots=True)
class SignatureEntry:
    """One document a person was asked to sign: for whom (the agency's client), what, when, and what came of it."""

    request_id: str
    n: int
    client_id: str
    request_state: str
    reason: str | None
    requested_at: dt.datetime
    purged_at: dt.datetime | None
    filename: str
    document_state: str
    sha256: str
    signed_sha256: str | None
    signed_at: dt.datetime | None
    retained: bool
    """The signed PDF is still held (ACAR_SIGNING_RETENTION_HOURS), so its report can be made."""

    def as_json(self) -> dict[str, Any]:
        return {"request_id": self.request_id, "document": self.n, "client_id": self.client_id,
                "request_state": self.request_state, "reason": self.reason,
                "requested_at": self.requested_at.isoformat(), "filename": self.filename,
                "document_state": self.document_state, "sha256": self.sha256, "signed_sha256": self.signed_sha256,
                "signed_at": self.signed_at.isoformat() if self.signed_at else None,
                "purged_at": self.purged_at.isoformat() if self.purged_at else None}


@dataclass(frozen=True, slots=True)
class SignedDocument:
    filename: str
    signed: bytes | None
    """None: not signed, or deleted when the retention ran out (`purged_at`)."""
    purged_at: dt.datetime | None


class SignatureHistory:
    """Reads of a person's signature history, on the request's unit of work."""

    def __init__(self, tx: Transaction) -> None:
        self._tx = tx

    async def entries(self, fin: str | None, *, limit: int) -> list[SignatureEntry]:
        """The latest `limit` documents the person named by `fin` was asked to sign, the newest first."""
        if not fin:
            return []
        return [SignatureEntry(*row) for row in await self._tx.all(HISTORY, fin=fin, limit=limit)]

    async def document(self, fin: str | None, request_id: str, n: int) -> SignedDocument | None:
        """Document `n` of request `request_id` if the person signed... or was asked to; None for anyone else's."""
        if not fin or len(request_id) > 32:
            return None
        row = await self._tx.one(SIGNED_DOCUMENT, fin=fin, request_id=request_id, n=n)
        return SignedDocument(*row) if row is not None else None

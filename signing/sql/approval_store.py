"""`ApprovalStore` (signing.core.approval) in SQL on the signing tables: the signer's view of a sign-mode request,
its documents' input bytes for the previews, and the two decisions, each one conditional UPDATE that names the
state it leaves (pending), so a request is decided once however many nodes or tabs try.

Approving names the key the request is signed with (the signer's own, signing.sql.signers) and queues one job per
document in the same unit of work (SqlSigningStore.queue_jobs, the same statement seal
requests use at creation), so an approval and its jobs are committed together or not at all. Audit events are
deferred to the unit's COMMIT (storage.audit.DeferredAudit).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from typing import Any

from sqlalchemy import bindparam, select, update

from signing.core.approval import MAX_REQUEST_ID, ApprovalDocument, ApprovalRequest
from signing.core.interfaces import SigningEntity
from signing.sql.callbacks import record_callback
from signing.sql.models import SigningDocument, SigningRequest
from signing.sql.store import SqlSigningStore
from storage.direct import Transaction, table

_requests, _documents = table(SigningRequest), table(SigningDocument)

APPROVAL_REQUEST = select(
    _requests.c.id, _requests.c.client_id, _requests.c.state, _requests.c.signer_fin, _requests.c.reason,
    _requests.c.location, _requests.c.level, _requests.c.expires_at, _requests.c.entity_voen,
).where(_requests.c.id == bindparam("id"), _requests.c.mode == "sign")
APPROVAL_DOCUMENTS = select(_documents.c.n, _documents.c.filename, _documents.c.pages, _documents.c.sha256) \
    .where(_documents.c.request_id == bindparam("id")).order_by(_documents.c.n)
DOCUMENT_CONTENT = select(_documents.c.content).where(_documents.c.request_id == bindparam("id"),
                                                      _documents.c.n == bindparam("n"))
APPROVE = update(_requests).where(
    _requests.c.id == bindparam("id"), _requests.c.mode == "sign", _requests.c.state == "pending",
    _requests.c.expires_at > bindparam("now"),
).values(state="approved", key_id=bindparam("key_id"), entity_form=bindparam("entity_form"),
        mandate_id=bindparam("mandate_id"), updated_at=bindparam("now"))
REJECT = update(_requests).where(
    _requests.c.id == bindparam("id"), _requests.c.mode == "sign", _requests.c.state == "pending",
).values(state="rejected", updated_at=bindparam("now"), finished_at=bindparam("now"))


class SqlApprovalStore:
    """`ApprovalStore` on one unit of work (see module docstring)."""

    def __init__(self, tx: Transaction, *, request_id: str | None = None) -> None:
        self.tx = tx
        self._signing = SqlSigningStore(tx, request_id=request_id)

    async def approval_request(self, request_id: str) -> ApprovalRequest | None:
        if not 0 < len(request_id) <= min(MAX_REQUEST_ID, 32):
            return None
        row = await self.tx.one(APPROVAL_REQUEST, id=request_id)
        if row is None:
            return None
        id_, client_id, state, signer_fin, reason, location, level, expires_at, entity_voen = row
        documents = tuple(ApprovalDocument(n=n, filename=filename, pages=pages, sha256=sha256)
                          for n, filename, pages, sha256 in await self.tx.all(APPROVAL_DOCUMENTS, id=request_id))
        return ApprovalRequest(id=id_, client_id=client_id, state=state, signer_fin=signer_fin or "", reason=reason,
                               location=location, level=level, expires_at=expires_at, documents=documents,
                               entity_voen=entity_voen)

    async def document_content(self, request_id: str, n: int) -> bytes | None:
        row = await self.tx.one(DOCUMENT_CONTENT, id=request_id, n=n)
        return bytes(row[0]) if row is not None and row[0] is not None else None

    async def approve_request(self, request_id: str, *, key_id: str, now: dt.datetime,
                              entity_form: str | None = None, mandate_id: str | None = None) -> bool:
        if await self.tx.execute(APPROVE, id=request_id, key_id=key_id, now=now, entity_form=entity_form,
                                 mandate_id=mandate_id) != 1:
            return False
        numbers = [n for n, *_ in await self.tx.all(APPROVAL_DOCUMENTS, id=request_id)]
        await self._signing.queue_jobs(request_id, numbers, now)
        return True

    async def signing_entity(self, voen: str) -> SigningEntity | None:
        return await self._signing.signing_entity(voen)

    async def reject_request(self, request_id: str, *, now: dt.datetime) -> bool:
        if await self.tx.execute(REJECT, id=request_id, now=now) != 1:
            return False
        await record_callback(self.tx, request_id, now=now)  # the agency's completion callback, in this unit
        return True

    async def audit(self, event_type: str, *, actor: str, subject: str | None = None,
                    detail: Mapping[str, Any] | None = None) -> None:
        await self._signing.audit(event_type, actor=actor, subject=subject, detail=detail)

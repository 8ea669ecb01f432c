"""Helpers of the signing approval suites: PDFs built byte by byte (no PDF library), and an in-memory ApprovalStore
(signing.core.approval) for the in-process page tests, which can then set up any request (a decided, expired or
hostile one) and see every state change, job and audit event; tests/functional/test_signing_approval.py holds it
to the answers of the SQL store (signing.sql.approval_store), so it cannot drift."""

from __future__ import annotations

import dataclasses
import datetime as dt
import hashlib
import zlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from signing.core.approval import ApprovalDocument, ApprovalRequest
from signing.core.interfaces import SigningEntity


def build_pdf(pages: Sequence[tuple[tuple[float, float], bytes, bytes | None]]) -> bytes:
    """A PDF with one page per (media box size, content stream, its /Filter or None), Helvetica as /F1, and a correct
    cross-reference table (ISO 32000-1 section 7.5)."""
    objects: list[bytes] = [b"<< /Type /Catalog /Pages 2 0 R >>", b"",
                            b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>"]
    kids = []
    for (width, height), content, filter_name in pages:
        content_number = len(objects) + 2
        kids.append(len(objects) + 1)
        objects.append(f"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 {width:g} {height:g}] /Resources << /Font "
                       f"<< /F1 3 0 R >> >> /Contents {content_number} 0 R >>".encode())
        extra = b" /Filter /" + filter_name if filter_name else b""
        objects.append(b"<< /Length %d%s >>\nstream\n" % (len(content), extra) + content + b"\nendstream")
    objects[1] = (f"<< /Type /Pages /Kids [{' '.join(f'{k} 0 R' for k in kids)}] /Count {len(kids)} >>").encode()
    out = bytearray(b"%PDF-1.7\n%\xe2\xe3\xcf\xd3\n")
    offsets = []
    for number, body in enumerate(objects, start=1):
        offsets.append(len(out))
        out += b"%d 0 obj\n" % number + body + b"\nendobj\n"
    xref = len(out)
    out += b"xref\n0 %d\n0000000000 65535 f \n" % (len(objects) + 1)
    out += b"".join(b"%010d 00000 n \n" % offset for offset in offsets)
    out += b"trailer\n<< /Size %d /Root 1 0 R >>\nstartxref\n%d\n%%%%EOF\n" % (len(objects) + 1, xref)
    return bytes(out)


def flate_bomb(inflated: int) -> bytes:
    """A content stream of `inflated` bytes (a multiple of 1 MiB) of spaces, zlib-deflated (RFC 1950/1951; about a
    thousandth of that).

    One MiB of spaces is deflated once, ending with a full flush (which byte-aligns the stream and forgets the
    history, so the deflated MiB is the same wherever it stands); the stream repeats it, ends with an empty final
    block and carries the Adler-32 of the whole, computed in closed form: compressing 1 GiB took 6 s."""
    count, rest = divmod(inflated, 1 << 20)
    assert count and not rest, "a whole number of MiB"
    compressor = zlib.compressobj(9, zlib.DEFLATED, -15)  # raw deflate: the zlib framing is written here
    mib = compressor.compress(b" " * (1 << 20)) + compressor.flush(zlib.Z_FULL_FLUSH)
    final = compressor.flush()
    # Adler-32 of n bytes of value v: A = 1 + n*v and B = sum of A after each byte = n + v*n*(n+1)/2 (mod 65521)
    n, v = inflated, ord(" ")
    adler = ((n + v * n * (n + 1) // 2) % 65521) << 16 | (1 + n * v) % 65521
    return b"\x78\xda" + mib * count + final + adler.to_bytes(4, "big")


def text_page(text: str) -> tuple[tuple[float, float], bytes, None]:
    """An A4 page with a line of text and a blue box."""
    return (595, 842), f"BT /F1 24 Tf 72 720 Td ({text}) Tj ET 0 0 1 rg 72 72 200 100 re f".encode(), None


def text_pdf(*texts: str) -> bytes:
    return build_pdf([text_page(t) for t in texts])


@dataclass
class MemoryApprovalStore:
    """An ApprovalStore in memory. `requests` and `contents` are what the agency sent; `jobs` the (request id, n)
    queued by approvals; `events` every audit event; `writes` every state change."""

    requests: dict[str, ApprovalRequest] = field(default_factory=dict)
    contents: dict[tuple[str, int], bytes] = field(default_factory=dict)
    jobs: list[tuple[str, int]] = field(default_factory=list)
    events: list[tuple[str, str, str | None, dict[str, Any]]] = field(default_factory=list)
    writes: list[tuple[str, str]] = field(default_factory=list)
    keys: dict[str, str] = field(default_factory=dict)
    """The signing key each approved request was given."""
    entities: dict[str, SigningEntity] = field(default_factory=dict)
    """Legal entities' signing configurations."""
    representations: dict[str, tuple[str | None, str | None]] = field(default_factory=dict)
    """The (entity form, mandate id) each approved request on behalf of an entity was given."""

    def add(self, request_id: str, *, client_id: str, signer_fin: str, documents: Sequence[tuple[str, bytes, int]],
            reason: str | None = "Tax declaration 2026", location: str | None = "Bakı",
            expires_at: dt.datetime | None = None, state: str = "pending",
            entity_voen: str | None = None) -> ApprovalRequest:
        docs = tuple(ApprovalDocument(n=n, filename=name, pages=pages, sha256=hashlib.sha256(content).hexdigest())
                     for n, (name, content, pages) in enumerate(documents, start=1))
        for n, (_, content, _) in enumerate(documents, start=1):
            self.contents[(request_id, n)] = content
        request = ApprovalRequest(
            id=request_id, client_id=client_id, state=state, signer_fin=signer_fin, reason=reason, location=location,
            level="B-LT", expires_at=expires_at or dt.datetime.now(dt.UTC) + dt.timedelta(hours=1), documents=docs,
            entity_voen=entity_voen)
        self.requests[request_id] = request
        return request

    def state(self, request_id: str) -> str:
        return self.requests[request_id].state

    async def approval_request(self, request_id: str) -> ApprovalRequest | None:
        return self.requests.get(request_id)

    async def document_content(self, request_id: str, n: int) -> bytes | None:
        return self.contents.get((request_id, n))

    async def _move(self, request_id: str, target: str) -> bool:
        request = self.requests.get(request_id)
        if request is None or request.state != "pending":
            return False
        self.requests[request_id] = dataclasses.replace(request, state=target)
        self.writes.append((request_id, target))
        return True

    async def approve_request(self, request_id: str, *, key_id: str, now: dt.datetime,
                              entity_form: str | None = None, mandate_id: str | None = None) -> bool:
        if not await self._move(request_id, "approved"):
            return False
        self.keys[request_id] = key_id
        if entity_form is not None or mandate_id is not None:
            self.representations[request_id] = (entity_form, mandate_id)
        self.jobs.extend((request_id, d.n) for d in self.requests[request_id].documents)
        return True

    async def signing_entity(self, voen: str) -> SigningEntity | None:
        return self.entities.get(voen)

    async def reject_request(self, request_id: str, *, now: dt.datetime) -> bool:
        return await self._move(request_id, "rejected")

    async def audit(self, event_type: str, *, actor: str, subject: str | None = None,
                    detail: Mapping[str, Any] | None = None) -> None:
        self.events.append((event_type, actor, subject, dict(detail or {})))

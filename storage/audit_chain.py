"""Tamper evidence for the audit trail: a hash chain over the events and signed checkpoints of its head.

The construction is the append-only log of Schneier and Kelsey ("Secure Audit Logs to Support Computer Forensics",
ACM TISSEC 2(2), 1999: each entry's hash covers the previous entry's hash) with the signed tree heads of RFC 6962
(Certificate Transparency, section 3.5: the log's head signed, so a verifier needs to trust only the signature):

- An event's canonical content is JSON with sorted keys of every column but chain_hash (id, occurred_at in ISO 8601
  UTC with microseconds, event_type, actor, subject, request_id, detail, chain, seq), UTF-8, no whitespace.
  `chain_hash(n) = SHA-256(chain_hash(n-1) as hex || "\\n" || content(n))`, chain_hash(0) = 64 zeros.
- Events are written unsealed in the transaction of their action (no action without its record, and no lock
  shared by the writers). `seal` (a short transaction of its own: the sealing schedule of api.audit_sealer,
  `acar audit verify --seal`) claims the chain heads (SELECT ... FOR UPDATE; BEGIN IMMEDIATE on SQLite), numbers
  the unsealed events in the order (occurred_at, id), gives each its chain_hash, moves the heads and adds a
  checkpoint per chain that grew: the head (seq, chain_hash) and the previous checkpoint's hash, signed by a
  `CheckpointSigner` (keys/).
- `verify` walks each chain from where retention left it (the head's start_seq and start_hash) and stops at the
  first broken link: a gap in seq (a deleted event), a chain_hash that does not follow (an edited event), a
  checkpoint naming an event that is missing or different (a deleted tail), a checkpoint chain with a gap or a bad
  signature, a head beyond or behind its last checkpoint.

What it cannot show (docs/architecture.md, "Audit trail: tamper evidence"): events not sealed yet (at most one
sealing interval's) can be edited or deleted unseen; someone able to write the database can replace the whole
chain after the last checkpoint they cannot re-sign only by also deleting that checkpoint, which the checkpoints'
log lines (`audit.checkpoint`, kept off the database) show.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from sqlalchemy import and_, bindparam, func, or_, select, update

from storage.audit import (
    ANONYMOUS_ACTOR,
    ANONYMOUS_CHAIN,
    AUDIT_CHAIN,
    CHAINS,
    AuditChainHead,
    AuditCheckpoint,
    AuditEvent,
)
from storage.base import utcnow
from storage.direct import DirectDatabase, Transaction, insert_ignoring, table

GENESIS = "0" * 64
"""The chain_hash before the first event of a chain, and the prev_hash of its first checkpoint."""
SEAL_BATCH = 5000
"""Events sealed per transaction: the heads are held for one batch, then the next transaction takes the rest."""
SEAL_STEP = 250
"""Events fetched, hashed and marked per step of a batch. A pass runs in the serving process: a whole batch read,
hashed and marked at once held the event loop for 51-55 ms per transaction (every request in flight waited that
long); a step holds it for 7-8 ms at most (docs/performance.md, "The sealing pass's hold on the event loop")."""
VERIFY_PAGE = 2000
CHECKPOINT_TYP = "acar-audit-checkpoint+jwt"
"""The JWS typ of a checkpoint (RFC 7515 section 4.1.9): no token of another kind verifies as one."""


class CheckpointSignatureError(Exception):
    """A checkpoint's signature does not verify; `unknown_key` when its key is no longer published."""

    def __init__(self, message: str, *, unknown_key: bool = False) -> None:
        super().__init__(message)
        self.unknown_key = unknown_key


class CheckpointSigner(Protocol):
    """Signs and verifies checkpoint claims through keys/ (keys.audit_checkpoints)."""

    async def sign(self, claims: Mapping[str, Any]) -> tuple[str, str]:
        """The key id and the compact JWS of `claims`."""
        ...

    async def verify(self, token: str) -> Mapping[str, Any]:
        """The claims of a checkpoint JWS signed by one of our keys; raises CheckpointSignatureError."""
        ...


def chain_of(actor: str) -> str:
    return ANONYMOUS_CHAIN if actor == ANONYMOUS_ACTOR else AUDIT_CHAIN


_ENCODE = json.JSONEncoder(sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode
"""json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False) with the encoder built once: dumps
builds a new one on every call with these arguments, about a fifth of an event's hashing cost when a pass seals
thousands."""


def _canonical(value: Mapping[str, Any]) -> bytes:
    return _ENCODE(value).encode()


def _instant(value: dt.datetime) -> str:
    return (value if value.tzinfo is dt.UTC else value.astimezone(dt.UTC)).isoformat(timespec="microseconds")


def event_content(event: Mapping[str, Any]) -> bytes:
    """The canonical content of an event: every column but chain_hash."""
    return _canonical({"id": event["id"], "occurred_at": _instant(event["occurred_at"]),
                       "event_type": event["event_type"], "actor": event["actor"], "subject": event["subject"],
                       "request_id": event["request_id"], "detail": event["detail"], "chain": event["chain"],
                       "seq": event["seq"]})


def link(prev_hash: str, content: bytes) -> str:
    return hashlib.sha256(prev_hash.encode("ascii") + b"\n" + content).hexdigest()


def checkpoint_claims(chain: str, *, number: int, seq: int, chain_hash: str, prev_hash: str,
                      created_at: dt.datetime) -> dict[str, Any]:
    """What a checkpoint signs, with its own hash (the next checkpoint's prev_hash)."""
    claims: dict[str, Any] = {"chain": chain, "number": number, "seq": seq, "chain_hash": chain_hash,
                              "prev_hash": prev_hash, "created_at": _instant(created_at)}
    claims["checkpoint_hash"] = hashlib.sha256(_canonical(claims)).hexdigest()
    return claims


EVENT = table(AuditEvent)
HEAD = table(AuditChainHead)
CHECKPOINT = table(AuditCheckpoint)
_CONTENT = (EVENT.c.id, EVENT.c.occurred_at, EVENT.c.event_type, EVENT.c.actor, EVENT.c.subject, EVENT.c.request_id,
            EVENT.c.detail)
_CONTENT_KEYS = tuple(c.key for c in _CONTENT)
ADD_HEAD = insert_ignoring(HEAD, "chain")
CLAIM_HEAD = (select(HEAD.c.seq, HEAD.c.chain_hash, HEAD.c.checkpoints, HEAD.c.checkpoint_hash)
              .where(HEAD.c.chain == bindparam("chain")).with_for_update())
UNSEALED = (select(*_CONTENT).where(EVENT.c.seq.is_(None), EVENT.c.chain_hash.is_(None))
            .order_by(EVENT.c.occurred_at, EVENT.c.id).limit(bindparam("limit")))
SEAL_EVENT = update(EVENT).where(EVENT.c.id == bindparam("event_id"), EVENT.c.seq.is_(None)).values(
    chain=bindparam("to_chain"), seq=bindparam("to_seq"), chain_hash=bindparam("to_hash"))
MOVE_HEAD = update(HEAD).where(HEAD.c.chain == bindparam("head")).values(
    seq=bindparam("to_seq"), chain_hash=bindparam("to_hash"), checkpoints=bindparam("to_number"),
    checkpoint_hash=bindparam("to_checkpoint"), updated_at=bindparam("now"))
ADD_CHECKPOINT = CHECKPOINT.insert()


@dataclass
class _Head:
    seq: int
    chain_hash: str
    checkpoints: int
    checkpoint_hash: str
    sealed: int = 0


async def seal(tx: Transaction, signer: CheckpointSigner, *, now: dt.datetime | None = None,
               batch: int = SEAL_BATCH) -> dict[str, dict[str, Any]]:
    """Seal up to `batch` unsealed events in the writing unit `tx` (which must be a transaction of its own: its
    COMMIT releases the heads) and sign a checkpoint of each chain that grew. Returns, per chain that grew, the
    count sealed and the new checkpoint (number, seq, chain_hash), for the `audit.checkpoint` log line."""
    now = now or utcnow()
    heads: dict[str, _Head] = {}
    for chain in CHAINS:  # always in this order: two sealers never wait for each other's second head
        row = await tx.one(CLAIM_HEAD, chain=chain)
        if row is None:  # the chain's first seal
            await tx.execute(ADD_HEAD[tx.dialect_name], chain=chain, seq=0, chain_hash=GENESIS, start_seq=1,
                             start_hash=GENESIS, checkpoints=0, checkpoint_hash=GENESIS, updated_at=now)
            row = await tx.one(CLAIM_HEAD, chain=chain)
        assert row is not None  # noqa: S101 - inserted just above, and heads are never deleted
        heads[chain] = _Head(int(row[0]), str(row[1]), int(row[2]), str(row[3]))
    left = batch
    while left > 0:
        # each step sees the events the steps before it sealed (its own transaction's updates) as sealed
        rows = await tx.all(UNSEALED, limit=min(SEAL_STEP, left))
        marks: dict[str, list[dict[str, Any]]] = {chain: [] for chain in heads}
        for raw in rows:
            event = dict(zip(_CONTENT_KEYS, raw, strict=True))
            chain = event["chain"] = chain_of(event["actor"])
            head = heads[chain]
            event["seq"] = head.seq + 1
            head.seq, head.chain_hash = event["seq"], link(head.chain_hash, event_content(event))
            marks[chain].append({"event_id": event["id"], "to_chain": chain, "to_seq": event["seq"],
                                 "to_hash": head.chain_hash})
        for chain, marked in marks.items():
            if marked:
                await tx.execute_many(SEAL_EVENT, marked)
                heads[chain].sealed += len(marked)
        left -= len(rows)
        if len(rows) < SEAL_STEP:
            break
    grown: dict[str, dict[str, Any]] = {}
    for chain, head in heads.items():
        if not head.sealed:
            continue
        claims = checkpoint_claims(chain, number=head.checkpoints + 1, seq=head.seq, chain_hash=head.chain_hash,
                                   prev_hash=head.checkpoint_hash, created_at=now)
        kid, token = await signer.sign(claims)
        await tx.execute(ADD_CHECKPOINT, chain=chain, number=claims["number"], seq=head.seq,
                         chain_hash=head.chain_hash, prev_hash=head.checkpoint_hash,
                         checkpoint_hash=claims["checkpoint_hash"], created_at=now, kid=kid, signature=token)
        await tx.execute(MOVE_HEAD, head=chain, to_seq=head.seq, to_hash=head.chain_hash,
                         to_number=claims["number"], to_checkpoint=claims["checkpoint_hash"], now=now)
        grown[chain] = {"sealed": head.sealed, "checkpoint": claims["number"], "seq": head.seq,
                        "chain_hash": head.chain_hash}
    return grown


async def seal_all(database: DirectDatabase, signer: CheckpointSigner, *, batch: int = SEAL_BATCH
                   ) -> dict[str, dict[str, Any]]:
    """Seal every event unsealed so far, `batch` per transaction (each its own unit, its own checkpoints); the
    per-chain totals and last checkpoints (empty when nothing was unsealed)."""
    total: dict[str, dict[str, Any]] = {}
    while True:
        async with database.transaction() as tx:
            grown = await seal(tx, signer, batch=batch)
        for chain, step in grown.items():
            total[chain] = {**step, "sealed": total.get(chain, {}).get("sealed", 0) + step["sealed"]}
        if sum(step["sealed"] for step in grown.values()) < batch:
            return total


@dataclass(frozen=True)
class BrokenLink:
    """The first broken link of a chain: the row it names (id, seq, event_type), or the checkpoint."""

    chain: str
    reason: str
    event_id: str | None = None
    seq: int | None = None
    event_type: str | None = None
    checkpoint: int | None = None

    def describe(self) -> str:
        where = [f"chain {self.chain}"]
        if self.event_id is not None:
            where.append(f"event {self.event_id} (seq {self.seq}, {self.event_type})")
        elif self.seq is not None:
            where.append(f"seq {self.seq}")
        if self.checkpoint is not None:
            where.append(f"checkpoint {self.checkpoint}")
        return f"{', '.join(where)}: {self.reason}"


@dataclass
class ChainReport:
    chain: str
    events: int = 0
    first_seq: int | None = None
    first_occurred_at: str | None = None
    """When the first retained event happened: compare with the retention (a deleted oldest part looks like it)."""
    last_seq: int = 0
    checkpoints: int = 0
    signatures_verified: int = 0
    signatures_unverifiable: int = 0
    """Checkpoints older than the last whose token key has been removed since: their hashes still chain."""
    last_checkpoint_at: str | None = None
    broken: BrokenLink | None = None


@dataclass
class VerifyReport:
    chains: list[ChainReport]
    unsealed: int

    @property
    def intact(self) -> bool:
        return all(c.broken is None for c in self.chains)

    @property
    def first_broken(self) -> BrokenLink | None:
        return next((c.broken for c in self.chains if c.broken is not None), None)

    def as_dict(self) -> dict[str, Any]:
        broken = self.first_broken
        return {"intact": self.intact, "unsealed": self.unsealed,
                "broken": None if broken is None else {**broken.__dict__, "message": broken.describe()},
                "chains": [{k: v for k, v in c.__dict__.items() if k != "broken"} for c in self.chains]}

    def summary(self) -> str:
        broken = self.first_broken
        if broken is not None:
            return f"audit chain BROKEN: {broken.describe()}"
        counts = ", ".join(f"{c.chain}: {c.events} events (seq {c.first_seq or c.last_seq}..{c.last_seq}), "
                           f"{c.checkpoints} checkpoints" for c in self.chains)
        return f"audit chain intact: {counts}; {self.unsealed} not sealed yet"


READ_HEAD = select(HEAD.c.seq, HEAD.c.chain_hash, HEAD.c.start_seq, HEAD.c.start_hash, HEAD.c.checkpoints,
                   HEAD.c.checkpoint_hash).where(HEAD.c.chain == bindparam("chain"))
READ_PAGE = (select(*_CONTENT, EVENT.c.chain, EVENT.c.seq, EVENT.c.chain_hash)
             .where(EVENT.c.chain == bindparam("chain"), EVENT.c.seq > bindparam("after"),
                    EVENT.c.seq <= bindparam("upto"))
             .order_by(EVENT.c.seq).limit(bindparam("limit")))
_PAGE_KEYS = (*_CONTENT_KEYS, "chain", "seq", "chain_hash")
READ_CHECKPOINTS = (select(CHECKPOINT.c.number, CHECKPOINT.c.seq, CHECKPOINT.c.chain_hash, CHECKPOINT.c.prev_hash,
                           CHECKPOINT.c.checkpoint_hash, CHECKPOINT.c.created_at, CHECKPOINT.c.signature)
                    .where(CHECKPOINT.c.chain == bindparam("chain"), CHECKPOINT.c.number <= bindparam("upto"))
                    .order_by(CHECKPOINT.c.number))
COUNT_UNSEALED = select(func.count()).select_from(EVENT).where(EVENT.c.seq.is_(None))
_NO_CHAIN = or_(EVENT.c.chain.is_(None), and_(*(EVENT.c.chain != chain for chain in CHAINS)))
COUNT_OTHER = select(func.count()).select_from(EVENT).where(EVENT.c.seq.is_not(None), _NO_CHAIN)
OUT_OF_PLACE = select(*_CONTENT, EVENT.c.chain, EVENT.c.seq, EVENT.c.chain_hash).where(
    EVENT.c.chain_hash.is_not(None),
    or_(EVENT.c.seq.is_(None), _NO_CHAIN,
        *(and_(EVENT.c.chain == chain, or_(EVENT.c.seq < bindparam(f"start_{chain}"),
                                           EVENT.c.seq > bindparam(f"head_{chain}"))) for chain in CHAINS)),
).limit(1000)
"""Events that carry a chain_hash outside the walked part of every chain: where an event whose seq or chain was
changed went (the verifier names it instead of the gap it left)."""


async def verify_trail(database: DirectDatabase, signer: CheckpointSigner) -> VerifyReport:
    """`verify` in a reading unit (no lock: writers, the sealer and retention go on meanwhile). A chain found broken
    is walked a second time before it is reported, so a retention pass deleting the oldest events under the walk is
    not taken for tampering; a tampered trail is broken both times."""
    async with database.reading() as tx:
        report = await verify(tx, signer)
    if report.intact:
        return report
    async with database.reading() as tx:
        return await verify(tx, signer)


async def verify(tx: Transaction, signer: CheckpointSigner) -> VerifyReport:
    """Walk every chain and its checkpoints as far as its head read first says (events sealed meanwhile wait for the
    next run); each chain stops at its first broken link. Read in pages of VERIFY_PAGE events: the memory used does
    not grow with the trail."""
    heads = {chain: await tx.one(READ_HEAD, chain=chain) for chain in CHAINS}
    places = {}
    for chain, row in heads.items():
        places[f"start_{chain}"], places[f"head_{chain}"] = (int(row[2]), int(row[0])) if row is not None else (1, 0)
    reports = [await _verify_chain(tx, signer, chain, heads[chain], places) for chain in CHAINS]
    other = await tx.one(COUNT_OTHER)
    if other and other[0]:
        reports.append(ChainReport("?", broken=BrokenLink("?", f"{other[0]} sealed events name no known chain")))
    unsealed = await tx.one(COUNT_UNSEALED)
    return VerifyReport(reports, int(unsealed[0]) if unsealed else 0)


async def _verify_chain(tx: Transaction, signer: CheckpointSigner, chain: str, head_row: tuple[Any, ...] | None,
                        places: Mapping[str, int]) -> ChainReport:
    report = ChainReport(chain)
    seq, chain_hash, start_seq, start_hash, head_checkpoints, head_checkpoint_hash = (
        (int(head_row[0]), str(head_row[1]), int(head_row[2]), str(head_row[3]), int(head_row[4]), str(head_row[5]))
        if head_row is not None else (0, GENESIS, 1, GENESIS, 0, GENESIS))
    checkpoints = [dict(zip(("number", "seq", "chain_hash", "prev_hash", "checkpoint_hash", "created_at",
                             "signature"), row, strict=True))
                   for row in await tx.all(READ_CHECKPOINTS, chain=chain, upto=head_checkpoints)]
    wanted = {int(c["seq"]) for c in checkpoints if int(c["seq"]) >= start_seq}
    hashes: dict[int, str] = {}
    report.broken = await _walk(tx, report, start_seq=start_seq, start_hash=start_hash, upto=seq, wanted=wanted,
                                hashes=hashes, places=places)
    if report.broken is not None:
        return report
    if report.last_seq != seq or hashes.get(seq) != chain_hash:
        report.broken = BrokenLink(chain, f"the chain head says seq {seq}, the events end at seq {report.last_seq}: "
                                          "events deleted from the tail, or the head changed", seq=seq)
        return report
    report.broken = await _check_checkpoints(signer, report, checkpoints, hashes=hashes, start_seq=start_seq)
    if report.broken is None and checkpoints and (checkpoints[-1]["number"] != head_checkpoints
                                                  or checkpoints[-1]["checkpoint_hash"] != head_checkpoint_hash):
        report.broken = BrokenLink(chain, f"the head names checkpoint {head_checkpoints}, the last one stored is "
                                          f"{checkpoints[-1]['number']}", checkpoint=int(checkpoints[-1]["number"]))
    if report.broken is None and seq > 0 and (not checkpoints or int(checkpoints[-1]["seq"]) != seq):
        report.broken = BrokenLink(chain, "no checkpoint signs the chain head (checkpoints deleted?)", seq=seq)
    return report


async def _walk(tx: Transaction, report: ChainReport, *, start_seq: int, start_hash: str, upto: int,
                wanted: set[int], hashes: dict[int, str], places: Mapping[str, int]) -> BrokenLink | None:
    chain = report.chain
    expected, prev = start_seq, start_hash
    report.last_seq = start_seq - 1
    hashes[start_seq - 1] = start_hash  # the last event retention deleted (or the chain's genesis)
    while True:
        page = await tx.all(READ_PAGE, chain=chain, after=expected - 1, upto=upto, limit=VERIFY_PAGE)
        for raw in page:
            event = dict(zip(_PAGE_KEYS, raw, strict=True))
            if event["seq"] != expected:
                return await _gap(tx, chain, expected=expected, prev=prev, after=event, places=places)
            if link(prev, event_content(event)) != event["chain_hash"]:
                return BrokenLink(chain, "its content or chain_hash was changed after it was sealed",
                                  event["id"], event["seq"], event["event_type"])
            prev = event["chain_hash"]
            if expected in wanted:
                hashes[expected] = prev
            report.events += 1
            if report.first_seq is None:
                report.first_seq, report.first_occurred_at = expected, _instant(event["occurred_at"])
            report.last_seq = expected
            expected += 1
        if len(page) < VERIFY_PAGE:
            hashes[report.last_seq] = prev
            return None


async def _gap(tx: Transaction, chain: str, *, expected: int, prev: str, after: Mapping[str, Any],
               places: Mapping[str, int]) -> BrokenLink:
    """The broken link where seq `expected` is missing: the event itself when it is still there with its seq or
    chain changed (it links `prev` to the event after the gap), else the gap before `after`."""
    for raw in await tx.all(OUT_OF_PLACE, **places):
        moved = dict(zip(_PAGE_KEYS, raw, strict=True))
        if link(prev, event_content({**moved, "chain": chain, "seq": expected})) == moved["chain_hash"]:
            return BrokenLink(chain, f"its place in the chain was changed (sealed as {chain} seq {expected})",
                              moved["id"], moved["seq"], moved["event_type"])
    return BrokenLink(chain, f"events seq {expected}..{after['seq'] - 1} are missing before this one (deleted)",
                      after["id"], after["seq"], after["event_type"])


async def _check_checkpoints(signer: CheckpointSigner, report: ChainReport, checkpoints: Sequence[dict[str, Any]],
                             *, hashes: Mapping[int, str], start_seq: int) -> BrokenLink | None:
    chain = report.chain
    previous: dict[str, Any] | None = None
    for position, checkpoint in enumerate(checkpoints):
        number = int(checkpoint["number"])
        claims = checkpoint_claims(chain, number=number, seq=int(checkpoint["seq"]),
                                   chain_hash=checkpoint["chain_hash"], prev_hash=checkpoint["prev_hash"],
                                   created_at=checkpoint["created_at"])
        if claims["checkpoint_hash"] != checkpoint["checkpoint_hash"]:
            return BrokenLink(chain, "the checkpoint was changed", checkpoint=number)
        if previous is not None and (number != previous["number"] + 1
                                     or checkpoint["prev_hash"] != previous["checkpoint_hash"]):
            return BrokenLink(chain, f"checkpoints {previous['number'] + 1}..{number - 1} are missing or the "
                                     "checkpoint chain was changed", checkpoint=number)
        try:
            signed = await signer.verify(checkpoint["signature"])
        except CheckpointSignatureError as exc:
            if exc.unknown_key and position < len(checkpoints) - 1:
                report.signatures_unverifiable += 1  # the last checkpoint's signature covers it through the hashes
            else:
                return BrokenLink(chain, f"the checkpoint's signature does not verify ({exc})", checkpoint=number)
        else:
            if any(signed.get(k) != v for k, v in claims.items()):
                return BrokenLink(chain, "the checkpoint differs from what was signed", checkpoint=number)
            report.signatures_verified += 1
        seq = int(checkpoint["seq"])
        if seq >= start_seq - 1 and hashes.get(seq) != checkpoint["chain_hash"]:
            detail = "is missing (deleted from the tail?)" if seq > report.last_seq else "does not match"
            return BrokenLink(chain, f"the event at seq {seq} that this checkpoint signs {detail}", seq=seq,
                              checkpoint=number)
        report.checkpoints += 1
        report.last_checkpoint_at = _instant(checkpoint["created_at"])
        previous = {"number": number, "checkpoint_hash": checkpoint["checkpoint_hash"]}
    return None

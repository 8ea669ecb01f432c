"""The validation service of this process (issue 14): one place that validates a PDF and audits that it did.

POST /api/v1/validations, the /verify page and `acar validate` all call `ValidationService.validate`. It holds:
- the trust policy (signing.core.trust.TrustPolicy): the built-in root CA (read from the database at the first
  validation, when the CA exists), ACAR_SIGNING_TRUST_ROOTS, ACAR_VALIDATION_TRUST_ANCHORS and, when configured,
  the ETSI TS 119 612 trusted list of ACAR_VALIDATION_TRUSTED_LIST (its signature checked against
  ACAR_VALIDATION_TRUSTED_LIST_SIGNERS by signing.core.trustlist; reloaded after TRUSTED_LIST_REFRESH);
- the Validator (signing.core.validation, ETSI TS 119 102-1 processes on pyHanko) fetching revocation data through
  the signing engine's ValidationDataSource, so Açar's own OCSP responder and CRLs answer in process (RFC 6960,
  RFC 5280) and other PKIs over HTTP;
- the audit: every validation writes "validation.performed" before its report leaves (the document's SHA-256,
  size and the counts per indication, the caller's client id or "anonymous", the client address as a keyed hash),
  never a byte of the document. A trust policy that cannot be built (a trusted list that does not verify or cannot
  be fetched) fails closed: ValidationUnavailable (503), never a report with less trust than configured.

Nothing is stored beyond the request: the caller's spooled upload is the only copy of the document.
"""

from __future__ import annotations

import asyncio
import collections
import datetime as dt
import hashlib
import hmac
import logging
import re
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, BinaryIO, ClassVar, Final, Protocol

from signing.core.errors import InvalidValidationRequest, ValidationUnavailable
from signing.core.report import Indication, ValidationReport
from storage.audit import ANONYMOUS_ACTOR, AuditSink

if TYPE_CHECKING:
    from signing.core.trust import TrustPolicy

logger = logging.getLogger(__name__)
TRUSTED_LIST_REFRESH: Final = dt.timedelta(hours=1)
"""A trusted list is fetched again after this long (ETSI TS 119 612 section 5.3.14: lists are reissued at least
every six months, and at once on a change of a service's status)."""
TRUST_RETRY: Final = dt.timedelta(minutes=1)
"""After a failed build of the trust policy (the trusted list unreachable or not verifying), how long requests are
answered from that failure (or from the previous list, while it is current) before the next attempt: a list URL
that is down costs one download timeout a minute, not one per request."""
AUDIT_EVENT: Final = "validation.performed"


_DATE: Final = re.compile(r"\d{4}-\d{2}-\d{2}")
_DATE_TIME: Final = re.compile(r"\d{4}-\d{2}-\d{2}[Tt ]\d{2}:\d{2}:\d{2}(\.\d{1,6})?([Zz]|[+-]\d{2}:\d{2})")
_BAD_AT: Final = "at must be an RFC 3339 date-time such as 2026-01-31T12:00:00Z"


def parse_at(value: str | None, now: dt.datetime) -> dt.datetime | None:
    """An RFC 3339 date-time (section 5.6: with "Z" or an offset; a plain date is its midnight UTC) not later than
    `now`, or None for an empty value."""
    if not value:
        return None
    text = value.strip()
    if not (_DATE.fullmatch(text) or _DATE_TIME.fullmatch(text)):
        raise InvalidValidationRequest(_BAD_AT)
    try:
        at = dt.datetime.fromisoformat(text.upper().replace("Z", "+00:00"))
    except ValueError:
        raise InvalidValidationRequest(_BAD_AT) from None
    if at.tzinfo is None:
        at = at.replace(tzinfo=dt.UTC)
    if at > now:
        raise InvalidValidationRequest("at must not be in the future: validation as of a past time uses the data "
                                       "embedded in the document")
    return at


class ReportValidator(Protocol):
    """signing.core.validation.Validator as this service calls it."""

    async def validate(self, source: BinaryIO, *, at: dt.datetime | None = None) -> ValidationReport: ...


TrustLoader = Callable[[], Awaitable["TrustPolicy"]]
"""Builds the trust policy (api.deps): the anchors and the trusted list, checked."""
ValidatorFactory = Callable[["TrustPolicy"], Awaitable[ReportValidator]]
"""A Validator on a trust policy (api.deps: the input policy and the fetchers spelled out there)."""


@dataclass(frozen=True, slots=True)
class Caller:
    """Who asked: an agency's client id (its own access token) or nobody, and the client's address; `name` the
    actor of a local caller instead (`acar validate`: "cli")."""

    client_id: str | None
    address: str
    name: str | None = None

    @property
    def actor(self) -> str:
        return self.client_id or self.name or ANONYMOUS_ACTOR


class ValidationService:
    """Validates PDFs on one trust policy and audits each validation (module docstring)."""

    audit_event: ClassVar[str] = AUDIT_EVENT

    def __init__(self, *, trust: TrustLoader, validator: ValidatorFactory, audit: AuditSink, address_key: bytes,
                 refresh: dt.timedelta = TRUSTED_LIST_REFRESH, retry: dt.timedelta = TRUST_RETRY,
                 monotonic: Callable[[], float] = time.monotonic,
                 clock: Callable[[], dt.datetime] = lambda: dt.datetime.now(dt.UTC)) -> None:
        self._trust = trust
        self._factory = validator
        self._audit = audit
        self._address_key = address_key
        self._refresh = refresh.total_seconds()
        self._retry = retry.total_seconds()
        self._monotonic = monotonic
        self._clock = clock
        self._validator: ReportValidator | None = None
        self._policy: TrustPolicy | None = None
        self._next_attempt = 0.0
        self._failure: ValidationUnavailable | None = None
        self._building = asyncio.Lock()

    async def validator(self) -> ReportValidator:
        """The Validator, built on first use and again after `refresh` (the trusted list reloaded).

        A failed build (ValidationUnavailable: the list unreachable, not verifying, expired) is not retried for
        `retry`. Meanwhile the previous Validator keeps answering while its trusted list is current (before its
        NextUpdate, ETSI TS 119 612 section 5.3.15: the operator's own promise that the list stays valid until then);
        without one, or once that list is past its NextUpdate, the failure is the answer (503): fail closed."""
        if self._monotonic() >= self._next_attempt:
            async with self._building:
                if self._monotonic() >= self._next_attempt:
                    try:
                        policy = await self._trust()
                        self._validator = await self._factory(policy)
                        self._policy, self._failure = policy, None
                        self._next_attempt = self._monotonic() + self._refresh
                    except ValidationUnavailable as exc:
                        self._failure = exc
                        self._next_attempt = self._monotonic() + self._retry
                        logger.warning("validation trust could not be built: %s", exc.detail)
        if self._failure is not None and not self._current():
            raise self._failure
        if self._validator is None:  # pragma: no cover - built, or the failure was raised just above
            raise ValidationUnavailable("the validation service is not ready")
        return self._validator

    def expire(self) -> None:
        """Let the next request build the trust policy again at once (as it does `refresh` after a build, or `retry`
        after a failure): for an operator who has just replaced the trusted list, and for the tests."""
        self._next_attempt = 0.0

    def _current(self) -> bool:
        """The previous Validator may still answer: it exists and its trusted list (if any) is before NextUpdate."""
        if self._validator is None or self._policy is None:
            return False
        trusted_list = self._policy.trusted_list
        return trusted_list is None or self._clock() < trusted_list.next_update

    async def validate(self, source: BinaryIO, *, at: dt.datetime | None, caller: Caller) -> ValidationReport:
        """The report of `source` (seekable), `at` a past time to validate as of from embedded data only; the audit
        event is committed before this returns. Refused input raises signing.core.errors.PdfRefused."""
        report = await (await self.validator()).validate(source, at=at)
        await self._audit.record(self.audit_event, actor=caller.actor, subject=report.sha256,
                                 detail=audit_detail(report, at=at, address=self.address_hash(caller.address)))
        return report

    def address_hash(self, address: str) -> str:
        """The client address as the audit keeps it: HMAC-SHA256 under the deployment's secret (a plain hash of an
        IPv4 address is reversed by trying all 2^32), so the events of one address can be told apart and counted,
        and the address itself is not written."""
        return hmac.new(self._address_key, b"audit-address\x00" + address.encode(), hashlib.sha256).hexdigest()[:32]


def audit_detail(report: ValidationReport, *, at: dt.datetime | None, address: str) -> dict[str, object]:
    """What "validation.performed" records: the digest and size, the counts per indication, no content."""
    counts = collections.Counter(s.indication.value for s in report.signatures)
    return {"sha256": report.sha256, "size": report.size, "signatures": len(report.signatures),
            "indications": {i.value: counts.get(i.value, 0) for i in Indication},
            "all_passed": report.all_passed, "embedded_only": report.embedded_only,
            "at": at.astimezone(dt.UTC).isoformat() if at is not None else None, "address": address}


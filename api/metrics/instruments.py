"""What Açar counts (docs/metrics.md lists every metric): the instruments and the code that feeds them.

Importing this module imports prometheus_client: api.metrics.prepare must have run first in a process that is to
count in multiprocess mode.

Labels have bounded values only: a route's template (never the raw path; every request no route matched is
"unmatched"), a method from a fixed list, a status class, and values of Açar's own vocabularies (grant types,
login methods, PAdES levels, ETSI indications, budget names); anything else a client could send becomes "other".

Where the counts come from:
- HTTP requests: api.middleware.RequestContextMiddleware, which already times every request, calls `HTTP.observe`.
- Logins, tokens, signatures and validations: the audit trail, which records each of these outcomes anyway
  (storage.audit.observe_audit tells `_on_audit` of every event as it is recorded): one seam for the protocol
  cores, the signing worker and the CLI alike, and no import of prometheus_client below api/.
- Rate-limit refusals: api.ratelimit, where RateLimited is raised. OCSP and TSA: their routes (api.routes.pki,
  api.routes.tsa) time the responder's work.

Cost (the token endpoint's target, issue 17): an increment of a multiprocess value takes a lock and writes an
mmap'd file, a few microseconds per histogram observation. The hot counts (every request's latency, every token)
are therefore tallied in plain Python numbers on the event loop (`Tally`) and added to prometheus_client's values
once a second (`flush_every`, a task of the application's lifespan), before every scrape, and at shutdown: a
request costs a dictionary look-up and two additions. Rare events (logins, signatures, refusals) go straight to
prometheus_client.
"""

from __future__ import annotations

import asyncio
import bisect
import contextlib
import contextvars
import logging
import os
from collections.abc import Mapping
from typing import Any, Final

from prometheus_client import Counter, Histogram

from api.routing import template_of
from storage.audit import observe_audit

log = logging.getLogger("acar.metrics")

FLUSH_SECONDS: Final = 1.0
LATENCY_BUCKETS: Final = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
                          float("inf"))
"""Seconds: from a token (about 0.3 ms) to a large PDF's signing or validation."""
RESPONDER_BUCKETS: Final = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0,
                            float("inf"))
"""Seconds: an OCSP answer from precomputed DER, a time-stamp signed by a software key or an HSM."""
OTHER: Final = "other"
METHODS: Final = {m: m for m in ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS")}
STATUS_CLASSES: Final = ("1xx", "2xx", "3xx", "4xx", "5xx")
GRANT_TYPES: Final = frozenset({"authorization_code", "client_credentials", "refresh_token"})
LOGIN_METHODS: Final = {"passkey": "passkey", "idcard-webeid": "webeid", "idcard-tls": "idcard_tls"}
"""idp's LoginMethod names -> the label (development logins are not counted)."""
PADES_LEVELS: Final = frozenset({"B-B", "B-T", "B-LT", "B-LTA"})
INDICATIONS: Final = ("TOTAL-PASSED", "TOTAL-FAILED", "INDETERMINATE")

HTTP_REQUESTS = Counter("acar_http_requests", "HTTP requests answered, by route template, method and status class",
                        ["route", "method", "status"])
HTTP_DURATION = Histogram("acar_http_request_duration_seconds",
                          "Time from a request's arrival at the application to its last response byte handed to "
                          "the server, by route template, method and status class",
                          ["route", "method", "status"], buckets=LATENCY_BUCKETS)
LOGINS = Counter("acar_logins", "Login attempts by method and result", ["method", "result"])
TOKENS = Counter("acar_tokens_issued", "Token responses issued at /token, by grant type", ["grant_type"])
SIGNATURES = Counter("acar_signatures", "Documents signed (result signed) and signing requests failed (result "
                     "failed) by the signing workers, by PAdES baseline level", ["level", "result"])
VALIDATIONS = Counter("acar_validations", "Documents validated (API, page and CLI)")
VALIDATED_SIGNATURES = Counter("acar_validated_signatures", "Signatures validated, by ETSI TS 119 102-1 main "
                               "indication", ["indication"])
RATE_LIMITED = Counter("acar_rate_limit_refusals", "Requests refused by a rate limit (429), by budget", ["limit"])
OCSP_DURATION = Histogram("acar_ocsp_response_seconds", "Time the OCSP responder took to answer, by response "
                          "status (RFC 6960 section 4.2.1)", ["status"], buckets=RESPONDER_BUCKETS)
TSA_DURATION = Histogram("acar_tsa_response_seconds", "Time the time-stamp authority took to answer, by result "
                         "(granted or the RFC 3161 failure)", ["result"], buckets=RESPONDER_BUCKETS)


class Tally:
    """Counts and latencies of this process not yet added to prometheus_client's values; used on the event loop
    only (a single thread: no lock). `flush` adds them and starts again from zero."""

    def __init__(self) -> None:
        self.counts: dict[Any, float] = {}
        """A Counter's child -> the increments since the last flush."""
        self.latencies: dict[tuple[Any, Any], list[float]] = {}
        """(Histogram child, Counter child of the same labels) -> [sum, count per bucket...]."""

    def count(self, child: Any, amount: float = 1.0) -> None:
        self.counts[child] = self.counts.get(child, 0.0) + amount

    def flush(self) -> None:
        counts, self.counts = self.counts, {}
        for child, amount in counts.items():
            if amount:
                child.inc(amount)
        for (histogram, counter), observed in self.latencies.items():
            if any(observed):
                total = 0.0
                for i, n in enumerate(observed[1:]):
                    if n:
                        # prometheus_client 0.26 (constraints.txt): a child histogram keeps its per-bucket counts
                        # in _buckets (not cumulative; observe() adds one to the first bucket that fits) and the
                        # sum in _sum; adding n to them is n observe() calls
                        histogram._buckets[i].inc(n)
                        total += n
                histogram._sum.inc(observed[0])
                counter.inc(total)
                observed[:] = [0.0] * len(observed)


TALLY = Tally()


class HttpMeter:
    """Per request: route template, method and status class -> a tallied latency (api.middleware). Routes are
    looked up by identity (FastAPI's are unhashable): the entry keeps its route, so a new route object that got a
    dead one's id is not taken for it."""

    __slots__ = ("bounds", "counter", "entries", "histogram", "tally")

    def __init__(self, tally: Tally, histogram: Histogram, counter: Counter) -> None:
        self.tally = tally
        self.histogram = histogram
        self.counter = counter
        self.bounds = tuple(histogram._upper_bounds)  # the histogram's own buckets, +Inf last
        self.entries: dict[tuple[int, str, int], tuple[object, list[float]]] = {}

    def observe(self, scope: Mapping[str, Any], status: int, seconds: float) -> None:
        route = scope.get("route")
        key = (id(route), scope["method"], status // 100)
        found = self.entries.get(key)
        entry = found[1] if found is not None and found[0] is route else self._entry(key, route)
        entry[0] += seconds
        entry[bisect.bisect_left(self.bounds, seconds) + 1] += 1

    def _entry(self, key: tuple[int, str, int], route: object) -> list[float]:
        _, method, status_class = key
        labels = (template_of(route), METHODS.get(method, OTHER),
                  STATUS_CLASSES[status_class - 1] if 1 <= status_class <= 5 else OTHER)
        # several keys (a client's odd method names) may share labels: they share the tally's entry too
        histogram, counter = self.histogram.labels(*labels), self.counter.labels(*labels)
        entry = self.tally.latencies.setdefault((histogram, counter), [0.0] * (len(self.bounds) + 1))
        if len(self.entries) < 10_000:  # each route once per method and status class: bounded but for invented
            self.entries[key] = (route, entry)  # methods, which then take the slow path
        return entry


HTTP = HttpMeter(TALLY, HTTP_DURATION, HTTP_REQUESTS)


def _label(value: object, allowed: frozenset[str] | tuple[str, ...]) -> str:
    return value if isinstance(value, str) and value in allowed else OTHER


def _on_audit(event_type: str, detail: Mapping[str, Any] | None) -> None:
    """The outcomes the audit trail records, counted (storage.audit.observe_audit); never raises."""
    try:
        handler = _AUDITED.get(event_type)
        if handler is not None:
            handler(detail or {})
    except Exception:  # a count is not worth a failed request
        log.exception("metrics.audit_observer_failed", extra={"event_type": event_type})


_TOKENS_BY_GRANT: Final = {grant: TOKENS.labels(grant) for grant in (*sorted(GRANT_TYPES), OTHER)}
"""The children, looked up once (labels() costs microseconds: the token endpoint's budget, issue 17)."""


def _token_issued(detail: Mapping[str, Any]) -> None:
    grant = detail.get("grant_type")
    TALLY.count(_TOKENS_BY_GRANT.get(grant, _TOKENS_BY_GRANT[OTHER]) if isinstance(grant, str)
                else _TOKENS_BY_GRANT[OTHER])


def _login(result: str) -> Any:
    def count(detail: Mapping[str, Any]) -> None:
        method = detail.get("method", "passkey")  # the passkey events name no method: they are its own
        LOGINS.labels(LOGIN_METHODS.get(method, OTHER) if isinstance(method, str) else OTHER, result).inc()
    return count


def _signed(result: str) -> Any:
    def count(detail: Mapping[str, Any]) -> None:
        level = detail.get("level")
        SIGNATURES.labels(level if isinstance(level, str) and level in PADES_LEVELS else "unknown", result).inc()
    return count


def _validated(detail: Mapping[str, Any]) -> None:
    VALIDATIONS.inc()
    indications = detail.get("indications")
    if isinstance(indications, Mapping):
        for indication, n in indications.items():
            if isinstance(n, int) and n > 0:
                VALIDATED_SIGNATURES.labels(_label(indication, INDICATIONS)).inc(n)


_AUDITED: Final = {
    "token.issued": _token_issued,
    "token.refreshed": lambda _: TALLY.count(_TOKENS_BY_GRANT["refresh_token"]),
    "webauthn.login": _login("success"),
    "webauthn.login_failed": _login("failure"),
    "login.card.succeeded": _login("success"),
    "login.card.refused": _login("failure"),
    "signing.document.signed": _signed("signed"),
    "signing.request.failed": _signed("failed"),
    "validation.performed": _validated,
}


def rate_limited(limit: str) -> None:
    """A request refused by the budget named `limit` (api.ratelimit; budget names come from the code)."""
    RATE_LIMITED.labels(limit).inc()


def ocsp_answered(status: str, seconds: float) -> None:
    OCSP_DURATION.labels(status).observe(seconds)


def tsa_answered(result: str, seconds: float) -> None:
    TSA_DURATION.labels(result).observe(seconds)


_installed: list[object] = []


def install() -> None:
    """Count the audited outcomes of this process from now on (idempotent)."""
    if not _installed:
        _installed.append(observe_audit(_on_audit))


async def _flush_every(seconds: float) -> None:
    while True:
        await asyncio.sleep(seconds)
        TALLY.flush()


def start(seconds: float = FLUSH_SECONDS) -> asyncio.Task[None]:
    """The application's task adding the tally to prometheus_client's values every `seconds` (api.app's lifespan;
    in a context of its own, as every background task)."""
    return asyncio.create_task(_flush_every(seconds), context=contextvars.Context())


async def stop(task: asyncio.Task[None]) -> None:
    """At the application's shutdown: the task ends, the last tally is added, and prometheus_client's bookkeeping
    for a dead process is done (its live gauges' files go; Açar keeps none, the call keeps it so if one is added)."""
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
    TALLY.flush()
    directory = os.environ.get("PROMETHEUS_MULTIPROC_DIR")
    if directory:
        from prometheus_client import multiprocess

        multiprocess.mark_process_dead(os.getpid(), directory)  # type: ignore[no-untyped-call]  # untyped library

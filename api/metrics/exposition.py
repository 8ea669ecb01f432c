"""GET /metrics: the Prometheus text exposition, for the allowed only (docs/metrics.md).

Who may read it:
- a request bearing the token of ACAR_METRICS_TOKEN_FILE (`Authorization: Bearer ...`, RFC 6750 section 2.1),
  from anywhere; or
- a request whose TCP peer is in ACAR_METRICS_ALLOWED_NETWORKS (loopback by default), unless it came through a
  proxy: a peer that is one of ACAR_TRUSTED_PROXIES, or a request carrying X-Forwarded-For, Forwarded (RFC 7239)
  or X-Real-IP. Behind a reverse proxy on the same machine every outside request arrives from loopback; such a
  request must not pass for a local scraper. Prometheus scrapes each node directly, not through the proxy.

Everyone else gets the 404 of a path that does not exist (the same problem or page), whatever the method, so the
endpoint's existence is not revealed. It is in no OpenAPI document.

What it serves: the counts of every live process of the machine (api.metrics.live_directories, summed by
prometheus_client's MultiProcessCollector), or this process's registry in single-process mode; and, read from the
database at scrape time, the signing queue (`QueueCollector`): a gauge computed from the jobs table is right
whichever process or machine runs the workers, and costs one grouped query per scrape, where gauges kept by the
workers would disappear with them and disagree between them.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import hashlib
import hmac
import ipaddress
import logging
import os
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Final

from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, CollectorRegistry, generate_latest
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.multiprocess import MultiProcessCollector
from prometheus_client.registry import Collector
from sqlalchemy.exc import SQLAlchemyError
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response

from api.metrics import live_directories
from api.metrics.instruments import TALLY, install
from api.ratelimit import Network, parse_networks
from api.routing import PlainRoute
from api.settings import Settings, SettingsError
from signing.sql.store import SqlSigningUnits
from storage.base import utcnow

log = logging.getLogger("acar.metrics")

PATH: Final = "/metrics"
MIN_TOKEN_CHARS: Final = 32
FORWARDING_HEADERS: Final = (b"x-forwarded-for", b"forwarded", b"x-real-ip")
ALL_METHODS: Final = ["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"]
"""The route takes every method so that none answers 405 (which would reveal it): all but GET and HEAD get 404."""


def read_token(settings: Settings) -> bytes | None:
    """The SHA-256 of ACAR_METRICS_TOKEN_FILE's token (None: no token); SettingsError naming the setting when the
    file cannot be read or holds fewer than MIN_TOKEN_CHARS characters."""
    path = settings.metrics_token_file
    if path is None:
        return None
    try:
        token = path.read_text().strip()
    except (OSError, UnicodeDecodeError) as exc:
        raise SettingsError(f"ACAR_METRICS_TOKEN_FILE ({path}) cannot be read: {exc}") from None
    if len(token) < MIN_TOKEN_CHARS or any(c.isspace() for c in token):
        raise SettingsError(f"ACAR_METRICS_TOKEN_FILE ({path}) must hold one token of at least {MIN_TOKEN_CHARS} "
                            "characters without spaces (e.g. `openssl rand -hex 32`)")
    return hashlib.sha256(token.encode()).digest()


class MetricsAccess:
    """The rule of the module docstring."""

    def __init__(self, *, networks: Sequence[Network], trusted_proxies: Sequence[Network],
                 token_sha256: bytes | None) -> None:
        self.networks = tuple(networks)
        self.trusted_proxies = tuple(trusted_proxies)
        self.token_sha256 = token_sha256

    @classmethod
    def of(cls, settings: Settings) -> MetricsAccess:
        return cls(networks=parse_networks(settings.metrics_allowed_networks),
                   trusted_proxies=parse_networks(settings.trusted_proxies), token_sha256=read_token(settings))

    def allows(self, request: Request) -> bool:
        headers = request.scope["headers"]
        if self.token_sha256 is not None:
            for name, value in headers:
                if name == b"authorization":
                    scheme, _, credentials = value.partition(b" ")
                    if scheme.lower() == b"bearer" and hmac.compare_digest(
                            hashlib.sha256(credentials.strip()).digest(), self.token_sha256):
                        return True
        if not self.networks or any(name in FORWARDING_HEADERS for name, _ in headers):
            return False
        client = request.client
        try:
            peer = ipaddress.ip_address(client.host) if client is not None else None
        except ValueError:  # not an IP peer (a Unix socket, a test client)
            return False
        if peer is None:
            return False
        if isinstance(peer, ipaddress.IPv6Address) and peer.ipv4_mapped is not None:
            peer = peer.ipv4_mapped
        if any(peer.version == net.version and peer in net for net in self.trusted_proxies):
            return False
        return any(peer.version == net.version and peer in net for net in self.networks)


class QueueCollector(Collector):
    """The signing queue as read at this scrape (None: the database did not answer; the gauges are left out)."""

    def __init__(self, queue: dict[str, tuple[int, dt.datetime | None]] | None, now: dt.datetime) -> None:
        self.queue = queue
        self.now = now

    def collect(self) -> Iterator[Metric]:
        if self.queue is None:
            return
        jobs = GaugeMetricFamily("acar_signing_jobs", "Signing jobs waiting (queued) and being signed (running)",
                                 labels=["state"])
        for state in ("queued", "running"):
            jobs.add_metric([state], self.queue.get(state, (0, None))[0])
        yield jobs
        oldest = self.queue.get("queued", (0, None))[1]
        age = max(0.0, (self.now - oldest).total_seconds()) if oldest is not None else 0.0
        yield GaugeMetricFamily("acar_signing_queue_oldest_age_seconds",
                                "Age of the oldest queued signing job (0: none queued)", value=age)


class FileCollector(Collector):
    """The multiprocess files of the live directories, summed (prometheus_client's MultiProcessCollector.merge)."""

    def __init__(self, directories: Sequence[Path]) -> None:
        self.directories = directories

    def collect(self) -> Iterator[Metric]:
        files = [str(d / name) for d in self.directories for name in _names(d) if name.endswith(".db")]
        yield from MultiProcessCollector.merge(files, accumulate=True)  # type: ignore[no-untyped-call]  # untyped library


def _names(directory: Path) -> list[str]:
    try:
        return os.listdir(directory)
    except OSError:  # removed meanwhile (its process gone and a new start swept it)
        return []


def exposition(queue: dict[str, tuple[int, dt.datetime | None]] | None, now: dt.datetime) -> bytes:
    """The text exposition (blocking file reads in multiprocess mode: run it off the event loop)."""
    directories = live_directories()
    registry = CollectorRegistry(auto_describe=False)
    registry.register(QueueCollector(queue, now))
    if directories:
        processes = CollectorRegistry(auto_describe=False)
        processes.register(FileCollector(directories))
        return generate_latest(processes) + generate_latest(registry)
    return generate_latest(REGISTRY) + generate_latest(registry)


async def _queue(request: Request) -> dict[str, tuple[int, dt.datetime | None]] | None:
    try:
        async with SqlSigningUnits(request.app.state.services.direct).reading() as store:
            return await store.job_queue()
    except (OSError, SQLAlchemyError) as exc:
        log.warning("metrics.queue_unavailable", extra={"error": type(exc).__name__})
        return None


def route(settings: Settings) -> PlainRoute:
    """The /metrics route of `settings` (api.app puts it last in the route table, outside OpenAPI)."""
    install()  # logins, tokens, signatures and validations counted from the audit trail
    access = MetricsAccess.of(settings)

    async def metrics(request: Request) -> Response:
        """Prometheus text exposition (docs/metrics.md); 404 for whoever may not read it."""
        if request.method not in ("GET", "HEAD") or not access.allows(request):
            raise HTTPException(404)
        queue = await _queue(request)
        TALLY.flush()  # this process's latest counts; the others' are at most a second old
        body = await asyncio.to_thread(exposition, queue, utcnow())
        return Response(body, media_type=CONTENT_TYPE_LATEST, headers={"Cache-Control": "no-store"})

    return PlainRoute(PATH, metrics, methods=ALL_METHODS, include_in_schema=False)

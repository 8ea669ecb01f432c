"""OpenTelemetry tracing, optional and off by default (issue 17; docs/metrics.md): a server span per HTTP request,
exported over OTLP/HTTP by a batch span processor.

Nothing of OpenTelemetry's SDK or exporter is imported unless ACAR_TRACING is on (`build` imports them), and the
middleware is installed only then: with tracing off a request pays nothing. The spans follow the HTTP semantic
conventions (https://opentelemetry.io/docs/specs/semconv/http/http-spans/) but keep only what is safe to ship to a
collector: the method (a known one, else "_OTHER"), the route template (never the raw path), the scheme and the
status code; never the query, headers or other text a client sent. An incoming W3C traceparent (W3C Trace Context
section 3.2) is continued, so an agency's trace spans its call to Açar. Export failures are logged by the SDK's
processor thread and never reach a request.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING

from fastapi import FastAPI
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from api.routing import UNMATCHED, route_template
from api.settings import Settings

if TYPE_CHECKING:
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SpanExporter
    from opentelemetry.trace import Span, Tracer
    from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

log = logging.getLogger("acar.tracing")

SERVICE_NAME = "acar"
OTLP_TRACES_PATH = "/v1/traces"
"""The OTLP/HTTP path of traces (OTLP specification, "OTLP/HTTP Request"), appended to ACAR_OTLP_ENDPOINT."""
METHODS = frozenset({"CONNECT", "DELETE", "GET", "HEAD", "OPTIONS", "PATCH", "POST", "PUT", "TRACE"})
"""The methods of RFC 9110 section 9 and RFC 5789; any other is recorded as "_OTHER" (semantic conventions), its
client-sent name dropped."""
_PROPAGATED = (b"traceparent", b"tracestate")


@dataclass(frozen=True)
class Tracing:
    """The tracer provider of this process, its tracer and the W3C Trace Context propagator."""

    provider: TracerProvider
    tracer: Tracer
    propagator: TraceContextTextMapPropagator

    def shutdown(self) -> None:
        """Export what the batch holds and stop its thread (blocking: call it off the event loop)."""
        try:
            self.provider.shutdown()
        except Exception:  # tracing never breaks the service, not even its stop
            log.exception("tracing.shutdown_failed")


def build(settings: Settings, exporter: SpanExporter | None = None) -> Tracing:
    """A provider with service.name "acar", a parent-based ratio sampler (ACAR_TRACING_SAMPLE_RATIO) and a batch
    span processor; `exporter` (a test's in-memory one) or OTLP/HTTP to ACAR_OTLP_ENDPOINT (unset: the SDK reads
    OTEL_EXPORTER_OTLP_TRACES_ENDPOINT / OTEL_EXPORTER_OTLP_ENDPOINT, headers and timeout as usual)."""
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor
    from opentelemetry.sdk.trace.sampling import ParentBased, TraceIdRatioBased
    from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

    if exporter is None:
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

        endpoint = settings.otlp_endpoint + OTLP_TRACES_PATH if settings.otlp_endpoint else None
        exporter = OTLPSpanExporter(endpoint=endpoint)
    # the explicit service name and sampler win over OTEL_SERVICE_NAME and OTEL_TRACES_SAMPLER
    provider = TracerProvider(resource=Resource.create({"service.name": SERVICE_NAME}),
                              sampler=ParentBased(TraceIdRatioBased(settings.tracing_sample_ratio)))
    provider.add_span_processor(BatchSpanProcessor(exporter))
    # the process's global provider is left alone: FastAPI's own telemetry stays off (api.app)
    return Tracing(provider, provider.get_tracer("api.tracing"), TraceContextTextMapPropagator())


def install(app: FastAPI, settings: Settings, exporter: SpanExporter | None = None) -> None:
    """With ACAR_TRACING on, the tracing middleware as the application's outermost one (call it after the others)
    and the provider in app.state; off, nothing (no import of the SDK, no cost per request)."""
    if not settings.tracing:
        return
    app.state.tracing = tracing = build(settings, exporter)
    app.add_middleware(TracingMiddleware, tracing=tracing)


async def shutdown(app: FastAPI) -> None:
    """At the end of the lifespan: the batch's last spans exported, off the event loop (the exporter blocks)."""
    tracing: Tracing | None = getattr(app.state, "tracing", None)
    if tracing is not None:
        await asyncio.to_thread(tracing.shutdown)


class TracingMiddleware:
    """One server span per HTTP request, named "METHOD route-template" (semantic conventions, "Name"), continuing
    an incoming traceparent; status error on a 5xx answer or an exception (whose message is not recorded: it may
    hold what a client sent)."""

    def __init__(self, app: ASGIApp, *, tracing: Tracing) -> None:
        from opentelemetry import context, trace
        from opentelemetry.trace import SpanKind, Status, StatusCode

        self.app = app
        self.tracing = tracing
        self._attach, self._detach, self._in_context = context.attach, context.detach, trace.set_span_in_context
        self._server = SpanKind.SERVER
        self._error = Status(StatusCode.ERROR)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        carrier = {name.decode("latin-1"): value.decode("latin-1")
                   for name, value in scope["headers"] if name in _PROPAGATED}
        parent = self.tracing.propagator.extract(carrier) if carrier else None
        method = scope["method"] if scope["method"] in METHODS else "_OTHER"
        span = self.tracing.tracer.start_span(
            "HTTP" if method == "_OTHER" else method, context=parent, kind=self._server,
            attributes={"http.request.method": method, "url.scheme": scope.get("scheme", "http")})
        token = self._attach(self._in_context(span))
        status = 500
        error_type: str | None = None

        async def send_status(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_status)
        except BaseException as exc:
            error_type = type(exc).__qualname__
            raise
        finally:
            self._detach(token)
            self._finish(span, scope, method, status, error_type)

    def _finish(self, span: Span, scope: Scope, method: str, status: int, error_type: str | None) -> None:
        """Name the span after the route now matched, record the status, end it; never raises (the request's answer
        is already on its way)."""
        try:
            route = route_template(scope)  # api.routing: every route leaves itself in the scope
            span.update_name(f"{'HTTP' if method == '_OTHER' else method} {route}")
            if route != UNMATCHED:
                span.set_attribute("http.route", route)
            span.set_attribute("http.response.status_code", status)
            if status >= 500 or error_type is not None:
                span.set_status(self._error)
                span.set_attribute("error.type", error_type or str(status))
            span.end()
        except Exception:
            log.exception("tracing.span_failed")

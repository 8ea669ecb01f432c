"""OpenTelemetry tracing (issue 17; api.tracing, docs/metrics.md): with ACAR_TRACING on, real requests give server
spans named by route template that carry no query, header or secret; an incoming traceparent is continued; a 5xx is
an error span; off by default (no middleware, no SDK imported); on without the `tracing` extra, refused in one line;
and a real OTLP/HTTP export (protobuf POST to /v1/traces) to a receiver on loopback."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
from collections.abc import AsyncIterator, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode
from starlette.requests import Request
from starlette.responses import Response

from api.app import create_app
from api.deps import Services
from api.routing import PlainRoute
from api.settings import Settings, SettingsError, check_tracing_installed
from api.tracing import TracingMiddleware
from tests.oidc_tools import asgi_browser

SECRET = "client-secret-that-must-not-leave-" + "s" * 20
TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
PARENT_ID = "00f067aa0ba902b7"
ROOT = Path(__file__).resolve().parents[2]


async def _boom(request: Request) -> Response:
    raise RuntimeError("a failure whose message holds " + SECRET)


@pytest.fixture
def exporter() -> InMemorySpanExporter:
    return InMemorySpanExporter()


@pytest.fixture
async def traced_app(initialized: Services, settings: Settings, exporter: InMemorySpanExporter
                     ) -> AsyncIterator[FastAPI]:
    initialized.settings = settings.model_copy(update={"tracing": True})
    application = create_app(services=initialized, span_exporter=exporter)
    application.router.routes.append(PlainRoute("/test-boom", _boom))  # a route that fails: the 500 answered for it
    async with application.router.lifespan_context(application):
        yield application


@pytest.fixture
async def http(traced_app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    async with asgi_browser(traced_app) as c:
        yield c


def finished(app: FastAPI, exporter: InMemorySpanExporter) -> list[ReadableSpan]:
    assert app.state.tracing.provider.force_flush()
    return list(exporter.get_finished_spans())


def flat(span: ReadableSpan) -> str:
    """Everything a span would ship, as one text (to look for what must not be there)."""
    return repr((span.name, dict(span.attributes or {}), [e.attributes for e in span.events],
                 span.status.description))


async def test_requests_give_server_spans_named_by_route_template_without_client_text(
        http: httpx.AsyncClient, traced_app: FastAPI, exporter: InMemorySpanExporter) -> None:
    token = await http.post("/token?debug=" + SECRET, data={"grant_type": "client_credentials",
                                                          "client_id": "no-such-client", "client_secret": SECRET},
                            headers={"Authorization": "Bearer " + SECRET})
    assert token.status_code in (400, 401)
    assert (await http.get("/verify", params={"lang": "en"})).status_code == 200
    assert (await http.get("/pki/ocsp/not-base64!")).status_code == 200  # a path parameter: its template
    assert (await http.get("/no/such/" + SECRET, params={"q": SECRET})).status_code == 404
    assert (await http.request("BREW", "/verify")).status_code == 405
    spans = finished(traced_app, exporter)
    by_name = {span.name: span for span in spans}
    assert sorted(by_name) == ["GET /pki/ocsp/{encoded}", "GET /verify", "GET unmatched", "HTTP /verify",
                               "POST /token"], sorted(by_name)
    post = by_name["POST /token"]
    assert post.kind is SpanKind.SERVER and post.parent is None
    assert dict(post.attributes or {}) == {"http.request.method": "POST", "url.scheme": "http",
                                           "http.route": "/token",
                                           "http.response.status_code": token.status_code}
    assert post.status.status_code is StatusCode.UNSET
    assert dict(by_name["GET unmatched"].attributes or {}) == {
        "http.request.method": "GET", "url.scheme": "http", "http.response.status_code": 404}
    assert by_name["HTTP /verify"].attributes["http.request.method"] == "_OTHER"  # type: ignore[index]
    assert by_name["GET /pki/ocsp/{encoded}"].attributes["http.route"] == "/pki/ocsp/{encoded}"  # type: ignore[index]
    assert by_name["GET /pki/ocsp/{encoded}"].resource.attributes["service.name"] == "acar"
    for span in spans:
        text = flat(span)
        assert SECRET not in text and "debug" not in text and "lang" not in text and "BREW" not in text, text


async def test_an_incoming_traceparent_is_continued(http: httpx.AsyncClient, traced_app: FastAPI,
                                                    exporter: InMemorySpanExporter) -> None:
    r = await http.get("/healthz", headers={"traceparent": f"00-{TRACE_ID}-{PARENT_ID}-01"})
    assert r.status_code == 200
    assert (await http.get("/healthz", headers={"traceparent": "00-not-a-trace-01"})).status_code == 200
    continued, fresh = finished(traced_app, exporter)
    assert continued.context is not None and continued.parent is not None
    assert format(continued.context.trace_id, "032x") == TRACE_ID
    assert format(continued.parent.span_id, "016x") == PARENT_ID and continued.parent.is_remote
    assert fresh.parent is None and fresh.context is not None
    assert format(fresh.context.trace_id, "032x") != TRACE_ID


async def test_a_5xx_is_an_error_span_without_the_exception_message(
        http: httpx.AsyncClient, traced_app: FastAPI, exporter: InMemorySpanExporter) -> None:
    r = await http.get("/test-boom")
    assert r.status_code == 500 and SECRET not in r.text
    (span,) = finished(traced_app, exporter)
    assert span.name == "GET /test-boom" and span.status.status_code is StatusCode.ERROR
    assert span.attributes is not None and span.attributes["http.response.status_code"] == 500
    assert span.attributes["error.type"] == "500" and SECRET not in flat(span)


def _probe_env(tmp_path: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("ACAR_", "OTEL_"))}
    env.update({"PYTHONPATH": str(ROOT), "ACAR_DATA_DIR": str(tmp_path / "data")}, **extra)
    return env


def test_off_by_default_no_middleware_and_no_sdk_imported(tmp_path: Path) -> None:
    """Nothing of the tracing SDK or the exporter is imported (redis imports opentelemetry.sdk.metrics on its own
    when the SDK is installed: not ours to check)."""
    probe = ("import sys; from api.app import create_app; app = create_app(); "
             "ours = ('opentelemetry.sdk.trace', 'opentelemetry.exporter'); "
             "print(sorted(m for m in sys.modules if m.startswith(ours))); "
             "print(sorted(m.cls.__name__ for m in app.user_middleware))")
    proc = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True, timeout=120,
                          env=_probe_env(tmp_path), cwd=tmp_path)
    imported, middleware = proc.stdout.splitlines()
    assert imported == "[]", imported
    assert "RequestContextMiddleware" in middleware and TracingMiddleware.__name__ not in middleware


def test_enabled_without_the_extra_is_refused_by_the_check() -> None:
    def missing(name: str) -> None:
        return None

    with pytest.raises(SettingsError, match=r"^ACAR_TRACING .*: pip install 'acar\[tracing\]'$"):
        check_tracing_installed(missing)

    def broken(name: str) -> object:
        raise ModuleNotFoundError(name)

    with pytest.raises(SettingsError, match="opentelemetry.sdk is missing"):
        check_tracing_installed(broken)
    check_tracing_installed()  # installed here (the dev extra)


def test_enabled_without_the_extra_refuses_the_start_in_one_line(tmp_path: Path) -> None:
    """The SDK hidden from a real `acar` process (a sitecustomize whose import hook finds no opentelemetry.sdk)."""
    shadow = tmp_path / "shadow"
    shadow.mkdir()
    (shadow / "sitecustomize.py").write_text(
        "import sys\n"
        "class _Hide:\n"
        "    def find_spec(self, name, path=None, target=None):\n"
        "        if name.startswith(('opentelemetry.sdk', 'opentelemetry.exporter.otlp.proto.http')):\n"
        "            raise ModuleNotFoundError(name)\n"
        "        return None\n"
        "sys.meta_path.insert(0, _Hide())\n")
    env = _probe_env(tmp_path, ACAR_TRACING="true")
    env["PYTHONPATH"] = f"{shadow}{os.pathsep}{ROOT}"
    proc = subprocess.run([sys.executable, "-m", "api.cli", "person", "show", "5ABC12D"], capture_output=True,
                          text=True, check=False, timeout=120, env=env, cwd=tmp_path)
    assert proc.returncode != 0 and proc.stdout == ""
    assert len(proc.stderr.strip().splitlines()) == 1, proc.stderr
    assert "ACAR_TRACING" in proc.stderr and "pip install 'acar[tracing]'" in proc.stderr


def otlp_settings(settings: Settings, endpoint: str) -> Settings:
    # no in-process signing worker: a lifespan ended at once waits out its stop grace (api.app), unrelated here
    return settings.model_copy(update={"tracing": True, "otlp_endpoint": endpoint, "signing_inprocess_worker": False})


class _Receiver(BaseHTTPRequestHandler):
    received: list[tuple[str, str, bytes]]
    status = 200

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["Content-Length"]))
        self.received.append((self.path, self.headers["Content-Type"], body))
        self.send_response(self.status)
        self.send_header("Content-Type", "application/x-protobuf")
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002  # http.server's own signature
        pass


@pytest.fixture
def receiver() -> Iterator[tuple[str, list[tuple[str, str, bytes]]]]:
    received: list[tuple[str, str, bytes]] = []
    handler = type("Receiver", (_Receiver,), {"received": received})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", received
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


async def test_spans_are_exported_over_otlp_http_at_the_end_of_the_lifespan(
        initialized: Services, settings: Settings, receiver: tuple[str, list[tuple[str, str, bytes]]]) -> None:
    endpoint, received = receiver
    initialized.settings = otlp_settings(settings, endpoint)
    application = create_app(services=initialized)
    async with application.router.lifespan_context(application), asgi_browser(application) as http:
        assert (await http.get("/healthz", headers={"traceparent": f"00-{TRACE_ID}-{PARENT_ID}-01"})).status_code == 200
    (path, content_type, body), = received  # the batch exported as the lifespan ended
    assert path == "/v1/traces" and content_type == "application/x-protobuf"
    request = ExportTraceServiceRequest.FromString(body)
    (resource,) = request.resource_spans
    assert {a.key: a.value.string_value for a in resource.resource.attributes}["service.name"] == "acar"
    (span,) = [s for scope in resource.scope_spans for s in scope.spans]
    assert span.name == "GET /healthz" and span.trace_id.hex() == TRACE_ID and span.parent_span_id.hex() == PARENT_ID


async def test_a_failing_collector_breaks_no_request_and_no_shutdown(
        initialized: Services, settings: Settings, receiver: tuple[str, list[tuple[str, str, bytes]]],
        capsys: pytest.CaptureFixture[str]) -> None:
    """The collector refuses the export (400: not retried, OTLP specification "Failures"): logged, never raised."""
    endpoint, received = receiver
    _Receiver.status = 400
    try:
        initialized.settings = otlp_settings(settings, endpoint)
        application = create_app(services=initialized)
        async with application.router.lifespan_context(application), asgi_browser(application) as http:
            assert (await http.get("/healthz")).status_code == 200
    finally:
        _Receiver.status = 200
    assert [path for path, _, _ in received] == ["/v1/traces"]
    assert "Failed to export spans" in capsys.readouterr().err  # the SDK's own error log (api.logging: JSON to stderr)


@pytest.mark.parametrize("value", ["collector:4318", "ftp://collector", "http://user:pw@collector:4318",
                                   "http://collector:4318/?x=1", "http:///v1"])
def test_the_otlp_endpoint_must_be_a_plain_http_url(value: str, settings: Settings) -> None:
    with pytest.raises(ValueError, match="ACAR|http"):
        Settings(data_dir=settings.data_dir, otlp_endpoint=value)


def test_the_otlp_endpoint_loses_its_trailing_slash(settings: Settings) -> None:
    assert Settings(data_dir=settings.data_dir, otlp_endpoint="https://collector:4318/").otlp_endpoint == (
        "https://collector:4318")

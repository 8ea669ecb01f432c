"""GET /metrics (api.metrics, docs/metrics.md): real requests, then a scrape parsed with prometheus_client's own
text parser; who may read it (everyone else gets the 404 of a missing path); bounded labels; and the counts of
`acar serve --workers 2` summed across its worker processes."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from collections.abc import AsyncIterator, Iterator, Mapping
from pathlib import Path

import httpx
import pytest
from fastapi import FastAPI
from prometheus_client.parser import text_string_to_metric_families

from api.app import create_app
from api.deps import Services
from api.metrics import instruments
from api.settings import Settings
from storage.audit import record_event
from tests.functional.helpers import ACAR, run_acar
from tests.local_http import free_port
from tests.oidc_tools import ISSUER, asgi_browser, refresh, register_client, register_person, tokens_for

TOKEN = "metrics-token-" + "x" * 40
Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def samples(text: str) -> Samples:
    """Every sample of an exposition, by name and sorted labels."""
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def value(found: Samples, name: str, **labels: str) -> float:
    return found.get((name, tuple(sorted(labels.items()))), 0.0)


@pytest.fixture
def settings(settings: Settings, tmp_path: Path) -> Settings:
    token_file = tmp_path / "metrics.token"
    token_file.write_text(TOKEN + "\n")
    return settings.model_copy(update={"metrics_token_file": token_file, "rate_limit_admin": "2/minute",
                                       "dev_login": True})


@pytest.fixture
async def metrics_app(initialized: Services, settings: Settings) -> AsyncIterator[FastAPI]:
    initialized.settings = settings
    application = create_app(services=initialized)
    async with application.router.lifespan_context(application):
        yield application


@pytest.fixture
async def http(metrics_app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    async with asgi_browser(metrics_app) as c:
        yield c


async def scrape(http: httpx.AsyncClient) -> Samples:
    r = await http.get("/metrics")
    assert r.status_code == 200, r.text
    assert r.headers["content-type"].startswith("text/plain; version=")
    return samples(r.text)


async def test_requests_are_counted_by_route_template_and_unknown_paths_share_one_label(
        http: httpx.AsyncClient) -> None:
    before = await scrape(http)
    for _ in range(3):
        assert (await http.get("/healthz")).status_code == 200
    for path in ("/no/such/path", "/another-unknown-1", "/another-unknown-2?x=1"):
        assert (await http.get(path)).status_code == 404
    assert (await http.get("/pki/ocsp/not-base64!")).status_code == 200  # a path parameter: its template counts
    after = await scrape(http)
    healthz = {"route": "/healthz", "method": "GET", "status": "2xx"}
    assert value(after, "acar_http_requests_total", **healthz) - value(before, "acar_http_requests_total",
                                                                        **healthz) == 3
    assert (value(after, "acar_http_request_duration_seconds_count", **healthz)
            - value(before, "acar_http_request_duration_seconds_count", **healthz)) == 3
    assert value(after, "acar_http_request_duration_seconds_bucket", **healthz, le="+Inf") == value(
        after, "acar_http_request_duration_seconds_count", **healthz)
    unmatched = {"route": "unmatched", "method": "GET", "status": "4xx"}
    assert value(after, "acar_http_requests_total", **unmatched) - value(before, "acar_http_requests_total",
                                                                          **unmatched) == 3
    ocsp = {"route": "/pki/ocsp/{encoded}", "method": "GET", "status": "2xx"}  # the template, converters left out
    assert value(after, "acar_http_requests_total", **ocsp) - value(before, "acar_http_requests_total", **ocsp) == 1
    routes = {dict(labels).get("route") for name, labels in after if name.startswith("acar_http_")}
    assert not [r for r in routes if r and ("unknown" in r or "no/such" in r or "not-base64" in r)], routes


async def test_the_plain_routes_and_the_static_files_are_counted_by_their_template(
        initialized: Services, http: httpx.AsyncClient) -> None:
    """The login and token endpoints are plain Starlette routes at the head of the table (api.routing.PlainRoute)
    and the static files a mount: each is counted under its own template, not as "unmatched"."""
    before = await scrape(http)
    assert (await http.post("/token", data={"grant_type": "client_credentials"})).status_code == 401
    assert (await http.post("/webauthn/login/options", json={})).status_code in (400, 404)
    assert (await http.get("/static/webauthn.js")).status_code == 200
    after = await scrape(http)
    for labels in ({"route": "/token", "method": "POST", "status": "4xx"},
                   {"route": "/webauthn/login/options", "method": "POST", "status": "4xx"},
                   {"route": "/static/{path}", "method": "GET", "status": "2xx"}):
        assert value(after, "acar_http_requests_total", **labels) - value(
            before, "acar_http_requests_total", **labels) == 1, labels


async def test_an_invented_method_is_one_label(http: httpx.AsyncClient) -> None:
    before = await scrape(http)
    for method in ("BREW", "PROPFIND", "X-ANYTHING"):
        await http.request(method, "/healthz")
    after = await scrape(http)
    methods = {dict(labels).get("method") for name, labels in after if name == "acar_http_requests_total"}
    assert methods <= {*instruments.METHODS, "other"}, methods
    other = sum(v for (name, labels), v in after.items()
                if name == "acar_http_requests_total" and dict(labels)["method"] == "other")
    other_before = sum(v for (name, labels), v in before.items()
                       if name == "acar_http_requests_total" and dict(labels)["method"] == "other")
    assert other - other_before == 3


async def test_tokens_by_grant_and_refusals_by_limit(initialized: Services, http: httpx.AsyncClient) -> None:
    rp = await register_client(initialized)
    api = await register_client(initialized, name="API", redirect_uris=(), grant_types=("client_credentials",),
                                scopes=("api:read",))
    await register_person(initialized)
    before = await scrape(http)
    tokens = await tokens_for(http, rp)
    assert (await refresh(http, rp, tokens["refresh_token"])).status_code == 200
    for _ in range(2):
        r = await http.post("/token", data={"grant_type": "client_credentials"}, auth=(api.client_id, api.secret or ""))
        assert r.status_code == 200, r.text
    r = await http.post("/token", data={"grant_type": "urn:invented"}, auth=(api.client_id, api.secret or ""))
    assert r.status_code == 400
    for _ in range(3):
        last = await http.get("/admin/clients", headers={"Authorization": "Bearer nonsense"})
    assert last.status_code == 429
    after = await scrape(http)

    def delta(name: str, **labels: str) -> float:
        return value(after, name, **labels) - value(before, name, **labels)

    assert delta("acar_tokens_issued_total", grant_type="authorization_code") == 1
    assert delta("acar_tokens_issued_total", grant_type="refresh_token") == 1
    assert delta("acar_tokens_issued_total", grant_type="client_credentials") == 2
    assert {dict(labels)["grant_type"] for name, labels in after if name == "acar_tokens_issued_total"} <= {
        "authorization_code", "refresh_token", "client_credentials", "other"}
    assert delta("acar_rate_limit_refusals_total", limit="admin") == 1
    # the development login is not a login method of the service: not counted
    assert not [labels for name, labels in after if name == "acar_logins_total" and "dev" in str(labels)]


async def test_audited_outcomes_are_counted_with_bounded_labels(initialized: Services,
                                                                http: httpx.AsyncClient) -> None:
    """Logins, signatures and validations counted where the audit trail records them (storage.audit): the events
    as idp/ and signing/ write them, through a sink of the kind each uses."""
    before = await scrape(http)
    async with initialized.sessions() as session, session.begin():
        for event, detail in (
                ("webauthn.login", {"level": "high", "amr": ["hwk"]}),
                ("webauthn.login_failed", {"code": "unknown_credential"}),
                ("login.card.succeeded", {"method": "idcard-webeid"}),
                ("login.card.refused", {"method": "idcard-tls", "code": "revoked"}),
                ("login.card.refused", {"method": "a client's invention", "code": "x"}),
                ("signing.document.signed", {"level": "B-LT", "n": 1}),
                ("signing.document.signed", {"level": "B-LTA", "n": 2}),
                ("signing.request.failed", {"code": "signing_failed"}),
                ("validation.performed", {"indications": {"TOTAL-PASSED": 2, "TOTAL-FAILED": 0,
                                                          "INDETERMINATE": 1}})):
            record_event(session, event, actor="test", detail=detail)
    after = await scrape(http)

    def delta(name: str, **labels: str) -> float:
        return value(after, name, **labels) - value(before, name, **labels)

    assert delta("acar_logins_total", method="passkey", result="success") == 1
    assert delta("acar_logins_total", method="passkey", result="failure") == 1
    assert delta("acar_logins_total", method="webeid", result="success") == 1
    assert delta("acar_logins_total", method="idcard_tls", result="failure") == 1
    assert delta("acar_logins_total", method="other", result="failure") == 1
    assert delta("acar_signatures_total", level="B-LT", result="signed") == 1
    assert delta("acar_signatures_total", level="B-LTA", result="signed") == 1
    assert delta("acar_signatures_total", level="unknown", result="failed") == 1
    assert delta("acar_validations_total") == 1
    assert delta("acar_validated_signatures_total", indication="TOTAL-PASSED") == 2
    assert delta("acar_validated_signatures_total", indication="INDETERMINATE") == 1


async def test_ocsp_answers_are_timed_and_the_queue_is_read_from_the_database(http: httpx.AsyncClient) -> None:
    before = await scrape(http)
    r = await http.post("/pki/ocsp", content=b"not an OCSP request",
                        headers={"Content-Type": "application/ocsp-request"})
    assert r.status_code == 200
    after = await scrape(http)

    def answered(found: Samples) -> dict[str, float]:
        return {dict(labels)["status"]: v for (name, labels), v in found.items()
                if name == "acar_ocsp_response_seconds_count"}

    # no CA in this test's world: the responder answers unauthorized (RFC 6960 section 2.3)
    assert answered(after).get("unauthorized", 0) - answered(before).get("unauthorized", 0) == 1
    assert sum(answered(after).values()) - sum(answered(before).values()) == 1
    assert value(after, "acar_signing_jobs", state="queued") == 0
    assert value(after, "acar_signing_jobs", state="running") == 0
    assert ("acar_signing_queue_oldest_age_seconds", ()) in after


# --- who may read it --------------------------------------------------------------------------------------------

async def test_others_get_the_404_of_a_missing_path(metrics_app: FastAPI) -> None:
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=metrics_app, client=("203.0.113.7", 40000)),
                                 base_url=ISSUER) as outsider:
        missing = await outsider.get("/no-such-path")
        refused = await outsider.get("/metrics")
        assert refused.status_code == 404 == missing.status_code
        assert refused.headers["content-type"] == missing.headers["content-type"]
        ignored = {"instance": None, "request_id": None}
        assert refused.json() | ignored == missing.json() | ignored
        for method in ("POST", "DELETE", "OPTIONS"):
            assert (await outsider.request(method, "/metrics")).status_code == 404
        assert (await outsider.get("/metrics", headers={"Authorization": "Bearer wrong-" + TOKEN})).status_code == 404
        assert (await outsider.get("/metrics", headers={"Authorization": f"Basic {TOKEN}"})).status_code == 404
        r = await outsider.get("/metrics", headers={"Authorization": f"Bearer {TOKEN}"})
        assert r.status_code == 200 and "acar_http_requests_total" in r.text
        page = await outsider.get("/metrics", headers={"Accept": "text/html"})
        assert page.status_code == 404 and page.headers["content-type"].startswith("text/html")


async def test_a_request_through_a_proxy_is_not_local(http: httpx.AsyncClient) -> None:
    """Behind a reverse proxy on the same machine every outside request comes from loopback."""
    assert (await http.get("/metrics")).status_code == 200
    for header in ("X-Forwarded-For", "Forwarded", "X-Real-IP"):
        assert (await http.get("/metrics", headers={header: "198.51.100.1"})).status_code == 404, header
    r = await http.get("/metrics", headers={"X-Forwarded-For": "198.51.100.1", "Authorization": f"Bearer {TOKEN}"})
    assert r.status_code == 200


async def test_trusted_proxies_and_an_empty_network_list_refuse_the_address(initialized: Services,
                                                                            settings: Settings) -> None:
    for update in ({"trusted_proxies": ["127.0.0.0/8"]}, {"metrics_allowed_networks": []}):
        initialized.settings = settings.model_copy(update={**update, "metrics_token_file": None})
        application = create_app(services=initialized)
        async with application.router.lifespan_context(application), asgi_browser(application) as local:
            assert (await local.get("/metrics")).status_code == 404, update
            assert (await local.get("/healthz")).status_code == 200


@pytest.mark.one_pass("postgresql")  # processes sharing a metrics directory, not the database: tests/conftest.py
def test_the_token_file_is_checked_at_start(cli_env: dict[str, str], tmp_path: Path) -> None:
    short = tmp_path / "short.token"
    short.write_text("too-short")
    proc = run_acar(cli_env | {"ACAR_METRICS_TOKEN_FILE": str(short)}, "serve", "--port", str(free_port()),
                    check=False)
    assert proc.returncode != 0 and "ACAR_METRICS_TOKEN_FILE" in proc.stderr, proc.stderr


async def test_metrics_is_not_in_the_openapi_document(http: httpx.AsyncClient) -> None:
    r = await http.get("/openapi.json")
    assert r.status_code == 200 and "/metrics" not in r.json()["paths"]


# --- several processes ---------------------------------------------------------------------------------------


class Serve:
    """`acar serve --workers N` in its own process group."""

    def __init__(self, env: Mapping[str, str], workers: int, log: Path) -> None:
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.log = log
        with open(log, "wb") as out:
            self.proc = subprocess.Popen([ACAR, "serve", "--port", str(self.port), "--workers", str(workers)],
                                         env=dict(env), stdout=out, stderr=out, start_new_session=True)

    def wait_ready(self) -> None:
        deadline = time.monotonic() + 240  # a loaded CI machine: not a timing assertion
        while time.monotonic() < deadline:
            assert self.proc.poll() is None, self.log.read_text()[-3000:]
            try:
                if httpx.get(self.base + "/readyz", timeout=2).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        raise AssertionError(f"not ready: {self.log.read_text()[-3000:]}")

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
        return self.proc.returncode


@pytest.fixture
def serve_two(cli_env: dict[str, str], tmp_path: Path) -> Iterator[Serve]:
    run_acar(cli_env, "init")
    server = Serve(cli_env, 2, tmp_path / "serve.log")
    try:
        server.wait_ready()
        yield server
    finally:
        assert server.stop() == 0, server.log.read_text()[-3000:]


def _scraped(server: Serve) -> Samples:
    with httpx.Client(base_url=server.base, headers={"Connection": "close"}) as fresh:
        r = fresh.get("/metrics")
    assert r.status_code == 200, r.text
    return samples(r.text)


@pytest.mark.one_pass("postgresql")  # processes sharing a metrics directory, not the database: tests/conftest.py
def test_two_workers_count_together(serve_two: Serve, cli_env: dict[str, str], tmp_path: Path) -> None:
    metrics_dir = Path(cli_env["ACAR_DATA_DIR"]) / "metrics"
    [instance] = [d for d in metrics_dir.iterdir() if d.is_dir()]
    assert instance.name.startswith("serve-")
    requests = 0
    deadline = time.monotonic() + 240  # until both workers answered (the second may still be starting)
    while True:
        for _ in range(10):  # a new connection each: the kernel hands them to whichever worker accepts first
            with httpx.Client(base_url=serve_two.base, headers={"Connection": "close"}) as fresh:
                assert fresh.get("/healthz").status_code == 200
            requests += 1
        pids = {name.split("_")[-1] for name in os.listdir(instance) if name.startswith("histogram_")}
        if len(pids) == 2 or time.monotonic() > deadline:
            break
    assert len(pids) == 2, pids  # both workers answered, each writing its own file
    healthz = {"route": "/healthz", "method": "GET", "status": "2xx"}
    deadline = time.monotonic() + 10
    while True:  # every worker adds its tally within a second (api.metrics.instruments.FLUSH_SECONDS)
        seen = [value(_scraped(serve_two), "acar_http_requests_total", **healthz) for _ in range(4)]
        if seen == [requests] * 4 or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    assert seen == [requests] * 4  # whichever worker answers the scrape, it reports both workers' counts


@pytest.mark.one_pass("postgresql")  # processes sharing a metrics directory, not the database: tests/conftest.py
def test_a_previous_runs_directory_is_removed_and_a_live_ones_kept(cli_env: dict[str, str], tmp_path: Path) -> None:
    metrics_dir = Path(cli_env["ACAR_DATA_DIR"]) / "metrics"
    stale = metrics_dir / "serve-stale"
    stale.mkdir(parents=True)
    (stale / ".lock").touch()
    (stale / "counter_1.db").write_bytes(b"\0" * 8)
    run_acar(cli_env, "init")
    first = Serve(cli_env, 2, tmp_path / "first.log")
    try:
        first.wait_ready()
        assert not stale.exists()
        [live] = [d for d in metrics_dir.iterdir() if d.is_dir()]
        worker_log = tmp_path / "worker.log"
        with open(worker_log, "wb") as out:
            worker = subprocess.Popen([ACAR, "worker", "--interval", "0.2"], env=cli_env, stdout=out, stderr=out,
                                      start_new_session=True)
        try:
            deadline = time.monotonic() + 240
            while '"started": true' not in worker_log.read_text():  # its signal handlers are set from here
                assert worker.poll() is None and time.monotonic() < deadline, worker_log.read_text()
                time.sleep(0.1)
            assert len([d for d in metrics_dir.iterdir() if d.is_dir()]) == 2
            assert live.exists()  # the worker's start swept nothing that a live process holds
        finally:
            worker.send_signal(signal.SIGTERM)
            assert worker.wait(timeout=30) == 0, worker_log.read_text()
        assert _scraped(first)  # a dead sibling's directory is skipped, not read
    finally:
        assert first.stop() == 0


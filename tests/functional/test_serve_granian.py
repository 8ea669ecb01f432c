"""`acar serve --server granian` (issue 17) beside the default uvicorn, as real processes: the same answers, the same
edge rules where granian has them (api.server.serve_granian), and a clear refusal where it has not
(api.server.granian_refusal). The checks that apply to both servers run on both."""

from __future__ import annotations

import base64
import contextlib
import datetime as dt
import os
import signal
import socket
import ssl
import time
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from tests.functional.helpers import InProcessAcar, Server
from tests.local_http import free_port

pytestmark = pytest.mark.one_pass("sqlite")  # the server process, not the database: tests/conftest.py

BOTH = pytest.mark.parametrize("server", ["uvicorn", "granian"])
TOKEN_FORM = {"grant_type": "client_credentials", "scope": "api"}


@pytest.fixture
def client(acar: InProcessAcar) -> tuple[str, str]:
    """A client_credentials client on an initialized data dir: (client_id, secret)."""
    acar("init")
    made = acar.json("client", "add", "--name", "Tax system", "--grant-type", "client_credentials", "--scope", "api")
    return made["client_id"], made["client_secret"]


@contextmanager
def _serving(env: dict[str, str], tmp_path: Path, server: str, *args: str, **settings: str) -> Iterator[Server]:
    """A ready `acar serve` under `server` with the ACAR_* `settings`, stopped (SIGTERM) afterwards."""
    process = Server({**env, "ACAR_SERVER": server, **settings}, log_path=tmp_path / f"{server}.log", args=args)
    try:
        process.wait_ready(timeout=90)
        yield process
    finally:
        process.stop()


def _connect(port: int) -> socket.socket:
    return socket.create_connection(("127.0.0.1", port), timeout=10)


def _head(sock: socket.socket) -> bytes:
    """The status line and header fields of one response (the body is left unread)."""
    data = b""
    while b"\r\n\r\n" not in data:
        more = sock.recv(65536)
        assert more, f"closed before a response: {data!r}"
        data += more
    return data.partition(b"\r\n\r\n")[0]


def _response(sock: socket.socket) -> tuple[int, bytes]:
    """One whole response with a Content-Length body: its status and body."""
    data = b""
    while b"\r\n\r\n" not in data:
        more = sock.recv(65536)
        assert more, f"closed before a response: {data!r}"
        data += more
    head, _, body = data.partition(b"\r\n\r\n")
    fields = head.lower().split(b"\r\n")
    length = next(int(line.split(b":")[1]) for line in fields if line.startswith(b"content-length:"))
    while len(body) < length:
        more = sock.recv(65536)
        assert more
        body += more
    return int(head.split(b" ")[1]), body


def _closed_within(sock: socket.socket, seconds: float) -> bytes | None:
    """What the server sent before closing the connection within `seconds`; None if it is still open then."""
    sock.settimeout(0.25)
    data = b""
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        try:
            more = sock.recv(65536)
        except TimeoutError:
            continue
        except (ConnectionResetError, BrokenPipeError):
            return data
        if not more:
            return data
        data += more
    return None


@BOTH
def test_discovery_tokens_and_pages(client: tuple[str, str], cli_env: dict[str, str], tmp_path: Path,
                                    server: str) -> None:
    with _serving(cli_env, tmp_path, server) as serving:
        discovery = httpx.get(serving.base + "/.well-known/openid-configuration").json()
        assert discovery["token_endpoint"].endswith("/token")
        assert httpx.get(serving.base + "/jwks.json").json()["keys"]
        r = httpx.post(serving.base + "/token", data=TOKEN_FORM, auth=client)
        assert r.status_code == 200, r.text
        assert r.json()["token_type"] == "Bearer" and r.headers["cache-control"] == "no-store"
        wrong = httpx.post(serving.base + "/token", data=TOKEN_FORM, auth=(client[0], "wrong"))
        assert wrong.status_code == 401 and wrong.json()["error"] == "invalid_client"
        page = httpx.get(serving.base + "/help", headers={"Accept-Language": "en"})
        assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
        assert httpx.get(serving.base + "/token").status_code == 405
        assert httpx.get(serving.base + "/no-such-page").status_code == 404


def test_granian_runs_the_lifespan_in_each_worker(client: tuple[str, str], cli_env: dict[str, str],
                                                  tmp_path: Path) -> None:
    with _serving(cli_env, tmp_path, "granian", "--workers", "2") as serving, httpx.Client() as http:
        for _ in range(20):  # new connections, landing on either worker
            assert http.post(serving.base + "/token", data=TOKEN_FORM, auth=client,
                             headers={"Connection": "close"}).status_code == 200
    log = (tmp_path / "granian.log").read_text()
    started = [line for line in log.splitlines() if '"service.started"' in line]
    assert len(started) == 2, log[-3000:]  # logged by the lifespan's startup
    assert serving.proc.returncode == 0


@BOTH
def test_sigterm_lets_the_request_in_progress_finish(client: tuple[str, str], cli_env: dict[str, str], tmp_path: Path,
                                                     server: str) -> None:
    """Graceful shutdown: after SIGTERM no new connection is accepted, a request whose body is still arriving is
    answered, then the process exits 0."""
    with _serving(cli_env, tmp_path, server) as serving:
        body = b"grant_type=client_credentials&scope=api"
        basic = "Basic " + base64.b64encode(f"{client[0]}:{client[1]}".encode()).decode()
        sock = _connect(serving.port)
        sock.sendall(b"POST /token HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/x-www-form-urlencoded\r\n"
                     b"Authorization: " + basic.encode() + b"\r\nContent-Length: %d\r\n\r\n" % len(body) + body[:9])
        time.sleep(0.5)  # the head is read and the endpoint waits for the body
        serving.proc.send_signal(signal.SIGTERM)
        for _ in range(100):  # the listener closes
            try:
                with _connect(serving.port):
                    pass
            except ConnectionRefusedError:
                break
            time.sleep(0.1)
        else:
            raise AssertionError("still accepting connections after SIGTERM")
        sock.sendall(body[9:])
        status, answer = _response(sock)
        sock.close()
        assert status == 200, answer
        assert b"access_token" in answer
        # uvicorn ends by raising the signal it handled again (its exit status says SIGTERM), granian exits 0
        assert serving.proc.wait(timeout=30) in (0, -signal.SIGTERM), serving.log()


@BOTH
def test_a_slow_head_is_cut_at_the_header_deadline(client: tuple[str, str], cli_env: dict[str, str], tmp_path: Path,
                                                   server: str) -> None:
    """Slowloris: a connection that sends nothing, and one that trickles a head a byte at a time, are closed at the
    header deadline (uvicorn answers the begun one 408; granian closes it without an answer)."""
    with _serving(cli_env, tmp_path, server, ACAR_HEADER_TIMEOUT_SECONDS="2", ACAR_KEEP_ALIVE_SECONDS="2") as serving:
        silent, trickling = _connect(serving.port), _connect(serving.port)
        trickle = iter(b"POST /token HTTP/1.1\r\nHost: 127.0.0.1\r\n" * 20)
        trickling.settimeout(0.25)
        answer: bytes | None = None
        end = time.monotonic() + 10
        while answer is None and time.monotonic() < end:
            try:
                trickling.send(bytes([next(trickle)]))
                answer = trickling.recv(4096) or b""
            except TimeoutError:
                continue
            except (BrokenPipeError, ConnectionResetError):
                answer = b""
        assert answer is not None, "the trickling connection is still open"
        if server == "uvicorn":
            assert answer.startswith(b"HTTP/1.1 408 Request Timeout\r\n"), answer
        else:
            assert answer == b"" or answer.startswith(b"HTTP/1.1 408"), answer
        assert _closed_within(silent, 5) == b""
        silent.close()
        trickling.close()
        # the server is unharmed
        assert httpx.post(serving.base + "/token", data=TOKEN_FORM, auth=client).status_code == 200


@BOTH
def test_keep_alive_and_the_idle_timeout(client: tuple[str, str], cli_env: dict[str, str], tmp_path: Path,
                                         server: str) -> None:
    """HTTP/1.1 persistent connections (RFC 9112 section 9.3): several requests on one connection, and an idle one
    closed after ACAR_KEEP_ALIVE_SECONDS."""
    with _serving(cli_env, tmp_path, server, ACAR_KEEP_ALIVE_SECONDS="1", ACAR_HEADER_TIMEOUT_SECONDS="5") as serving:
        sock = _connect(serving.port)
        for _ in range(3):
            sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
            status, body = _response(sock)
            assert status == 200 and body == b'{"status":"ok"}'
        assert _closed_within(sock, 6) == b"", "the idle connection is still open"
        sock.close()


@BOTH
def test_the_head_size_is_capped(cli_env: dict[str, str], acar: InProcessAcar, tmp_path: Path, server: str) -> None:
    """A head of a few KiB is served; one far past MAX_HEAD_BYTES (32 KiB) is answered 431 (RFC 6585 section 5)
    and the connection closed."""
    acar("init")
    with _serving(cli_env, tmp_path, server) as serving:
        sock = _connect(serving.port)
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Filler: " + b"a" * 16_000 + b"\r\n\r\n")
        assert _response(sock)[0] == 200
        sock.close()
        sock = _connect(serving.port)
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):  # refused while it is still being sent
            sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n" + b"X-Filler: " + b"a" * 200_000 + b"\r\n\r\n")
        assert _head(sock).startswith(b"HTTP/1.1 431 "), server
        assert _closed_within(sock, 5) is not None
        sock.close()
        assert httpx.get(serving.base + "/healthz").status_code == 200


@BOTH
def test_forwarded_headers_are_the_applications_business(cli_env: dict[str, str], acar: InProcessAcar,
                                                         tmp_path: Path, server: str) -> None:
    """Neither server reads X-Forwarded-For itself: from a peer outside ACAR_TRUSTED_PROXIES it changes nothing
    (the per-address budget of failed client authentications is the peer's), from a trusted proxy it names the
    client (another address, another budget)."""
    acar("init")
    form = {"grant_type": "client_credentials"}

    def failures(base: str, forwarded_for: str, n: int) -> list[int]:
        return [httpx.post(base + "/token", data={**form, "client_id": f"guess-{forwarded_for}-{i}",
                                                  "client_secret": "x"},
                           headers={"X-Forwarded-For": forwarded_for}).status_code for i in range(n)]

    budget = {"ACAR_RATE_LIMIT_CLIENT_AUTH_FAILURES": "3/minute"}
    with _serving(cli_env, tmp_path, server, **budget) as serving:
        assert failures(serving.base, "198.51.100.1", 3) == [401] * 3
        assert failures(serving.base, "198.51.100.2", 1) == [429]  # the same peer: the header was ignored
    with _serving(cli_env, tmp_path, server, **budget, ACAR_TRUSTED_PROXIES='["127.0.0.1/32"]') as serving:
        assert failures(serving.base, "198.51.100.3", 3) == [401] * 3
        assert failures(serving.base, "198.51.100.4", 1) == [401]  # another client behind the proxy
        assert failures(serving.base, "198.51.100.3", 1) == [429]


def _self_signed(directory: Path) -> tuple[Path, Path]:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = dt.datetime.now(dt.UTC)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now - dt.timedelta(minutes=5))
            .not_valid_after(now + dt.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName([x509.DNSName("localhost")]), critical=False)
            .sign(key, hashes.SHA256()))
    cert_file, key_file = directory / "cert.pem", directory / "key.pem"
    cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return cert_file, key_file


def test_granian_speaks_tls_12_and_13_only(client: tuple[str, str], cli_env: dict[str, str], tmp_path: Path) -> None:
    cert, key = _self_signed(tmp_path)
    port = free_port()
    tls = {"ACAR_TLS_CERT_FILE": str(cert), "ACAR_TLS_KEY_FILE": str(key), "ACAR_ISSUER": f"https://127.0.0.1:{port}"}
    process = Server({**cli_env, **tls, "ACAR_SERVER": "granian"}, port=port, log_path=tmp_path / "tls.log",
                     scheme="https")
    try:
        process.wait_ready(timeout=90)
        for version in (ssl.TLSVersion.TLSv1_2, ssl.TLSVersion.TLSv1_3):
            context = ssl.create_default_context(cafile=str(cert))
            context.check_hostname = False
            context.minimum_version = context.maximum_version = version
            with httpx.Client(verify=context) as http:
                r = http.post(process.base + "/token", data=TOKEN_FORM, auth=client)
                assert r.status_code == 200, r.text
        old = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        old.check_hostname, old.verify_mode = False, ssl.CERT_NONE
        old.minimum_version = ssl.TLSVersion.MINIMUM_SUPPORTED
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)  # the point: a version the server must refuse
            old.maximum_version = ssl.TLSVersion.TLSv1_1
        with pytest.raises(ssl.SSLError), _connect(port) as raw, old.wrap_socket(raw):
            pass
        # plain HTTP on the TLS port gets no HTTP answer, and a stalled handshake is cut
        with _connect(port) as raw:
            raw.sendall(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
            assert not (_closed_within(raw, 15) or b"").startswith(b"HTTP/")
        with _connect(port) as raw:
            assert _closed_within(raw, 20) == b""
    finally:
        process.stop()


def test_granian_refuses_what_it_cannot_serve(acar: InProcessAcar, tmp_path: Path) -> None:
    """Combinations granian cannot serve without weakening an edge rule stop the start with one line naming them."""
    cert, key = _self_signed(tmp_path)
    acar("init")
    port = str(free_port())
    tls = {**acar.env, "ACAR_TLS_CERT_FILE": str(cert), "ACAR_TLS_KEY_FILE": str(key)}
    refused = acar("serve", "--port", port, "--server", "granian", check=False,
                   env={**tls, "ACAR_MTLS_PORT": str(free_port())})
    assert refused.returncode == 1
    assert "ACAR_MTLS_PORT needs --server uvicorn" in refused.stderr and len(refused.stderr.strip().splitlines()) == 1
    refused = acar("serve", "--port", port, check=False,
                   env={**tls, "ACAR_SERVER": "granian", "ACAR_HEADER_TIMEOUT_SECONDS": "5"})
    assert refused.returncode == 1
    assert "ACAR_HEADER_TIMEOUT_SECONDS below 10 needs --server uvicorn" in refused.stderr
    refused = acar("serve", "--port", port, check=False, env={**acar.env, "ACAR_SERVER": "hypercorn"})
    assert refused.returncode != 0 and "ACAR_SERVER" in refused.stderr
    refused = acar("serve", "--port", port, "--server", "hypercorn", check=False)
    assert refused.returncode != 0 and "--server" in refused.stderr
    # a port in use is named, as with uvicorn
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        busy = str(taken.getsockname()[1])
        refused = acar("serve", "--port", busy, "--server", "granian", check=False)
    assert refused.returncode == 1 and f"cannot listen on 127.0.0.1 port {busy}" in refused.stderr
    assert os.environ.get("ACAR_SERVER") is None  # nothing leaked into this process

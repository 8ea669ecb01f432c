"""`acar serve`: uvicorn with the connection limits of the settings (abuse resistance at the edge), terminating TLS
itself when asked, with a second listener for ID-card login by TLS client certificate. `acar serve --server
granian` (ACAR_SERVER) runs granian instead, with the rules below that granian has (serve_granian) and a refusal
for those it has not (granian_refusal).

Every security decision about connections, in one place:

- Header deadline (ACAR_HEADER_TIMEOUT_SECONDS): a request's head (request line and header fields, RFC 9112
  section 2.1) must arrive whole within this time of the connection opening or, on a kept-alive connection, of
  its first byte. A deadline, not an idle timer: trickling a byte at a time does not extend it (slowloris).
  Past it the connection is closed; with 408 Request Timeout and "Connection: close" when part of a request had
  come (RFC 9110 section 15.5.9), silently when nothing had. uvicorn has no such timeout, hence the protocol here.
- Head size (MAX_HEAD_BYTES): httptools buffers header fields without bound, so a head still incomplete past
  this size is answered 431 Request Header Fields Too Large (RFC 6585 section 5) and the connection closed.
- Keep-alive (ACAR_KEEP_ALIVE_SECONDS): an idle connection between requests is closed (RFC 9112 section 9.3;
  uvicorn's timeout_keep_alive).
- Concurrency (ACAR_MAX_CONNECTIONS): above this many open connections or requests in progress per process,
  uvicorn answers 503 (its limit_concurrency); the header deadline bounds how long a slow client holds a slot.
- Bodies are capped by api.middleware.BodyLimitMiddleware (ACAR_MAX_BODY_BYTES), inside the application.

TLS (ACAR_TLS_CERT_FILE, ACAR_TLS_KEY_FILE; `tls_context`):

- TLS 1.2 and 1.3 only (RFC 8996 deprecates 1.0 and 1.1; RFC 9325 section 3.1.1); for TLS 1.2 only ECDHE key
  exchange with AEAD ciphers (RFC 9325 section 4.2: forward secrecy, no CBC); TLS 1.3's suites are all AEAD.
  No TLS compression (CRIME, RFC 9325 section 3.3), no renegotiation, the server's cipher order. ALPN http/1.1.
- The main listener never asks for a client certificate: a browser holding an ID card would otherwise prompt on
  every page of the issuer.
- Handshake deadline: a TLS handshake must finish within ACAR_HEADER_TIMEOUT_SECONDS on the main listener (the
  header deadline starts only once it has: a connection counts against ACAR_MAX_CONNECTIONS from then on, so
  a stalled handshake is bounded by this alone), and within MTLS_HANDSHAKE_SECONDS on the mTLS listener, where the
  handshake waits for the citizen to choose the card's certificate and type its PIN.

The mTLS listener (ACAR_MTLS_PORT; ID-card login, POST /idcard/tls/{pending_id} posted to ACAR_MTLS_PUBLIC_URL):

- Same process, same application instance and lifespan as the main listener (one more socket of the same uvicorn
  server, in every worker with --workers), the same certificate and key.
- It REQUESTS a client certificate without requiring one (ssl.CERT_OPTIONAL, RFC 8446 section 4.3.2 / RFC 5246
  section 7.4.4): a visitor without a card still gets the page that explains the refusal.
- OpenSSL verifies a presented certificate during the handshake against the verify locations: the ID-card trust
  anchors and intermediates (ACAR_IDCARD_TRUST_ANCHORS, ACAR_IDCARD_INTERMEDIATES; in development with none
  configured, the built-in CA's root once `acar init` created it). An expired card, or one of an unknown CA, fails
  the handshake (the browser shows its own TLS error page; the application never sees it). Python's ssl module
  does not set the CertificateRequest's certificate_authorities list, so browsers offer every client certificate
  they hold; the handshake then refuses a wrong one. OpenSSL's default chain rule holds (no partial chains): a
  path must end at a self-signed anchor, so ACAR_IDCARD_TRUST_ANCHORS must name the national root, not only an
  issuing CA.
- The handshake proves possession of the key (CertificateVerify) and a path to a configured anchor, nothing more:
  OpenSSL checks no revocation (no CRL flags, no OCSP), no certificate policy, and for a client certificate
  accepts a keyUsage of keyAgreement alone (its "SSL client" purpose). The application therefore re-checks every
  certificate it is handed (idp.core.certificates.CertificateVerifier: path, validity, keyUsage digitalSignature,
  EKU clientAuth, policies, OCSP/CRL) exactly as a Web eID token's.
- Resumption: the mTLS listener issues no TLS 1.3 session tickets (num_tickets = 0, OP_NO_TICKET), so every
  TLS 1.3 login runs a full handshake with the card; a TLS 1.2 client may resume its own session (OpenSSL's
  server cache, 300 s), keeping the certificate it proved in that session.
- The certificate reaches the application as the ASGI TLS extension (asgiref "TLS Extension", spec version 0.2),
  filled by EdgeHttpProtocol for every request on a TLS connection and for no plain-HTTP one:
  scope["extensions"]["tls"] = {"client_cert_chain": [PEM of the peer's certificate] or [], "tls_version":
  0x0303 | 0x0304, "cipher_suite": the IANA TLS cipher suite number}. Python 3.11's ssl gives the peer's leaf
  certificate only (getpeercert), so the chain holds one certificate; the application finds intermediates itself.
- A forwarded-certificate header (behind nginx) is the application's business (api routes, ACAR_TRUSTED_PROXIES);
  nothing here reads headers.
"""

from __future__ import annotations

import asyncio
import json
import logging
import socket
import ssl
import sys
from asyncio.events import TimerHandle
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

import uvicorn
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol
from uvicorn.server import ServerState
from uvicorn.supervisors import Multiprocess
from uvicorn.supervisors.multiprocess import Process

from api.settings import Settings, SettingsError

if TYPE_CHECKING:
    from api.deps import CardLogins

logger = logging.getLogger("uvicorn.error")

MAX_HEAD_BYTES = 32 * 1024
"""Largest request head (request line and all header fields); browsers send a few KiB (nginx allows 32 KiB)."""
STARTUP_FAILURE = 3
"""uvicorn's exit code when the application failed to start."""

TLS12_CIPHERS: Final = ":".join((
    "ECDHE-ECDSA-AES128-GCM-SHA256", "ECDHE-RSA-AES128-GCM-SHA256",
    "ECDHE-ECDSA-AES256-GCM-SHA384", "ECDHE-RSA-AES256-GCM-SHA384",
    "ECDHE-ECDSA-CHACHA20-POLY1305", "ECDHE-RSA-CHACHA20-POLY1305",
))
"""TLS 1.2 cipher suites: ECDHE with AEAD only (RFC 9325 section 4.2). TLS 1.3 suites are OpenSSL's (all AEAD)."""
MTLS_HANDSHAKE_SECONDS: Final = 120.0
"""How long the mTLS listener's handshake may take: it includes the browser's certificate choice and the card's PIN
(asyncio's own default is 60 s)."""
TLS_VERSIONS: Final = {"TLSv1.2": 0x0303, "TLSv1.3": 0x0304}
"""The protocol versions served, as the ASGI TLS extension's tls_version (the wire value, RFC 8446 section 4.1.2)."""


def _cipher_suite_numbers() -> dict[str, int]:
    """OpenSSL cipher names -> IANA TLS cipher suite numbers (OpenSSL's id is 0x0300XXXX, XXXX the IANA value)."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.set_ciphers("ALL:@SECLEVEL=0")  # a lookup table only: no connection uses this context
    return {cipher["name"]: cipher["id"] & 0xFFFF for cipher in context.get_ciphers()}


CIPHER_SUITES: Final = _cipher_suite_numbers()


@dataclass(frozen=True, slots=True)
class TlsListeners:
    """What the workers need to build their TLS contexts (picklable: SSLContext is not, so each worker builds its
    own from this). `client_cas` are the DER certificates the mTLS listener verifies client certificates against."""

    cert_file: Path
    key_file: Path
    mtls_port: int | None = None
    client_cas: tuple[bytes, ...] = ()

    def contexts(self) -> list[ssl.SSLContext]:
        """The main listener's context, then the mTLS listener's when it is configured."""
        contexts = [tls_context(self.cert_file, self.key_file)]
        if self.mtls_port is not None:
            contexts.append(tls_context(self.cert_file, self.key_file, client_cas=self.client_cas))
        return contexts


def tls_context(cert_file: Path, key_file: Path, *, client_cas: Sequence[bytes] | None = None) -> ssl.SSLContext:
    """A server context (see the module docstring); with `client_cas`, one that requests an optional client
    certificate and verifies it against them. Raises SettingsError naming the settings when the files do not load."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.maximum_version = ssl.TLSVersion.TLSv1_3
    context.set_ciphers(TLS12_CIPHERS)
    context.options |= (ssl.OP_NO_COMPRESSION | ssl.OP_NO_RENEGOTIATION | ssl.OP_CIPHER_SERVER_PREFERENCE
                        | ssl.OP_SINGLE_ECDH_USE)
    context.set_alpn_protocols(["http/1.1"])
    try:
        context.load_cert_chain(cert_file, key_file)
    except (OSError, ssl.SSLError) as exc:
        raise SettingsError(f"ACAR_TLS_CERT_FILE ({cert_file}) and ACAR_TLS_KEY_FILE ({key_file}) must hold a PEM "
                            f"certificate chain and its private key: {exc}") from None
    if client_cas is None:
        context.verify_mode = ssl.CERT_NONE
        return context
    if not client_cas:
        raise SettingsError("ACAR_MTLS_PORT needs ID-card trust anchors (ACAR_IDCARD_TRUST_ANCHORS; in development "
                            "the built-in CA's root, created by `acar init`)")
    context.verify_mode = ssl.CERT_OPTIONAL
    context.verify_flags = ssl.VERIFY_X509_TRUSTED_FIRST  # no CRL flags: revocation is the application's check
    context.options |= ssl.OP_NO_TICKET
    context.num_tickets = 0  # no TLS 1.3 resumption: each login a full handshake with the card
    try:
        context.load_verify_locations(cadata="".join(ssl.DER_cert_to_PEM_cert(der) for der in client_cas))
    except ssl.SSLError as exc:
        raise SettingsError(f"ACAR_IDCARD_TRUST_ANCHORS / ACAR_IDCARD_INTERMEDIATES: a certificate OpenSSL cannot "
                            f"load: {exc}") from None
    return context


async def mtls_client_cas(settings: Settings, card: CardLogins) -> tuple[bytes, ...]:
    """The certificates the mTLS listener verifies client certificates against: the ID-card login's trust anchors
    and intermediates (api.deps.CardLogins.trust: ACAR_IDCARD_TRUST_ANCHORS and ACAR_IDCARD_INTERMEDIATES; in
    development with none configured, the built-in CA's root and issuing CA once they exist), the very ones the
    application validates against. Empty when ACAR_MTLS_PORT is unset."""
    if settings.mtls_port is None:
        return ()
    try:
        anchors, intermediates = await card.trust()
    except ValueError as exc:
        raise SettingsError(f"ACAR_IDCARD_TRUST_ANCHORS / ACAR_IDCARD_INTERMEDIATES: {exc}") from None
    return (*anchors, *intermediates)


def tls_listeners(settings: Settings, client_cas: Sequence[bytes] = ()) -> TlsListeners | None:
    """The TLS listeners of `settings` (None: plain HTTP), their contexts built once here so that a file that does
    not load, or an mTLS listener with nothing to verify cards against, stops the start naming the setting."""
    if settings.tls_cert_file is None or settings.tls_key_file is None:
        return None
    listeners = TlsListeners(settings.tls_cert_file, settings.tls_key_file, settings.mtls_port, tuple(client_cas))
    listeners.contexts()
    return listeners


class ServeConfig(uvicorn.Config):
    """uvicorn's configuration with the header deadline EdgeHttpProtocol reads and the TLS listeners EdgeServer
    builds (pickled to each worker)."""

    def __init__(self, app: str | Callable[..., Any], *, header_timeout: float, tls: TlsListeners | None = None,
                 **options: Any) -> None:
        super().__init__(app, **options)
        self.header_timeout = header_timeout
        self.tls = tls


def _refusal(status: int, phrase: str, code: str) -> bytes:
    """A whole RFC 9457 problem response that closes the connection, written before any ASGI request exists."""
    body = json.dumps({"type": f"urn:acar:problem:{code}", "title": phrase, "status": status}).encode()
    return (f"HTTP/1.1 {status} {phrase}\r\ncontent-type: application/problem+json\r\n"
            f"content-length: {len(body)}\r\nconnection: close\r\n\r\n").encode() + body


REQUEST_TIMEOUT = _refusal(408, "Request Timeout", "request_timeout")
HEAD_TOO_LARGE = _refusal(431, "Request Header Fields Too Large", "request_header_fields_too_large")


@dataclass(frozen=True, slots=True)
class ConnectionTls:
    """What the handshake of one TLS connection settled, read once when the connection is made."""

    client_cert_chain: tuple[str, ...]
    tls_version: int | None
    cipher_suite: int | None

    @classmethod
    def of(cls, transport: asyncio.BaseTransport) -> ConnectionTls | None:
        """The connection's TLS parameters, None on plain HTTP."""
        ssl_object = transport.get_extra_info("ssl_object")
        if not isinstance(ssl_object, ssl.SSLObject | ssl.SSLSocket):
            return None
        peer = ssl_object.getpeercert(binary_form=True)
        cipher = ssl_object.cipher()
        version = ssl_object.version()
        return cls(client_cert_chain=(ssl.DER_cert_to_PEM_cert(peer),) if peer else (),
                   tls_version=TLS_VERSIONS.get(version) if version else None,
                   cipher_suite=CIPHER_SUITES.get(cipher[0]) if cipher else None)

    def extension(self) -> dict[object, object]:
        """scope["extensions"]["tls"] (asgiref TLS Extension 0.2), a new dict for each request."""
        return {"client_cert_chain": list(self.client_cert_chain), "tls_version": self.tls_version,
                "cipher_suite": self.cipher_suite}


class EdgeHttpProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol with a deadline and a size limit for each request head, and the ASGI TLS
    extension on TLS connections (see the module)."""

    def __init__(self, config: uvicorn.Config, server_state: ServerState, app_state: dict[str, Any],
                 _loop: asyncio.AbstractEventLoop | None = None) -> None:
        super().__init__(config, server_state, app_state, _loop)
        if not isinstance(config, ServeConfig):
            raise TypeError("EdgeHttpProtocol needs a ServeConfig (its header deadline)")
        self.header_timeout = config.header_timeout
        self.requires_tls = config.tls is not None
        self.head_deadline: TimerHandle | None = None
        self.head_bytes = 0
        self.request_begun = False
        self.tls: ConnectionTls | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)  # type: ignore[arg-type]  # uvicorn narrows it to asyncio.Transport
        self.tls = ConnectionTls.of(transport)
        if self.tls is None and self.requires_tls:  # fail closed: TLS configured, never plain HTTP on its ports
            self.transport.close()
            return
        self._arm()

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if self.head_deadline is not None:  # bytes of an incomplete head (a head begun in this read is not counted)
            self.head_bytes += len(data)
        super().data_received(data)
        if self.head_deadline is not None and self.head_bytes > MAX_HEAD_BYTES and not self.transport.is_closing():
            self._refuse(HEAD_TOO_LARGE)

    def on_message_begin(self) -> None:
        super().on_message_begin()
        if self.tls is not None:  # plain-HTTP requests get no "tls" extension (the extension's rule)
            self.scope["extensions"] = {"tls": self.tls.extension()}
        self.request_begun = True
        if self.head_deadline is None:  # the next request on a kept-alive connection
            self._arm()

    def on_headers_complete(self) -> None:
        self._disarm()
        super().on_headers_complete()

    def _arm(self) -> None:
        self.head_bytes = 0
        self.head_deadline = self.loop.call_later(self.header_timeout, self._head_timed_out)

    def _disarm(self) -> None:
        self.request_begun = False
        if self.head_deadline is not None:
            self.head_deadline.cancel()
            self.head_deadline = None

    def _head_timed_out(self) -> None:
        self.head_deadline = None
        if self.transport.is_closing():
            return
        if self.cycle is not None and not self.cycle.response_complete:
            # a pipelined head waiting behind a request still being answered: another period, until that is done
            self.head_deadline = self.loop.call_later(self.header_timeout, self._head_timed_out)
            return
        if self.request_begun:
            self._refuse(REQUEST_TIMEOUT)
        else:
            self.transport.close()

    def _refuse(self, response: bytes) -> None:
        self._disarm()
        self.transport.write(response)
        self.transport.close()


class EdgeServer(uvicorn.Server):
    """uvicorn's server over the sockets `serve` bound, each with its own TLS context: the main listener's, then
    the mTLS listener's (uvicorn gives every socket the same one). One lifespan, one application for both."""

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        config = self.config
        if not isinstance(config, ServeConfig) or sockets is None:
            raise TypeError("EdgeServer serves the sockets of api.server.serve, with a ServeConfig")
        contexts: list[ssl.SSLContext | None] = [None] if config.tls is None else [*config.tls.contexts()]
        if len(contexts) != len(sockets):
            raise TypeError(f"{len(sockets)} sockets for {len(contexts)} listeners")
        await self.lifespan.startup()
        if self.lifespan.should_exit:
            sys.exit(STARTUP_FAILURE)

        def create_protocol(_loop: asyncio.AbstractEventLoop | None = None) -> asyncio.Protocol:
            return config.http_protocol_class(  # type: ignore[call-arg]  # uvicorn's protocols take these
                config=config, server_state=self.server_state, app_state=self.lifespan.state, _loop=_loop)

        loop = asyncio.get_running_loop()
        handshakes = [config.header_timeout, max(config.header_timeout, MTLS_HANDSHAKE_SECONDS)]
        self.servers = [
            await loop.create_server(create_protocol, sock=sock, ssl=context, backlog=config.backlog,
                                     ssl_handshake_timeout=handshake if context is not None else None)
            for sock, context, handshake in zip(sockets, contexts, handshakes[:len(sockets)], strict=True)]
        self.started = True


class EdgeProcess(Process):
    """A worker process running EdgeServer (uvicorn's Process runs its own Server)."""

    @property
    def server(self) -> uvicorn.Server:
        if self._server is None:
            self._server = EdgeServer(config=self.config)
        return self._server


class EdgeMultiprocess(Multiprocess):
    """uvicorn's supervisor (0.54) starting, replacing and restarting EdgeProcess workers: the same three methods
    with EdgeProcess for uvicorn's Process, so that no worker ever serves the sockets without their contexts.

    A worker that fails its start (STARTUP_FAILURE: its lifespan refused, e.g. a wrong master key) stops the
    supervisor, as in uvicorn, and `startup_failed` says so: `serve` then exits with STARTUP_FAILURE, not 0, so
    that a container runtime or a service manager sees the failure (uvicorn's own supervisor exits 0)."""

    startup_failed = False

    def init_processes(self) -> None:
        for _ in range(self.processes_num):
            process = EdgeProcess(self.config, self.sockets)
            process.start()
            self.processes.append(process)

    def restart_all(self) -> None:
        for idx, old_process in enumerate(self.processes):
            if self.should_exit.is_set():
                return
            new_process = EdgeProcess(self.config, self.sockets)
            new_process.start()
            if not new_process.wait_until_ready(self.config.timeout_worker_healthcheck, self.should_exit):
                new_process.kill()
                new_process.join()
                if not self.should_exit.is_set():
                    logger.error("New child process [%s] was not ready in time; keeping worker [%s] and aborting "
                                 "the restart.", new_process.pid, old_process.pid)
                return
            old_process.terminate()
            old_process.join()
            self.processes[idx] = new_process

    def keep_subprocess_alive(self) -> None:
        if self.should_exit.is_set():
            return
        for idx, process in enumerate(self.processes):
            if process.is_alive(timeout=self.config.timeout_worker_healthcheck):
                continue
            process.kill()
            process.join()
            if process.exitcode == STARTUP_FAILURE:  # it would fail the same way on every restart
                logger.error("Child process [%s] failed to start, stopping the parent process.", process.pid)
                self.startup_failed = True
                self.should_exit.set()
                return
            if self.should_exit.is_set():
                return
            logger.info("Child process [%s] died", process.pid)
            replacement = EdgeProcess(self.config, self.sockets)
            replacement.start()
            self.processes[idx] = replacement


class ListenError(Exception):
    """A listener's address cannot be bound (in use, not local, not permitted); the message names it."""


def bind_socket(host: str, port: int) -> socket.socket:
    """A listening-ready TCP socket on (host, port), inheritable by the workers (as uvicorn binds one)."""
    sock = socket.socket(family=socket.AF_INET6 if ":" in host else socket.AF_INET)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        raise ListenError(f"cannot listen on {host} port {port}: {exc.strerror or exc}") from None
    sock.set_inheritable(True)
    return sock


APP_FACTORY: Final = "api.app:serving_app"
"""What each worker process of `acar serve` builds its application with (api.app.serving_app)."""


def serve(settings: Settings, *, host: str, port: int, workers: int, tls: TlsListeners | None = None,
          server: str = "uvicorn") -> None:
    """Run the application under uvicorn with the connection limits of `settings` (as uvicorn.run does), on `port`
    and, with `tls` (tls_listeners), over TLS there and on the mTLS port too; with `server` "granian", under granian
    instead (serve_granian)."""
    if server == "granian":
        serve_granian(settings, host=host, port=port, workers=workers, tls=tls)
        return
    config = ServeConfig(
        APP_FACTORY, factory=True, host=host, port=port, workers=workers,
        http="api.server:EdgeHttpProtocol", header_timeout=settings.header_timeout_seconds, tls=tls,
        timeout_keep_alive=settings.keep_alive_seconds, limit_concurrency=settings.max_connections,
        log_config=None, access_log=False, server_header=False, proxy_headers=False,
    )
    sockets = [bind_socket(host, port)]
    if tls is not None and tls.mtls_port is not None:
        try:
            sockets.append(bind_socket(host, tls.mtls_port))
        except ListenError:
            sockets[0].close()
            raise
    scheme = "http" if tls is None else "https"
    for sock in sockets:
        logger.info("listening on %s://%s:%d", scheme, host, sock.getsockname()[1])
    edge = EdgeServer(config)
    try:
        if workers > 1:
            supervisor = EdgeMultiprocess(config, sockets=sockets)
            supervisor.run()
            if supervisor.startup_failed:
                sys.exit(STARTUP_FAILURE)
            return
        edge.run(sockets=sockets)
    except KeyboardInterrupt:
        pass
    finally:
        for sock in sockets:
            sock.close()
    if not edge.started:
        sys.exit(STARTUP_FAILURE)


SERVERS: Final = ("uvicorn", "granian")
"""The HTTP servers `acar serve` runs the application under (ACAR_SERVER, --server); uvicorn is the default."""
GRANIAN_TLS_HANDSHAKE_SECONDS: Final = 10.0
"""granian's own deadline for a TLS handshake (fixed in granian 2.8.9, not a setting; measured)."""


def granian_refusal(settings: Settings) -> str | None:
    """Why granian cannot serve `settings` with every edge rule of this module, in one line; None when it can.

    granian (a Rust HTTP server on hyper and rustls) keeps the header deadline, the head-size cap, TLS 1.2 and 1.3
    with ECDHE and AEAD suites only, graceful shutdown and the lifespan in every worker (see serve_granian). It has
    one listener per server and gives the application no ASGI TLS extension, so it cannot serve the mTLS listener of
    ID-card login; and its TLS handshake deadline is its own, so a shorter ACAR_HEADER_TIMEOUT_SECONDS would be
    silently lengthened for handshakes."""
    if settings.mtls_port is not None:
        return ("ACAR_MTLS_PORT needs --server uvicorn: granian opens one listener and does not hand the client "
                "certificate to the application (ASGI TLS extension)")
    if settings.tls_cert_file is not None and settings.header_timeout_seconds < GRANIAN_TLS_HANDSHAKE_SECONDS:
        return (f"ACAR_TLS_CERT_FILE with ACAR_HEADER_TIMEOUT_SECONDS below {GRANIAN_TLS_HANDSHAKE_SECONDS:g} needs "
                f"--server uvicorn: granian allows every TLS handshake {GRANIAN_TLS_HANDSHAKE_SECONDS:g} s")
    return None


def serve_granian(settings: Settings, *, host: str, port: int, workers: int, tls: TlsListeners | None = None) -> None:
    """Run the application under granian (ASGI, HTTP/1.1 only, one single-threaded runtime on uvloop per worker) with
    the edge rules of this module where granian has them (granian_refusal refuses the settings where it has not):

    - Header deadline: hyper's header_read_timeout, armed when a connection opens and again when a kept-alive
      connection waits for its next request; a deadline, not an idle timer (trickled bytes do not extend it). It is
      therefore also the keep-alive time, and is set to the shorter of ACAR_HEADER_TIMEOUT_SECONDS and
      ACAR_KEEP_ALIVE_SECONDS (with the defaults, a head must arrive within 5 s, not 10 s). Past it the connection
      is closed without an answer (hyper writes no 408).
    - Head size: a head still incomplete once MAX_HEAD_BYTES are buffered is answered 431 and the connection closed
      (hyper's read buffer; it checks between reads, so a head arriving in large reads may reach about 48 KiB).
    - Concurrency: at most ACAR_MAX_CONNECTIONS requests per worker are served at once (granian's backpressure, as
      granian documents it; not covered by a test here); further ones wait instead of being answered 503.
    - TLS: rustls, TLS 1.2 and 1.3 (RFC 8996, RFC 9325), ECDHE with AEAD suites only, no compression, no
      renegotiation, ALPN http/1.1, no client certificate requested; a handshake must finish within
      GRANIAN_TLS_HANDSHAKE_SECONDS.
    - SIGTERM or SIGINT: the workers stop accepting, finish the requests in progress, then run the lifespan's
      shutdown. The lifespan runs in each worker; one that fails to start stops the server.
    - X-Forwarded-* are not read by the server (as uvicorn's proxy_headers=False): the application trusts them only
      from ACAR_TRUSTED_PROXIES. Responses carry "server: granian" (granian has no switch for it)."""
    from granian.constants import HTTPModes, Interfaces, Loops, RuntimeModes, SSLProtocols
    from granian.http import HTTP1Settings
    from granian.log import LogLevels
    from granian.server import Server

    refusal = granian_refusal(settings)
    if refusal is not None:
        raise SettingsError(refusal)
    bind_socket(host, port).close()  # an address that cannot be bound stops here, named, as with uvicorn
    deadline_ms = int(min(settings.header_timeout_seconds, settings.keep_alive_seconds) * 1000)
    server = Server(
        APP_FACTORY, factory=True, address=host, port=port, interface=Interfaces.ASGI, workers=workers,
        runtime_mode=RuntimeModes.st, runtime_threads=1, loop=Loops.uvloop, http=HTTPModes.http1, websockets=False,
        backlog=max(1024, settings.max_connections), backpressure=settings.max_connections,
        http1_settings=HTTP1Settings(header_read_timeout=deadline_ms, keep_alive=True,
                                     max_buffer_size=MAX_HEAD_BYTES, pipeline_flush=False),
        ssl_cert=tls.cert_file if tls is not None else None, ssl_key=tls.key_file if tls is not None else None,
        ssl_protocol_min=SSLProtocols.tls12, log_level=LogLevels.warning, log_access=False,
    )
    logger.info("listening on %s://%s:%d (granian)", "http" if tls is None else "https", host, port)
    server.serve()

"""Abuse resistance at the edge, against a real `acar serve`: request bodies are capped before anything parses
them (an unauthenticated 200 MB POST costs the server no memory), and connections that never finish their
headers are closed without slowing anyone else down (slowloris)."""

from __future__ import annotations

import json
import select
import socket
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest

from tests.functional.helpers import InProcessAcar, Server

pytestmark = pytest.mark.one_pass("sqlite")  # the server process, not the database: tests/conftest.py

MIB = 1024 * 1024
HUGE = 200 * MIB
CHUNK = 64 * 1024


def _rss_bytes(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS")


def _read_response(sock: socket.socket, timeout: float) -> tuple[int, dict[str, str], bytes]:
    """One HTTP/1.1 response with a Content-Length body, read from a raw socket."""
    sock.setblocking(True)
    sock.settimeout(timeout)
    data = b""
    while b"\r\n\r\n" not in data:
        more = sock.recv(65536)
        assert more, f"connection closed before a response: {data!r}"
        data += more
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    headers = {name.strip().lower(): value.strip() for name, _, value in (line.partition(":") for line in lines[1:])}
    while len(body) < int(headers.get("content-length", "0")):
        more = sock.recv(65536)
        if not more:
            break
        body += more
    return int(lines[0].split()[1]), headers, body


def _post_streaming(port: int, path: str, total: int, *, chunked: bool) -> tuple[int, dict[str, str], bytes, int]:
    """POST `total` bytes of JSON whitespace to `path`, generated as they are sent (never held in memory), until
    the server answers; the answer and how many bytes were sent before it."""
    sock = socket.create_connection(("127.0.0.1", port), timeout=10)
    framing = "Transfer-Encoding: chunked" if chunked else f"Content-Length: {total}"
    sock.sendall(f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
                 f"{framing}\r\n\r\n".encode())
    sock.setblocking(False)
    piece = (b"%x\r\n" % CHUNK + b" " * CHUNK + b"\r\n") if chunked else b" " * CHUNK
    sent = 0
    pending = memoryview(b"")
    try:
        while sent < total or pending:
            readable, writable, _ = select.select([sock], [sock], [], 10)
            if readable:
                break  # the answer came before the body was sent
            assert writable, "the server neither reads nor answers"
            if not pending:
                pending = memoryview(piece)
                sent += CHUNK
            pending = pending[sock.send(pending):]
        else:
            if chunked:
                sock.setblocking(True)
                sock.sendall(b"0\r\n\r\n")
    except (BrokenPipeError, ConnectionResetError):
        pass  # the server closed the connection after answering
    try:
        status, headers, body = _read_response(sock, timeout=10)
    finally:
        sock.close()
    return status, headers, body, sent


def test_oversized_bodies_are_refused_before_they_are_read(acar: InProcessAcar, cli_env: dict[str, str],
                                                           tmp_path: Path) -> None:
    """An unauthenticated 200 MB JSON POST to the admin API, declared (Content-Length) or streamed (chunked): 413
    problem+json at once, and the server's memory does not grow with the body."""
    acar("init")
    server = Server(cli_env, log_path=tmp_path / "server.log")
    try:
        server.wait_ready(timeout=60)
        assert httpx.post(server.base + "/admin/clients", json={"name": "x"}).status_code == 401  # warmed up
        before = _rss_bytes(server.proc.pid)
        for chunked in (False, True):
            started = time.monotonic()
            status, headers, body, sent = _post_streaming(server.port, "/admin/clients", HUGE, chunked=chunked)
            elapsed = time.monotonic() - started
            assert status == 413, (chunked, status, body[:300])
            assert headers["content-type"] == "application/problem+json"
            problem = json.loads(body)
            assert problem["status"] == 413 and problem["type"] == "urn:acar:problem:content_too_large"
            assert headers["connection"] == "close"  # the rest of the body is not read and discarded
            assert elapsed < 5, elapsed
            assert sent < 32 * MIB, sent  # refused long before the end of the body
        grown = _rss_bytes(server.proc.pid) - before
        assert grown < 50 * MIB, grown / MIB
        # the server is unharmed, and an ordinary body still goes through to the endpoint
        r = httpx.post(server.base + "/admin/clients", json={"name": "x"})
        assert r.status_code == 401 and r.headers["content-type"] == "application/problem+json"
    finally:
        server.stop()


HEADER_TIMEOUT = 2.0
SLOW = 200
MAX_CONNECTIONS = 250


@contextmanager
def _slow_connections(port: int, count: int = SLOW) -> Iterator[list[socket.socket]]:
    """`count` connections that never finish a request head: a third send nothing, a third stop after a partial
    header line, a third begin a request line that the test trickles byte by byte."""
    socks: list[socket.socket] = []
    try:
        for n in range(count):
            sock = socket.create_connection(("127.0.0.1", port), timeout=5)
            if n % 3:
                sock.sendall(b"POST /token HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Ty" if n % 3 == 1 else b"P")
            sock.setblocking(False)
            socks.append(sock)
        yield socks
    finally:
        for sock in socks:
            sock.close()


def _receive(sock: socket.socket) -> bytes | None:
    """What the server sent so far; b"" once it closed the connection, None while it is silent and open."""
    try:
        return sock.recv(4096)
    except BlockingIOError:
        return None
    except (ConnectionResetError, BrokenPipeError):
        return b""


def test_slow_header_connections_are_cut_and_do_not_block_others(acar: InProcessAcar, cli_env: dict[str, str],
                                                                 tmp_path: Path) -> None:
    """200 connections hold partial heads open: a client_credentials /token request still completes in under a
    second, and every slow connection (silent, stopped or trickling) is closed after ACAR_HEADER_TIMEOUT_SECONDS,
    those that had begun a request with 408 (RFC 9110 section 15.5.9)."""
    acar("init")
    client = acar.json("client", "add", "--name", "Tax system", "--grant-type", "client_credentials",
                       "--scope", "api:read")
    env = {**cli_env, "ACAR_HEADER_TIMEOUT_SECONDS": str(HEADER_TIMEOUT), "ACAR_KEEP_ALIVE_SECONDS": "1",
           "ACAR_MAX_CONNECTIONS": str(MAX_CONNECTIONS)}
    server = Server(env, log_path=tmp_path / "server.log")
    auth = (client["client_id"], client["client_secret"])
    form = {"grant_type": "client_credentials", "scope": "api:read"}
    try:
        server.wait_ready(timeout=60)
        assert httpx.post(server.base + "/token", data=form, auth=auth).status_code == 200  # warmed up
        with _slow_connections(server.port) as socks:
            opened = time.monotonic()
            started = time.monotonic()
            r = httpx.post(server.base + "/token", data=form, auth=auth, timeout=5)
            elapsed = time.monotonic() - started
            assert r.status_code == 200, r.text
            assert elapsed < 1.0, elapsed
            answers = dict.fromkeys(range(SLOW), b"")
            open_ = set(range(SLOW))
            trickle = iter(b"OST /token HTTP/1.1\r\nHost: 127.0.0.1\r\n" * 10)
            while open_ and time.monotonic() - opened < HEADER_TIMEOUT + 4:
                byte = bytes([next(trickle)])
                for n in sorted(open_):
                    data = _receive(socks[n])
                    if data == b"":
                        open_.discard(n)
                    elif data is not None:
                        answers[n] += data
                    elif n % 3 == 2:
                        try:
                            socks[n].send(byte)  # a byte now and then: a deadline, not an idle timer, cuts it
                        except (BrokenPipeError, ConnectionResetError):
                            open_.discard(n)
                time.sleep(0.25)
            assert not open_, f"{len(open_)} slow connections still open after {HEADER_TIMEOUT + 4} s"
            assert time.monotonic() - opened > HEADER_TIMEOUT - 0.5  # not cut before the deadline
            assert all(answers[n] == b"" for n in range(0, SLOW, 3))  # nothing sent, nothing answered
            begun = [answers[n] for n in range(SLOW) if n % 3]
            assert all(a.startswith(b"HTTP/1.1 408 Request Timeout\r\n") for a in begun), begun[:3]
        # an idle kept-alive connection is closed after ACAR_KEEP_ALIVE_SECONDS
        with socket.create_connection(("127.0.0.1", server.port), timeout=5) as sock:
            sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
            status, _, _ = _read_response(sock, timeout=5)
            assert status == 200
            time.sleep(1.5)
            sock.setblocking(False)
            assert _receive(sock) == b"", "the idle connection is still open"
        # above ACAR_MAX_CONNECTIONS open connections a request is answered 503, and served again once they close
        with _slow_connections(server.port, MAX_CONNECTIONS):
            r = httpx.post(server.base + "/token", data=form, auth=auth, timeout=5)
            assert r.status_code == 503
        deadline = time.monotonic() + 3
        while (r := httpx.post(server.base + "/token", data=form, auth=auth, timeout=5)).status_code == 503:
            assert time.monotonic() < deadline, "still 503 after the connections closed"
            time.sleep(0.1)
        assert r.status_code == 200
    finally:
        server.stop()

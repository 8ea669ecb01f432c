"""api.server.EdgeHttpProtocol in a real uvicorn server on loopback (in this process, with a small application):
the deadline of a request head, its size limit, keep-alive and pipelining. (tests/functional/test_edge_limits.py
runs `acar serve` itself under 200 slow connections.)"""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import AsyncIterator

import pytest
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse
from starlette.routing import Route

from api.server import MAX_HEAD_BYTES, ServeConfig

pytestmark = pytest.mark.asyncio

TIMEOUT = 0.5


async def _slow(request: Request) -> PlainTextResponse:
    await asyncio.sleep(3 * TIMEOUT)
    return PlainTextResponse("slow")


async def _fast(request: Request) -> PlainTextResponse:
    return PlainTextResponse("fast")


@contextlib.asynccontextmanager
async def _server() -> AsyncIterator[int]:
    listening = socket.create_server(("127.0.0.1", 0))  # connections wait in its backlog until the server runs
    app = Starlette(routes=[Route("/slow", _slow), Route("/fast", _fast)])
    config = ServeConfig(app, header_timeout=TIMEOUT, http="api.server:EdgeHttpProtocol", timeout_keep_alive=30,
                         log_config=None, lifespan="off")
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve(sockets=[listening]))
    try:
        yield int(listening.getsockname()[1])
    finally:
        server.should_exit = True
        await task
        listening.close()


async def _until_closed(reader: asyncio.StreamReader) -> tuple[bytes, float]:
    """Everything the server sends until it closes the connection, and when it closed it."""
    loop = asyncio.get_running_loop()
    started = loop.time()
    data = await asyncio.wait_for(reader.read(), timeout=10 * TIMEOUT)
    return data, loop.time() - started


async def test_a_silent_connection_is_closed_without_an_answer() -> None:
    async with _server() as port:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        data, after = await _until_closed(reader)
        writer.close()
    assert data == b"" and TIMEOUT * 0.8 < after < TIMEOUT * 6


async def test_a_trickled_head_is_cut_at_its_deadline_with_408() -> None:
    async with _server() as port:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        closed = asyncio.create_task(_until_closed(reader))
        for byte in b"GET /fast HTTP/1.1\r\nHost: x\r\n":
            if closed.done():
                break
            writer.write(bytes([byte]))
            await asyncio.sleep(TIMEOUT / 10)
        data, after = await closed
        writer.close()
    assert data.startswith(b"HTTP/1.1 408 Request Timeout\r\n") and b"connection: close" in data
    assert b"urn:acar:problem:request_timeout" in data and after < TIMEOUT * 6


async def test_a_head_over_the_size_limit_is_refused_with_431() -> None:
    async with _server() as port:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"GET /fast HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * (MAX_HEAD_BYTES + 1))
        data, _ = await _until_closed(reader)
        writer.close()
    assert data.startswith(b"HTTP/1.1 431 Request Header Fields Too Large\r\n")


async def test_kept_alive_requests_each_get_their_deadline_and_a_pipelined_head_waits_for_the_answer() -> None:
    async with _server() as port:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        for _ in range(3):  # each request head on time, spread over more than one deadline in all
            writer.write(b"GET /fast HTTP/1.1\r\nHost: x\r\n\r\n")
            assert (await reader.readuntil(b"fast")).startswith(b"HTTP/1.1 200 ")
            await asyncio.sleep(TIMEOUT * 0.6)
        # a request that takes three deadlines to answer, and a partial head pipelined behind it: the answer is
        # whole, and only then is the stalled head cut
        writer.write(b"GET /slow HTTP/1.1\r\nHost: x\r\n\r\nGET /fast HTTP/1.1\r\nHo")
        data, _ = await _until_closed(reader)
        writer.close()
    first, _, rest = data.partition(b"slow")
    assert first.startswith(b"HTTP/1.1 200 ") and rest.startswith(b"HTTP/1.1 408 ")

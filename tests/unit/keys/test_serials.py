"""Hi/lo serial allocation over `serial_blocks`: unique across processes sharing one database."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from sqlalchemy import func, select

from api.deps import Services
from api.settings import Settings
from keys.errors import BackendError
from keys.models import SerialBlock
from keys.serials import DEFAULT_BLOCK_SIZE, SerialAllocator
from storage import create_engine, create_session_factory


async def test_serials_come_from_reserved_blocks(services: Services) -> None:
    allocator = SerialAllocator(services.sessions, purpose="tsa", block_size=10)

    serials = [await allocator.allocate() for _ in range(25)]

    async with services.sessions() as session:
        blocks = (await session.execute(select(SerialBlock.id, SerialBlock.purpose).order_by(SerialBlock.id))).all()
    assert len(blocks) == 3 and {purpose for _, purpose in blocks} == {"tsa"}
    expected = [block * 10 + n for block, _ in blocks for n in range(10)][:25]
    assert serials == expected and min(serials) > 0


async def test_two_nodes_on_one_database_never_share_a_serial(settings: Settings, services: Services) -> None:
    """Two allocators on two engines (as two processes would have), drawing concurrently, small blocks."""
    other_engine = create_engine(settings.resolved_database_url)
    try:
        node_a = SerialAllocator(services.sessions, purpose="tsa", block_size=7)
        node_b = SerialAllocator(create_session_factory(other_engine), purpose="tsa", block_size=7)

        async def draw(allocator: SerialAllocator, count: int) -> list[int]:
            serials = []
            for _ in range(count):
                serials.append(await allocator.allocate())
                await asyncio.sleep(0)  # interleave with the other node
            return serials

        results = await asyncio.gather(*(draw(node, 60) for node in (node_a, node_b, node_a, node_b)))
    finally:
        await other_engine.dispose()

    everything = [serial for result in results for serial in result]
    assert len(everything) == 240 and len(set(everything)) == 240
    a_blocks = {serial // 7 for result in results[0::2] for serial in result}
    b_blocks = {serial // 7 for result in results[1::2] for serial in result}
    assert a_blocks and b_blocks and not a_blocks & b_blocks


async def test_concurrent_callers_in_one_process_get_distinct_serials(services: Services) -> None:
    allocator = SerialAllocator(services.sessions, purpose="tsa", block_size=5)

    serials = await asyncio.gather(*(allocator.allocate() for _ in range(200)))

    assert len(set(serials)) == 200
    async with services.sessions() as session:
        blocks = (await session.execute(select(func.count()).select_from(SerialBlock))).scalar_one()
    # blocks reserved by callers racing at a block's end are kept for later, not thrown away
    assert blocks * 5 - 200 < 5 * 200


async def test_a_new_allocator_never_reuses_an_earlier_block(services: Services) -> None:
    first = SerialAllocator(services.sessions, purpose="tsa")
    before = await first.allocate()
    restarted = SerialAllocator(services.sessions, purpose="tsa")  # the node restarted: its old block is left

    after = await restarted.allocate()

    assert after // DEFAULT_BLOCK_SIZE > before // DEFAULT_BLOCK_SIZE


async def test_unreachable_database_is_a_backend_error(tmp_path: Path) -> None:
    engine = create_engine(f"sqlite+aiosqlite:///{tmp_path / 'missing' / 'db.sqlite3'}")
    try:
        allocator = SerialAllocator(create_session_factory(engine), purpose="tsa")
        with pytest.raises(BackendError, match="cannot reserve"):
            await allocator.allocate()
    finally:
        await engine.dispose()


def test_bad_parameters_are_refused(services: Services) -> None:
    with pytest.raises(ValueError, match="purpose"):
        SerialAllocator(services.sessions, purpose="x" * 17)
    with pytest.raises(ValueError, match="block_size"):
        SerialAllocator(services.sessions, purpose="tsa", block_size=0)

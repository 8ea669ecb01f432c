"""Serial numbers unique across every node that shares the database: hi/lo allocation over `serial_blocks`.

A node reserves a block by inserting one `SerialBlock` row in its own short transaction. The row's
autoincrement id comes from the database (a PostgreSQL identity sequence, or an SQLite AUTOINCREMENT key
taken under the database write lock, which is never reused), so no two nodes ever hold the same block id.
Within its block the node hands out `id * block_size + n` for n = 0 .. block_size - 1 from memory: one
database write per block, none per serial. Block ids start at 1, so every serial is positive.

Serials left in a block when a node stops are never used; that is the price of not writing per serial.
Rows of `serial_blocks` are the record of what was handed out; they are never deleted.

RFC 3161 section 2.4.2 requires the TSTInfo serialNumber to be unique for each time-stamp token issued by a
given TSA and lets it be as long as 160 bits; with the default block size, serials stay far below that.
"""

from __future__ import annotations

import collections
import datetime as dt
import threading
from collections.abc import Callable

from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from keys.errors import BackendError
from keys.models import SerialBlock
from storage.base import utcnow

DEFAULT_BLOCK_SIZE = 1_000_000
"""Serials per reserved block: at 1,000 serials/s a node writes one row every ~17 minutes; the decimal
size keeps serials readable (serial 7000042 is number 42 of block 7)."""
_PURPOSE_MAX = 16  # length of serial_blocks.purpose


class SerialAllocator:
    """Hands out serial numbers that are unique across nodes (see module docstring). Safe to share.

    The in-memory counter is guarded by a `threading.Lock`, so coroutines and threads of one process may
    call `allocate` at once. When the block runs out, concurrent callers may each reserve a block; the
    extra blocks are kept and used next rather than discarded, so no database lock is held while waiting.
    """

    def __init__(
        self,
        sessions: async_sessionmaker[AsyncSession],
        *,
        purpose: str,
        block_size: int = DEFAULT_BLOCK_SIZE,
        clock: Callable[[], dt.datetime] = utcnow,
    ) -> None:
        if not 0 < len(purpose) <= _PURPOSE_MAX:
            raise ValueError(f"purpose must be 1 to {_PURPOSE_MAX} characters")
        if block_size < 1:
            raise ValueError("block_size must be positive")
        self._sessions = sessions
        self.purpose = purpose
        self.block_size = block_size
        self._clock = clock
        self._lock = threading.Lock()
        self._next = 0
        self._end = 0
        self._spare: collections.deque[int] = collections.deque()

    async def allocate(self) -> int:
        """The next serial number; reserves a new block in the database when the current one is used up.

        Raises BackendError when a block cannot be reserved (database unreachable).
        """
        while True:
            with self._lock:
                if self._next < self._end:
                    serial = self._next
                    self._next += 1
                    return serial
                if self._spare:
                    block = self._spare.popleft()
                    self._next, self._end = block * self.block_size, (block + 1) * self.block_size
                    continue
            block = await self._reserve()
            with self._lock:
                self._spare.append(block)

    async def _reserve(self) -> int:
        """Insert a `serial_blocks` row in its own committed transaction and return its id."""
        try:
            async with self._sessions() as session, session.begin():
                row = SerialBlock(purpose=self.purpose, reserved_at=self._clock())
                session.add(row)
                await session.flush()
                block = row.id
        except SQLAlchemyError as exc:
            raise BackendError(f"cannot reserve a block of {self.purpose} serials: {type(exc).__name__}") from exc
        if block < 1:
            raise BackendError(f"serial_blocks returned the non-positive id {block}")
        return block

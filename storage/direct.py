"""Units of work on the database driver itself, for the hot paths (token endpoint, passkey login, audit).

SQLAlchemy's async session costs about 0.3 ms of CPU per statement (ORM bookkeeping, the result layer, the
greenlet bridge), several times what asyncpg or sqlite3 spend on the statement itself; a code exchange runs
five. Here a statement is still written with SQLAlchemy Core against the models (so it stays in step with the
schema and the migrations), but compiled once per dialect into SQL text, and its parameters and rows are
converted by the column types' own bind and result processors: what this module writes, the ORM reads back
unchanged, and the other way round (tests/unit/storage/test_direct.py checks both on SQLite and PostgreSQL).

- PostgreSQL: an asyncpg pool of its own, its connections decoding JSON as SQLAlchemy's asyncpg dialect does,
  with asyncpg's prepared-statement cache; no pre-ping (a dropped connection fails one unit of work, and the
  pool's connections are replaced).
- SQLite: one sqlite3 connection used on the event loop's thread (an indexed statement takes microseconds;
  aiosqlite's thread hop per statement costs more than the statement). Units of work take turns on it (an
  asyncio lock), and a writing one starts with BEGIN IMMEDIATE: when another connection (the CLI, the ORM
  pool) holds SQLite's write lock, the unit waits by sleeping on the event loop, never in SQLite's busy
  handler, which would stall every request. WAL with synchronous=NORMAL (as on every connection, see
  storage.engine): a commit is durable once the WAL is checkpointed, an OS crash can lose the last commits,
  never corrupt the file.

A unit of work begins its transaction at its first statement, so a request that turns out to need none (a
client_credentials token) never touches the database. Rows added with `defer` (audit events) are written
with one executemany just before COMMIT.
"""

from __future__ import annotations

import asyncio
import functools
import json
import sqlite3
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Table
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.engine import Dialect
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession
from sqlalchemy.sql import ClauseElement, Insert

SQLITE_LOCK_WAIT_SECONDS = 10.0
"""How long a unit of work waits for SQLite's write lock (the same as the ORM connections' busy_timeout)."""

Processor = Callable[[Any], Any] | None


@dataclass(frozen=True, slots=True)
class Compiled:
    """One Core statement as the driver's SQL text, with its parameter order and the type conversions."""

    sql: str
    names: tuple[str, ...]
    binds: tuple[Processor, ...]
    results: tuple[Processor, ...]
    defaults: Mapping[str, Callable[[], Any]]

    @classmethod
    def build(cls, statement: ClauseElement, dialect: Dialect) -> Compiled:
        compiled: Any = statement.compile(dialect=dialect)  # a SQLCompiler: positiontup and binds
        names = tuple(compiled.positiontup or ())
        binds = tuple(compiled.binds[name].type.dialect_impl(dialect).bind_processor(dialect) for name in names)
        columns = getattr(statement, "exported_columns", ())  # SELECT columns, or a DML statement's RETURNING
        results = tuple(column.type.dialect_impl(dialect).result_processor(dialect, None) for column in columns)
        defaults = _insert_defaults(statement)
        for name in names:  # literal values in the statement (`column != ""`): their anonymous parameters
            bind = compiled.binds[name]
            if not bind.required and name not in defaults:
                defaults[name] = _constant(bind.effective_value)
        return cls(str(compiled), names, binds, results, defaults)

    def args(self, params: Mapping[str, Any]) -> list[Any]:
        out = []
        for name, process in zip(self.names, self.binds, strict=True):
            value = params[name] if name in params or name not in self.defaults else self.defaults[name]()
            out.append(process(value) if process is not None else value)  # None too: JSON null as the ORM
        return out

    def row(self, raw: Sequence[Any]) -> tuple[Any, ...]:
        return tuple(process(value) if process is not None else value
                     for process, value in zip(self.results, raw, strict=True))


def table(model: type[Any]) -> Table:
    """A model's table, typed as one (`__table__` is typed as any FromClause)."""
    found = model.__table__
    if not isinstance(found, Table):
        raise TypeError(f"{model.__name__} is not mapped to a table")
    return found


def _none() -> None:
    return None


def _constant(value: Any) -> Callable[[], Any]:
    return lambda: value


def _insert_defaults(statement: ClauseElement) -> dict[str, Callable[[], Any]]:
    """The model's Python-side column defaults (ids, created_at) for an INSERT of a whole table, which the ORM
    would otherwise apply: a value left out of an insert's parameters takes its column's default, or NULL."""
    table = getattr(statement, "table", None)
    if not isinstance(statement, Insert) or table is None:
        return {}
    defaults: dict[str, Callable[[], Any]] = {}
    for column in table.columns:
        default = column.default
        if default is None:
            if column.nullable and column.server_default is None:
                defaults[column.key] = _none  # an optional column left out is NULL, as in an ORM insert
            continue
        if default.is_callable:
            defaults[column.key] = functools.partial(default.arg, None)  # SQLAlchemy wraps it to take a context
        elif default.is_scalar:
            defaults[column.key] = _constant(default.arg)
    return defaults


def insert_ignoring(target: Table, *keys: str) -> dict[str, Insert]:
    """INSERT ... ON CONFLICT (keys) DO NOTHING by dialect name (PostgreSQL and SQLite spell it the same, each
    through its own dialect module); a Transaction picks its own with `tx.dialect_name`."""
    return {"postgresql": pg_insert(target).on_conflict_do_nothing(index_elements=list(keys)),
            "sqlite": sqlite_insert(target).on_conflict_do_nothing(index_elements=list(keys))}


_COMPILED: dict[tuple[int, str], tuple[ClauseElement, Compiled]] = {}


def compiled_for(statement: ClauseElement, dialect: Dialect) -> Compiled:
    """The statement compiled for the dialect's driver, once: statements are module constants, keyed by identity
    (the statement kept alive beside its compilation)."""
    key = (id(statement), f"{dialect.name}+{dialect.driver}")
    found = _COMPILED.get(key)
    if found is None or found[0] is not statement:
        found = (statement, Compiled.build(statement, dialect))
        _COMPILED[key] = found
    return found[1]


class DirectDatabase:
    """Hands out units of work on the driver (see module docstring)."""

    def __init__(self, dialect: Dialect) -> None:
        self.dialect = dialect
        self.commits = 0
        """Transactions committed (tests count group commits with it)."""

    def compiled(self, statement: ClauseElement) -> Compiled:
        return compiled_for(statement, self.dialect)

    def transaction(self) -> Transaction:
        """A unit of work (`async with`): committed when the block ends normally, rolled back when it raises."""
        return self._transaction()

    def _transaction(self) -> Transaction:
        raise NotImplementedError

    async def close(self) -> None:
        raise NotImplementedError


class Transaction:
    """Statements of one unit of work; the transaction begins with the first of them."""

    def __init__(self, database: DirectDatabase) -> None:
        self._db = database
        self.dialect_name = database.dialect.name
        self._deferred: list[tuple[Compiled, list[Any]]] = []
        self.begun = False

    async def __aenter__(self) -> Transaction:
        return self

    async def __aexit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: object) -> None:
        await self.finish(commit=kind is None)

    async def one(self, statement: ClauseElement, **params: Any) -> tuple[Any, ...] | None:
        compiled = self._db.compiled(statement)
        raw = await self._fetchone(compiled.sql, compiled.args(params))
        return compiled.row(raw) if raw is not None else None

    async def all(self, statement: ClauseElement, **params: Any) -> list[tuple[Any, ...]]:
        compiled = self._db.compiled(statement)
        return [compiled.row(raw) for raw in await self._fetchall(compiled.sql, compiled.args(params))]

    async def execute(self, statement: ClauseElement, **params: Any) -> int:
        """Run a statement; the number of rows it changed."""
        compiled = self._db.compiled(statement)
        return await self._execute(compiled.sql, compiled.args(params))

    async def execute_many(self, statement: ClauseElement, rows: Sequence[Mapping[str, Any]]) -> None:
        if rows:
            compiled = self._db.compiled(statement)
            await self._executemany(compiled.sql, [compiled.args(row) for row in rows])

    def defer(self, statement: ClauseElement, **params: Any) -> None:
        """Write this row just before COMMIT (with the others of the same statement, in one executemany); a unit
        of work that rolls back never writes it."""
        compiled = self._db.compiled(statement)
        self._deferred.append((compiled, compiled.args(params)))

    async def finish(self, *, commit: bool) -> None:
        try:
            if commit and self._deferred:
                by_sql: dict[str, list[list[Any]]] = {}
                for compiled, args in self._deferred:
                    by_sql.setdefault(compiled.sql, []).append(args)
                if len(by_sql) == 1 and await self._write_alone(*next(iter(by_sql.items()))):
                    return
                for sql, rows in by_sql.items():
                    await self._executemany(sql, rows)
        except BaseException:
            if self.begun:
                await self._end(commit=False)
            raise
        finally:
            self._deferred.clear()
        if self.begun:
            await self._end(commit=commit)
            self._db.commits += commit

    # driver specific
    async def _write_alone(self, sql: str, rows: list[list[Any]]) -> bool:
        """When the unit has written nothing yet: write these rows atomically without a transaction of its own
        and end the unit (True), or leave them to the transaction (False)."""
        return False

    async def _fetchone(self, sql: str, args: list[Any]) -> Sequence[Any] | None:
        raise NotImplementedError

    async def _fetchall(self, sql: str, args: list[Any]) -> list[Sequence[Any]]:
        raise NotImplementedError

    async def _execute(self, sql: str, args: list[Any]) -> int:
        raise NotImplementedError

    async def _executemany(self, sql: str, rows: list[list[Any]]) -> None:
        raise NotImplementedError

    async def _end(self, *, commit: bool) -> None:
        raise NotImplementedError


# --- PostgreSQL (asyncpg) -----------------------------------------------------------------------------------

class PostgresDirect(DirectDatabase):
    """Units of work on an asyncpg pool of their own (`pool_size` connections, opened on first use). Its
    connections decode JSON as the SQLAlchemy dialect's do (`_json_codecs`), so the column types' processors
    apply unchanged; a pool checkout costs a fraction of an SQLAlchemy one (no greenlet hand-off)."""

    def __init__(self, engine: AsyncEngine, *, pool_size: int = 10) -> None:
        if engine.dialect.driver != "asyncpg":
            raise ValueError(f"direct units of work need the asyncpg driver, not {engine.dialect.driver}")
        super().__init__(engine.dialect)
        self._dsn = engine.url.set(drivername="postgresql").render_as_string(hide_password=False)
        self._pool_size = pool_size
        self._pool: Any = None
        self._opening = asyncio.Lock()

    async def pool(self) -> Any:
        if self._pool is None:
            async with self._opening:
                if self._pool is None:
                    import asyncpg  # type: ignore[import-untyped]

                    self._pool = await asyncpg.create_pool(self._dsn, min_size=1, max_size=self._pool_size,
                                                           init=_json_codecs, reset=_session_unchanged)
        return self._pool

    def expire(self) -> None:
        """After a connection error (a database restart): the pool opens fresh connections from now on."""
        if self._pool is not None:
            self._pool.expire_connections()

    def _transaction(self) -> Transaction:
        return _PostgresTransaction(self)

    async def close(self) -> None:
        if self._pool is not None:
            pool, self._pool = self._pool, None
            await pool.close()


async def _session_unchanged(connection: Any) -> None:
    """The pool's reset of a returned connection, after asyncpg has ended any transaction still open on it: no
    reset query. asyncpg's default (advisory unlock, CLOSE ALL, UNLISTEN, RESET ALL) costs a round trip per
    unit of work, and undoes what these statements never do: they take no advisory lock, open no cursor,
    listen to nothing and set no session variable. A failed unit's transaction is rolled back all the same
    (test_a_failing_deferred_row_rolls_back_the_whole_unit)."""


async def _json_codecs(connection: Any) -> None:
    """JSON and JSONB in and out as text, decoded with json.loads: what SQLAlchemy's asyncpg dialect sets on its
    connections (its JSON types then have no result processor, and bind JSON already serialized)."""
    await connection.set_type_codec("json", encoder=str.encode, decoder=lambda raw: json.loads(raw.decode()),
                                    schema="pg_catalog", format="binary")
    await connection.set_type_codec("jsonb", encoder=lambda text: b"\x01" + text.encode(),
                                    decoder=lambda raw: json.loads(raw[1:].decode()), schema="pg_catalog",
                                    format="binary")


class _PostgresTransaction(Transaction):
    _db: PostgresDirect

    def __init__(self, database: PostgresDirect) -> None:
        super().__init__(database)
        self._pool: Any = None
        self._driver: Any = None
        self._tx: Any = None

    async def _begin(self, *, write: bool = True) -> Any:
        """The unit's connection, and its transaction from the first writing statement on: reads before it run
        on their own (under READ COMMITTED each statement takes its own snapshot either way), so a unit that
        only reads (a login page) pays no BEGIN and COMMIT round trips."""
        if self._driver is None:
            self._pool = await self._db.pool()
            try:
                self._driver = await self._pool.acquire()
            except BaseException:
                self._db.expire()
                raise
            self.begun = True
        if write and self._tx is None:
            tx = self._driver.transaction()
            try:
                await tx.start()
            except BaseException:
                self._db.expire()  # a dropped server connection: the next units get fresh ones
                raise
            self._tx = tx
        return self._driver

    async def _fetchone(self, sql: str, args: list[Any]) -> Sequence[Any] | None:
        driver = await self._begin(write=not sql.startswith("SELECT"))  # UPDATE ... RETURNING writes
        return await driver.fetchrow(sql, *args)  # type: ignore[no-any-return]

    async def _fetchall(self, sql: str, args: list[Any]) -> list[Sequence[Any]]:
        return list(await (await self._begin(write=not sql.startswith("SELECT"))).fetch(sql, *args))

    async def _execute(self, sql: str, args: list[Any]) -> int:
        status = await (await self._begin()).execute(sql, *args)  # "UPDATE 1", "INSERT 0 1", "DELETE 3"
        tail = str(status).rsplit(" ", 1)[-1]
        return int(tail) if tail.isdigit() else 0

    async def _executemany(self, sql: str, rows: list[list[Any]]) -> None:
        await (await self._begin()).executemany(sql, rows)

    async def _write_alone(self, sql: str, rows: list[list[Any]]) -> bool:
        """asyncpg's executemany is atomic by itself (one implicit transaction, all rows or none) and costs one
        round trip, where BEGIN, executemany and COMMIT cost three: a unit whose only writes are its deferred rows
        of one statement (an audit batch of the group commit) writes them so."""
        if self._tx is not None:
            return False
        driver = await self._begin(write=False)
        try:
            await driver.executemany(sql, rows)
        finally:
            await self._end(commit=False)  # nothing to end but the checkout
        self._db.commits += 1
        return True

    async def _end(self, *, commit: bool) -> None:
        """Commit or roll back, and give the connection back (a failed COMMIT leaves nothing behind)."""
        driver, tx = self._driver, self._tx
        self._driver = self._tx = None
        self.begun = False
        try:
            if tx is not None:
                if commit:
                    await tx.commit()
                else:
                    await tx.rollback()
        finally:
            if driver is not None:
                await self._pool.release(driver)  # the pool resets a connection whose transaction failed


# --- SQLite (sqlite3 on the event loop thread) --------------------------------------------------------------

class SqliteDirect(DirectDatabase):
    def __init__(self, engine: AsyncEngine) -> None:
        if engine.dialect.name != "sqlite":
            raise ValueError("SqliteDirect needs an SQLite engine")
        super().__init__(engine.dialect)
        database = engine.url.database
        if not database or database == ":memory:":
            raise ValueError("direct units of work need an SQLite file (a memory database is per connection)")
        self._path = database
        self._connection: sqlite3.Connection | None = None
        self.turn = asyncio.Lock()

    def connection(self) -> sqlite3.Connection:
        if self._connection is None:
            connection = sqlite3.connect(self._path, isolation_level=None, check_same_thread=False)
            connection.execute("PRAGMA journal_mode=WAL")
            connection.execute("PRAGMA synchronous=NORMAL")
            connection.execute("PRAGMA foreign_keys=ON")
            connection.execute("PRAGMA busy_timeout=0")  # waits happen in _begin, on the event loop
            self._connection = connection
        return self._connection

    def _transaction(self) -> Transaction:
        return _SqliteTransaction(self)

    async def close(self) -> None:
        if self._connection is not None:
            self._connection.close()
            self._connection = None


class _SqliteTransaction(Transaction):
    _db: SqliteDirect

    def __init__(self, database: SqliteDirect) -> None:
        super().__init__(database)
        self._conn: sqlite3.Connection | None = None

    async def _begin(self) -> sqlite3.Connection:
        if self._conn is not None:
            return self._conn
        await self._db.turn.acquire()
        try:
            connection = self._db.connection()
            deadline = time.monotonic() + SQLITE_LOCK_WAIT_SECONDS
            pause = 0.0005
            while True:
                try:
                    connection.execute("BEGIN IMMEDIATE")
                    break
                except sqlite3.OperationalError as exc:
                    if "locked" not in str(exc) and "busy" not in str(exc):
                        raise
                    if time.monotonic() > deadline:
                        raise
                    await asyncio.sleep(pause)  # another connection writes: wait without blocking the loop
                    pause = min(pause * 2, 0.02)
        except BaseException:
            self._db.turn.release()
            raise
        self._conn, self.begun = connection, True
        return connection

    async def _fetchone(self, sql: str, args: list[Any]) -> Sequence[Any] | None:
        return (await self._begin()).execute(sql, args).fetchone()  # type: ignore[no-any-return]

    async def _fetchall(self, sql: str, args: list[Any]) -> list[Sequence[Any]]:
        return (await self._begin()).execute(sql, args).fetchall()

    async def _execute(self, sql: str, args: list[Any]) -> int:
        return (await self._begin()).execute(sql, args).rowcount

    async def _executemany(self, sql: str, rows: list[list[Any]]) -> None:
        (await self._begin()).executemany(sql, rows)

    async def _end(self, *, commit: bool) -> None:
        """Commit or roll back and hand the connection to the next unit (a failed COMMIT is rolled back)."""
        connection, self._conn = self._conn, None
        self.begun = False
        try:
            if connection is not None:
                try:
                    connection.execute("COMMIT" if commit else "ROLLBACK")
                finally:
                    if connection.in_transaction:
                        connection.execute("ROLLBACK")
        finally:
            self._db.turn.release()



# --- the same statements inside an ORM session's transaction -----------------------------------------------

class SessionTransaction:
    """The Transaction interface inside an AsyncSession's transaction, for the few units of work that also need
    ORM services (enrollment, person lookups): the same compiled statements, run on the session's connection as
    driver SQL, with the same conversions. `commit` writes the deferred rows, then commits the session."""

    def __init__(self, session: AsyncSession) -> None:
        self.session = session
        self._dialect = session.get_bind().dialect
        self.dialect_name = self._dialect.name
        self._deferred: list[tuple[Compiled, list[Any]]] = []

    async def _run(self, compiled: Compiled, args: Any) -> Any:
        connection = await self.session.connection()
        return await connection.exec_driver_sql(compiled.sql, args)

    async def one(self, statement: ClauseElement, **params: Any) -> tuple[Any, ...] | None:
        compiled = compiled_for(statement, self._dialect)
        row = (await self._run(compiled, tuple(compiled.args(params)))).first()
        return compiled.row(tuple(row)) if row is not None else None

    async def all(self, statement: ClauseElement, **params: Any) -> list[tuple[Any, ...]]:
        compiled = compiled_for(statement, self._dialect)
        return [compiled.row(tuple(row)) for row in (await self._run(compiled, tuple(compiled.args(params)))).all()]

    async def execute(self, statement: ClauseElement, **params: Any) -> int:
        compiled = compiled_for(statement, self._dialect)
        return int((await self._run(compiled, tuple(compiled.args(params)))).rowcount or 0)

    async def execute_many(self, statement: ClauseElement, rows: Sequence[Mapping[str, Any]]) -> None:
        if rows:
            compiled = compiled_for(statement, self._dialect)
            await self._run(compiled, [tuple(compiled.args(row)) for row in rows])

    def defer(self, statement: ClauseElement, **params: Any) -> None:
        compiled = compiled_for(statement, self._dialect)
        self._deferred.append((compiled, compiled.args(params)))

    async def flush(self) -> None:
        deferred, self._deferred = self._deferred, []
        for compiled, args in deferred:
            await self._run(compiled, tuple(args))

    async def commit(self) -> None:
        await self.flush()
        await self.session.commit()

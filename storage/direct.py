"""Units of work: compiled SQLAlchemy Core statements run on the database driver, one mechanism for every store.

SQLAlchemy's async ORM session costs about 0.3 ms of CPU per statement (ORM bookkeeping, the result layer, the
greenlet bridge), several times what asyncpg spends on the statement itself; a code exchange runs five. Here a
statement is still written with SQLAlchemy Core against the models (so it stays in step with the schema and
the migrations), but compiled once per dialect into SQL text, and its parameters and rows are converted by the
column types' own bind and result processors: what this module writes, the ORM reads back unchanged, and the
other way round (tests/unit/storage/test_direct.py checks both on SQLite and PostgreSQL).

Where the statements run (one rule, docs/architecture.md "Units of work"):
- PostgreSQL, the production database: an asyncpg pool of its own (`PostgresDirect`, ACAR_DATABASE_DIRECT_POOL_SIZE
  connections), its connections decoding JSON as SQLAlchemy's asyncpg dialect does, with asyncpg's
  prepared-statement cache.
- Inside an ORM session's transaction (`SessionTransaction`): the same compiled SQL on the session's connection,
  for units of work that also need ORM services (enrollment, the CLI). On SQLite, the embedded default, every unit
  runs so (`SessionDirect`): no driver layer of its own, correct rather than racing PostgreSQL. There a writing
  unit waits for its turn (the process's writer lock) before it takes a connection, so writers queued behind
  SQLite's one write lock never hold the connections the writer holding it needs (`SessionDirect`).

The transaction rule is declared, never read off the SQL text:
- `transaction()` is a writing unit. Its transaction begins at its first statement, whatever it is (so a
  SELECT ... FOR UPDATE holds its lock to the end); a unit that runs no statement (a client_credentials token)
  never touches the database. Rows added with `defer` (audit events) are written just before COMMIT, an
  executemany per statement (on PostgreSQL folded into one statement, `fold_rows`); on PostgreSQL a unit whose only
  writes are deferred rows writes them, when they fold into one statement or are rows of one statement, in that one
  atomic statement or executemany and no BEGIN/COMMIT of its own.
- `reading()` is a reading unit: no transaction (under READ COMMITTED each statement takes its own snapshot either
  way), and a statement that writes or locks rows is refused before it runs (`UnitIsReadOnly`).
- A unit opened while another unit of the same task holds its connection fails at once (`NestedUnitOfWork`):
  nesting could only wait for itself (SQLite's write lock, a PostgreSQL row lock). A unit that has run no
  statement holds nothing, so an independent unit may run before it (the client-assertion replay cache commits its
  jti in a transaction of its own, RFC 7523 section 3).

`Compiled.build` refuses, when the statement is first compiled, what this layer cannot run: expanding or
literal-execute parameters (`IN` lists), and an INSERT listing a NOT NULL column whose only default is the
server's. Python-side `onupdate` values are applied as the ORM would.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import functools
import json
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Table
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.engine import Dialect
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, AsyncSession, async_sessionmaker
from sqlalchemy.sql import ClauseElement, Insert, Select, Update
from sqlalchemy.sql.dml import UpdateBase

from storage.engine import SQLITE_BUSY_TIMEOUT_SECONDS

Processor = Callable[[Any], Any] | None


class UnsupportedStatement(ValueError):
    """A statement this layer cannot run as written (raised when it is first compiled)."""


class UnitIsReadOnly(RuntimeError):
    """A writing or locking statement in a unit declared `reading()`."""


class WriteLockTimeout(TimeoutError):
    """SQLite: a writing unit waited longer than the busy timeout for the process's writer lock."""


class NestedUnitOfWork(RuntimeError):
    """A unit of work opened while another unit of the same task holds its connection."""


class MissingParameter(KeyError):
    """A statement's parameter was not given and has no default."""


@dataclass(frozen=True, slots=True)
class Compiled:
    """One Core statement as the driver's SQL text, with its parameter order and the type conversions."""

    sql: str
    names: tuple[str, ...]
    binds: tuple[Processor, ...]
    results: tuple[Processor, ...]
    defaults: Mapping[str, Callable[[], Any]]
    writes: bool
    """INSERT, UPDATE or DELETE, or a SELECT that locks rows (FOR UPDATE / FOR SHARE): it needs a writing unit."""

    @classmethod
    def build(cls, statement: ClauseElement, dialect: Dialect) -> Compiled:
        compiled: Any = statement.compile(dialect=dialect)  # a SQLCompiler: positiontup and binds
        names = tuple(compiled.positiontup or ())
        for name, bind in compiled.binds.items():
            if bind.expanding or bind.literal_execute:
                raise UnsupportedStatement(f"parameter {name!r} expands at execution (an IN list): units of work "
                                           "run statements compiled once; use = ANY(...) or one statement per value")
        binds = tuple(compiled.binds[name].type.dialect_impl(dialect).bind_processor(dialect) for name in names)
        columns = getattr(statement, "exported_columns", ())  # SELECT columns, or a DML statement's RETURNING
        results = tuple(column.type.dialect_impl(dialect).result_processor(dialect, None) for column in columns)
        defaults = _insert_defaults(statement, names)
        defaults.update(_update_defaults(statement, compiled))
        for name in names:  # literal values in the statement (`column != ""`): their anonymous parameters
            bind = compiled.binds[name]
            if not bind.required and name not in defaults:
                defaults[name] = _constant(bind.effective_value)
        writes = isinstance(statement, UpdateBase) or (
            isinstance(statement, Select) and statement._for_update_arg is not None)  # no public form
        return cls(str(compiled), names, binds, results, defaults, writes)

    def args(self, params: Mapping[str, Any]) -> list[Any]:
        out = []
        for name, process in zip(self.names, self.binds, strict=True):
            if name in params:
                value = params[name]
            elif name in self.defaults:
                value = self.defaults[name]()
            else:
                raise MissingParameter(f"no value for parameter {name!r} of: {self.sql}")
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


def _column_default(default: Any) -> Callable[[], Any] | None:
    if default is None:
        return None
    if default.is_callable:
        return functools.partial(default.arg, None)  # SQLAlchemy wraps it to take a context
    if default.is_scalar:
        return _constant(default.arg)
    return None  # a SQL expression: compiled into the statement itself


def _insert_defaults(statement: ClauseElement, names: tuple[str, ...]) -> dict[str, Callable[[], Any]]:
    """The model's Python-side column defaults (ids, created_at) for an INSERT of a whole table, which the ORM
    would otherwise apply: a value left out of an insert's parameters takes its column's default, or NULL. A NOT
    NULL column whose only default is the server's cannot be left out of a listed column: refused."""
    target = getattr(statement, "table", None)
    if not isinstance(statement, Insert) or target is None:
        return {}
    defaults: dict[str, Callable[[], Any]] = {}
    for column in target.columns:
        default = _column_default(column.default)
        if default is not None:
            defaults[column.key] = default
        elif column.nullable and column.server_default is None:
            defaults[column.key] = _none  # an optional column left out is NULL, as in an ORM insert
        elif column.server_default is not None and column.key in names:
            raise UnsupportedStatement(
                f"INSERT INTO {target.name} lists {column.key}, whose only default is the server's: name the "
                "inserted columns with .values(...) or give the column a Python-side default")
    return defaults


def _update_defaults(statement: ClauseElement, compiled: Any) -> dict[str, Callable[[], Any]]:
    """Python-side `onupdate` values of an UPDATE (the columns SQLAlchemy would compute before running it)."""
    if not isinstance(statement, Update):
        return {}
    defaults: dict[str, Callable[[], Any]] = {}
    for column in compiled.update_prefetch:
        found = _column_default(column.onupdate)
        if found is None:
            raise UnsupportedStatement(f"onupdate of {column.key} cannot be computed here")
        defaults[column.key] = found
    return defaults


def insert_ignoring(target: Table, *keys: str) -> dict[str, Insert]:
    """INSERT ... ON CONFLICT (keys) DO NOTHING by dialect name (PostgreSQL and SQLite spell it the same, each
    through its own dialect module); a unit picks its own with `tx.dialect_name`."""
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


_HOLDING: contextvars.ContextVar[bool] = contextvars.ContextVar("acar_unit_holding", default=False)
"""Whether a unit of work of the current task holds a database connection."""


def keeps_writes(exc: BaseException | None) -> bool:
    """The one commit rule of every unit of work: it commits when it ends normally, and when it ends with an error
    marked `persist` (a refusal that itself changed what must stay changed: a reused authorization code revoking
    its tokens, RFC 6749 section 4.1.2; a consumed WebAuthn challenge; an attempt count); any other error rolls
    it back, so bad input changes nothing."""
    return getattr(exc, "persist", False) is True


class DirectDatabase:
    """Hands out units of work (see module docstring)."""

    def __init__(self, dialect: Dialect) -> None:
        self.dialect = dialect
        self.commits = 0
        """Transactions committed (tests count group commits with it)."""

    def compiled(self, statement: ClauseElement) -> Compiled:
        return compiled_for(statement, self.dialect)

    def transaction(self) -> Transaction:
        """A writing unit (`async with`): its transaction begins at its first statement; committed or rolled back
        by `keeps_writes`."""
        return self._unit(write=True)

    def reading(self) -> Transaction:
        """A reading unit (`async with`): no transaction; writing or locking statements are refused."""
        return self._unit(write=False)

    def owning(self, session: AsyncSession) -> SessionTransaction:
        """A writing unit on `session`, which it owns (begun at its first statement or `begin`, closed at its end):
        for a unit whose ORM services share its session (enrollment)."""
        return SessionTransaction(session, owned=True)

    def _unit(self, *, write: bool) -> Transaction:
        raise NotImplementedError

    async def close(self) -> None:
        raise NotImplementedError


class Transaction:
    """Statements of one unit of work (see module docstring for when its transaction begins)."""

    def __init__(self, dialect: Dialect, *, write: bool = True, database: DirectDatabase | None = None) -> None:
        self._dialect = dialect
        self._database = database
        """Where the unit's commits are counted (DirectDatabase.commits), if anywhere."""
        self.dialect_name = dialect.name
        self.write = write
        self._deferred: list[tuple[Compiled, list[Any]]] = []
        self._deferring: set[object] = set()
        """The stores whose rows deferred with `defer(..., by=store)` are still unwritten (`written_for`)."""
        self.begun = False
        """True while the unit holds a connection."""
        self._holding: contextvars.Token[bool] | None = None

    async def __aenter__(self) -> Transaction:
        return self

    async def __aexit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: object) -> None:
        await self.finish(commit=kind is None or keeps_writes(exc))

    async def begin(self) -> None:
        """Take the connection and begin now, before the first statement: for a unit whose ORM services share its
        session (its transaction must hold whatever they do)."""
        if not self.begun:
            await self._begin_now()

    def _compiled(self, statement: ClauseElement) -> Compiled:
        compiled = compiled_for(statement, self._dialect)
        if compiled.writes and not self.write:
            raise UnitIsReadOnly(f"a reading unit of work cannot run: {compiled.sql}")
        return compiled

    async def one(self, statement: ClauseElement, **params: Any) -> tuple[Any, ...] | None:
        compiled = self._compiled(statement)
        raw = await self._fetchone(compiled, compiled.args(params))
        return compiled.row(raw) if raw is not None else None

    async def all(self, statement: ClauseElement, **params: Any) -> list[tuple[Any, ...]]:
        compiled = self._compiled(statement)
        return [compiled.row(raw) for raw in await self._fetchall(compiled, compiled.args(params))]

    async def execute(self, statement: ClauseElement, **params: Any) -> int:
        """Run a statement; the number of rows it changed."""
        compiled = self._compiled(statement)
        return await self._execute(compiled, compiled.args(params))

    async def execute_many(self, statement: ClauseElement, rows: Sequence[Mapping[str, Any]]) -> None:
        if rows:
            compiled = self._compiled(statement)
            await self._executemany(compiled.sql, [compiled.args(row) for row in rows])

    def defer(self, statement: ClauseElement, /, *, by: object = None, **params: Any) -> None:
        """Write this row just before COMMIT (with the unit's other deferred rows: `finish`, `fold_rows`); a unit
        of work that rolls back never writes it. `by`: the store deferring it, when that store's later statements
        may read or change the row: it calls `written_for` before them."""
        compiled = self._compiled(statement)
        self._deferred.append((compiled, compiled.args(params)))
        if by is not None:
            self._deferring.add(by)

    async def written_for(self, store: object) -> None:
        """Before a statement of `store` that may read or change rows it deferred: write the deferred rows now (all
        of them, in the unit's transaction) if any of its rows is still unwritten, so the unit reads its own writes
        as if they had been executed at once. Nothing to do otherwise: the rows stay for the COMMIT."""
        if store in self._deferring:
            await self.flush()

    async def flush(self) -> None:
        """Write the deferred rows now, in the unit's transaction."""
        self._deferring.clear()
        await self._write_deferred()

    async def _write_deferred(self) -> None:
        deferred, self._deferred = self._deferred, []
        by_sql: dict[str, list[list[Any]]] = {}
        for compiled, args in deferred:
            by_sql.setdefault(compiled.sql, []).append(args)
        for sql, rows in by_sql.items():
            await self._executemany(sql, rows)

    async def finish(self, *, commit: bool) -> None:
        """End the unit: write the deferred rows and commit, or roll back (a failed COMMIT rolls back)."""
        try:
            if commit and self._deferred:
                if not self.begun and await self._write_alone(self._deferred):
                    return
                await self.flush()
        except BaseException:
            if self.begun:
                await self._release(commit=False)
            raise
        finally:
            self._deferred.clear()
            self._deferring.clear()
        if self.begun:
            await self._release(commit=commit)

    def _hold(self) -> None:
        """Mark this task as holding a connection, refusing a unit nested in another that holds one."""
        if _HOLDING.get():
            raise NestedUnitOfWork("a unit of work was opened inside another that holds a database connection; "
                                   "run it after the outer unit, or pass the outer unit's stores down")
        self._holding = _HOLDING.set(True)
        self.begun = True

    async def _release(self, *, commit: bool) -> None:
        try:
            await self._end(commit=commit)
            if commit:
                self._counted()
        finally:
            self.begun = False
            if self._holding is not None:
                holding, self._holding = self._holding, None
                try:
                    _HOLDING.reset(holding)
                except ValueError:  # released in another context than it was taken in: clear it there
                    _HOLDING.set(False)

    def _counted(self) -> None:
        if self._database is not None:
            self._database.commits += 1

    # driver specific
    async def _begin_now(self) -> None:
        raise NotImplementedError

    async def _write_alone(self, deferred: list[tuple[Compiled, list[Any]]]) -> bool:
        """When the unit has run no statement: write these deferred rows atomically without a transaction of its
        own and end the unit (True), or leave them to a transaction (False)."""
        return False

    async def _fetchone(self, compiled: Compiled, args: list[Any]) -> Sequence[Any] | None:
        raise NotImplementedError

    async def _fetchall(self, compiled: Compiled, args: list[Any]) -> list[Sequence[Any]]:
        raise NotImplementedError

    async def _execute(self, compiled: Compiled, args: list[Any]) -> int:
        raise NotImplementedError

    async def _executemany(self, sql: str, rows: list[list[Any]]) -> None:
        raise NotImplementedError

    async def _end(self, *, commit: bool) -> None:
        raise NotImplementedError


# --- PostgreSQL (asyncpg) -----------------------------------------------------------------------------------

def _connection_lost(exc: BaseException) -> bool:
    """A server connection that is gone (a database restart, pg_terminate_backend), not an error of the statement:
    the socket is closed, the server said it shuts the session down, or asyncpg's protocol state was left broken by
    the termination arriving mid-operation (InternalClientError)."""
    import asyncpg  # type: ignore[import-untyped]

    return isinstance(exc, OSError | asyncpg.exceptions.InterfaceError | asyncpg.exceptions.PostgresConnectionError
                      | asyncpg.exceptions.AdminShutdownError | asyncpg.exceptions.CannotConnectNowError
                      | asyncpg.exceptions.InternalClientError)


class PostgresDirect(DirectDatabase):
    """Units of work on an asyncpg pool of their own (`pool_size` connections, opened on first use). Its
    connections decode JSON as the SQLAlchemy dialect's do (`_json_codecs`), so the column types' processors
    apply unchanged; a pool checkout costs a fraction of an SQLAlchemy one (no greenlet hand-off).

    Error policy: a unit whose connection turns out to be gone at its first statement (nothing has happened on it
    yet) expires the pool's connections and runs on a fresh one, once; any later failure fails the unit."""

    def __init__(self, engine: AsyncEngine, *, pool_size: int = 10) -> None:
        if engine.dialect.driver != "asyncpg":
            raise ValueError(f"direct units of work need the asyncpg driver, not {engine.dialect.driver}")
        super().__init__(engine.dialect)
        self._dsn = engine.url.set(drivername="postgresql").render_as_string(hide_password=False)
        self.pool_size = pool_size
        self._pool: Any = None
        self._opening = asyncio.Lock()

    async def pool(self) -> Any:
        if self._pool is None:
            async with self._opening:
                if self._pool is None:
                    import asyncpg

                    self._pool = await asyncpg.create_pool(self._dsn, min_size=1, max_size=self.pool_size,
                                                           init=_json_codecs, reset=_session_unchanged)
        return self._pool

    async def expire(self) -> None:
        """After a connection error (a database restart): the pool opens fresh connections from now on."""
        if self._pool is not None:
            await self._pool.expire_connections()

    def _unit(self, *, write: bool) -> Transaction:
        return _PostgresTransaction(self, write=write)

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


_PARAMETER = re.compile(r"\$(\d+)")
MAX_FOLDED_ROWS = 16
"""Deferred rows up to this many are written as one statement (`fold_rows`); more, by an executemany per statement
(each distinct number of rows is a statement of its own in asyncpg's statement cache: this keeps them few)."""
_FOLDABLE = ("INSERT INTO ", "DELETE FROM ")


def fold_rows(deferred: Sequence[tuple[Compiled, list[Any]]]) -> tuple[str, list[Any]] | None:
    """PostgreSQL: deferred rows (a login's session, grant, code and audit events, and the DELETE of its pending
    request; a token's audit event beside the person's access record; a batch of the group commit's audit events)
    as ONE statement, the parameters renumbered in order. Rows of one plain `INSERT ... VALUES (...)` become one
    multi-row INSERT (its VALUES list); the statement's other parts are data-modifying CTEs, which PostgreSQL runs
    exactly once and to completion whether or not the main statement reads them (PostgreSQL manual,
    "Data-Modifying Statements in WITH", and INSERT: "VALUES ... a list of rows"): `WITH w0 AS (INSERT ... VALUES
    (...), (...)), w1 AS (DELETE ...) INSERT ...`. One round trip where an executemany per statement costs one each
    and every row a Bind and Execute of its own; atomic like any statement, and its foreign keys are checked at its
    end, so a row may refer to one inserted beside it. The parts run with one snapshot and cannot see each other's
    rows: a store deletes in a deferred row only what an earlier unit wrote (idp.sql.store). None (an executemany
    per statement then) for one row, too many rows, or SQL this must not rewrite: anything but a plain INSERT or
    DELETE, a RETURNING clause, or text holding a quote (a literal could hold a `$n`); an INSERT with anything after
    its VALUES row (ON CONFLICT) is a part of its own for each row."""
    if not 1 < len(deferred) <= MAX_FOLDED_ROWS:
        return None
    sql = _folded(tuple(compiled.sql for compiled, _ in deferred), tuple(len(row) for _, row in deferred))
    return (sql, [arg for _, row in deferred for arg in row]) if sql is not None else None


@functools.lru_cache(maxsize=256)
def _folded(statements: tuple[str, ...], widths: tuple[int, ...]) -> str | None:
    """`fold_rows`'s statement for rows of these statements with these numbers of parameters (a unit's writes
    repeat: a login, a token, a batch of some size), built once."""
    parts: list[tuple[str, list[str]]] = []
    """Each part of the statement: a statement and no rows, or an INSERT's head (`INSERT INTO t (...) VALUES `) and
    the rows it takes."""
    heads: dict[str, list[str]] = {}
    shift = 0
    for sql, width in zip(statements, widths, strict=True):
        if not sql.startswith(_FOLDABLE) or "RETURNING" in sql or "'" in sql or ";" in sql:
            return None
        shifted = _PARAMETER.sub(functools.partial(_shifted, by=shift), sql)
        shift += width
        row = _values_row(sql)
        if row is None:  # a DELETE, or an INSERT that cannot take more rows: a part of its own
            parts.append((shifted, []))
            continue
        rows = heads.get(sql[:row])
        if rows is None:
            rows = heads[sql[:row]] = []
            parts.append((sql[:row], rows))
        rows.append(shifted[row:])  # the head holds no parameter: it is the same in `shifted`
    texts = [head + ", ".join(rows) for head, rows in parts]
    if len(texts) == 1:
        return texts[0]
    ctes = ", ".join(f"w{n} AS ({text})" for n, text in enumerate(texts[:-1]))
    return f"WITH {ctes} {texts[-1]}"


def _values_row(sql: str) -> int | None:
    """Where the row of `INSERT INTO t (...) VALUES (...)` begins, when that row ends the statement (so more rows
    may follow it); else None."""
    if not sql.startswith("INSERT INTO ") or not sql.endswith(")"):
        return None
    start = sql.find(" VALUES (")
    if start < 0:
        return None
    start += len(" VALUES ")
    depth = 0
    for at in range(start, len(sql)):
        if sql[at] == "(":
            depth += 1
        elif sql[at] == ")":
            depth -= 1
            if depth == 0:
                return start if at == len(sql) - 1 else None
    return None


def _shifted(found: re.Match[str], *, by: int) -> str:
    return f"${int(found.group(1)) + by}"


async def _write_rows(driver: Any, sql: str, rows: list[list[Any]]) -> None:
    """Rows of one statement on an asyncpg connection: an executemany, or for one row a plain execute (less of
    asyncpg's work: about 10 us of CPU per row on this machine, docs/performance.md)."""
    if len(rows) == 1:
        await driver.execute(sql, *rows[0])
    else:
        await driver.executemany(sql, rows)


class _PostgresTransaction(Transaction):
    def __init__(self, database: PostgresDirect, *, write: bool) -> None:
        super().__init__(database.dialect, write=write, database=database)
        self._db = database
        self._pool: Any = None
        self._driver: Any = None
        self._tx: Any = None
        self._used = False

    async def _acquire(self) -> Any:
        """The unit's connection; a writing unit's transaction begins with it."""
        self._hold()
        try:
            self._pool = await self._db.pool()
            self._driver = await self._pool.acquire()
            if self.write:
                tx = self._driver.transaction()
                await tx.start()
                self._tx = tx
        except BaseException:
            await self._release(commit=False)
            raise
        return self._driver

    async def _begin_now(self) -> None:
        await self._acquire()

    async def _run(self, call: Callable[[Any], Any]) -> Any:
        """Run one driver call on the unit's connection; at the first, a lost connection is retried once."""
        if self._driver is not None:
            self._used = True
            return await call(self._driver)
        for attempt in (1, 2):
            try:
                result = await call(await self._acquire())
            except BaseException as exc:
                if attempt == 1 and _connection_lost(exc):
                    if self.begun:
                        with contextlib.suppress(Exception):  # giving back a dead connection may fail too
                            await self._release(commit=False)
                    await self._db.expire()  # connections the server dropped are not reused
                    continue
                raise
            self._used = True
            return result
        raise AssertionError("unreachable")  # pragma: no cover

    async def _fetchone(self, compiled: Compiled, args: list[Any]) -> Sequence[Any] | None:
        return await self._run(lambda driver: driver.fetchrow(compiled.sql, *args))  # type: ignore[no-any-return]

    async def _fetchall(self, compiled: Compiled, args: list[Any]) -> list[Sequence[Any]]:
        return list(await self._run(lambda driver: driver.fetch(compiled.sql, *args)))

    async def _execute(self, compiled: Compiled, args: list[Any]) -> int:
        status = await self._run(lambda driver: driver.execute(compiled.sql, *args))  # "UPDATE 1", "INSERT 0 1"
        tail = str(status).rsplit(" ", 1)[-1]
        return int(tail) if tail.isdigit() else 0

    async def _executemany(self, sql: str, rows: list[list[Any]]) -> None:
        await self._run(lambda driver: _write_rows(driver, sql, rows))

    async def _write_deferred(self) -> None:
        """Rows of several statements in one statement (`fold_rows`), else an executemany per statement."""
        folded = fold_rows(self._deferred)
        if folded is None:
            await super()._write_deferred()
            return
        self._deferred = []
        sql, args = folded
        await self._run(lambda driver: driver.execute(sql, *args))

    async def _write_alone(self, deferred: list[tuple[Compiled, list[Any]]]) -> bool:
        """One statement is atomic by itself, and so is asyncpg's executemany (one implicit transaction, all rows or
        none); either costs one round trip, where BEGIN, the writes and COMMIT cost three or more: a unit whose only
        writes are its deferred rows (an audit batch of the group commit) writes them as one statement where
        `fold_rows` can (a batch of audit events: one multi-row INSERT, which PostgreSQL parses, plans and executes
        once instead of once per row), else, when they are rows of one statement, by `_write_rows`."""
        folded = fold_rows(deferred)
        statements = {compiled.sql for compiled, _ in deferred}
        if folded is None and len(statements) > 1:
            return False
        self._hold()
        try:
            self._pool = await self._db.pool()
            self._driver = await self._pool.acquire()
            if folded is not None:
                await self._driver.execute(folded[0], *folded[1])
            else:
                await _write_rows(self._driver, statements.pop(), [args for _, args in deferred])
        finally:
            await self._release(commit=False)  # nothing to end but the checkout
        self._counted()
        return True

    async def _end(self, *, commit: bool) -> None:
        """Commit or roll back, and give the connection back (a failed COMMIT leaves nothing behind)."""
        driver, tx, pool = self._driver, self._tx, self._pool
        self._driver = self._tx = None
        try:
            if tx is not None:
                if commit:
                    await tx.commit()
                else:
                    await tx.rollback()
        finally:
            if driver is not None:
                await pool.release(driver)  # the pool resets a connection whose transaction failed


# --- the same statements inside an ORM session's transaction -----------------------------------------------

class SessionTransaction(Transaction):
    """The unit-of-work interface inside an AsyncSession's transaction: the same compiled statements, run on the
    session's connection as driver SQL, with the same conversions. Over a session the caller owns (enrollment,
    the CLI) it is a bridge: `flush` writes the deferred rows into the caller's transaction, which the caller
    commits. `SessionDirect` and `RequestUnit.with_orm` open units that own their session."""

    def __init__(self, session: AsyncSession, *, write: bool = True, owned: bool = False,
                 database: DirectDatabase | None = None, writer: asyncio.Lock | None = None) -> None:
        """`owned`: the unit's own session (a unit of work: begun at its first statement, closed at its end);
        otherwise a bridge over the caller's. `database` counts the unit's commits. `writer`: the lock an owned
        writing unit takes before its connection (`SessionDirect`, SQLite)."""
        super().__init__(session.get_bind().dialect, write=write, database=database)
        self.session = session
        self._owned = owned
        self._connection: AsyncConnection | None = None
        self._writer = writer if owned and write else None
        self._writing = False
        """True while the unit holds `writer`."""

    async def _conn(self) -> AsyncConnection:
        if self._connection is None:
            if self._owned:
                self._hold()
                try:
                    if self._writer is not None:
                        await self._take_writer(self._writer)
                    self._connection = await self.session.connection()
                    if self.write and self.dialect_name == "sqlite":
                        # the write lock at once, waited for in the driver's thread (busy_timeout), never on the
                        # loop; reads before a write share its transaction. A reading unit begins none: sqlite3
                        # runs its statements in autocommit, each on the newest snapshot (WAL).
                        await self._connection.exec_driver_sql("BEGIN IMMEDIATE")
                except BaseException:
                    await self._release(commit=False)
                    raise
            else:
                self._connection = await self.session.connection()
        return self._connection

    async def _take_writer(self, writer: asyncio.Lock) -> None:
        """Wait for the process's writer lock, holding no connection meanwhile, at most as long as SQLite's
        busy timeout would have waited for the database's write lock."""
        try:
            async with asyncio.timeout(SQLITE_BUSY_TIMEOUT_SECONDS):
                await writer.acquire()
        except TimeoutError:
            raise WriteLockTimeout(f"no write lock after {SQLITE_BUSY_TIMEOUT_SECONDS} s: the database is busy "
                                   "with other writing units") from None
        self._writing = True

    def _give_writer(self) -> None:
        if self._writing and self._writer is not None:
            self._writing = False
            self._writer.release()

    async def _begin_now(self) -> None:
        await self._conn()

    async def _fetchone(self, compiled: Compiled, args: list[Any]) -> Sequence[Any] | None:
        row = (await (await self._conn()).exec_driver_sql(compiled.sql, tuple(args))).first()
        return tuple(row) if row is not None else None

    async def _fetchall(self, compiled: Compiled, args: list[Any]) -> list[Sequence[Any]]:
        return [tuple(row) for row in (await (await self._conn()).exec_driver_sql(compiled.sql, tuple(args))).all()]

    async def _execute(self, compiled: Compiled, args: list[Any]) -> int:
        return int((await (await self._conn()).exec_driver_sql(compiled.sql, tuple(args))).rowcount or 0)

    async def _executemany(self, sql: str, rows: list[list[Any]]) -> None:
        await (await self._conn()).exec_driver_sql(sql, [tuple(row) for row in rows])

    async def finish(self, *, commit: bool) -> None:
        if not self._owned:  # a bridge: its deferred rows go into the caller's transaction, which the caller ends
            if commit:
                await self.flush()
            return
        if commit and self._deferred and not self.begun:
            await self._conn()  # deferred rows only: written in a transaction of their own
        await super().finish(commit=commit)

    async def _end(self, *, commit: bool) -> None:
        session, self._connection = self.session, None
        try:
            if commit:
                await session.commit()
            else:
                await session.rollback()
        finally:
            try:
                await session.close()
            finally:
                self._give_writer()  # after the connection is back in the pool, for the next writer to take


class SessionDirect(DirectDatabase):
    """Units of work each on an ORM session of their own (SQLite, the embedded default): the same statements and
    rules as on PostgreSQL, on the session's connection.

    SQLite has one write lock per database. A writing unit first takes this process's writer lock (an asyncio.Lock,
    waited for on the event loop without holding anything), then its connection, then the database's write lock
    with BEGIN IMMEDIATE (waited for in the driver's thread, for writers of other processes: the CLI). So a unit
    never holds a pool connection while it waits for the write lock. Without this, a burst of writing units filled
    the ORM pool (ACAR_DATABASE_POOL_SIZE, twice that in a burst) with connections waiting in BEGIN IMMEDIATE,
    while the unit holding the write lock waited for one more connection to reload the token keys or a client
    (keys.token_keys, idp.sql.clients: caches that read in sessions of their own): a deadlock that only SQLite's
    busy timeout broke, failing the waiters with "database is locked" after 10 s. Writers queue here instead,
    in order; SQLite runs one writer at a time anyway, so nothing is lost. Reading units take no lock (WAL readers
    run beside the writer)."""

    def __init__(self, sessions: async_sessionmaker[AsyncSession]) -> None:
        bind = sessions.kw.get("bind")
        if bind is None:
            raise ValueError("SessionDirect needs a session factory bound to an engine")
        super().__init__(bind.dialect)
        self._sessions = sessions
        self._writer = asyncio.Lock()

    def _unit(self, *, write: bool) -> Transaction:
        return SessionTransaction(self._sessions(), write=write, owned=True, database=self, writer=self._writer)

    def owning(self, session: AsyncSession) -> SessionTransaction:
        return SessionTransaction(session, owned=True, writer=self._writer)

    async def close(self) -> None:
        """Nothing of its own to close: the sessions' engine is closed by its owner."""

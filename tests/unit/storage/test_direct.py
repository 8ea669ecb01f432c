"""Units of work (storage.direct): what they write the ORM reads back unchanged and the other way round, on the
suite's database (SQLite or PostgreSQL); all or nothing; no transaction for a unit without statements; the
declared transaction rule (a writing unit's transaction from its first statement, a reading unit refusing writes
and locks); a nested unit failing at once; statements the layer cannot run refused when compiled; on SQLite,
waiting for another connection's write lock without stalling the event loop."""

from __future__ import annotations

import asyncio
import datetime as dt
import sqlite3
import time
import uuid
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Column, Integer, MetaData, String, Table, bindparam, delete, func, insert, select, update
from sqlalchemy.dialects import postgresql, sqlite

from api.deps import Services
from idp.sql.models import Grant, Person
from idp.sql.store import GRANT
from storage import create_engine, create_session_factory
from storage.audit import INSERT_AUDIT, AuditEvent, audit_row
from storage.direct import (
    MAX_FOLDED_ROWS,
    Compiled,
    NestedUnitOfWork,
    SessionDirect,
    UnitIsReadOnly,
    UnsupportedStatement,
    fold_rows,
)
from tests.oidc_tools import register_client

WHEN = dt.datetime(2026, 11, 27, 12, 30, 15, 123456, tzinfo=dt.UTC)
COUNT_EVENTS = select(func.count(AuditEvent.id))
REPRESENTS = {"mandate_id": "m-1", "voen": "1400057421", "name": "Şəki Şirkəti MMC", "powers": ["represent_at_login"]}


async def _events(services: Services, event_type: str) -> list[AuditEvent]:
    async with services.sessions() as session:
        return list((await session.execute(select(AuditEvent).where(AuditEvent.event_type == event_type)))
                    .scalars().all())


async def test_rows_written_directly_read_the_same_through_the_orm(services: Services) -> None:
    detail = {"scope": "openid fin", "n": 3, "nested": {"list": [1, "iki", None]}, "text": "Şəki ünvanı"}
    async with services.direct.transaction() as tx:
        tx.defer(INSERT_AUDIT, **audit_row("test.direct", actor="tester", subject="s", detail=detail,
                                           request_id="r1", clock=WHEN))
        await tx.execute(INSERT_AUDIT, **audit_row("test.direct", actor="tester", detail=None, clock=WHEN))

    events = sorted(await _events(services, "test.direct"), key=lambda e: e.subject or "")
    assert [(e.actor, e.subject, e.request_id, e.detail, e.occurred_at) for e in events] == [
        ("tester", None, None, {}, WHEN), ("tester", "s", "r1", detail, WHEN)]


async def test_rows_the_orm_wrote_read_the_same_directly(services: Services) -> None:
    rp = await register_client(services)
    async with services.sessions() as session, session.begin():
        person = Person(given_name="Aysel", family_name="Məmmədova", fin="AB12C3D")
        session.add(person)
        await session.flush()
        session.add(Grant(id="g-direct", client_id=rp.client_id, person_id=person.id, session_sid=None, sub="sub-1",
                          scope="openid", claims={"released": ["fin"], "id_token": {"fin": None}}, acr="urn:x",
                          amr=["hwk", "user"], auth_time=WHEN, expires_at=WHEN + dt.timedelta(days=1),
                          represents=REPRESENTS))

    async with services.direct.transaction() as tx:
        row = await tx.one(GRANT, id="g-direct")
        missing = await tx.one(GRANT, id="nothing")

    assert missing is None
    assert row == ("g-direct", rp.client_id, person.id, None, "sub-1", "openid",
                   {"released": ["fin"], "id_token": {"fin": None}}, "urn:x", ["hwk", "user"], WHEN,
                   WHEN + dt.timedelta(days=1), None, REPRESENTS)


async def test_a_unit_that_raises_writes_nothing(services: Services) -> None:
    async def refused() -> None:
        async with services.direct.transaction() as tx:
            await tx.execute(INSERT_AUDIT, **audit_row("test.rolled_back", actor="tester"))
            tx.defer(INSERT_AUDIT, **audit_row("test.rolled_back", actor="tester"))
            raise RuntimeError("refused")

    with pytest.raises(RuntimeError):
        await refused()

    assert await _events(services, "test.rolled_back") == []


async def test_a_failing_deferred_row_rolls_back_the_whole_unit(services: Services) -> None:
    async def half() -> None:
        async with services.direct.transaction() as tx:
            await tx.execute(INSERT_AUDIT, **audit_row("test.half", actor="tester"))
            tx.defer(INSERT_AUDIT, **{**audit_row("test.half", actor="tester"), "actor": None})

    with pytest.raises(Exception):  # noqa: B017, PT011 - the driver's own error for a NOT NULL column
        await half()

    assert await _events(services, "test.half") == []
    async with services.direct.transaction() as tx:  # the connection is usable again
        await tx.execute(INSERT_AUDIT, **audit_row("test.after", actor="tester"))
    assert len(await _events(services, "test.after")) == 1


async def test_a_unit_writing_only_deferred_rows_writes_all_or_none(services: Services) -> None:
    """On PostgreSQL such a unit writes its rows with one atomic executemany and no transaction of its own
    (Transaction.finish); either way a bad row leaves none of the batch behind, and a good batch is counted."""
    async def batch(*rows: dict[str, object]) -> None:
        async with services.direct.transaction() as tx:
            assert await tx.one(COUNT_EVENTS) is not None  # a read first: still no write
            for row in rows:
                tx.defer(INSERT_AUDIT, **row)

    good = audit_row("test.batch", actor="tester")
    with pytest.raises(Exception):  # noqa: B017, PT011 - the driver's own error for a NOT NULL column
        await batch(good, {**audit_row("test.batch", actor="tester"), "actor": None}, good)
    assert await _events(services, "test.batch") == []

    before = services.direct.commits
    await batch(*[audit_row("test.batch", actor="tester", subject=str(i)) for i in range(3)])
    assert sorted(e.subject for e in await _events(services, "test.batch")) == ["0", "1", "2"]
    assert services.direct.commits == before + 1
    async with services.direct.transaction() as tx:  # the connection went back to the pool in a usable state
        await tx.execute(INSERT_AUDIT, **audit_row("test.after_batch", actor="tester"))
    assert len(await _events(services, "test.after_batch")) == 1


async def test_a_unit_without_statements_begins_no_transaction(services: Services) -> None:
    before = services.direct.commits
    async with services.direct.transaction() as tx:
        assert not tx.begun

    assert services.direct.commits == before


async def test_sqlite_waits_for_another_writer_without_stalling_the_loop(tmp_path: Path) -> None:
    """Runs on its own SQLite file in both suite passes: a unit that finds the write lock taken (another process,
    the CLI) waits in the driver's thread (BEGIN IMMEDIATE under busy_timeout), so other coroutines go on, and
    writes once the lock is free."""
    path = tmp_path / "lock.sqlite3"
    setup = sqlite3.connect(path)
    setup.execute("PRAGMA journal_mode=WAL")
    setup.execute("CREATE TABLE audit_events (id VARCHAR(36) PRIMARY KEY, occurred_at DATETIME, event_type "
                  "VARCHAR(64), actor VARCHAR(200), subject VARCHAR(200), request_id VARCHAR(64), detail JSON, "
                  "chain VARCHAR(16), seq BIGINT, chain_hash VARCHAR(64))")
    setup.commit()
    engine = create_engine(f"sqlite+aiosqlite:///{path}")
    direct = SessionDirect(create_session_factory(engine))
    holder = sqlite3.connect(path, isolation_level=None)
    holder.execute("BEGIN IMMEDIATE")  # another connection holds the write lock
    ticks = 0

    async def ticker() -> None:
        nonlocal ticks
        while True:
            await asyncio.sleep(0.005)
            ticks += 1

    async def write() -> None:
        async with direct.transaction() as tx:
            await tx.execute(INSERT_AUDIT, **audit_row("test.waited", actor="tester"))

    clock = asyncio.create_task(ticker())
    writer = asyncio.create_task(write())
    started = time.monotonic()
    await asyncio.sleep(0.3)
    assert not writer.done()
    assert ticks >= 20  # the loop kept running while the writer waited
    holder.execute("COMMIT")
    await asyncio.wait_for(writer, 5)
    clock.cancel()
    assert time.monotonic() - started < 5
    count = select(func.count()).select_from(AuditEvent).where(AuditEvent.event_type == bindparam("t"))
    assert setup.execute(str(count.compile(engine.sync_engine)), ("test.waited",)).fetchone() == (1,)
    holder.close()
    setup.close()
    await direct.close()
    await engine.dispose()


async def test_sqlite_writers_queued_behind_the_write_lock_hold_no_connection(tmp_path: Path) -> None:
    """Runs on its own SQLite file in both suite passes, with a pool of one connection and one more in a burst: while
    one writing unit holds the write lock, eight more queue for it, and the holder still gets a second connection (a
    cache reloading in a session of its own) at once. Before SessionDirect's writer lock the queued units took both
    connections in BEGIN IMMEDIATE and the holder waited for one until SQLite's busy timeout failed them."""
    path = tmp_path / "queue.sqlite3"
    setup = sqlite3.connect(path)
    setup.execute("PRAGMA journal_mode=WAL")
    setup.execute("CREATE TABLE audit_events (id VARCHAR(36) PRIMARY KEY, occurred_at DATETIME, event_type "
                  "VARCHAR(64), actor VARCHAR(200), subject VARCHAR(200), request_id VARCHAR(64), detail JSON, "
                  "chain VARCHAR(16), seq BIGINT, chain_hash VARCHAR(64))")
    setup.commit()
    engine = create_engine(f"sqlite+aiosqlite:///{path}", pool_size=1)
    sessions = create_session_factory(engine)
    direct = SessionDirect(sessions)
    count = select(func.count()).select_from(AuditEvent)
    holding = asyncio.Event()

    async def write(*, read_beside: bool = False) -> None:
        async with direct.transaction() as tx:
            await tx.execute(INSERT_AUDIT, **audit_row("test.queued", actor="tester"))
            if read_beside:
                holding.set()
                await asyncio.sleep(0.2)  # the others queue meanwhile
                async with asyncio.timeout(3), sessions() as session:  # a second connection beside the unit's
                    assert (await session.execute(count)).scalar_one() == 0  # WAL: the last committed state

    holder = asyncio.create_task(write(read_beside=True))
    await holding.wait()
    async with asyncio.timeout(5):
        await asyncio.gather(holder, *(write() for _ in range(8)))
    assert setup.execute("SELECT count(*) FROM audit_events").fetchone() == (9,)
    setup.close()
    await direct.close()
    await engine.dispose()


async def test_statements_are_compiled_once(services: Services) -> None:
    statement = insert(AuditEvent.__table__)
    first = services.direct.compiled(statement)

    assert services.direct.compiled(statement) is first


async def test_literal_values_in_a_statement_need_no_parameter(services: Services) -> None:
    """`column != ""` compiles to an anonymous parameter: its value comes from the statement itself."""
    async with services.direct.transaction() as tx:
        await tx.execute(INSERT_AUDIT, **audit_row("test.literal", actor="tester", subject=""))
        await tx.execute(INSERT_AUDIT, **audit_row("test.literal", actor="tester", subject="someone"))
    statement = select(AuditEvent.subject).where(AuditEvent.event_type == "test.literal", AuditEvent.subject != "")
    async with services.direct.transaction() as tx:
        assert await tx.all(statement) == [("someone",)]


async def test_a_writing_unit_begins_its_transaction_at_its_first_statement_even_a_read(services: Services) -> None:
    """The rule is declared, not read off the SQL: a SELECT first still runs inside the unit's transaction, so
    what the unit reads and what it writes are one transaction (a lock taken by a read would be held)."""
    async with services.direct.transaction() as tx:
        assert await tx.one(COUNT_EVENTS) is not None
        assert tx.begun
        await tx.execute(INSERT_AUDIT, **audit_row("test.read_first", actor="tester"))
    assert len(await _events(services, "test.read_first")) == 1


async def test_a_reading_unit_refuses_writing_and_locking_statements(services: Services) -> None:
    async with services.direct.reading() as tx:
        assert await tx.one(COUNT_EVENTS) is not None
        with pytest.raises(UnitIsReadOnly):
            await tx.execute(INSERT_AUDIT, **audit_row("test.read_only", actor="tester"))
        with pytest.raises(UnitIsReadOnly):
            await tx.all(select(AuditEvent.id).with_for_update())
        with pytest.raises(UnitIsReadOnly):
            tx.defer(INSERT_AUDIT, **audit_row("test.read_only", actor="tester"))
    assert await _events(services, "test.read_only") == []


async def test_a_unit_nested_in_one_holding_a_connection_fails_at_once(services: Services) -> None:
    """Nesting could only wait for itself (SQLite's write lock, a row lock): it fails at once, on both databases,
    and the outer unit goes on. A unit that has run nothing holds nothing: a unit before its first statement
    is not nesting (the replay cache's own transaction runs so)."""
    async with services.direct.transaction() as outer:
        async with services.direct.transaction() as independent:
            await independent.execute(INSERT_AUDIT, **audit_row("test.nested", actor="independent"))
        await outer.execute(INSERT_AUDIT, **audit_row("test.nested", actor="outer"))
        for inner in (services.direct.transaction(), services.direct.reading()):
            with pytest.raises(NestedUnitOfWork):
                async with asyncio.timeout(5), inner as tx:
                    await tx.one(COUNT_EVENTS)
        await outer.execute(INSERT_AUDIT, **audit_row("test.nested", actor="outer-after"))
    assert sorted(e.actor for e in await _events(services, "test.nested")) == ["independent", "outer", "outer-after"]
    async with services.direct.transaction() as tx:  # the task holds nothing any more
        await tx.execute(INSERT_AUDIT, **audit_row("test.nested", actor="later"))


_SCRATCH = MetaData()
_DEFAULTED = Table("scratch", _SCRATCH, Column("id", String(8), primary_key=True),
                   Column("level", String(8), nullable=False, server_default="low"),
                   Column("touched", Integer, onupdate=lambda: 7))


@pytest.mark.parametrize("dialect", [postgresql.asyncpg.dialect(), sqlite.aiosqlite.dialect()],
                         ids=["postgresql", "sqlite"])
def test_statements_the_layer_cannot_run_are_refused_when_compiled(dialect: object) -> None:
    with pytest.raises(UnsupportedStatement, match="IN list"):
        Compiled.build(select(AuditEvent.id).where(AuditEvent.id.in_(bindparam("ids", expanding=True))),
                       dialect)  # type: ignore[arg-type]
    with pytest.raises(UnsupportedStatement, match="server's"):
        Compiled.build(insert(_DEFAULTED), dialect)  # type: ignore[arg-type]
    named = Compiled.build(insert(_DEFAULTED).values(id=bindparam("id")), dialect)  # type: ignore[arg-type]
    assert named.names == ("id",)  # the server default applies to the column left out
    changed = Compiled.build(update(_DEFAULTED).where(_DEFAULTED.c.id == bindparam("key"))
                             .values(level=bindparam("level")), dialect)  # type: ignore[arg-type]
    assert dict(zip(changed.names, changed.args({"key": "a", "level": "high"}), strict=True))["touched"] == 7
    assert changed.writes and named.writes
    assert Compiled.build(select(AuditEvent.id).with_for_update(), dialect).writes  # type: ignore[arg-type]
    assert not Compiled.build(select(AuditEvent.id), dialect).writes  # type: ignore[arg-type]


async def test_deferred_rows_of_two_statements_cost_one_round_trip_on_postgresql(services: Services) -> None:
    """A token's audit event and the person's access record (idp.sql.store.INSERT_ACCESS) are deferred rows of two
    INSERT statements: on PostgreSQL they are written by one statement (storage.direct.fold_rows), all or none;
    on SQLite by an executemany each, all or none as well."""
    from idp.sql.models import AccessRecord
    from idp.sql.store import INSERT_ACCESS
    from tests.oidc_tools import register_person

    person = await register_person(services)
    rp = await register_client(services, purpose="Vergi")

    def access(**extra: object) -> dict[str, object]:
        return {"id": str(uuid.uuid4()), "person_id": person, "client_id": rp.client_id, "purpose_of": rp.client_id,
                "kind": "token", "claims": ["fin"], "scopes": ["openid"], "occurred_at": WHEN, **extra}

    async def records() -> list[AccessRecord]:
        async with services.sessions() as session:
            return list((await session.execute(select(AccessRecord))).scalars().all())

    async def half() -> None:
        async with services.direct.transaction() as tx:
            assert await tx.one(COUNT_EVENTS) is not None
            tx.defer(INSERT_AUDIT, **audit_row("test.folded", actor="tester"))
            tx.defer(INSERT_ACCESS, **access(kind=None))

    with pytest.raises(Exception):  # noqa: B017, PT011 - the driver's own error for a NOT NULL column
        await half()
    assert await _events(services, "test.folded") == [] and await records() == []

    calls: list[str] = []
    async with services.direct.transaction() as tx:
        assert await tx.one(COUNT_EVENTS) is not None
        run = getattr(tx, "_run", None)
        if run is not None:  # PostgreSQL: count the driver calls of the commit's writes
            async def counted(call: Any) -> Any:
                calls.append("call")
                return await run(call)
            tx._run = counted  # type: ignore[attr-defined]
        tx.defer(INSERT_AUDIT, **audit_row("test.folded", actor="tester"))
        tx.defer(INSERT_ACCESS, **access())
        tx.defer(INSERT_AUDIT, **audit_row("test.folded", actor="tester", subject="2"))
    assert len(await _events(services, "test.folded")) == 2
    [record] = await records()
    assert (record.kind, record.claims, record.purpose, record.occurred_at) == ("token", ["fin"], "Vergi", WHEN)
    if services.direct.dialect.name == "postgresql":
        assert calls == ["call"]


def test_fold_rows_renumbers_the_parameters() -> None:
    dialect = postgresql.asyncpg.dialect()  # type: ignore[attr-defined]
    t = Table("t", MetaData(), Column("a", Integer), Column("b", String))
    one, two = Compiled.build(insert(t), dialect), Compiled.build(insert(AuditEvent.__table__), dialect)
    folded = fold_rows([(one, [1, "x"]), (two, list(range(10))), (one, [2, "y"])])
    assert folded is not None
    sql, args = folded
    # the rows of one INSERT are one multi-row INSERT, numbered where their arguments are
    assert sql.startswith("WITH w0 AS (INSERT INTO t (a, b) VALUES ($1::INTEGER, $2::VARCHAR), ($13::INTEGER, "
                          "$14::VARCHAR)) INSERT INTO audit_events (id, ") and sql.endswith("$12::VARCHAR)")
    assert "($3::VARCHAR, $4::TIMESTAMP WITH TIME ZONE," in sql and args == [1, "x", *range(10), 2, "y"]
    assert fold_rows([(one, [1, "x"]), (one, [2, "y"]), (one, [3, "z"])]) == (
        ("INSERT INTO t (a, b) VALUES ($1::INTEGER, $2::VARCHAR), ($3::INTEGER, $4::VARCHAR), ($5::INTEGER, "
        "$6::VARCHAR)"), [1, "x", 2, "y", 3, "z"])
    assert fold_rows([(one, [1, "x"])]) is None  # one row: nothing to fold
    assert fold_rows([(one, [n, "x"]) for n in range(MAX_FOLDED_ROWS + 1)]) is None  # an executemany
    assert fold_rows([(one, [1, "x"]), (Compiled.build(update(t).values(a=1), dialect), [1])]) is None
    gone = Compiled.build(delete(t).where(t.c.a == bindparam("a")), dialect)
    folded = fold_rows([(one, [1, "x"]), (gone, [5])])
    assert folded is not None and folded[1] == [1, "x", 5]
    assert folded[0].endswith("DELETE FROM t WHERE t.a = $3::INTEGER")
    returning = Compiled.build(delete(t).where(t.c.a == bindparam("a")).returning(t.c.b), dialect)
    assert fold_rows([(one, [1, "x"]), (returning, [5])]) is None
    # an INSERT with more after its row (ON CONFLICT) takes no other rows: each row is a part of its own
    ignore = Compiled.build(postgresql.insert(t).on_conflict_do_nothing(), dialect)
    assert fold_rows([(ignore, [1, "x"]), (ignore, [2, "y"])]) == (
        ("WITH w0 AS (INSERT INTO t (a, b) VALUES ($1::INTEGER, $2::VARCHAR) ON CONFLICT DO NOTHING) INSERT INTO t "
        "(a, b) VALUES ($3::INTEGER, $4::VARCHAR) ON CONFLICT DO NOTHING"), [1, "x", 2, "y"])


async def test_rows_of_one_statement_cost_one_statement(services: Services, monkeypatch: pytest.MonkeyPatch) -> None:
    """A unit that has run no statement and whose writes are rows of one INSERT (a batch of the group commit)
    writes them without a transaction of its own: on PostgreSQL one multi-row INSERT (storage.direct.fold_rows),
    all rows or none; on SQLite an executemany in the unit's transaction."""
    calls: list[tuple[str, int]] = []
    if services.direct.dialect.name == "postgresql":
        import asyncpg  # type: ignore[import-untyped]

        for name in ("execute", "executemany"):
            real = getattr(asyncpg.Connection, name)

            async def call(self: Any, sql: str, *args: Any, _real: Any = real, _name: str = name) -> Any:
                if "audit_events" in sql:
                    calls.append((_name, sql.count("), (") + 1))
                return await _real(self, sql, *args)
            monkeypatch.setattr(asyncpg.Connection, name, call)

    async def batch(*events: dict[str, Any]) -> None:
        async with services.direct.transaction() as tx:
            for event in events:
                tx.defer(INSERT_AUDIT, **event)

    await batch(*(audit_row("test.batch", actor="tester", subject=str(n)) for n in range(5)))
    await batch(audit_row("test.batch", actor="tester", subject="5"))
    with pytest.raises(Exception):  # noqa: B017, PT011 - the driver's own error for a NOT NULL column
        await batch(audit_row("test.half", actor="tester"), {**audit_row("test.half", actor="x"), "actor": None})
    assert sorted(event.subject or "" for event in await _events(services, "test.batch")) == [str(n) for n in range(6)]
    assert await _events(services, "test.half") == []
    if services.direct.dialect.name == "postgresql":
        assert calls == [("execute", 5), ("execute", 1), ("execute", 2)]


async def test_a_store_reads_what_it_deferred_and_no_other_store_forces_a_write(services: Services) -> None:
    """Transaction.written_for: rows deferred `by` a store are written (with every deferred row) before that store's
    next statement that asks; another store asking writes nothing, and once written nothing is written twice."""
    mine, other = object(), object()
    unsealed = select(func.count(AuditEvent.id)).where(AuditEvent.event_type == "test.owned")
    async with services.direct.transaction() as tx:
        tx.defer(INSERT_AUDIT, by=mine, **audit_row("test.owned", actor="tester"))
        tx.defer(INSERT_AUDIT, **audit_row("test.owned", actor="tester", subject="2"))
        await tx.written_for(other)
        assert (await tx.one(unsealed)) == (0,) and len(tx._deferred) == 2  # still for the COMMIT
        await tx.written_for(mine)
        assert (await tx.one(unsealed)) == (2,) and tx._deferred == []  # the other row went with it
        tx.defer(INSERT_AUDIT, **audit_row("test.owned", actor="tester", subject="3"))
        await tx.written_for(mine)  # nothing of its own is unwritten any more
        assert (await tx.one(unsealed)) == (2,) and len(tx._deferred) == 1
    assert len(await _events(services, "test.owned")) == 3

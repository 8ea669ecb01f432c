"""Test fixtures: a real database (SQLite or PostgreSQL, chosen by ACAR_TEST_DB), schema by Alembic.

`make test` runs the suite twice: ACAR_TEST_DB=sqlite and ACAR_TEST_DB=postgresql. PostgreSQL comes from
ACAR_TEST_POSTGRES_URL (default postgresql+asyncpg://postgres@127.0.0.1:5432/test); the suite creates a
throwaway database acar_test_<random> there and drops it at the end. When PostgreSQL is asked for and does
not answer, the run fails: it never skips.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import secrets
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy import event, inspect, select, text
from sqlalchemy.engine import Connection, make_url
from sqlalchemy.engine.interfaces import DBAPIConnection
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker
from sqlalchemy.pool import ConnectionPoolEntry

from api import migrate
from api.app import create_app
from api.deps import Services, build_services
from api.settings import Settings
from keys.models import StoredKey, TokenKey
from keys.software import MasterKey, SoftwareKeyStore
from storage import Base, create_engine
from storage.audit import record_event
from storage.base import utcnow
from tests import softhsm
from tests.oidc_tools import ISSUER, asgi_browser
from tests.replay import Replays

pytest_plugins = ("tests.pades_world",)
"""The PAdES signing world (`world`, `pki_port`) shared by the signing and validation tests."""

TEST_DB = os.environ.get("ACAR_TEST_DB", "sqlite")
DEFAULT_PG = "postgresql+asyncpg://postgres@127.0.0.1:5432/test"


def _pg_admin_dsn(url: str) -> str:
    u = make_url(url)
    return u.set(drivername="postgresql").render_as_string(hide_password=False)


async def _pg_exec(dsn: str, statement: str) -> None:
    conn = await asyncpg.connect(dsn, timeout=5)
    try:
        await conn.execute(statement)
    finally:
        await conn.close()


EVERY_PASS = os.environ.get("ACAR_TEST_EVERY_PASS") == "1"
"""Run the `one_pass` tests in this pass too, whatever database they name."""


def pytest_report_header(config: pytest.Config) -> str:
    return f"acar test database: {TEST_DB}" + ("" if EVERY_PASS else
                                               " (one_pass tests of the other database deselected)")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """`one_pass(database)` tests run in that database's pass only (deselected, never skipped, in the other).

    What they check, the browser pages, the server process and its TLS, metrics across processes, does not depend on
    which database stores the rows, and each costs seconds (a real `acar serve`, Chromium): running them once keeps
    the two passes of `make test` even and short. The browser tests run on SQLite, the embedded default a newcomer's
    `make run` serves; ACAR_TEST_EVERY_PASS=1 runs them all in either pass."""
    if EVERY_PASS:
        return
    kept, deselected = [], []
    for item in items:
        marker = item.get_closest_marker("one_pass")
        if marker is not None and marker.args[0] not in ("sqlite", "postgresql"):
            raise pytest.UsageError(f"{item.nodeid}: one_pass takes 'sqlite' or 'postgresql'")
        (deselected if marker is not None and marker.args[0] != TEST_DB else kept).append(item)
    if deselected:
        config.hook.pytest_deselected(items=deselected)
        items[:] = kept


@contextlib.contextmanager
def _throwaway_pg_database(pg_base_url: str) -> Iterator[str]:
    """Create acar_test_<random> on the PostgreSQL server, migrate it, drop it afterwards; fail if unreachable."""
    name = f"acar_test_{secrets.token_hex(6)}"
    admin = _pg_admin_dsn(pg_base_url)
    try:
        asyncio.run(_pg_exec(admin, f'CREATE DATABASE "{name}"'))
    except (OSError, asyncpg.PostgresError, TimeoutError) as exc:
        pytest.fail(f"PostgreSQL is required and is not usable at {pg_base_url}: {exc}", pytrace=False)
    url = make_url(pg_base_url).set(database=name).render_as_string(hide_password=False)
    try:
        migrate.upgrade(url)
        yield url
    finally:
        asyncio.run(_pg_exec(admin, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


@pytest.fixture(scope="session")
def pg_base_url() -> str:
    return os.environ.get("ACAR_TEST_POSTGRES_URL", DEFAULT_PG)


@pytest.fixture(scope="session")
def database_url(tmp_path_factory: pytest.TempPathFactory, pg_base_url: str) -> Iterator[str]:
    """A migrated, empty database for this test session; dropped at the end."""
    if TEST_DB == "sqlite":
        path = tmp_path_factory.mktemp("db") / "acar.sqlite3"
        url = f"sqlite+aiosqlite:///{path}"
        migrate.upgrade(url)
        yield url
        return
    if TEST_DB != "postgresql":
        raise pytest.UsageError(f"ACAR_TEST_DB must be sqlite or postgresql, not {TEST_DB!r}")
    with _throwaway_pg_database(pg_base_url) as url:
        yield url


@pytest.fixture
def pg_database_url(pg_base_url: str) -> Iterator[str]:
    """A throwaway, migrated PostgreSQL database whatever ACAR_TEST_DB says (multi-node tests need one)."""
    with _throwaway_pg_database(pg_base_url) as url:
        yield url


REDIS_URL = os.environ.get("ACAR_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")
"""The Redis server of the rate-limit tests (`make test` starts one when none answers). Never skipped."""


@pytest.fixture
def redis_prefix() -> Iterator[str]:
    """A random key prefix on the test Redis server (REDIS_URL); every key under it is deleted afterwards. A Redis
    that does not answer fails the test, it never skips it."""
    import redis
    from redis.exceptions import RedisError

    client = redis.Redis.from_url(REDIS_URL, socket_connect_timeout=2, socket_timeout=5)
    try:
        client.ping()
    except (OSError, RedisError) as exc:
        client.close()
        pytest.fail(f"Redis is required and is not usable at {REDIS_URL}: {exc}", pytrace=False)
    prefix = "acar-test-" + secrets.token_hex(6)
    try:
        yield prefix
    finally:
        keys = list(client.scan_iter(match=prefix + "*", count=1000))
        if keys:
            client.delete(*keys)
        client.close()


@pytest.fixture(scope="session")
def master_key_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("keys") / "master.key"
    MasterKey.create_file(path)
    return path


@pytest.fixture(scope="session")
def softhsm_token(tmp_path_factory: pytest.TempPathFactory) -> Iterator[softhsm.SoftHsmToken]:
    """A SoftHSM2 token of its own for this test session (SOFTHSM2_CONF set for this process and its children).

    A missing SoftHSM2 fails the run, it never skips the PKCS#11 tests.
    """
    reason = softhsm.missing()
    if reason is not None:
        pytest.fail(reason, pytrace=False)
    yield from softhsm.session_token(tmp_path_factory.mktemp("softhsm"))


@pytest.fixture(scope="session")
def session_settings(database_url: str, master_key_file: Path, tmp_path_factory: pytest.TempPathFactory) -> Settings:
    """The tests' settings, validated once per session (building Settings reads the environment: about 11 ms);
    `settings` hands each test a copy with a data directory of its own."""
    return Settings(
        env="development",
        issuer=ISSUER,
        data_dir=tmp_path_factory.mktemp("data"),
        database_url=database_url,
        master_key_file=master_key_file,
        key_cache_seconds=0,
        access_log=True,
        # the signing profiles as a national deployment (with an HSM) issues them: qualified certificates
        qualified_profiles=["natural-person-signing", "legal-person-seal"],
        # no audit sealing schedule (api.audit_sealer): a test's app never seals under the next test's wipe; the
        # tests of sealing seal themselves or start a schedule of their own
        audit_seal_seconds=0,
    )


@pytest.fixture
def settings(session_settings: Settings, tmp_path: Path) -> Settings:
    """A copy of `session_settings` for one test, its data directory in the test's tmp_path (a test changes its
    copy's fields freely; lists are copied too, so an in-place change stays in the test)."""
    return session_settings.model_copy(update={"data_dir": tmp_path}, deep=True)


_TABLES = list(reversed(Base.metadata.sorted_tables))
"""Every table, children before parents."""
_WRITTEN = text(" UNION ALL ".join(f'SELECT {i} WHERE EXISTS (SELECT 1 FROM "{t.name}")'  # noqa: S608 - metadata names
                                   for i, t in enumerate(_TABLES)))
"""The indexes in _TABLES of the tables that hold rows, in one round trip."""


async def _wipe(services: Services) -> None:
    """Delete every row: one query finds the tables that hold rows (a test writes a few of them), a DELETE empties
    each, children first. On PostgreSQL their identity sequences restart, as TRUNCATE ... RESTART IDENTITY did;
    a TRUNCATE of every table cost 0.3-1 s per test (each truncated table gets new files), these DELETEs a few ms."""
    async with services.engine.begin() as conn:
        written = sorted((await conn.execute(_WRITTEN)).scalars())
        for i in written:
            table = _TABLES[i]
            await conn.execute(table.delete())
            if services.engine.dialect.name == "postgresql" and table.autoincrement_column is not None:
                await conn.execute(text("SELECT setval(pg_get_serial_sequence(:t, :c), 1, false)"),
                                   {"t": table.name, "c": table.autoincrement_column.name})


def _sqlite_driver_leaves_transactions_alone(dbapi_connection: DBAPIConnection, _record: ConnectionPoolEntry) -> None:
    """The sqlite3 driver (under aiosqlite) begins a transaction only before INSERT/UPDATE/DELETE, and never before
    a SAVEPOINT: a savepoint taken first would be the outermost transaction, and its RELEASE would commit. Turned
    off here; `_sqlite_begin` emits BEGIN itself (SQLAlchemy's SQLite docs, "Enabling Non-Legacy SQLite
    Transactional Modes", the recipe for Python before 3.12)."""
    dbapi_connection.isolation_level = None


def _sqlite_begin(connection: Connection) -> None:
    connection.exec_driver_sql("BEGIN")


@pytest.fixture(scope="session")
async def rollback_engine(database_url: str) -> AsyncIterator[AsyncEngine]:
    """The engine of `rolled_back`: the test database, on SQLite with BEGIN emitted by SQLAlchemy (so savepoints
    nest inside the outer transaction)."""
    engine = create_engine(database_url, pool_size=1)
    if engine.dialect.name == "sqlite":
        event.listen(engine.sync_engine, "connect", _sqlite_driver_leaves_transactions_alone)
        event.listen(engine.sync_engine, "begin", _sqlite_begin)
    try:
        yield engine
    finally:
        await engine.dispose()


@pytest.fixture
async def rolled_back(rollback_engine: AsyncEngine) -> AsyncIterator[async_sessionmaker[AsyncSession]]:
    """Sessions on one connection inside one outer transaction that is rolled back after the test: no wipe.

    For a test whose database work runs on ORM sessions opened one at a time, in place of `services.sessions`.
    Each session joins the outer transaction with SAVEPOINTs (SQLAlchemy's join_transaction_mode=
    "create_savepoint"): the code under test's begin()/commit() release a savepoint, its rollback (an error inside
    `session.begin()`) rolls back to it, so "writes nothing" still means nothing; a later session sees what an
    earlier one committed, as it would on the real engine. Not for a test that needs a second connection: the HTTP
    app, `storage.direct` units of work (their own connections on PostgreSQL), two sessions at once, another
    process (tests/unit/storage/test_rolled_back.py proves the isolation).
    """
    async with rollback_engine.connect() as connection:
        outer = await connection.begin()
        try:
            yield async_sessionmaker(bind=connection, expire_on_commit=False,
                                     join_transaction_mode="create_savepoint")
        finally:
            if outer.is_active:
                await outer.rollback()


@pytest.fixture
async def db_session(rolled_back: async_sessionmaker[AsyncSession]) -> AsyncIterator[AsyncSession]:
    """One session of `rolled_back`, for a test that uses exactly one."""
    async with rolled_back() as session:
        yield session


@pytest.fixture(scope="session")
def software_key_store(master_key_file: Path) -> Iterator[SoftwareKeyStore]:
    """The software key store of the session master key, shared by the tests' services.

    It keeps the keys it has unsealed, by key id: the token keys `initialized` copies into every test (same ids,
    same sealed rows) are unsealed once per session, not once per test (an RSA-2048 private key takes 50-200 ms
    to load, because OpenSSL checks it). Tests of unsealing, tampered rows and wrong master keys build stores of
    their own, as they must.
    """
    store = SoftwareKeyStore(MasterKey.from_file(master_key_file))
    yield store
    store.close()


@pytest.fixture
async def services(settings: Settings, software_key_store: SoftwareKeyStore, master_key_file: Path
                   ) -> AsyncIterator[Services]:
    """Services on the test database; every row a test wrote is deleted afterwards (isolation)."""
    shared = settings.key_backend == "software" and settings.resolved_master_key_file == master_key_file
    svc = build_services(settings, key_store=software_key_store if shared else None)
    try:
        yield svc
    finally:
        await _wipe(svc)
        await svc.close()


KeyMaterial = dict[tuple[str, str | None], list[tuple[dict[str, Any], dict[str, Any]]]]
"""(algorithm, master key file) -> the (stored_keys, token_keys) column values of its current and next key."""


@pytest.fixture(scope="session")
def token_key_material() -> KeyMaterial:
    """Token keys generated once per session (per algorithm and master key) by `initialized`, reused by later tests."""
    return {}


def _columns(row: Base) -> dict[str, Any]:
    return {attr.key: getattr(row, attr.key) for attr in inspect(type(row)).column_attrs}


@pytest.fixture
async def initialized(services: Services, token_key_material: KeyMaterial) -> Services:
    """Services whose token keys exist (what `acar init` creates).

    Generating them (RSA-2048 takes 50 ms to 2 s) happens once per session per algorithm: `ensure_keys` creates
    the keys of the first test that needs them, and later tests get copies of those real rows (the same key,
    encrypted under the same session master key), current and next as of the test's start, with the audit
    events `ensure_keys` records. `ensure_keys` still runs, and creates whatever is not copied. PKCS#11 keys
    live in the token, not in rows, so they are never copied.
    """
    settings = services.settings
    master = str(settings.resolved_master_key_file) if settings.key_backend == "software" else None
    async with services.sessions() as session, session.begin():
        now = utcnow()
        for alg in services.token_keys.algorithms:
            for stored, token in token_key_material.get((alg, master), []):
                session.add(StoredKey(**{**stored, "created_at": now}))
                session.add(TokenKey(**{**token, "created_at": now,
                                        "activated_at": now if token["state"] == "current" else None}))
                record_event(session, "token_key.created", actor="test", subject=token["kid"],
                             detail={"alg": alg, "state": token["state"]})
        await session.flush()
        created = await services.token_keys.ensure_keys(session, actor="test")
        if master and created:
            rows = (await session.execute(
                select(StoredKey, TokenKey).join(TokenKey, TokenKey.kid == StoredKey.id)
                .where(StoredKey.id.in_(created)).order_by(TokenKey.alg, TokenKey.state))).all()
            for stored_row, token_row in rows:
                token_key_material.setdefault((token_row.alg, master), []).append(
                    (_columns(stored_row), _columns(token_row)))
    return services


@pytest.fixture(scope="session")
def replays() -> Replays:
    """Setup steps recorded once per session and replayed into later tests' databases (tests/replay.py)."""
    return Replays()


@pytest.fixture
async def app(initialized: Services) -> AsyncIterator[FastAPI]:
    application = create_app(services=initialized)
    async with application.router.lifespan_context(application):
        yield application


@pytest.fixture
async def client(app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    async with asgi_browser(app) as c:
        yield c


@pytest.fixture
async def dev_app(initialized: Services) -> AsyncIterator[FastAPI]:
    """The app with the development login on (the OIDC suites sign in through it)."""
    initialized.settings.dev_login = True
    application = create_app(services=initialized)
    async with application.router.lifespan_context(application):
        yield application


@pytest.fixture
async def http(dev_app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    """A browser on `dev_app`."""
    async with asgi_browser(dev_app) as c:
        yield c


@pytest.fixture
def cli_env(settings: Settings, services: Services, tmp_path: Path) -> dict[str, str]:
    """Environment for real `acar` processes on the test database (rows are wiped by `services`)."""
    from tests.functional.helpers import acar_env

    return acar_env({
        "ACAR_DATABASE_URL": settings.resolved_database_url,
        "ACAR_DATA_DIR": str(tmp_path / "data"),
        "ACAR_MASTER_KEY_FILE": str(settings.resolved_master_key_file),
        "ACAR_KEY_CACHE_SECONDS": "0",
    })

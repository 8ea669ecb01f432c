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

import asyncpg
import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy import text
from sqlalchemy.engine import make_url

from api import migrate
from api.app import create_app
from api.deps import Services, build_services
from api.settings import Settings
from keys.software import MasterKey
from storage import Base
from tests import softhsm
from tests.oidc_tools import ISSUER, asgi_browser

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


def pytest_report_header(config: pytest.Config) -> str:
    return f"acar test database: {TEST_DB}"


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


@pytest.fixture
def settings(database_url: str, master_key_file: Path, tmp_path: Path) -> Settings:
    return Settings(
        env="development",
        issuer=ISSUER,
        data_dir=tmp_path,
        database_url=database_url,
        master_key_file=master_key_file,
        key_cache_seconds=0,
        access_log=True,
    )


async def _wipe(services: Services) -> None:
    tables = [t.name for t in reversed(Base.metadata.sorted_tables)]
    async with services.engine.begin() as conn:
        if services.engine.dialect.name == "postgresql":
            await conn.execute(text("TRUNCATE " + ", ".join(f'"{t}"' for t in tables) + " RESTART IDENTITY CASCADE"))
        else:
            for table in tables:
                await conn.execute(text(f'DELETE FROM "{table}"'))  # noqa: S608 - table names from metadata


@pytest.fixture
async def services(settings: Settings) -> AsyncIterator[Services]:
    """Services on the test database; every row a test wrote is deleted afterwards (isolation)."""
    svc = build_services(settings)
    try:
        yield svc
    finally:
        await _wipe(svc)
        await svc.close()


@pytest.fixture
async def initialized(services: Services) -> Services:
    """Services whose token keys exist (what `acar init` creates)."""
    async with services.sessions() as session, session.begin():
        await services.token_keys.ensure_keys(session, actor="test")
    return services


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

"""The composition root: the only place that turns Settings into services (STYLE habit 4)."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from api import migrate
from api.settings import Settings
from keys.interfaces import KeyStore
from keys.software import MasterKey, SoftwareKeyStore
from keys.token_keys import TokenKeyService
from storage import create_engine, create_session_factory


@dataclass
class Services:
    settings: Settings
    engine: AsyncEngine
    sessions: async_sessionmaker[AsyncSession]
    key_store: KeyStore
    token_keys: TokenKeyService

    async def close(self) -> None:
        await self.engine.dispose()


def build_key_store(settings: Settings) -> KeyStore:
    """The configured key backend; a missing or malformed master key raises MasterKeyError."""
    if settings.key_backend == "pkcs11":
        from keys.pkcs11 import Pkcs11KeyStore

        assert settings.pkcs11_module is not None  # noqa: S101 - checked by Settings
        return Pkcs11KeyStore(
            module_path=str(settings.pkcs11_module),
            token_label=settings.pkcs11_token_label,
            pin=settings.pkcs11_pin,
        )
    return SoftwareKeyStore(MasterKey.from_file(settings.resolved_master_key_file))


def build_services(settings: Settings, *, key_store: KeyStore | None = None) -> Services:
    engine = create_engine(settings.resolved_database_url)
    sessions = create_session_factory(engine)
    store = key_store or build_key_store(settings)
    token_keys = TokenKeyService(
        sessions,
        store,
        algorithms=settings.token_key_algorithms,
        rotation_interval=dt.timedelta(days=settings.token_key_rotation_days),
        max_token_lifetime=dt.timedelta(seconds=settings.token_max_lifetime_seconds),
        cache_seconds=settings.key_cache_seconds,
    )
    return Services(settings=settings, engine=engine, sessions=sessions, key_store=store, token_keys=token_keys)


async def readiness(services: Services) -> list[str]:
    """Reasons the service is not ready: database unreachable, migrations behind, signing keys not loaded."""
    try:
        async with services.engine.connect() as connection:
            await connection.execute(text("SELECT 1"))
    except Exception:  # noqa: BLE001 - any driver failure means "database unreachable"
        return ["database unreachable"]
    reasons = []
    current = await migrate.current_revision(services.engine)
    head = migrate.head_revision()
    if current != head:
        reasons.append(f"database schema at {current or 'nothing'}, migrations head is {head}")
        return reasons
    try:
        loaded = await services.token_keys.loaded()
    except Exception:  # noqa: BLE001 - a key that cannot be loaded is the reason itself
        loaded = []
    missing = [alg for alg in services.token_keys.algorithms if alg not in loaded]
    if missing:
        reasons.append("token signing keys not loaded: " + ", ".join(missing))
    return reasons

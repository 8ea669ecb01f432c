"""The software store's master key: a wrong, missing or malformed key, or a tampered row, is a clear error
naming ACAR_MASTER_KEY_FILE, never a silently created key."""

from __future__ import annotations

import base64
import secrets
from pathlib import Path

import pytest
from sqlalchemy import func, select, update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from api.settings import Settings
from keys.errors import MasterKeyError
from keys.models import StoredKey
from keys.software import MasterKey, SoftwareKeyStore

Sessions = async_sessionmaker[AsyncSession]


@pytest.fixture
def sessions(rolled_back: Sessions) -> Sessions:
    """These tests use one session at a time and no other connection: one transaction rolled back, no wipe."""
    return rolled_back


async def _key_count(sessions: Sessions) -> int:
    async with sessions() as session:
        return (await session.execute(select(func.count()).select_from(StoredKey))).scalar_one()


async def _generate(sessions: Sessions, store: SoftwareKeyStore, key_type: str = "EC-P256") -> str:
    async with sessions() as session, session.begin():
        return (await store.generate(session, key_type, purpose="test", label="t")).key_id  # type: ignore[arg-type]


def _other_master_key(tmp_path: Path) -> MasterKey:
    path = tmp_path / "other.key"
    MasterKey.create_file(path)
    return MasterKey.from_file(path)


def _store(settings: Settings) -> SoftwareKeyStore:
    return SoftwareKeyStore(MasterKey.from_file(settings.resolved_master_key_file))


async def test_wrong_master_key_cannot_open_keys_and_creates_none(
    sessions: Sessions, settings: Settings, tmp_path: Path
) -> None:
    key_id = await _generate(sessions, _store(settings))
    wrong = SoftwareKeyStore(_other_master_key(tmp_path))
    async with sessions() as session:
        with pytest.raises(MasterKeyError, match="ACAR_MASTER_KEY_FILE") as raised:
            await wrong.load(session, key_id)
        assert key_id in raised.value.detail
        with pytest.raises(MasterKeyError, match="ACAR_MASTER_KEY_FILE"):
            await wrong.check_master_key(session)
    with pytest.raises(MasterKeyError, match="refusing to create a key under another master key"):
        await _generate(sessions, wrong)
    assert await _key_count(sessions) == 1


async def test_key_sealed_under_one_master_key_does_not_open_under_another_even_with_a_forged_id(
    sessions: Sessions, settings: Settings, tmp_path: Path
) -> None:
    key_id = await _generate(sessions, _store(settings))
    other = _other_master_key(tmp_path)
    async with sessions() as session, session.begin():  # pretend the row names the other master key
        await session.execute(update(StoredKey).where(StoredKey.id == key_id).values(master_key_id=other.key_id))
    async with sessions() as session:
        with pytest.raises(MasterKeyError, match=f"key {key_id}: its data key does not open with this master key"):
            await SoftwareKeyStore(other).load(session, key_id)


@pytest.mark.parametrize("column", ["ciphertext", "wrapped_dek"])
async def test_tampered_row_is_an_error(sessions: Sessions, settings: Settings, column: str) -> None:
    key_id = await _generate(sessions, _store(settings))
    async with sessions() as session, session.begin():
        row = await session.get(StoredKey, key_id)
        assert row is not None
        sealed = bytearray(getattr(row, column))
        sealed[20] ^= 0x01
        setattr(row, column, bytes(sealed))
    async with sessions() as session:
        with pytest.raises(MasterKeyError, match=f"key {key_id}"):
            await _store(settings).load(session, key_id)


async def test_truncated_or_swapped_rows_are_errors(sessions: Sessions, settings: Settings) -> None:
    first, second = await _generate(sessions, _store(settings)), await _generate(sessions, _store(settings))
    async with sessions() as session, session.begin():
        a, b = await session.get(StoredKey, first), await session.get(StoredKey, second)
        assert a is not None and b is not None
        a.ciphertext, b.ciphertext = b.ciphertext, a.ciphertext[:5]  # type: ignore[index]
    async with sessions() as session:
        with pytest.raises(MasterKeyError, match="tampered"):  # the key id is bound as associated data
            await _store(settings).load(session, first)
        with pytest.raises(MasterKeyError, match="tampered"):
            await _store(settings).load(session, second)


def test_missing_master_key_file_is_a_clear_error_and_creates_nothing(tmp_path: Path) -> None:
    missing = tmp_path / "var" / "master.key"
    with pytest.raises(MasterKeyError, match=r"^ACAR_MASTER_KEY_FILE: .*master.key does not exist"):
        MasterKey.from_file(missing)
    assert not missing.exists() and not missing.parent.exists()


@pytest.mark.parametrize(("content", "message"), [
    (b"this is not base64!\n", "is not base64 text"),
    (secrets.token_bytes(32) + b"\xff\xfe", "is not base64 text"),  # raw bytes instead of base64 text
    (base64.b64encode(secrets.token_bytes(16)) + b"\n", "must hold 32 bytes, holds 16"),
    (base64.b64encode(secrets.token_bytes(48)), "must hold 32 bytes, holds 48"),
    (b"", "must hold 32 bytes, holds 0"),
])
def test_malformed_master_key_file_is_a_clear_error(tmp_path: Path, content: bytes, message: str) -> None:
    path = tmp_path / "master.key"
    path.write_bytes(content)
    with pytest.raises(MasterKeyError, match=f"^ACAR_MASTER_KEY_FILE: .*{message}"):
        MasterKey.from_file(path)


def test_unreadable_master_key_path_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(MasterKeyError, match="^ACAR_MASTER_KEY_FILE: cannot read"):
        MasterKey.from_file(tmp_path)  # a directory


def test_create_file_never_overwrites(tmp_path: Path) -> None:
    path = tmp_path / "master.key"
    MasterKey.create_file(path)
    before = path.read_bytes()
    with pytest.raises(FileExistsError):
        MasterKey.create_file(path)
    assert path.read_bytes() == before
    assert path.stat().st_mode & 0o777 == 0o600

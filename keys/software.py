"""Software key backend: private keys encrypted at rest with envelope encryption.

Each key's PKCS#8 DER is sealed with AES-256-GCM under its own random data key (DEK); the DEK is sealed with
AES-256-GCM under the master key read from ACAR_MASTER_KEY_FILE. The key id is bound as associated data
to both, so ciphertexts cannot be swapped between rows. A wrong master key is detected by its id and by
the GCM tag: it is an error, never a reason to make a new key.
"""

from __future__ import annotations

import base64
import hashlib
import os
import secrets
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

from cryptography.exceptions import InvalidTag
from cryptography.exceptions import UnsupportedAlgorithm as CryptographyUnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, padding, rsa
from cryptography.hazmat.primitives.asymmetric.types import PrivateKeyTypes, PublicKeyTypes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from keys.errors import KeyNotFound, MasterKeyError, UnsupportedAlgorithm
from keys.interfaces import HashName, KeyHandle, KeyType
from keys.models import StoredKey
from storage.base import utcnow

_HASHES: dict[str, hashes.HashAlgorithm] = {
    "sha256": hashes.SHA256(),
    "sha384": hashes.SHA384(),
    "sha512": hashes.SHA512(),
}
_ECDSA: dict[str, ec.ECDSA] = {name: ec.ECDSA(algorithm) for name, algorithm in _HASHES.items()}
_PKCS1 = padding.PKCS1v15()
_NONCE = 12


def new_key_id() -> str:
    """A fresh random key identifier (also used as the JWS kid)."""
    return secrets.token_urlsafe(16)


class MasterKey:
    """The 256-bit master key that wraps every data key of the software store."""

    def __init__(self, raw: bytes) -> None:
        if len(raw) != 32:
            raise MasterKeyError("master key must be 32 bytes (base64 in the file)")
        self._aead = AESGCM(raw)
        self.key_id = hashlib.sha256(b"acar-master-key-id" + raw).hexdigest()[:16]

    @classmethod
    def from_file(cls, path: Path) -> MasterKey:
        """Read the master key; a missing or malformed file is a clear error naming the setting."""
        try:
            text = path.read_text(encoding="ascii").strip()
        except FileNotFoundError:
            raise MasterKeyError(
                f"ACAR_MASTER_KEY_FILE: {path} does not exist (run `acar init` in development)"
            ) from None
        except OSError as exc:
            raise MasterKeyError(f"ACAR_MASTER_KEY_FILE: cannot read {path}: {exc.strerror}") from None
        except UnicodeDecodeError:
            raise MasterKeyError(f"ACAR_MASTER_KEY_FILE: {path} is not base64 text") from None
        try:
            raw = base64.b64decode(text, validate=True)
        except ValueError:
            raise MasterKeyError(f"ACAR_MASTER_KEY_FILE: {path} is not base64 text") from None
        if len(raw) != 32:
            raise MasterKeyError(f"ACAR_MASTER_KEY_FILE: {path} must hold 32 bytes, holds {len(raw)}")
        return cls(raw)

    @staticmethod
    def create_file(path: Path) -> None:
        """Write a new random master key readable only by its owner; never overwrites an existing file."""
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as fh:
            fh.write(base64.b64encode(secrets.token_bytes(32)).decode() + "\n")

    def seal(self, plaintext: bytes, aad: bytes) -> bytes:
        nonce = secrets.token_bytes(_NONCE)
        return nonce + self._aead.encrypt(nonce, plaintext, aad)

    def open(self, sealed: bytes, aad: bytes) -> bytes:
        try:
            return self._aead.decrypt(sealed[:_NONCE], sealed[_NONCE:], aad)
        except (InvalidTag, ValueError):  # ValueError: a blob too short to hold the nonce
            raise MasterKeyError(
                "its data key does not open with this master key (wrong ACAR_MASTER_KEY_FILE or a tampered row)"
            ) from None


def generate_private_key(key_type: KeyType) -> PrivateKeyTypes:
    """Generate a private key of the given type with the `cryptography` library."""
    if key_type == "EC-P256":
        return ec.generate_private_key(ec.SECP256R1())
    if key_type == "EC-P384":
        return ec.generate_private_key(ec.SECP384R1())
    if key_type == "RSA-2048":
        return rsa.generate_private_key(public_exponent=65537, key_size=2048)
    if key_type == "RSA-3072":
        return rsa.generate_private_key(public_exponent=65537, key_size=3072)
    if key_type == "Ed25519":
        return ed25519.Ed25519PrivateKey.generate()
    raise UnsupportedAlgorithm(f"unknown key type {key_type}")


def key_type_of(key: PrivateKeyTypes | PublicKeyTypes) -> KeyType:
    """Name the key type of a `cryptography` key object, or refuse it."""
    if isinstance(key, ec.EllipticCurvePrivateKey | ec.EllipticCurvePublicKey):
        if isinstance(key.curve, ec.SECP256R1):
            return "EC-P256"
        if isinstance(key.curve, ec.SECP384R1):
            return "EC-P384"
    elif isinstance(key, rsa.RSAPrivateKey | rsa.RSAPublicKey):
        if key.key_size == 2048:
            return "RSA-2048"
        if key.key_size == 3072:
            return "RSA-3072"
    elif isinstance(key, ed25519.Ed25519PrivateKey | ed25519.Ed25519PublicKey):
        return "Ed25519"
    raise UnsupportedAlgorithm("only EC P-256/P-384, RSA 2048/3072 and Ed25519 keys are supported")


class SoftwareKeyHandle:
    """A decrypted private key held in memory; signs, shows its public key, has no export method."""

    __slots__ = ("_key", "_key_id", "_key_type", "_public", "_sign")

    def __init__(self, key_id: str, key: PrivateKeyTypes) -> None:
        self._key_id = key_id
        self._key = key
        self._key_type = key_type_of(key)
        self._public = key.public_key()
        self._sign = self._bind(key)

    @staticmethod
    def _bind(key: PrivateKeyTypes) -> Callable[[bytes, HashName], bytes]:
        """Choose the signing call once, so a signature costs no type dispatch."""
        if isinstance(key, ec.EllipticCurvePrivateKey):
            ec_sign = key.sign
            return lambda data, hash_name: ec_sign(data, _ECDSA[hash_name])
        if isinstance(key, rsa.RSAPrivateKey):
            rsa_sign = key.sign
            return lambda data, hash_name: rsa_sign(data, _PKCS1, _HASHES[hash_name])
        if isinstance(key, ed25519.Ed25519PrivateKey):
            ed_sign = key.sign
            return lambda data, _hash_name: ed_sign(data)
        raise UnsupportedAlgorithm(f"cannot sign with a {type(key).__name__}")

    @property
    def key_id(self) -> str:
        return self._key_id

    @property
    def key_type(self) -> KeyType:
        return self._key_type

    def public_key(self) -> PublicKeyTypes:
        return self._public

    async def sign(self, data: bytes, hash_name: HashName = "sha256") -> bytes:
        """Sign inline on the caller's thread: an ES256 signature takes ~25 us, less than a hop to a worker
        thread would cost, and nothing here waits on a device (the PKCS#11 handle signs in a worker)."""
        return self._sign(data, hash_name)

    def __reduce__(self) -> str | tuple[Any, ...]:
        raise TypeError("a key handle cannot be pickled or copied: the private key stays in the key store")

    def __repr__(self) -> str:
        return f"SoftwareKeyHandle(key_id={self._key_id!r}, key_type={self._key_type!r})"


async def sealed_master_key_ids(session: AsyncSession) -> list[str]:
    """Ids of the master keys that the live software keys in the database are sealed with."""
    rows = await session.execute(
        select(StoredKey.master_key_id).where(StoredKey.backend == SoftwareKeyStore.backend,
                                              StoredKey.destroyed_at.is_(None)).distinct())
    return sorted(str(r) for r in rows.scalars() if r)


class SoftwareKeyStore:
    """Key store whose private keys live encrypted in the database (see module docstring)."""

    backend = "software"

    def __init__(self, master_key: MasterKey) -> None:
        self._master = master_key
        self._cache: dict[str, SoftwareKeyHandle] = {}
        self._lock = threading.Lock()
        self._master_key_checked = False

    def close(self) -> None:
        """Forget the decrypted keys held in memory."""
        with self._lock:
            self._cache.clear()

    async def _refuse_foreign_master_key(self, session: AsyncSession) -> None:
        """Refuse to seal a new key while live keys are sealed under another master key (a wrong file).

        Checked once per store: a wrong ACAR_MASTER_KEY_FILE stops the work, it never leaves a database whose
        keys are sealed under two master keys.
        """
        if self._master_key_checked:
            return
        other = next((k for k in await sealed_master_key_ids(session) if k != self._master.key_id), None)
        if other is not None:
            raise MasterKeyError(
                f"the stored keys were sealed with master key {other}, but ACAR_MASTER_KEY_FILE holds "
                f"{self._master.key_id}; refusing to create a key under another master key"
            )
        self._master_key_checked = True

    def _seal(self, key_id: str, key: PrivateKeyTypes) -> tuple[bytes, bytes]:
        der = key.private_bytes(
            serialization.Encoding.DER, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
        dek = AESGCM.generate_key(bit_length=256)
        aad = key_id.encode()
        nonce = secrets.token_bytes(_NONCE)
        ciphertext = nonce + AESGCM(dek).encrypt(nonce, der, aad)
        return self._master.seal(dek, aad), ciphertext

    async def _store(
        self, session: AsyncSession, key: PrivateKeyTypes, *, purpose: str, label: str
    ) -> SoftwareKeyHandle:
        await self._refuse_foreign_master_key(session)
        key_id = new_key_id()
        wrapped, ciphertext = self._seal(key_id, key)
        public_der = key.public_key().public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        )
        handle = SoftwareKeyHandle(key_id, key)
        session.add(
            StoredKey(
                id=key_id, backend=self.backend, key_type=handle.key_type, purpose=purpose, label=label,
                public_key_der=public_der, master_key_id=self._master.key_id, wrapped_dek=wrapped,
                ciphertext=ciphertext,
            )
        )
        await session.flush()
        with self._lock:
            self._cache[key_id] = handle
        return handle

    async def generate(self, session: AsyncSession, key_type: KeyType, *, purpose: str, label: str) -> KeyHandle:
        return await self._store(session, generate_private_key(key_type), purpose=purpose, label=label)

    async def import_private_key(
        self, session: AsyncSession, pem: bytes, *, purpose: str, label: str, password: bytes | None = None
    ) -> KeyHandle:
        """Import an existing private key (PEM, optionally encrypted) into the encrypted store."""
        try:
            key = serialization.load_pem_private_key(pem, password=password)
        except CryptographyUnsupportedAlgorithm as exc:  # e.g. an EC key on a curve OpenSSL does not know
            raise UnsupportedAlgorithm(f"cannot use the private key: {exc}") from None
        except (ValueError, TypeError) as exc:
            raise UnsupportedAlgorithm(f"cannot read the private key: {exc}") from None
        key_type_of(key)
        return await self._store(session, key, purpose=purpose, label=label)

    async def load(self, session: AsyncSession, key_id: str) -> KeyHandle:
        cached = self._cache.get(key_id)
        if cached is not None:
            return cached
        row = await session.get(StoredKey, key_id)
        if row is None or row.destroyed_at is not None or row.backend != self.backend:
            raise KeyNotFound(f"no usable software key {key_id}")
        handle = self._unseal(row)
        with self._lock:
            return self._cache.setdefault(key_id, handle)

    def _unseal(self, row: StoredKey) -> SoftwareKeyHandle:
        if row.master_key_id != self._master.key_id:
            raise MasterKeyError(
                f"key {row.id} was sealed with master key {row.master_key_id}, "
                f"but ACAR_MASTER_KEY_FILE holds {self._master.key_id}"
            )
        if row.wrapped_dek is None or row.ciphertext is None:
            raise KeyNotFound(f"key {row.id} has no key material (destroyed)")
        aad = row.id.encode()
        try:
            dek = self._master.open(row.wrapped_dek, aad)
        except MasterKeyError as exc:
            raise MasterKeyError(f"key {row.id}: {exc.detail}") from None
        try:
            der = AESGCM(dek).decrypt(row.ciphertext[:_NONCE], row.ciphertext[_NONCE:], aad)
        except (InvalidTag, ValueError):  # ValueError: a data key or blob of the wrong length
            raise MasterKeyError(f"key {row.id}: ciphertext does not match its data key (tampered row?)") from None
        key = serialization.load_der_private_key(der, password=None)
        return SoftwareKeyHandle(row.id, key)

    async def check_master_key(self, session: AsyncSession) -> int:
        """Verify that every live software key opens with this master key; return how many there are."""
        rows = (
            await session.execute(
                select(StoredKey).where(StoredKey.backend == self.backend, StoredKey.destroyed_at.is_(None))
            )
        ).scalars().all()
        for row in rows:
            if row.id not in self._cache:
                handle = self._unseal(row)
                with self._lock:
                    self._cache[row.id] = handle
        return len(rows)

    async def destroy(self, session: AsyncSession, key_id: str) -> None:
        row = await session.get(StoredKey, key_id)
        if row is None or row.backend != self.backend:
            raise KeyNotFound(f"no software key {key_id}")
        row.wrapped_dek = None
        row.ciphertext = None
        row.destroyed_at = utcnow()
        await session.flush()
        with self._lock:
            self._cache.pop(key_id, None)

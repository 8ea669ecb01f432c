"""Protocols of key custody: a key handle signs and shows its public key, and never exports the private key.

Everything that signs in Açar (ID and access tokens, certificates, CRLs, OCSP responses, timestamps, PDF
signatures) goes through `KeyHandle.sign`.
"""

from __future__ import annotations

from typing import Literal, Protocol

from cryptography.hazmat.primitives.asymmetric.types import PublicKeyTypes
from sqlalchemy.ext.asyncio import AsyncSession

KeyType = Literal["EC-P256", "EC-P384", "RSA-2048", "RSA-3072", "Ed25519"]
HashName = Literal["sha256", "sha384", "sha512"]
KEY_TYPES: tuple[KeyType, ...] = ("EC-P256", "EC-P384", "RSA-2048", "RSA-3072", "Ed25519")


class KeyHandle(Protocol):
    """A private key held by a backend. The key material never leaves it."""

    @property
    def key_id(self) -> str: ...

    @property
    def key_type(self) -> KeyType: ...

    def public_key(self) -> PublicKeyTypes: ...

    def sign(self, data: bytes, hash_name: HashName = "sha256") -> bytes:
        """Sign `data` (the backend hashes it).

        ECDSA signatures are DER-encoded (the X.509/CMS form; JOSE converts to r||s), RSA uses PKCS#1 v1.5,
        Ed25519 signs the data itself (`hash_name` is ignored).
        """
        ...


class KeyStore(Protocol):
    """A key backend: creates keys, finds them by identifier, destroys them. Loaded handles are cached."""

    backend: str

    async def generate(self, session: AsyncSession, key_type: KeyType, *, purpose: str, label: str) -> KeyHandle:
        """Create a new key inside the backend and record its metadata in the caller's unit of work."""
        ...

    async def load(self, session: AsyncSession, key_id: str) -> KeyHandle:
        """Return the handle of a stored key (from the in-memory cache when already loaded)."""
        ...

    async def destroy(self, session: AsyncSession, key_id: str) -> None:
        """Destroy the key material; the metadata row stays for the audit trail."""
        ...

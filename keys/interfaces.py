"""Protocols of key custody: a key handle signs and shows its public key, and never exports the private key.

Everything that signs in Açar (ID and access tokens, certificates, CRLs, OCSP responses, timestamps, PDF
signatures) goes through `KeyHandle.sign`, a coroutine: a backend that waits on a device (PKCS#11) signs in a
worker thread and the event loop goes on serving; a backend that computes in microseconds (software keys)
signs inline, without a thread hop.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
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

    async def sign(self, data: bytes, hash_name: HashName = "sha256") -> bytes:
        """Sign `data` (the backend hashes it), never blocking the event loop on a device.

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

    def close(self) -> None:
        """Forget the cached handles and release the backend (a PKCS#11 store logs out of its token)."""
        ...


class SerialSource(Protocol):
    """Hands out serial numbers unique across every node sharing the database (keys.serials)."""

    async def allocate(self) -> int:
        """The next serial number; never the same twice, in this process or any other."""
        ...


@dataclass(frozen=True, slots=True)
class CertificateStatus:
    """What the CA knows about one issued certificate: good, or revoked at a time for an RFC 5280 reason."""

    revoked_at: dt.datetime | None = None
    reason: str | None = None  # an RFC 5280 section 5.3.1 name, e.g. "keyCompromise"


class CertificateStatusSource(Protocol):
    """Where the OCSP responder (keys.ocsp) looks up certificates; serials are lower-case hex."""

    async def lookup(self, issuer: str, serials: Sequence[str]) -> Mapping[str, CertificateStatus]:
        """The status of each serial the CA `issuer` issued; serials it never issued are absent."""
        ...

    async def close(self) -> None:
        """Release connections."""
        ...

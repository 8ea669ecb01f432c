"""Both key-store backends behind one fixture, so the same behaviour tests run against each."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field

import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, padding, rsa
from cryptography.hazmat.primitives.asymmetric.types import PublicKeyTypes
from sqlalchemy.ext.asyncio import AsyncSession

from api.settings import Settings
from keys.interfaces import HashName, KeyStore
from keys.models import StoredKey
from keys.pkcs11 import Pkcs11KeyStore
from keys.software import MasterKey, SoftwareKeyStore
from tests.softhsm import SoftHsmToken

HASHES: dict[HashName, hashes.HashAlgorithm] = {
    "sha256": hashes.SHA256(), "sha384": hashes.SHA384(), "sha512": hashes.SHA512(),
}


def verify(public: PublicKeyTypes, signature: bytes, data: bytes, hash_name: HashName = "sha256") -> None:
    """Check a KeyHandle signature with `cryptography` alone; raise InvalidSignature when it does not verify.

    ECDSA signatures are DER, RSA is PKCS#1 v1.5, Ed25519 signs the data itself (the KeyHandle contract).
    """
    if isinstance(public, ec.EllipticCurvePublicKey):
        public.verify(signature, data, ec.ECDSA(HASHES[hash_name]))
    elif isinstance(public, rsa.RSAPublicKey):
        public.verify(signature, data, padding.PKCS1v15(), HASHES[hash_name])
    elif isinstance(public, ed25519.Ed25519PublicKey):
        public.verify(signature, data)
    else:
        raise TypeError(f"unexpected public key {public!r}")


@dataclass
class Backend:
    """A key backend under test: builds stores as a freshly started process would, and looks inside it."""

    name: str
    _build: Callable[[], KeyStore]
    _material_exists: Callable[[AsyncSession, str], Awaitable[bool]]
    _stores: list[KeyStore] = field(default_factory=list)

    def new_store(self) -> KeyStore:
        """A new store instance on the same configuration, with nothing cached (closed after the test)."""
        store = self._build()
        self._stores.append(store)
        return store

    async def material_exists(self, session: AsyncSession, key_id: str) -> bool:
        """Whether the backend still holds the key material (a database row's ciphertext, objects on the token)."""
        return await self._material_exists(session, key_id)

    def close(self) -> None:
        for store in reversed(self._stores):
            store.close()


def pkcs11_store(token: SoftHsmToken) -> Pkcs11KeyStore:
    return Pkcs11KeyStore(module_path=token.module, token_label=token.label, pin=token.pin)


@pytest.fixture(params=["software", pytest.param("pkcs11", marks=pytest.mark.pkcs11)])
def backend(request: pytest.FixtureRequest, settings: Settings) -> Iterator[Backend]:
    """Each key backend in turn, on the test database (its rows are the test's: `rolled_back` or `services`
    isolates them)."""
    if request.param == "software":
        async def software_material(session: AsyncSession, key_id: str) -> bool:
            row = await session.get(StoredKey, key_id, populate_existing=True)
            return row is not None and row.ciphertext is not None and row.wrapped_dek is not None

        under_test = Backend(
            "software", lambda: SoftwareKeyStore(MasterKey.from_file(settings.resolved_master_key_file)),
            software_material,
        )
    else:
        token: SoftHsmToken = request.getfixturevalue("softhsm_token")

        async def token_material(session: AsyncSession, key_id: str) -> bool:
            return bool(token.objects(key_id))

        under_test = Backend("pkcs11", lambda: pkcs11_store(token), token_material)
    under_test.new_store()  # the store that stays logged in (for PKCS#11) for the whole test
    try:
        yield under_test
    finally:
        under_test.close()


@pytest.fixture
def hsm_token(softhsm_token: SoftHsmToken) -> Iterator[SoftHsmToken]:
    """The session's SoftHSM2 token with a store of this test logged in (so its private objects are visible)."""
    store = pkcs11_store(softhsm_token)
    try:
        yield softhsm_token
    finally:
        store.close()

"""The same behaviour, asserted the same way, for every key-store backend (software and PKCS#11 on SoftHSM2).

Signatures are checked with `cryptography` against `public_key()`, JWS with PyJWT: never with our own code.
"""

from __future__ import annotations

import base64
import copy
import json
import pickle

import jwt
import pytest
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from cryptography.hazmat.primitives.asymmetric.types import PublicKeyTypes
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from keys.errors import KeyNotFound
from keys.interfaces import KEY_TYPES, KeyHandle, KeyType
from keys.jose import JwsAlg, JwsSigner, public_jwk
from tests.unit.keys.conftest import HASHES, Backend, verify

Sessions = async_sessionmaker[AsyncSession]

PUBLIC_TYPES: dict[KeyType, tuple[type[PublicKeyTypes], int | str]] = {
    "EC-P256": (ec.EllipticCurvePublicKey, "secp256r1"),
    "EC-P384": (ec.EllipticCurvePublicKey, "secp384r1"),
    "RSA-2048": (rsa.RSAPublicKey, 2048),
    "RSA-3072": (rsa.RSAPublicKey, 3072),
    "Ed25519": (ed25519.Ed25519PublicKey, "ed25519"),
}


@pytest.fixture
def sessions(rolled_back: Sessions) -> Sessions:
    """These tests use one session at a time and no other connection: one transaction rolled back, no wipe (a
    PKCS#11 key's objects stay on the session's token, as they did under the wipe)."""
    return rolled_back


async def generate(sessions: Sessions, store_backend: Backend, key_type: KeyType) -> KeyHandle:
    store = store_backend.new_store()
    async with sessions() as session, session.begin():
        return await store.generate(session, key_type, purpose="test", label=f"test-{key_type}")


@pytest.mark.parametrize("key_type", KEY_TYPES)
async def test_generated_key_signs_and_verifies_against_its_public_key(
    backend: Backend, sessions: Sessions, key_type: KeyType
) -> None:
    handle = await generate(sessions, backend, key_type)
    public = handle.public_key()
    expected_class, size = PUBLIC_TYPES[key_type]
    assert handle.key_type == key_type and isinstance(public, expected_class)
    if isinstance(public, ec.EllipticCurvePublicKey):
        assert public.curve.name == size
    elif isinstance(public, rsa.RSAPublicKey):
        assert public.key_size == size and public.public_numbers().e == 65537
    data = f"document signed by {backend.name}".encode()
    for hash_name in HASHES:
        verify(public, await handle.sign(data, hash_name), data, hash_name)
    with pytest.raises(InvalidSignature):
        verify(public, await handle.sign(data), data + b"!", "sha256")


@pytest.mark.parametrize("key_type", ["EC-P256", "RSA-2048", "Ed25519"])  # one handle class per backend
async def test_handle_has_no_way_to_export_the_private_key(
    backend: Backend, sessions: Sessions, key_type: KeyType
) -> None:
    handle = await generate(sessions, backend, key_type)
    public_api = {name for name in dir(handle) if not name.startswith("_")}
    assert public_api == {"key_id", "key_type", "public_key", "sign"}
    private_classes = (ec.EllipticCurvePrivateKey, rsa.RSAPrivateKey, ed25519.Ed25519PrivateKey)
    assert not any(isinstance(getattr(handle, name), private_classes) for name in public_api)
    for exporter in ("private_bytes", "private_key", "private_numbers", "export", "key"):
        assert not hasattr(handle, exporter)
    with pytest.raises(TypeError, match="cannot be pickled"):
        pickle.dumps(handle)
    with pytest.raises(TypeError, match="cannot be pickled"):
        copy.deepcopy(handle)
    assert key_type in repr(handle) and handle.key_id in repr(handle)


async def test_a_fresh_store_finds_the_key_and_signs_with_it(backend: Backend, sessions: Sessions) -> None:
    handle = await generate(sessions, backend, "EC-P256")
    fresh = backend.new_store()  # nothing cached: what a newly started process builds from the same settings
    async with sessions() as session:
        loaded = await fresh.load(session, handle.key_id)
    assert loaded is not handle
    assert loaded.key_id == handle.key_id and loaded.key_type == "EC-P256"
    assert loaded.public_key() == handle.public_key()
    verify(handle.public_key(), await loaded.sign(b"payload"), b"payload", "sha256")


async def test_load_caches_the_handle(backend: Backend, sessions: Sessions) -> None:
    handle = await generate(sessions, backend, "RSA-2048")
    store = backend.new_store()
    async with sessions() as session:
        first = await store.load(session, handle.key_id)
        second = await store.load(session, handle.key_id)
    assert second is first
    # a cached handle needs no database: it signs after its session is gone, many times, without re-loading
    for i in range(20):
        verify(first.public_key(), await first.sign(b"n%d" % i), b"n%d" % i, "sha256")
    async with sessions() as session:
        assert await store.load(session, handle.key_id) is first


async def test_load_of_an_unknown_key_is_key_not_found(backend: Backend, sessions: Sessions) -> None:
    store = backend.new_store()
    async with sessions() as session:
        with pytest.raises(KeyNotFound):
            await store.load(session, "no-such-key")


async def test_destroy_removes_the_key_material_and_load_fails(backend: Backend, sessions: Sessions) -> None:
    handle = await generate(sessions, backend, "EC-P256")
    store = backend.new_store()
    async with sessions() as session, session.begin():
        await store.load(session, handle.key_id)
        assert await backend.material_exists(session, handle.key_id)
        await store.destroy(session, handle.key_id)
    async with sessions() as session:
        assert not await backend.material_exists(session, handle.key_id)
        with pytest.raises(KeyNotFound):
            await store.load(session, handle.key_id)  # not from the cache either
        with pytest.raises(KeyNotFound):
            await backend.new_store().load(session, handle.key_id)


@pytest.mark.parametrize(("alg", "key_type"), [("ES256", "EC-P256"), ("RS256", "RSA-2048"), ("EdDSA", "Ed25519")])
async def test_jws_signed_through_the_handle_verifies_with_pyjwt(
    backend: Backend, sessions: Sessions, alg: JwsAlg, key_type: KeyType
) -> None:
    handle = await generate(sessions, backend, key_type)
    public = handle.public_key()
    assert isinstance(public, ec.EllipticCurvePublicKey | rsa.RSAPublicKey | ed25519.Ed25519PublicKey)
    token = await JwsSigner(handle, alg).sign({"iss": "https://login.example.az", "sub": "5ABC12D", "aud": "rp",
                                               "iat": 1_700_000_000, "exp": 4_000_000_000}, typ="JWT")
    assert jwt.get_unverified_header(token) == {"alg": alg, "kid": handle.key_id, "typ": "JWT"}
    by_key = jwt.decode(token, key=public, algorithms=[alg], audience="rp",
                        issuer="https://login.example.az", options={"require": ["exp", "iat", "iss"]})
    jwk = jwt.PyJWK.from_dict(public_jwk(public, kid=handle.key_id, alg=alg))
    by_jwk = jwt.decode(token, key=jwk, algorithms=[alg], audience="rp", issuer="https://login.example.az")
    assert by_key["sub"] == by_jwk["sub"] == "5ABC12D"
    head, _, signature = token.split(".")
    other = base64.urlsafe_b64encode(json.dumps({**by_key, "sub": "1XYZ99Q"}).encode()).rstrip(b"=").decode()
    with pytest.raises(jwt.InvalidSignatureError):
        jwt.decode(f"{head}.{other}.{signature}", key=jwk, algorithms=[alg], audience="rp")

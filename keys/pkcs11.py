"""PKCS#11 key backend: private keys generated and kept on a hardware security module.

Any PKCS#11 module works (configured by module path, token label and PIN); the tests use SoftHSM2 through
the same interface. Private keys are created with CKA_SENSITIVE=true and CKA_EXTRACTABLE=false, so the token
refuses to export them; Açar only ever asks the token to sign. The database keeps the metadata (CKA_ID is
the key id) and the public key.

ECDSA uses CKM_ECDSA over a digest computed here (the mechanism every module implements) and returns the
token's r||s as DER; RSA uses CKM_SHA{256,384,512}_RSA_PKCS; Ed25519 uses CKM_EDDSA.
"""

from __future__ import annotations

import hashlib
import threading
from typing import Any

import pkcs11
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from cryptography.hazmat.primitives.asymmetric.types import PublicKeyTypes
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature
from pkcs11 import Attribute, Mechanism, ObjectClass
from pkcs11 import KeyType as P11KeyType
from pkcs11.util.ec import encode_named_curve_parameters
from sqlalchemy.ext.asyncio import AsyncSession

from keys.errors import BackendError, KeyNotFound, UnsupportedAlgorithm
from keys.interfaces import HashName, KeyHandle, KeyType
from keys.models import StoredKey
from keys.software import key_type_of, new_key_id
from storage.base import utcnow

_CURVES: dict[str, tuple[str, ec.EllipticCurve, int]] = {
    "EC-P256": ("secp256r1", ec.SECP256R1(), 32),
    "EC-P384": ("secp384r1", ec.SECP384R1(), 48),
}
_RSA_MECH = {"sha256": Mechanism.SHA256_RSA_PKCS, "sha384": Mechanism.SHA384_RSA_PKCS,
             "sha512": Mechanism.SHA512_RSA_PKCS}
_PRIVATE_TEMPLATE: dict[Attribute, Any] = {
    Attribute.SENSITIVE: True,
    Attribute.EXTRACTABLE: False,
    Attribute.PRIVATE: True,
    Attribute.TOKEN: True,
}
_ED25519_PARAMS = bytes.fromhex("06032b6570")  # OID 1.3.101.112 (RFC 8410), as CKA_EC_PARAMS


def _der_octet_string_payload(value: bytes) -> bytes:
    """CKA_EC_POINT is a DER OCTET STRING around the encoded point (PKCS#11 v2.40 section 2.3.3)."""
    if not value or value[0] != 0x04:
        return value
    length = value[1]
    offset = 2
    if length & 0x80:
        n = length & 0x7F
        length = int.from_bytes(value[2:2 + n], "big")
        offset = 2 + n
    payload = value[offset:offset + length]
    return payload if len(payload) == length and offset + length == len(value) else value


def _public_from_token(public: Any, key_type: KeyType) -> PublicKeyTypes:
    if key_type in _CURVES:
        point = _der_octet_string_payload(bytes(public[Attribute.EC_POINT]))
        return ec.EllipticCurvePublicKey.from_encoded_point(_CURVES[key_type][1], point)
    if key_type.startswith("RSA"):
        n = int.from_bytes(bytes(public[Attribute.MODULUS]), "big")
        e = int.from_bytes(bytes(public[Attribute.PUBLIC_EXPONENT]), "big")
        return rsa.RSAPublicNumbers(e, n).public_key()
    if key_type == "Ed25519":
        return ed25519.Ed25519PublicKey.from_public_bytes(
            _der_octet_string_payload(bytes(public[Attribute.EC_POINT])))
    raise UnsupportedAlgorithm(f"unknown key type {key_type}")


class Pkcs11KeyHandle:
    """A private key object on the token. Signing is serialized over the store's session."""

    __slots__ = ("_key", "_key_id", "_key_type", "_lock", "_public")

    def __init__(self, key_id: str, key_type: KeyType, key: Any, public: PublicKeyTypes,
                 lock: threading.Lock) -> None:
        self._key_id = key_id
        self._key_type = key_type
        self._key = key
        self._public = public
        self._lock = lock

    @property
    def key_id(self) -> str:
        return self._key_id

    @property
    def key_type(self) -> KeyType:
        return self._key_type

    def public_key(self) -> PublicKeyTypes:
        return self._public

    def sign(self, data: bytes, hash_name: HashName = "sha256") -> bytes:
        try:
            with self._lock:
                if self._key_type in _CURVES:
                    size = _CURVES[self._key_type][2]
                    raw = self._key.sign(hashlib.new(hash_name, data).digest(), mechanism=Mechanism.ECDSA)
                    return encode_dss_signature(int.from_bytes(raw[:size], "big"), int.from_bytes(raw[size:], "big"))
                if self._key_type.startswith("RSA"):
                    return bytes(self._key.sign(data, mechanism=_RSA_MECH[hash_name]))
                return bytes(self._key.sign(data, mechanism=Mechanism.EDDSA))
        except pkcs11.PKCS11Error as exc:
            raise BackendError(f"the token refused to sign with key {self._key_id}: {type(exc).__name__}") from None

    def __repr__(self) -> str:
        return f"Pkcs11KeyHandle(key_id={self._key_id!r}, key_type={self._key_type!r})"


class Pkcs11KeyStore:
    """Key store on a PKCS#11 token; one logged-in R/W session shared by all handles (see module docstring)."""

    backend = "pkcs11"

    def __init__(self, *, module_path: str, token_label: str, pin: str) -> None:
        try:
            lib = pkcs11.lib(module_path)
            token = lib.get_token(token_label=token_label)
            self._session = token.open(user_pin=pin, rw=True)
        except RuntimeError as exc:  # python-pkcs11 raises RuntimeError when the module cannot be loaded
            raise BackendError(f"ACAR_PKCS11_MODULE: cannot load {module_path}: {exc}") from None
        except pkcs11.NoSuchToken:
            raise BackendError(f"ACAR_PKCS11_TOKEN_LABEL: no token labelled {token_label!r}") from None
        except pkcs11.PinIncorrect:
            raise BackendError("ACAR_PKCS11_PIN: the token refused the PIN") from None
        except pkcs11.PKCS11Error as exc:
            raise BackendError(f"PKCS#11 token {token_label!r} unusable: {type(exc).__name__}") from None
        self._lock = threading.Lock()
        self._cache: dict[str, Pkcs11KeyHandle] = {}

    def close(self) -> None:
        with self._lock:
            self._session.close()

    def _generate_on_token(self, key_type: KeyType, key_id: str, label: str) -> Any:
        ident = key_id.encode()
        common: dict[str, Any] = {"id": ident, "label": label, "store": True,
                                  "private_template": dict(_PRIVATE_TEMPLATE)}
        if key_type in _CURVES:
            params = self._session.create_domain_parameters(
                P11KeyType.EC, {Attribute.EC_PARAMS: encode_named_curve_parameters(_CURVES[key_type][0])},
                local=True)
            public, _ = params.generate_keypair(**common)
        elif key_type.startswith("RSA"):
            public, _ = self._session.generate_keypair(P11KeyType.RSA, int(key_type[4:]), **common)
        elif key_type == "Ed25519":
            params = self._session.create_domain_parameters(
                P11KeyType.EC_EDWARDS, {Attribute.EC_PARAMS: _ED25519_PARAMS}, local=True)
            public, _ = params.generate_keypair(mechanism=Mechanism.EC_EDWARDS_KEY_PAIR_GEN, **common)
        else:
            raise UnsupportedAlgorithm(f"unknown key type {key_type}")
        return public

    def _find_private(self, key_id: str) -> Any:
        return self._session.get_key(object_class=ObjectClass.PRIVATE_KEY, id=key_id.encode())

    async def generate(self, session: AsyncSession, key_type: KeyType, *, purpose: str, label: str) -> KeyHandle:
        key_id = new_key_id()
        try:
            with self._lock:
                public_obj = self._generate_on_token(key_type, key_id, label)
                public = _public_from_token(public_obj, key_type)
                private = self._find_private(key_id)
        except pkcs11.PKCS11Error as exc:
            raise BackendError(f"the token could not generate a {key_type} key: {type(exc).__name__}") from None
        handle = Pkcs11KeyHandle(key_id, key_type, private, public, self._lock)
        session.add(StoredKey(
            id=key_id, backend=self.backend, key_type=key_type, purpose=purpose, label=label,
            public_key_der=public.public_bytes(serialization.Encoding.DER,
                                               serialization.PublicFormat.SubjectPublicKeyInfo),
        ))
        await session.flush()
        self._cache[key_id] = handle
        return handle

    async def adopt(self, session: AsyncSession, *, token_label: str, purpose: str) -> KeyHandle:
        """Record an existing key pair on the token (found by CKA_LABEL) so Açar can sign with it."""
        try:
            with self._lock:
                private = self._session.get_key(object_class=ObjectClass.PRIVATE_KEY, label=token_label)
                public_obj = self._session.get_key(object_class=ObjectClass.PUBLIC_KEY, label=token_label)
                p11_type = private[Attribute.KEY_TYPE]
                if p11_type == P11KeyType.RSA:
                    bits = len(bytes(public_obj[Attribute.MODULUS])) * 8
                    public: PublicKeyTypes = _public_from_token(public_obj, "RSA-3072" if bits == 3072 else "RSA-2048")
                elif p11_type == P11KeyType.EC:
                    params = bytes(public_obj[Attribute.EC_PARAMS])
                    kt: KeyType = "EC-P384" if params == encode_named_curve_parameters("secp384r1") else "EC-P256"
                    public = _public_from_token(public_obj, kt)
                else:
                    public = _public_from_token(public_obj, "Ed25519")
                key_id = bytes(private[Attribute.ID]).decode("ascii", "replace") or new_key_id()
        except pkcs11.NoSuchKey:
            raise KeyNotFound(f"no key pair labelled {token_label!r} on the token") from None
        except pkcs11.PKCS11Error as exc:
            raise BackendError(f"the token refused access to {token_label!r}: {type(exc).__name__}") from None
        key_type = key_type_of(public)
        handle = Pkcs11KeyHandle(key_id, key_type, private, public, self._lock)
        session.add(StoredKey(
            id=key_id, backend=self.backend, key_type=key_type, purpose=purpose, label=token_label,
            public_key_der=public.public_bytes(serialization.Encoding.DER,
                                               serialization.PublicFormat.SubjectPublicKeyInfo),
        ))
        await session.flush()
        self._cache[key_id] = handle
        return handle

    async def load(self, session: AsyncSession, key_id: str) -> KeyHandle:
        cached = self._cache.get(key_id)
        if cached is not None:
            return cached
        row = await session.get(StoredKey, key_id)
        if row is None or row.destroyed_at is not None or row.backend != self.backend:
            raise KeyNotFound(f"no usable PKCS#11 key {key_id}")
        try:
            with self._lock:
                private = self._find_private(key_id)
        except pkcs11.NoSuchKey:
            raise KeyNotFound(f"key {key_id} is recorded but not on the token") from None
        except pkcs11.PKCS11Error as exc:
            raise BackendError(f"the token refused access to key {key_id}: {type(exc).__name__}") from None
        public = serialization.load_der_public_key(row.public_key_der)
        handle = Pkcs11KeyHandle(key_id, row.key_type, private, public, self._lock)  # type: ignore[arg-type]
        self._cache[key_id] = handle
        return handle

    async def destroy(self, session: AsyncSession, key_id: str) -> None:
        row = await session.get(StoredKey, key_id)
        if row is None:
            raise KeyNotFound(f"no key {key_id}")
        try:
            with self._lock:
                for cls in (ObjectClass.PRIVATE_KEY, ObjectClass.PUBLIC_KEY):
                    for obj in self._session.get_objects({Attribute.CLASS: cls, Attribute.ID: key_id.encode()}):
                        obj.destroy()
        except pkcs11.PKCS11Error as exc:
            raise BackendError(f"the token could not destroy key {key_id}: {type(exc).__name__}") from None
        row.destroyed_at = utcnow()
        await session.flush()
        self._cache.pop(key_id, None)

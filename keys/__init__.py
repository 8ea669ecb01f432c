"""Key custody and the PKI: the only home of private keys."""

from keys.errors import KeysError, MasterKeyError
from keys.interfaces import KeyHandle, KeyStore, KeyType
from keys.jose import JwsSigner, JwsVerifier, VerifiedClaims, public_jwk
from keys.software import MasterKey, SoftwareKeyStore
from keys.token_keys import TokenKeyService

__all__ = [
    "JwsSigner",
    "JwsVerifier",
    "KeyHandle",
    "KeyStore",
    "KeyType",
    "KeysError",
    "MasterKey",
    "MasterKeyError",
    "SoftwareKeyStore",
    "TokenKeyService",
    "VerifiedClaims",
    "public_jwk",
]

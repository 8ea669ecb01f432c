"""Key custody and the PKI: the only home of private keys."""

from keys.ca import CertificateAuthorityService, CertifiedKey
from keys.errors import KeysError, MasterKeyError
from keys.interfaces import KeyHandle, KeyStore, KeyType
from keys.jose import JwsSigner, JwsVerifier, VerifiedClaims, public_jwk
from keys.ocsp import OcspResponder
from keys.pki import PkiService
from keys.profiles import LegalPerson, NaturalPerson, Profile
from keys.software import MasterKey, SoftwareKeyStore
from keys.token_keys import TokenKeyService

__all__ = [
    "CertificateAuthorityService",
    "CertifiedKey",
    "JwsSigner",
    "JwsVerifier",
    "KeyHandle",
    "KeyStore",
    "KeyType",
    "KeysError",
    "LegalPerson",
    "MasterKey",
    "MasterKeyError",
    "NaturalPerson",
    "OcspResponder",
    "PkiService",
    "Profile",
    "SoftwareKeyStore",
    "TokenKeyService",
    "VerifiedClaims",
    "public_jwk",
]

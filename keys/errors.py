"""Errors of key custody and the PKI; each carries its wire form."""

from __future__ import annotations


class KeysError(Exception):
    """Base of key-custody errors: `code` names the problem type, `status_code` its HTTP status."""

    code = "keys_error"
    title = "Key custody error"
    status_code = 400

    def __init__(self, detail: str) -> None:
        super().__init__(detail)
        self.detail = detail


class MasterKeyError(KeysError):
    """The master key of the software key store is missing, malformed or not the one the keys were wrapped with."""

    code = "master_key"
    title = "Master key unusable"
    status_code = 500


class KeyNotFound(KeysError):
    """No key with that identifier exists in the key store (or it has been destroyed)."""

    code = "key_not_found"
    title = "Key not found"
    status_code = 404


class UnsupportedAlgorithm(KeysError):
    """The key cannot produce a signature with the requested algorithm."""

    code = "unsupported_algorithm"
    title = "Unsupported algorithm"
    status_code = 400


class BackendError(KeysError):
    """The key backend (database or PKCS#11 token) failed or is misconfigured."""

    code = "key_backend"
    title = "Key backend unavailable"
    status_code = 503


class CertificateNotFound(KeysError):
    """No certificate with that serial number was issued by this CA."""

    code = "certificate_not_found"
    title = "Certificate not found"
    status_code = 404


class InvalidCertificateRequest(KeysError):
    """A certificate issuance or revocation request is malformed or violates the profile."""

    code = "invalid_certificate_request"
    title = "Invalid certificate request"
    status_code = 422


class AlreadyRevoked(KeysError):
    """The certificate is already revoked (RFC 5280 allows only certificateHold to be lifted)."""

    code = "already_revoked"
    title = "Certificate already revoked"
    status_code = 409


class CANotInitialized(KeysError):
    """The certificate authority has not been created or imported yet."""

    code = "ca_not_initialized"
    title = "CA not initialized"
    status_code = 503


class InvalidToken(KeysError):
    """A JWT failed verification: malformed, wrong algorithm, unknown key, bad signature or claims."""

    code = "invalid_token"
    title = "Invalid token"
    status_code = 401


class TsaNotConfigured(KeysError):
    """The time-stamp authority has no usable key and certificate: not issued yet (`acar init`), or the
    certificate does not certify the key or lacks the critical id-kp-timeStamping EKU (RFC 3161 section 2.3)."""

    code = "tsa_not_configured"
    title = "Time-stamp authority not configured"
    status_code = 503


class RotationTooEarly(KeysError):
    """The next key has not been published long enough for relying parties' cached JWKS to contain it."""

    code = "rotation_too_early"
    title = "Rotation too early"
    status_code = 409


class CAKeyOffline(KeysError):
    """The CA's private key is kept offline (not in the key store): the service cannot sign for it.

    An offline root's revocations are published by a CRL signed at the offline ceremony (`acar crl import`).
    """

    code = "ca_key_offline"
    title = "CA key offline"
    status_code = 409


class CAUnusable(KeysError):
    """The CA certificate is revoked, expired or not yet valid: the CA must not issue (RFC 5280 section 6.1.3)."""

    code = "ca_unusable"
    title = "CA cannot issue"
    status_code = 409


class InvalidCrl(KeysError):
    """An imported CRL is malformed, not signed by the CA, not newer than the current one, or expired."""

    code = "invalid_crl"
    title = "Invalid CRL"
    status_code = 422


class CertificateUnusable(KeysError):
    """An issued certificate that must not be signed with now: revoked, expired or not yet valid."""

    code = "certificate_unusable"
    title = "Certificate not usable"
    status_code = 409

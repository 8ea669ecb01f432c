"""A test FIDO Metadata Service (FIDO MDS3): its own root CA and BLOB-signing certificate, and BLOBs in the MDS3
shape (a compact JWS, ES256, with the signing chain in its x5c header) built with `cryptography`, not with the code
under test."""

from __future__ import annotations

import base64
import datetime as dt
import json
from collections.abc import Iterable, Sequence
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature
from cryptography.x509.oid import NameOID

from tests.webauthn_authenticator import b64url


def _name(cn: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, "Test FIDO Alliance"),
                      x509.NameAttribute(NameOID.COMMON_NAME, cn)])


class MetadataService:
    """Root CA -> BLOB signing certificate; `blob()` signs a payload with the latter."""

    def __init__(self, name: str = "Test MDS Root") -> None:
        now = dt.datetime.now(dt.UTC)
        self.root_key = ec.generate_private_key(ec.SECP256R1())
        self.root = (
            x509.CertificateBuilder().subject_name(_name(name)).issuer_name(_name(name))
            .public_key(self.root_key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(days=1)).not_valid_after(now + dt.timedelta(days=3650))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .add_extension(x509.KeyUsage(digital_signature=False, content_commitment=False, key_encipherment=False,
                                         data_encipherment=False, key_agreement=False, key_cert_sign=True,
                                         crl_sign=True, encipher_only=False, decipher_only=False), critical=True)
            .sign(self.root_key, hashes.SHA256()))
        self.signer_key = ec.generate_private_key(ec.SECP256R1())
        self.signer = (
            x509.CertificateBuilder().subject_name(_name("Test MDS BLOB Signer")).issuer_name(self.root.subject)
            .public_key(self.signer_key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(days=1)).not_valid_after(now + dt.timedelta(days=365))
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .sign(self.root_key, hashes.SHA256()))

    @property
    def root_pem(self) -> bytes:
        return self.root.public_bytes(serialization.Encoding.PEM)

    @staticmethod
    def entry(aaguid: str, roots: Iterable[bytes], statuses: Sequence[str] = ("FIDO_CERTIFIED_L1",),
              description: str = "Test Authenticator") -> dict[str, Any]:
        """An MDS3 entry (FIDO MDS3 section 3.1.1 MetadataBLOBPayloadEntry) for a model: `roots` are PEM."""
        ders = [x509.load_pem_x509_certificate(pem).public_bytes(serialization.Encoding.DER) for pem in roots]
        return {
            "aaguid": aaguid,
            "metadataStatement": {
                "legalHeader": "test", "aaguid": aaguid, "description": description, "authenticatorVersion": 1,
                "protocolFamily": "fido2", "schema": 3, "attestationTypes": ["basic_full"],
                "attestationRootCertificates": [base64.b64encode(d).decode() for d in ders]},
            "statusReports": [{"status": s, "effectiveDate": "2026-01-01"} for s in statuses],
            "timeOfLastStatusChange": "2026-01-01",
        }

    def blob(self, entries: Sequence[dict[str, Any]], *, no: int = 1, next_update: dt.date | None = None,
             tamper: bool = False) -> bytes:
        """A signed BLOB; `tamper` changes the payload after signing (the signature then fails)."""
        next_update = next_update or dt.datetime.now(dt.UTC).date() + dt.timedelta(days=30)
        header = {"alg": "ES256", "typ": "JWT",
                  "x5c": [base64.b64encode(self.signer.public_bytes(serialization.Encoding.DER)).decode()]}
        payload = {"legalHeader": "test", "no": no, "nextUpdate": next_update.isoformat(), "entries": list(entries)}
        signing_input = (b64url(json.dumps(header).encode()) + "." + b64url(json.dumps(payload).encode())).encode()
        r, s = decode_dss_signature(self.signer_key.sign(signing_input, ec.ECDSA(hashes.SHA256())))
        signature = r.to_bytes(32, "big") + s.to_bytes(32, "big")
        if tamper:
            payload["no"] = no + 1000
            signing_input = (b64url(json.dumps(header).encode()) + "." +
                             b64url(json.dumps(payload).encode())).encode()
        return signing_input + b"." + b64url(signature).encode()

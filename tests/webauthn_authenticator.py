"""A software WebAuthn authenticator and client for tests and benchmarks (P-256, COSE ES256).

It answers navigator.credentials.create()/get() options (the JSON the server sends) with exactly the JSON a
browser sends back (RegistrationResponseJSON / AuthenticationResponseJSON, WebAuthn Level 3 section 5.1):
base64url fields, clientDataJSON with type, challenge, origin and crossOrigin, authenticatorData with the RP ID
hash, flags (UP, UV, BE, BS, AT) and the signature counter. Attestation: "none", "packed" self attestation, or
"packed" with an attestation certificate (`AttestationCa` makes one chaining to a test root).

Knobs, per authenticator or per call: origin, rp_id, user_verified, backup_eligible/backed_up, the counter value,
the userHandle sent back, and which credential answers.
"""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import json
import os
import struct
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

import cbor2
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

UP, UV, BE, BS, AT = 0x01, 0x04, 0x08, 0x10, 0x40
ES256 = -7
FIDO_AAGUID_OID = x509.ObjectIdentifier("1.3.6.1.4.1.45724.1.1.4")
Attestation = Literal["none", "packed-self", "packed"]


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def unb64url(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def cose_es256(public_key: ec.EllipticCurvePublicKey) -> bytes:
    numbers = public_key.public_numbers()
    return cbor2.dumps({1: 2, 3: ES256, -1: 1, -2: numbers.x.to_bytes(32, "big"), -3: numbers.y.to_bytes(32, "big")})


class AttestationCa:
    """A test attestation root (or, with `parent`, an intermediate CA under it) and a leaf factory (WebAuthn Level 2
    section 8.2.1 certificate requirements)."""

    certificate: x509.Certificate

    def __init__(self, name: str = "Test Authenticator Vendor Root", *, parent: AttestationCa | None = None) -> None:
        self.key = ec.generate_private_key(ec.SECP256R1())
        self.parent = parent
        subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
        issuer = parent.certificate.subject if parent is not None else subject
        now = dt.datetime.now(dt.UTC)
        self.certificate = (
            x509.CertificateBuilder().subject_name(subject).issuer_name(issuer).public_key(self.key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now - dt.timedelta(days=1))
            .not_valid_after(now + dt.timedelta(days=3650))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .add_extension(x509.KeyUsage(digital_signature=False, content_commitment=False, key_encipherment=False,
                                         data_encipherment=False, key_agreement=False, key_cert_sign=True,
                                         crl_sign=True, encipher_only=False, decipher_only=False), critical=True)
            .sign(parent.key if parent is not None else self.key, hashes.SHA256()))

    @property
    def pem(self) -> bytes:
        return self.certificate.public_bytes(serialization.Encoding.PEM)

    @property
    def intermediates(self) -> list[bytes]:
        """The DER certificates between a leaf of this CA and the root (this CA first; empty for a root)."""
        if self.parent is None:
            return []
        return [self.certificate.public_bytes(serialization.Encoding.DER), *self.parent.intermediates]

    def leaf(self, aaguid: bytes, *, with_aaguid_extension: bool = True,
             signer: ec.EllipticCurvePrivateKey | None = None) -> tuple[ec.EllipticCurvePrivateKey, bytes]:
        """An attestation key and its DER certificate, issued by this root (or by `signer`, for a forgery)."""
        key = ec.generate_private_key(ec.SECP256R1())
        now = dt.datetime.now(dt.UTC)
        builder = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([
                x509.NameAttribute(NameOID.COUNTRY_NAME, "AZ"),
                x509.NameAttribute(NameOID.ORGANIZATION_NAME, "Test Vendor"),
                x509.NameAttribute(NameOID.ORGANIZATIONAL_UNIT_NAME, "Authenticator Attestation"),
                x509.NameAttribute(NameOID.COMMON_NAME, "Test Authenticator")]))
            .issuer_name(self.certificate.subject).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now - dt.timedelta(days=1))
            .not_valid_after(now + dt.timedelta(days=3650))
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True))
        if with_aaguid_extension:
            builder = builder.add_extension(x509.UnrecognizedExtension(FIDO_AAGUID_OID, b"\x04\x10" + aaguid),
                                            critical=False)
        certificate = builder.sign(signer or self.key, hashes.SHA256())
        return key, certificate.public_bytes(serialization.Encoding.DER)


@dataclass
class SoftCredential:
    credential_id: bytes
    key: ec.EllipticCurvePrivateKey
    rp_id: str
    user_handle: bytes
    counter: int = 0
    backup_eligible: bool = False
    backed_up: bool = False

    @property
    def id(self) -> str:
        return b64url(self.credential_id)


@dataclass
class SoftwareAuthenticator:
    """Resident (discoverable) P-256 credentials; `counter_step` 0 models passkey providers that send 0."""

    origin: str = "http://localhost:8000"
    aaguid: bytes = field(default_factory=lambda: bytes(16))
    user_verified: bool = True
    backup_eligible: bool = False
    backed_up: bool = False
    counter_step: int = 1
    attestation: Attestation = "none"
    attestation_key: ec.EllipticCurvePrivateKey | None = None
    attestation_chain: list[bytes] = field(default_factory=list)
    transports: tuple[str, ...] = ("internal", "hybrid")
    credentials: dict[str, SoftCredential] = field(default_factory=dict)

    @property
    def aaguid_text(self) -> str:
        return str(uuid.UUID(bytes=self.aaguid))

    def _client_data(self, kind: str, challenge: str, origin: str | None) -> bytes:
        return json.dumps({"type": kind, "challenge": challenge, "origin": origin or self.origin,
                           "crossOrigin": False}, separators=(",", ":")).encode()

    def create(self, options: Mapping[str, Any], *, origin: str | None = None, rp_id: str | None = None,
               user_verified: bool | None = None, backup_eligible: bool | None = None,
               backed_up: bool | None = None, attestation: Attestation | None = None,
               counter: int | None = None) -> dict[str, Any]:
        """navigator.credentials.create({publicKey: options}) -> RegistrationResponseJSON."""
        rp = rp_id or options["rp"].get("id") or "localhost"
        for excluded in options.get("excludeCredentials") or []:
            if excluded["id"] in self.credentials:
                raise ValueError("InvalidStateError: the authenticator already holds an excluded credential")
        key = ec.generate_private_key(ec.SECP256R1())
        be = self.backup_eligible if backup_eligible is None else backup_eligible
        bs = self.backed_up if backed_up is None else backed_up
        cred = SoftCredential(os.urandom(32), key, rp, unb64url(options["user"]["id"]),
                              counter=self.counter_step if counter is None else counter, backup_eligible=be,
                              backed_up=bs)
        uv = self.user_verified if user_verified is None else user_verified
        flags = UP | AT | (UV if uv else 0) | (BE if be else 0) | (BS if bs else 0)
        attested_data = self.aaguid + struct.pack(">H", len(cred.credential_id)) + cred.credential_id + cose_es256(
            key.public_key())
        auth_data = hashlib.sha256(rp.encode()).digest() + bytes([flags]) + struct.pack(">I", cred.counter) + \
            attested_data
        client_data = self._client_data("webauthn.create", options["challenge"], origin)
        fmt = attestation or self.attestation
        statement: dict[str, Any] = {}
        signed = auth_data + hashlib.sha256(client_data).digest()
        if fmt == "packed-self":
            statement = {"alg": ES256, "sig": key.sign(signed, ec.ECDSA(hashes.SHA256()))}
        elif fmt == "packed":
            assert self.attestation_key is not None, "packed attestation needs attestation_key and chain"
            statement = {"alg": ES256, "sig": self.attestation_key.sign(signed, ec.ECDSA(hashes.SHA256())),
                         "x5c": list(self.attestation_chain)}
        attestation_object = cbor2.dumps({"fmt": "packed" if fmt.startswith("packed") else "none",
                                          "attStmt": statement, "authData": auth_data})
        self.credentials[cred.id] = cred
        return {"id": cred.id, "rawId": cred.id, "type": "public-key", "authenticatorAttachment": "platform",
                "clientExtensionResults": {},
                "response": {"clientDataJSON": b64url(client_data), "attestationObject": b64url(attestation_object),
                             "transports": list(self.transports)}}

    def get(self, options: Mapping[str, Any], *, credential_id: str | None = None, origin: str | None = None,
            rp_id: str | None = None, user_verified: bool | None = None, counter: int | None = None,
            user_handle: bytes | None = None, omit_user_handle: bool = False,
            backup_eligible: bool | None = None, backed_up: bool | None = None) -> dict[str, Any]:
        """navigator.credentials.get({publicKey: options}) -> AuthenticationResponseJSON.

        `counter` sets the value sent (and kept); by default it advances by counter_step."""
        requested = options.get("rpId") or "localhost"
        rp = rp_id or requested  # an override signs for another RP ID (as for a phishing site's)
        allowed = [c["id"] for c in options.get("allowCredentials") or []]
        if credential_id is None:
            candidates = [c for c in self.credentials.values()
                          if (c.id in allowed if allowed else c.rp_id == requested)]
            if not candidates:
                raise ValueError("NotAllowedError: no credential for this RP")
            cred = candidates[-1]
        else:
            cred = self.credentials[credential_id]
        cred.counter = cred.counter + self.counter_step if counter is None else counter
        uv = self.user_verified if user_verified is None else user_verified
        be = cred.backup_eligible if backup_eligible is None else backup_eligible
        bs = cred.backed_up if backed_up is None else backed_up
        flags = UP | (UV if uv else 0) | (BE if be else 0) | (BS if bs else 0)
        auth_data = hashlib.sha256(rp.encode()).digest() + bytes([flags]) + struct.pack(">I", cred.counter)
        client_data = self._client_data("webauthn.get", options["challenge"], origin)
        signature = cred.key.sign(auth_data + hashlib.sha256(client_data).digest(), ec.ECDSA(hashes.SHA256()))
        response: dict[str, Any] = {"clientDataJSON": b64url(client_data), "authenticatorData": b64url(auth_data),
                                    "signature": b64url(signature)}
        if not omit_user_handle:
            response["userHandle"] = b64url(cred.user_handle if user_handle is None else user_handle)
        return {"id": cred.id, "rawId": cred.id, "type": "public-key", "authenticatorAttachment": "platform",
                "clientExtensionResults": {}, "response": response}


def attested_authenticator(ca: AttestationCa, *, aaguid: bytes | None = None, forged: bool = False,
                           **kw: Any) -> SoftwareAuthenticator:
    """An authenticator with packed attestation (WebAuthn Level 2 section 8.2, x5c = leaf and `ca`'s intermediates):
    its certificate chains to `ca` (or, `forged`, to a key of its own while naming the same issuer)."""
    model = aaguid or os.urandom(16)
    key, cert = ca.leaf(model, signer=ec.generate_private_key(ec.SECP256R1()) if forged else None)
    return SoftwareAuthenticator(aaguid=model, attestation="packed", attestation_key=key,
                                 attestation_chain=[cert, *ca.intermediates], **kw)


# --- driving Açar's passkey endpoints in tests (httpx, in process or over the network) ------------------------

CSRF = "X-CSRF-Token"


async def enroll_with_code(http: Any, code: str, authenticator: SoftwareAuthenticator, *, name: str | None = None,
                           **create: Any) -> Any:
    """Type the activation code, then register a passkey: returns the register/verify response."""
    r = await http.post("/webauthn/enrollment", json={"code": code})
    assert r.status_code == 201, r.text
    csrf = r.json()["csrf_token"]
    r = await http.post("/webauthn/register/options", json={}, headers={CSRF: csrf})
    assert r.status_code == 200, r.text
    body: dict[str, Any] = {"ceremony": r.json()["ceremony"],
                            "credential": authenticator.create(r.json()["publicKey"], **create)}
    if name is not None:
        body["name"] = name
    return await http.post("/webauthn/register/verify", json=body, headers={CSRF: csrf})


async def login_options(http: Any, pending_id: str, csrf: str) -> dict[str, Any]:
    r = await http.post("/webauthn/login/options", json={"pending_id": pending_id}, headers={CSRF: csrf})
    assert r.status_code == 200, r.text
    return dict(r.json())


async def passkey_login(http: Any, pending_id: str, csrf: str, authenticator: SoftwareAuthenticator,
                        **get: Any) -> Any:
    """Options, the authenticator's assertion, verify: returns the login/verify response."""
    options = await login_options(http, pending_id, csrf)
    assertion = authenticator.get(options["publicKey"], **get)
    return await http.post("/webauthn/login/verify", json={
        "ceremony": options["ceremony"], "pending_id": pending_id, "credential": assertion}, headers={CSRF: csrf})

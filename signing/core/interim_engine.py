"""INTERIM: a minimal PAdES signer on pyHanko, in the shapes of the engine contract (signing.core.pades), so the
request service and the worker sign for real before the engine is on main. REPLACED BY signing.core.pades.PadesEngine
and deleted once it is: it signs B-B only (no time-stamp, no DSS) whatever level it is asked for, and says so in
its result's `level`.

It signs through `KeyHandle.sign` (keys/): pyHanko's `Signer.async_sign_raw` maps onto it, so no private key is
ever outside the key store.
"""

from __future__ import annotations

import datetime as dt
import hashlib
from dataclasses import dataclass
from typing import BinaryIO, cast

from asn1crypto import algos, x509
from pyhanko.pdf_utils.incremental_writer import IncrementalPdfFileWriter
from pyhanko.sign import fields, signers
from pyhanko.sign.signers.pdf_cms import Signer
from pyhanko_certvalidator.registry import SimpleCertificateStore

from keys.interfaces import HashName, KeyHandle
from signing.core.levels import DEFAULT_LEVEL, PadesLevel


@dataclass(frozen=True, slots=True)
class SigningCredentials:
    handle: KeyHandle
    certificate: x509.Certificate
    chain: tuple[x509.Certificate, ...]


@dataclass(frozen=True, slots=True)
class VisibleSignature:
    page: int
    box: tuple[float, float, float, float]


@dataclass(frozen=True, slots=True)
class SignatureOptions:
    level: PadesLevel = DEFAULT_LEVEL
    reason: str | None = None
    location: str | None = None
    visible: VisibleSignature | None = None
    field_name: str | None = None


@dataclass(frozen=True, slots=True)
class SignatureResult:
    level: PadesLevel
    field_name: str
    signing_time: dt.datetime
    sha256: str


class _HandleSigner(Signer):
    """pyHanko's Signer over a KeyHandle (ECDSA: DER signatures, as CMS wants them, RFC 5753)."""

    def __init__(self, credentials: SigningCredentials) -> None:
        self._handle = credentials.handle
        registry = SimpleCertificateStore.from_certs(list(credentials.chain))  # type: ignore[no-untyped-call]
        super().__init__(signing_cert=credentials.certificate, cert_registry=registry)

    async def async_sign_raw(self, data: bytes, digest_algorithm: str, dry_run: bool = False) -> bytes:
        if dry_run:
            return bytes(512)  # room for any signature of the supported key types
        return await self._handle.sign(data, cast("HashName", digest_algorithm))

    def get_signature_mechanism_for_digest(self, digest_algorithm: str | None) -> algos.SignedDigestAlgorithm:
        return super().get_signature_mechanism_for_digest(digest_algorithm)


class InterimPadesEngine:
    """B-B signatures only (see module docstring)."""

    async def sign(self, source: BinaryIO, output: BinaryIO, credentials: SigningCredentials,
                   options: SignatureOptions, *, actor: str) -> SignatureResult:
        writer = IncrementalPdfFileWriter(source, strict=False)
        name = options.field_name or _fresh_field_name(writer)
        spec = None
        if options.visible is not None:
            box = tuple(round(v) for v in options.visible.box)
            spec = fields.SigFieldSpec(name, on_page=options.visible.page - 1, box=box)  # type: ignore[arg-type]
        meta = signers.PdfSignatureMetadata(field_name=name, md_algorithm="sha256", reason=options.reason,
                                            location=options.location,
                                            subfilter=fields.SigSeedSubFilter.PADES)
        signing_time = dt.datetime.now(dt.UTC)
        pdf_signer = signers.PdfSigner(meta, signer=_HandleSigner(credentials), new_field_spec=spec)
        await pdf_signer.async_sign_pdf(writer, output=output)
        output.seek(0)
        digest = hashlib.sha256()
        while chunk := output.read(1 << 20):
            digest.update(chunk)
        return SignatureResult(level=PadesLevel.B_B, field_name=name, signing_time=signing_time,
                               sha256=digest.hexdigest())


def _fresh_field_name(writer: IncrementalPdfFileWriter) -> str:
    taken = {name for name, _, _ in fields.enumerate_sig_fields(writer.prev, filled_status=None)}
    n = 1
    while f"Signature{n}" in taken:
        n += 1
    return f"Signature{n}"

"""PAdES signing (signing.core.pades) on one core: the engine's B-B overhead over bare pyHanko, and B-T seals/s.

Issue 13 targets, ratios from the same run:
1. With an ECDSA P-256 software key and a ~200 KB PDF, the engine's work per B-B signature is at most 1.3 times a
   bare pyHanko signing call: `pyhanko.sign.signers.async_sign_pdf` with a `SimpleSigner` on the same key, same
   PDF, same SubFilter (ETSI.CAdES.detached) and digest. Both sides are measured interleaved, as process CPU time
   per signature (median of the runs), so drift hits both alike.
2. One worker core completes at least 30 B-T seals per second with the built-in TSA in process (the
   time-stamp granted and audited through keys.tsa.TimestampService, on a throwaway SQLite database, the audit
   events group-committed as in `acar serve`).
3. For the table of `make bench` (bench/run_all.py), the engine's B-LT and B-LTA seals per second and CPU per seal in
   the same world (revocation data from the built-in OCSP responder in process, document time-stamp by the TSA); bare
   pyHanko has no counterpart here without a PKI of its own, so the same-run reference stays the B-B ratio.

Usage: .venv/bin/python bench/bench_signing.py [--runs 7] [--per-run 30] [--postgresql | --database-url URL]
(pins itself to one core; the B-T part on a throwaway SQLite database unless told otherwise)
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import json
import os
import statistics
import sys
import time
from io import BytesIO

from _common import ROOT, add_database_options, database_url
from _signer import SigningWorld, signing_world
from asn1crypto import keys as asn1_keys
from asn1crypto import x509 as asn1_x509
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from pyhanko.pdf_utils.incremental_writer import IncrementalPdfFileWriter
from pyhanko.sign import signers
from pyhanko.sign.fields import SigSeedSubFilter
from pyhanko_certvalidator.registry import SimpleCertificateStore

from keys.software import SoftwareKeyHandle
from signing.core import fastpaths
from signing.core.levels import PadesLevel
from signing.core.pades import PadesEngine, SignatureOptions, SigningCredentials
from signing.core.revocation import ValidationDataSource
from signing.core.timestamps import ServiceTimeStamper

sys.path.insert(0, str(ROOT))
from tests.pdf_tools import make_pdf  # the tests' PDF writer (ROOT put on the path just above)

PDF_BYTES = 200_000
CONCURRENT = 4


def _certificates(key: ec.EllipticCurvePrivateKey) -> tuple[asn1_x509.Certificate, asn1_x509.Certificate]:
    """A CA and a signing certificate (nonRepudiation) for `key`, made with `cryptography` (B-B needs no PKI)."""
    now = dt.datetime.now(dt.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "Bench CA")])
    ca = (x509.CertificateBuilder().subject_name(ca_name).issuer_name(ca_name).public_key(ca_key.public_key())
          .serial_number(x509.random_serial_number()).not_valid_before(now - dt.timedelta(days=1))
          .not_valid_after(now + dt.timedelta(days=30))
          .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
          .sign(ca_key, hashes.SHA256()))
    usage = x509.KeyUsage(digital_signature=False, content_commitment=True, key_encipherment=False,
                          data_encipherment=False, key_agreement=False, key_cert_sign=False, crl_sign=False,
                          encipher_only=False, decipher_only=False)
    leaf = (x509.CertificateBuilder().subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "Bench")]))
            .issuer_name(ca_name).public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(days=1)).not_valid_after(now + dt.timedelta(days=30))
            .add_extension(usage, critical=True).sign(ca_key, hashes.SHA256()))
    der = serialization.Encoding.DER
    return asn1_x509.Certificate.load(ca.public_bytes(der)), asn1_x509.Certificate.load(leaf.public_bytes(der))


async def bench_b_b(runs: int, per_run: int) -> tuple[float, float]:
    key = ec.generate_private_key(ec.SECP256R1())
    ca, leaf = _certificates(key)
    pdf = make_pdf(pages=3, image_bytes=PDF_BYTES)
    engine = PadesEngine(timestamper=None, validation=None)
    credentials = SigningCredentials(handle=SoftwareKeyHandle("bench-signer", key), certificate=leaf, chain=(ca,))
    options = SignatureOptions(level=PadesLevel.B_B)
    key_info = asn1_keys.PrivateKeyInfo.load(key.private_bytes(
        serialization.Encoding.DER, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))
    simple = signers.SimpleSigner(signing_cert=leaf, signing_key=key_info,
                                  cert_registry=SimpleCertificateStore.from_certs([leaf, ca]))
    meta = signers.PdfSignatureMetadata(field_name="Signature1", md_algorithm="sha256",
                                        subfilter=SigSeedSubFilter.PADES)

    async def engine_once() -> None:
        await engine.sign(BytesIO(pdf), BytesIO(), credentials, options, actor="bench")

    async def fresh_engine_once() -> None:  # nothing remembered: pyHanko's own size estimate every time
        await PadesEngine(timestamper=None, validation=None).sign(BytesIO(pdf), BytesIO(), credentials, options,
                                                                  actor="bench")

    async def bare_once() -> None:  # pyHanko as released: without signing.core.fastpaths
        fastpaths.uninstall()
        try:
            await signers.async_sign_pdf(IncrementalPdfFileWriter(BytesIO(pdf)), meta, signer=simple,
                                         output=BytesIO())
        finally:
            fastpaths.install()

    async def cpu_per_signature(fn: object) -> float:
        started = time.process_time()
        for _ in range(per_run):
            await fn()  # type: ignore[operator]
        return (time.process_time() - started) / per_run

    await cpu_per_signature(engine_once)
    await cpu_per_signature(bare_once)  # warm up
    engine_times, fresh_times, bare_times = [], [], []
    for _ in range(runs):
        engine_times.append(await cpu_per_signature(engine_once))
        fresh_times.append(await cpu_per_signature(fresh_engine_once))
        bare_times.append(await cpu_per_signature(bare_once))
    print(f"PDF size                                 : {len(pdf):10d} bytes")
    print(f"engine B-B, first signature of a key     : {statistics.median(fresh_times) * 1000:10.2f} ms CPU/signature "
          f"(median; ratio to bare {statistics.median(fresh_times) / statistics.median(bare_times):.3f})")
    return statistics.median(engine_times), statistics.median(bare_times)


async def bench_b_t(runs: int, per_run: int, url: str
                   ) -> tuple[float, float, float, dict[str, tuple[float, float]]]:
    async with signing_world(url, prefix="acar-bench-signing-", purpose="seal") as world:
        credentials = world.credentials
        engine = PadesEngine(timestamper=ServiceTimeStamper(world.services.tsa), validation=None)
        pdf = make_pdf(pages=3, image_bytes=PDF_BYTES)
        options = SignatureOptions(level=PadesLevel.B_T)

        async def one() -> None:
            await engine.sign(BytesIO(pdf), BytesIO(), credentials, options, actor="bench")

        rates, cpu, concurrent = [], [], []
        await one()  # warm up
        for _ in range(runs):
            started, started_cpu = time.perf_counter(), time.process_time()
            for _ in range(per_run):
                await one()
            rates.append(per_run / (time.perf_counter() - started))
            cpu.append((time.process_time() - started_cpu) / per_run)
            started = time.perf_counter()  # a worker signing CONCURRENT documents at once: commits overlap
            for _ in range(per_run // CONCURRENT):
                await asyncio.gather(*(one() for _ in range(CONCURRENT)))
            concurrent.append(per_run // CONCURRENT * CONCURRENT / (time.perf_counter() - started))
        long_term = await bench_long_term(runs, per_run, world)
        return statistics.median(rates), statistics.median(cpu), statistics.median(concurrent), long_term


async def bench_long_term(runs: int, per_run: int, world: SigningWorld) -> dict[str, tuple[float, float]]:
    """B-LT and B-LTA seals: level -> (seals/s wall clock, CPU s per seal), medians of `runs` runs, in bench_b_t's
    world (a second world on the same database would meet the first one's CA keys, sealed with another master key)."""
    source = ValidationDataSource(trust_roots=[world.root], local=world.services.pki)
    engine = PadesEngine(timestamper=ServiceTimeStamper(world.services.tsa), validation=source)
    pdf = make_pdf(pages=3, image_bytes=PDF_BYTES)
    results: dict[str, tuple[float, float]] = {}
    try:
        for level in (PadesLevel.B_LT, PadesLevel.B_LTA):
            options = SignatureOptions(level=level)

            async def one(options: SignatureOptions = options) -> None:
                await engine.sign(BytesIO(pdf), BytesIO(), world.credentials, options, actor="bench")

            await one()  # warm up
            rates, cpu = [], []
            for _ in range(runs):
                started, started_cpu = time.perf_counter(), time.process_time()
                for _ in range(per_run):
                    await one()
                rates.append(per_run / (time.perf_counter() - started))
                cpu.append((time.process_time() - started_cpu) / per_run)
            results[level.value] = (statistics.median(rates), statistics.median(cpu))
    finally:
        await source.close()
    return results


async def measure(runs: int, per_run: int, url: str) -> None:
    if hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {max(os.sched_getaffinity(0))})
    engine_cpu, bare_cpu = await bench_b_b(runs, per_run)
    b_t_rate, b_t_cpu, b_t_concurrent, long_term = await bench_b_t(runs, per_run, url)
    database = url.split(":", 1)[0] if url else "sqlite"
    print(f"runs={runs} signatures_per_run={per_run} cpu={sorted(os.sched_getaffinity(0))} database={database}")
    print(f"bare pyHanko B-B (SimpleSigner)          : {bare_cpu * 1000:10.2f} ms CPU/signature (median)")
    print(f"engine B-B (KeyHandle, PadesEngine.sign) : {engine_cpu * 1000:10.2f} ms CPU/signature (median)")
    print(f"ratio engine/bare                        : {engine_cpu / bare_cpu:10.3f}  (target <= 1.30)")
    print(f"engine B-T seals, built-in TSA in process: {b_t_rate:10.1f} /s (median, wall clock, one at a time)")
    print(f"  the same, {CONCURRENT} documents at a time        : {b_t_concurrent:10.1f} /s (median, wall clock; "
          "target >= 30)")
    print(f"  CPU per B-T seal (one at a time)       : {b_t_cpu * 1000:10.2f} ms "
          f"({1 / b_t_cpu:.1f} seals per CPU second)")
    for level, (level_rate, level_cpu) in long_term.items():
        print(f"engine {level:5} seals (one at a time)     : {level_rate:10.1f} /s (median, wall clock), "
              f"{level_cpu * 1000:.2f} ms CPU each")
    print(json.dumps({"bench": "signing", "database": database,  # the last line: read by bench/run_all.py
                      "bare_b_b_cpu_ms": round(bare_cpu * 1000, 3), "engine_b_b_cpu_ms": round(engine_cpu * 1000, 3),
                      "ratio_b_b": round(engine_cpu / bare_cpu, 3), "levels": {
                          "B-B": {"per_cpu_s": round(1 / engine_cpu, 1), "cpu_ms": round(engine_cpu * 1000, 2)},
                          "B-T": {"per_s": round(b_t_rate, 1), "cpu_ms": round(b_t_cpu * 1000, 2),
                                  "concurrent_per_s": round(b_t_concurrent, 1)},
                          **{level: {"per_s": round(r, 1), "cpu_ms": round(c * 1000, 2)}
                             for level, (r, c) in long_term.items()}}}))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=7)
    ap.add_argument("--per-run", type=int, default=30, help="signatures per run")
    add_database_options(ap)
    args = ap.parse_args()
    with database_url(args, prefix="acar_bench_signing_") as url:
        asyncio.run(measure(args.runs, args.per_run, url))


if __name__ == "__main__":
    main()

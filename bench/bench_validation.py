"""Validation (signing.core.validation) on one core: B-LTA documents per second from embedded data, and the peak
memory of validating a 50 MB PDF.

Issue 14 targets:
1. A ~200 KB B-LTA document (signed by Açar's PAdES engine with the built-in CA, OCSP and TSA) validates from its
   embedded data at least 10 times per second per core. The reference measured in the same run is pyHanko's own
   ETSI EN 319 102-1 long-term validation (`ades_lta_validation`) of the same signature with the same trust root
   and no fetching, with pyHanko and asn1crypto as released (signing.core.fastpaths uninstalled for it): Açar's
   report adds the structure analysis, the revision review, the identity and the qualified status on top of it.
2. One validation of a 50 MB PDF (a signed B-LTA document) stays under 400 MB RSS: measured as the peak RSS of a
   separate `acar validate` process (the CLI builds the same Validator as the API).

Usage: .venv/bin/python bench/bench_validation.py [--runs 7] [--per-run 20] [--keep DIR]
                                                   [--postgresql | --database-url URL]
(pins itself to one core; the PKI on a throwaway SQLite database unless told otherwise)
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import json
import os
import statistics
import subprocess
import sys
import time
from io import BytesIO
from pathlib import Path

from _common import ACAR, ROOT, add_database_options, database_url, without_acar_settings
from _signer import signing_world
from asn1crypto import x509 as asn1_x509
from pyhanko.pdf_utils.reader import PdfFileReader
from pyhanko.sign.ades.report import AdESPassed
from pyhanko.sign.validation.ades import ades_lta_validation
from pyhanko.sign.validation.policy_decl import (
    PdfSignatureValidationSpec,
    RevinfoOnlineFetchingRule,
    RevocationInfoGatheringSpec,
    SignatureValidationSpec,
)
from pyhanko_certvalidator.context import CertValidationPolicySpec
from pyhanko_certvalidator.policy_decl import (
    CertRevTrustPolicy,
    FreshnessReqType,
    RevocationCheckingPolicy,
    RevocationCheckingRule,
)
from pyhanko_certvalidator.registry import SimpleTrustManager

from signing.core import fastpaths
from signing.core.inspect import InputPolicy
from signing.core.levels import PadesLevel
from signing.core.pades import PadesEngine, SignatureOptions
from signing.core.report import Indication
from signing.core.revocation import ValidationDataSource
from signing.core.timestamps import ServiceTimeStamper
from signing.core.trust import TrustPolicy
from signing.core.validation import Validator

sys.path.insert(0, str(ROOT))
from tests.pdf_tools import large_pdf, make_pdf  # the tests' PDF writers (ROOT put on the path just above)

PDF_BYTES = 200_000
LARGE_BYTES = 50 * 1024 * 1024 - 128 * 1024
"""Just under the document limit (50 MiB) once signed at B-LTA (as tests/functional/test_validation_memory.py)."""
RSS_TARGET = 400 * 1024 * 1024
_MEASURE = """
import resource, subprocess, sys
proc = subprocess.run(sys.argv[1:], capture_output=True)
sys.stderr.buffer.write(proc.stderr)
print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss * 1024, file=sys.stderr)
sys.exit(proc.returncode)
"""


def _pyhanko_spec(root: asn1_x509.Certificate) -> PdfSignatureValidationSpec:
    """pyHanko's long-term validation policy as the PAdES tests use it: revocation from embedded data only."""
    return PdfSignatureValidationSpec(SignatureValidationSpec(
        cert_validation_policy=CertValidationPolicySpec(
            trust_manager=SimpleTrustManager.build(trust_roots=[root]),
            revinfo_policy=CertRevTrustPolicy(
                RevocationCheckingPolicy(ee_certificate_rule=RevocationCheckingRule.CRL_OR_OCSP_REQUIRED,
                                         intermediate_ca_cert_rule=RevocationCheckingRule.CHECK_IF_DECLARED),
                freshness=dt.timedelta(days=30), freshness_req_type=FreshnessReqType.MAX_DIFF_REVOCATION_VALIDATION)),
        revinfo_gathering_policy=RevocationInfoGatheringSpec(online_fetching_rule=RevinfoOnlineFetchingRule.LOCAL_ONLY),
    ))


async def measure(runs: int, per_run: int, url: str, keep: Path | None) -> None:
    if hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {max(os.sched_getaffinity(0))})
    async with signing_world(url, prefix="acar-bench-validation-") as world:
        data, url, root = world.data, world.database_url, world.root
        source = ValidationDataSource(trust_roots=[root], local=world.services.pki)
        engine = PadesEngine(timestamper=ServiceTimeStamper(world.services.tsa), validation=source)
        signed = BytesIO()
        await engine.sign(BytesIO(make_pdf(pages=3, image_bytes=PDF_BYTES)), signed, world.credentials,
                          SignatureOptions(level=PadesLevel.B_LTA), actor="bench")
        document = signed.getvalue()
        large = BytesIO()
        await engine.sign(BytesIO(large_pdf(LARGE_BYTES)), large, world.credentials,
                          SignatureOptions(level=PadesLevel.B_LTA), actor="bench")
        await source.close()

        validator = Validator(trust=TrustPolicy(anchors=(root,), sources=("built-in CA",)),
                              input_policy=InputPolicy(refuse_active_content=False), fetching=None)
        spec = _pyhanko_spec(root)

        # as the server is configured: revocation fetching allowed (the document's embedded data suffices)
        server_source = ValidationDataSource(trust_roots=[root], local=world.services.pki)
        server = Validator(trust=TrustPolicy(anchors=(root,), sources=("built-in CA",)),
                           input_policy=InputPolicy(refuse_active_content=False), fetching=server_source)

        async def acar_once(validator: Validator = validator) -> None:
            report = await validator.validate(BytesIO(document))
            if report.signatures[0].indication is not Indication.TOTAL_PASSED:
                raise SystemExit(f"the B-LTA document does not validate: {report.as_json()}")

        async def server_once() -> None:
            await acar_once(server)

        async def pyhanko_once() -> None:  # the libraries as released: without signing.core.fastpaths
            fastpaths.uninstall()
            try:
                reader = PdfFileReader(BytesIO(document))
                result = await ades_lta_validation(reader.embedded_signatures[0], spec)
            finally:
                fastpaths.install()
            if result.ades_subindic is not AdESPassed.OK:
                raise SystemExit(f"pyHanko does not validate the B-LTA document: {result.ades_subindic}")

        async def per_second(fn: object) -> tuple[float, float]:
            started, started_cpu = time.perf_counter(), time.process_time()
            for _ in range(per_run):
                await fn()  # type: ignore[operator]
            return per_run / (time.perf_counter() - started), (time.process_time() - started_cpu) / per_run

        await acar_once()
        await pyhanko_once()  # warm up
        await server_once()
        acar_runs, bare_runs, server_runs = [], [], []
        for _ in range(runs):
            acar_runs.append(await per_second(acar_once))
            bare_runs.append(await per_second(pyhanko_once))
            server_runs.append(await per_second(server_once))
        await server_source.close()
        server_rate = statistics.median(r for r, _ in server_runs)
        acar_rate = statistics.median(r for r, _ in acar_runs)
        acar_cpu = statistics.median(c for _, c in acar_runs)
        bare_rate = statistics.median(r for r, _ in bare_runs)
        bare_cpu = statistics.median(c for _, c in bare_runs)

        path = data / "large.pdf"
        path.write_bytes(large.getvalue())
        env = {**without_acar_settings(), "ACAR_DATA_DIR": str(data), "ACAR_DATABASE_URL": url,
               "ACAR_MASTER_KEY_FILE": str(data / "master.key"), "ACAR_ISSUER": "http://localhost:8000"}
        # a small parent of its own measures the child: a child forked from this process would start with this
        # process's resident pages, and ru_maxrss keeps that high-water mark across exec
        proc = await asyncio.to_thread(subprocess.run, [sys.executable, "-c", _MEASURE, ACAR, "validate", "--json",
                                                        str(path)], env=env, capture_output=True, check=False)
        *messages, peak_line = proc.stderr.decode().strip().splitlines()
        if proc.returncode != 0:
            raise SystemExit(f"acar validate failed ({proc.returncode}): {' '.join(messages)[-2000:]}")
        peak = int(peak_line)
        (data / "document.pdf").write_bytes(document)
        (data / "root.der").write_bytes(root.dump())
        if keep:
            keep.mkdir(parents=True, exist_ok=True)  # noqa: ASYNC240 - after the measurements
            for name in ("document.pdf", "root.der"):
                (keep / name).write_bytes((data / name).read_bytes())

    database = url.split(":", 1)[0]
    print(f"runs={runs} validations_per_run={per_run} cpu={sorted(os.sched_getaffinity(0))} database={database}")
    print(f"B-LTA document                          : {len(document):10d} bytes")
    print(f"Açar Validator.validate (embedded data) : {acar_rate:10.1f} /s (median, wall clock; target >= 10), "
          f"{acar_cpu * 1000:.1f} ms CPU each")
    print(f"  the same, fetching allowed (the server): {server_rate:10.1f} /s (median, wall clock)")
    print(f"pyHanko ades_lta_validation (reference) : {bare_rate:10.1f} /s (median), {bare_cpu * 1000:.1f} ms CPU each")
    print(f"ratio Açar/pyHanko CPU per validation   : {acar_cpu / bare_cpu:10.3f}")
    print(f"acar validate of a {len(large.getvalue()) / 2**20:.0f} MiB B-LTA PDF     : peak RSS "
          f"{peak / 2**20:10.0f} MiB (target < {RSS_TARGET / 2**20:.0f} MiB)")
    print(json.dumps({"bench": "validation", "database": database, "per_s": round(acar_rate, 2),  # for run_all.py
                      "cpu_ms": round(acar_cpu * 1000, 2), "server_per_s": round(server_rate, 2),
                      "pyhanko_per_s": round(bare_rate, 2), "pyhanko_cpu_ms": round(bare_cpu * 1000, 2),
                      "ratio_cpu": round(acar_cpu / bare_cpu, 3), "large_mib": round(len(large.getvalue()) / 2**20),
                      "large_peak_rss_mib": round(peak / 2**20, 1)}))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=7)
    ap.add_argument("--per-run", type=int, default=20, help="validations per run")
    ap.add_argument("--keep", type=Path, help="keep the 200 KB B-LTA document and the root (DER) in this directory")
    add_database_options(ap)
    args = ap.parse_args()
    with database_url(args, prefix="acar_bench_validation_") as url:
        asyncio.run(measure(args.runs, args.per_run, url, args.keep))


if __name__ == "__main__":
    main()

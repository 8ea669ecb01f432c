"""Memory (issue 14, "Performance"): one validation of a 50 MB PDF stays under 400 MB RSS. A real `acar validate`
process (the CLI builds the same Validator as POST /api/v1/validations) validates a B-LTA document just under the
document limit (one page with one uncompressed image of random pixels: tests/pdf_tools.large_pdf), signed by
Açar's PAdES engine (`world`); its peak resident set is the kernel's own high-water mark, read by a small parent
process that has no other child (getrusage(RUSAGE_CHILDREN).ru_maxrss)."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from pathlib import Path

import pytest

from api.settings import Settings
from signing.core.levels import PadesLevel
from tests.functional.helpers import ACAR, acar_env, run_acar
from tests.pades_world import World, world_settings
from tests.pdf_tools import large_pdf

PEAK_RSS = 400 * 1024 * 1024
"""The issue's bound on one validation of a 50 MB PDF."""
DOCUMENT_BYTES = 50 * 1024 * 1024 - 64 * 1024

_MEASURE = """
import resource, subprocess, sys
proc = subprocess.run(sys.argv[1:], capture_output=True)
sys.stderr.buffer.write(proc.stderr)
sys.stdout.buffer.write(proc.stdout)
print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss * 1024, file=sys.stderr)
sys.exit(proc.returncode)
"""


@pytest.fixture
def settings(settings: Settings, pki_port: int) -> Settings:
    return world_settings(settings, pki_port)


async def test_acar_validate_checks_a_50_mb_b_lta_pdf_in_under_400_mb(world: World, master_key_file: Path,
                                                                      tmp_path: Path) -> None:
    signed = await world.sign(large_pdf(DOCUMENT_BYTES - 64 * 1024), PadesLevel.B_LTA)
    assert 49 * 1024 * 1024 < len(signed) <= DOCUMENT_BYTES
    path = tmp_path / "large.pdf"
    path.write_bytes(signed)
    del signed
    env = acar_env({"ACAR_DATA_DIR": str(tmp_path / "data"), "ACAR_MASTER_KEY_FILE": str(master_key_file),
                    "ACAR_ISSUER": "http://localhost:8000",
                    "ACAR_VALIDATION_TRUST_ANCHORS": json.dumps([str(world.directory / "root.pem")])})
    await asyncio.to_thread(run_acar, env, "init")
    # off the event loop: the world's PKI on loopback is answered on it, should the validation fetch
    proc = await asyncio.to_thread(subprocess.run, [sys.executable, "-c", _MEASURE, ACAR, "validate", "--json",
                                                    str(path)], env=env, capture_output=True, text=True, timeout=300,
                                   check=False)
    *messages, peak_line = proc.stderr.strip().splitlines()
    peak = int(peak_line)
    assert proc.returncode == 0, "\n".join(messages) + proc.stdout[:2000]
    report = json.loads(proc.stdout)
    assert [s["level"] for s in report["signatures"]] == ["B-LTA", None]  # the signature and its document time-stamp
    print(f"\npeak RSS: acar validate {peak / 2**20:.0f} MiB for a {path.stat().st_size / 2**20:.1f} MiB B-LTA PDF")
    assert peak < PEAK_RSS, f"acar validate peaked at {peak / 2**20:.0f} MiB"

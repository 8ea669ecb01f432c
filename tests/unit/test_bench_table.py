"""The table writer of `make bench` (bench/run_all.py): the block between its markers is replaced and the rest of
docs/performance.md kept byte for byte; met / not met is computed from the figure and the issue's target.
(The benchmarks themselves never run in the test suite: they measure, tests do not time anything.)"""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path
from types import ModuleType

import pytest

pytestmark = pytest.mark.nodb

BENCH = Path(__file__).resolve().parents[2] / "bench"


@pytest.fixture(scope="module")
def run_all() -> ModuleType:
    spec = importlib.util.spec_from_file_location("bench_run_all", BENCH / "run_all.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses resolve their annotations through sys.modules
    spec.loader.exec_module(module)
    return module


HISTORY = "## Issue 3: key custody and PKI\n\nmeasured 2026-11-27 | 2,545 |\n\n## Issue 4\n\ntext\n"
DOC = "# Performance\n\nIntroduction.\n\n" + HISTORY


def test_first_write_goes_above_the_history(run_all: ModuleType) -> None:
    block = run_all.render([run_all.Row("OCSP", compared=1200.0, targets=(run_all.Target(11, ">=", 1000, "/s"),))],
                           ["header"])
    written = run_all.replace_block(DOC, block)
    assert written.startswith("# Performance\n\nIntroduction.\n\n" + run_all.BEGIN)
    assert written.endswith(run_all.END + "\n\n" + HISTORY)


def test_rewrite_replaces_only_the_block(run_all: ModuleType) -> None:
    first = run_all.replace_block(DOC, run_all.render([run_all.Row("a", compared=1.0)], ["old run"]))
    second = run_all.replace_block(first, run_all.render([run_all.Row("b", compared=2.0)], ["new run"]))
    assert "old run" not in second
    assert "new run" in second
    assert second.count(run_all.BEGIN) == 1
    assert second.count(run_all.END) == 1
    assert second.split(run_all.END, 1)[1] == "\n\n" + HISTORY  # the history untouched
    assert second.split(run_all.BEGIN, 1)[0] == "# Performance\n\nIntroduction.\n\n"


def test_begin_without_end_is_refused(run_all: ModuleType) -> None:
    with pytest.raises(SystemExit, match="without"):
        run_all.replace_block(run_all.BEGIN + "\nhalf a table\n" + HISTORY, "block")


@pytest.mark.parametrize(("value", "op", "threshold", "met"), [
    (1000.0, ">=", 1000, True), (999.9, ">=", 1000, False),
    (1.3, "<=", 1.3, True), (1.31, "<=", 1.3, False),
    (199.9, "<", 200, True), (200.0, "<", 200, False),
])
def test_met_is_computed_from_the_figure(run_all: ModuleType, value: float, op: str, threshold: float,
                                         met: bool) -> None:
    row = run_all.Row("figure", compared=value, targets=(run_all.Target(17, op, threshold),))
    assert row.met_text() == ("met" if met else "**not met**")


def test_each_target_of_a_row_is_judged(run_all: ModuleType) -> None:
    """Passkey login: 350/s meets issue 11's 300/s and misses issue 17's 400/s, in the targets' order."""
    row = run_all.Row("Passkey login", compared=350.0, compared_unit="/s",
                      targets=(run_all.Target(17, ">=", 400, "/s"), run_all.Target(11, ">=", 300, "/s")))
    line = next(line for line in run_all.render([row], []).splitlines() if line.startswith("| Passkey"))
    assert line == "| Passkey login | - |  | 350/s | ≥ 400/s (#17) · ≥ 300/s (#11) | **not met** · met |"


def test_a_missing_figure_is_not_measured_never_met(run_all: ModuleType) -> None:
    row = run_all.Row("RSS", targets=(run_all.Target(17, "<", 200, " MB"),), note="the script failed (exit 1)")
    block = run_all.render([row], [])
    assert "| RSS | - |  | - | < 200 MB (#17) | not measured |" in block
    assert "- RSS: the script failed (exit 1)" in block


def test_figures_are_read_from_the_scripts_last_json_line(run_all: ModuleType) -> None:
    figures = {"bench": "pki", "ocsp": {"per_s": 1500.0, "errors": 0}, "tsa": {"per_s": 900.0, "errors": 0},
               "healthz": {"per_s": 8000.0, "errors": 0}}
    output = "run: 1 req/s\n" + json.dumps({"not": "ours"}) + "\n" + json.dumps(figures) + "\n"
    ocsp, tsa = run_all.pki_rows(run_all.last_json(output), output)
    assert (ocsp.compared, ocsp.met_text()) == (1500.0, "met")
    assert (tsa.compared, tsa.met_text()) == (900.0, "**not met**")


def test_token_figures_from_bench_token_table(run_all: ModuleType) -> None:
    output = ("server   endpoint       req/s  p50 ms  p99 ms errors CPU ms/req\n"
              "acar     token           1308   11.75   72.14      0      0.612\n"
              "peer     token            394   38.70  123.89      0      1.295\n"
              "token ratio acar/peer: 3.32 (target >= 1.25; per round: 3.32)\n")
    (row,) = run_all.token_rows("uvicorn")(run_all.last_json(output), output)
    assert row.compared == 3.32
    assert row.met_text() == "met · met"
    assert row.figure.startswith("1,308/s")
    assert row.reference.startswith("node-oidc-provider 394/s")

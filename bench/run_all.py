"""`make bench`: every benchmark of bench/ in one run, and the table at the top of docs/performance.md rewritten.

Runs the scripts one after the other (each pins its server and load to the cores it names; two at once would
measure each other), on PostgreSQL (a throwaway database per script on 127.0.0.1:5432, as `make test` uses) unless
--sqlite, with short durations: about 15 minutes on two cores, a few with --quick (a smoke run: one short run per
figure, not for comparing). Each script's last output line is a JSON object naming its benchmark ("bench"), from
which the figures are taken; bench_token.py's are read from its printed table. Every figure is the median the
script prints and every ratio comes from the same script run. The machine's description (CPU model, cores, RAM,
kernel, Python, PostgreSQL, load average before the run and after it) and the date head the table; the targets of
the issues stand beside the figures and met / not met is computed here from the figure, never typed.

The table sits between BEGIN and END at the top of docs/performance.md; the sections below it (the history of each
issue's measurements) are left as they are. Each script's whole output goes to --logs (default: a new directory
under /tmp, printed at the end).

Usage: .venv/bin/python bench/run_all.py [--quick] [--sqlite] [--only token,pki,...] [--doc docs/performance.md]
                                         [--logs DIR] [--no-write]
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import re
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
BEGIN = "<!-- make bench: begin (written by bench/run_all.py; edit the script, not this table) -->"
END = "<!-- make bench: end -->"
PACKAGES = ("api", "idp", "signing", "keys", "storage", "migrations")


# --- targets and rows: what the table shows, met / not met computed -----------------------------------------------

COMPARISONS: dict[str, tuple[str, Callable[[float, float], bool]]] = {
    ">=": ("≥", lambda value, threshold: value >= threshold),
    "<=": ("≤", lambda value, threshold: value <= threshold),
    "<": ("<", lambda value, threshold: value < threshold),
}


@dataclass(frozen=True)
class Target:
    """A figure's target from an issue: met when `figure op threshold` ("at least" >=, "at most" <=, "under" <)."""

    issue: int
    op: str
    threshold: float
    unit: str = ""

    def met(self, value: float) -> bool:
        return COMPARISONS[self.op][1](value, self.threshold)

    def text(self) -> str:
        number = f"{self.threshold:,.2f}".rstrip("0").rstrip(".") if self.threshold < 10 else f"{self.threshold:,.0f}"
        return f"{COMPARISONS[self.op][0]} {number}{self.unit} (#{self.issue})"


@dataclass
class Row:
    """One line of the table. `compared` is the figure the targets apply to (a rate, a ratio, megabytes), shown in
    the "compared" column as `compared_text`; None when the script did not run or printed no figure (`note` why)."""

    measure: str
    figure: str = ""
    reference: str = ""
    compared: float | None = None
    compared_unit: str = ""
    targets: tuple[Target, ...] = ()
    note: str = ""

    def compared_text(self) -> str:
        if self.compared is None:
            return "-"
        if self.compared_unit == "×":
            return f"{self.compared:.2f}×"
        return f"{self.compared:,.0f}{self.compared_unit}" if self.compared >= 100 else \
            f"{self.compared:,.1f}{self.compared_unit}"

    def met_text(self) -> str:
        if not self.targets:
            return ""
        if self.compared is None:
            return "not measured"
        return " · ".join("met" if t.met(self.compared) else "**not met**" for t in self.targets)


def render(rows: Sequence[Row], header: Sequence[str]) -> str:
    """The block written between BEGIN and END: the header lines, the table, the notes of rows that have one."""
    lines = [BEGIN, *header, "",
             "| measure (median) | Açar | same-run reference | compared | target | met |",
             "|---|---|---|---|---|---|"]
    for row in rows:
        cells = [row.measure, row.figure or "-", row.reference, row.compared_text(),
                 " · ".join(t.text() for t in row.targets), row.met_text()]
        lines.append("| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |")
    notes = [f"- {row.measure}: {row.note}" for row in rows if row.note]
    if notes:
        lines += ["", *notes]
    lines.append(END)
    return "\n".join(lines) + "\n"


HOW = ("Each figure is the median its script prints; each ratio compares with a reference measured in the same "
       "script run. \"1 core\": the server pinned to core 0, its load generator to core 1 (see each script's "
       "docstring in bench/). Met / not met is computed by bench/run_all.py from the figure.")


def replace_block(document: str, block: str) -> str:
    """`document` with the text from BEGIN to END replaced by `block`; without them, `block` is put before the
    first second-level heading (after the title and the introduction), or at the end if there is none."""
    start = document.find(BEGIN)
    if start >= 0:
        end = document.find(END, start)
        if end < 0:
            raise SystemExit(f"docs: {BEGIN!r} without {END!r}")
        after = document[end + len(END):]
        return document[:start] + block + after.removeprefix("\n")
    heading = re.search(r"^## ", document, re.MULTILINE)
    if heading is None:
        return document.rstrip("\n") + "\n\n" + block
    return document[:heading.start()] + block + "\n" + document[heading.start():]


# --- the machine --------------------------------------------------------------------------------------------------

def machine() -> dict[str, str]:
    cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")), platform.processor() or "?")
    mem_kib = next(int(line.split()[1]) for line in Path("/proc/meminfo").read_text().splitlines()
                   if line.startswith("MemTotal:"))
    postgresql = subprocess.run(["psql", "-h", "127.0.0.1", "-p", "5432", "-U", "postgres", "-qAt", "-c",
                                 "SHOW server_version"], capture_output=True, text=True, check=False)
    version = postgresql.stdout.strip().split()[0] if postgresql.returncode == 0 and postgresql.stdout.strip() \
        else "not reachable"
    return {"cpu": cpu, "cores": str(os.cpu_count()), "ram": f"{mem_kib / 2**20:.1f} GiB",
            "kernel": platform.release(), "python": platform.python_version(), "postgresql": version}


def load_average() -> str:
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


# --- the scripts --------------------------------------------------------------------------------------------------

@dataclass
class Bench:
    """A script, its arguments for the full run and for --quick, and how its output becomes rows."""

    name: str
    script: str
    full: list[str]
    quick: list[str]
    rows: Callable[[dict[str, Any] | None, str], list[Row]]
    database: bool = True
    """Takes --postgresql."""
    extra: list[str] = field(default_factory=list)


def last_json(output: str) -> dict[str, Any] | None:
    """The last line of `output` that is a JSON object with a "bench" key (what each script prints last)."""
    for line in reversed(output.splitlines()):
        if line.startswith("{"):
            try:
                found = json.loads(line)
            except ValueError:
                continue
            if isinstance(found, dict) and "bench" in found:
                return found
    return None


TOKEN_ROW = re.compile(r"^(\w+)\s+token\s+(\d+)\s+\S+\s+\S+\s+(\d+)\s+([\d.]+)\s*$", re.MULTILINE)
TOKEN_RATIO = re.compile(r"^token ratio acar/peer: ([\d.]+)", re.MULTILINE)


def token_rows(label: str) -> Callable[[dict[str, Any] | None, str], list[Row]]:
    """bench_token.py prints a table (server, endpoint, req/s, p50, p99, errors, CPU ms/req) and the ratio line."""

    def rows(found: dict[str, Any] | None, output: str) -> list[Row]:
        row = Row(f"Token endpoint, {label}: tokens/s, 1 core (client_credentials, ES256 at+jwt)",
                  targets=(Target(17, ">=", 1.5, "×"), Target(11, ">=", 1.25, "×")), compared_unit="×")
        table = {m.group(1): (float(m.group(2)), float(m.group(4))) for m in TOKEN_ROW.finditer(output)}
        ratio = TOKEN_RATIO.search(output)
        if found is not None and "ratio" in found:  # a JSON line, should the script print one
            table = {"acar": (found["acar_per_s"], found.get("acar_cpu_ms", 0.0)),
                     "peer": (found["peer_per_s"], found.get("peer_cpu_ms", 0.0))}
            row.compared = float(found["ratio"])
        elif ratio is not None:
            row.compared = float(ratio.group(1))
        if "acar" in table and "peer" in table:
            row.figure = f"{table['acar'][0]:,.0f}/s ({table['acar'][1]:.3f} ms CPU)"
            row.reference = f"node-oidc-provider {table['peer'][0]:,.0f}/s ({table['peer'][1]:.3f} ms CPU)"
        return [row]

    return rows


def code_exchange_rows(found: dict[str, Any] | None, _: str) -> list[Row]:
    row = Row("Authorization code exchange: exchanges/s, 1 core (PKCE, ID + refresh token)",
              targets=(Target(11, ">=", 1000, "/s"),), compared_unit="/s")
    if found:
        row.figure = f"{found['per_s']:,.0f}/s ({found['server_cpu_ms']:.2f} ms CPU)"
        row.compared = found["per_s"]
    return [row]


def passkey_rows(found: dict[str, Any] | None, _: str) -> list[Row]:
    row = Row("Passkey login: logins/s, 1 core (authorize, page with its ceremony, verify -> code)",
              targets=(Target(17, ">=", 400, "/s"), Target(11, ">=", 300, "/s")), compared_unit="/s")
    if found:
        row.figure = f"{found['per_s']:,.0f}/s ({found['server_cpu_ms']:.2f} ms CPU)"
        row.compared = found["per_s"]
    return [row]


def webeid_rows(found: dict[str, Any] | None, _: str) -> list[Row]:
    row = Row("Web eID token verification (ES384, cached OCSP): /s, 1 core", targets=(Target(15, ">=", 500, "/s"),),
              compared_unit="/s")
    if found and "ES384" in found["curves"]:
        curve = found["curves"]["ES384"]
        row.figure = f"{curve['per_s']:,.0f}/s"
        row.reference = f"bare `cryptography` P-384 verify {curve['bare_verify_per_s']:,.0f}/s"
        row.compared = curve["per_s"]
    return [row]


def signing_rows(found: dict[str, Any] | None, _: str) -> list[Row]:
    ratio = Row("PAdES B-B signing: CPU per signature, engine / bare pyHanko (~200 KB PDF)",
                targets=(Target(13, "<=", 1.3, "×"),), compared_unit="×")
    levels = {name: Row(f"PAdES {name} seals: /s, 1 core (built-in TSA{', OCSP' if 'L' in name else ''} in "
                        "process)", compared_unit="/s") for name in ("B-T", "B-LT", "B-LTA")}
    levels["B-T"].targets = (Target(13, ">=", 30, "/s"),)
    if found:
        ratio.figure = f"{found['engine_b_b_cpu_ms']:.2f} ms CPU"
        ratio.reference = f"pyHanko `async_sign_pdf` {found['bare_b_b_cpu_ms']:.2f} ms CPU"
        ratio.compared = found["ratio_b_b"]
        for name, row in levels.items():
            level = found["levels"].get(name)
            if level is None:
                continue
            row.figure = f"{level['per_s']:,.1f}/s ({level['cpu_ms']:.1f} ms CPU)"
            if name == "B-T":  # issue 13's target: a worker signing 4 documents at a time
                row.figure += f"; 4 at a time {level['concurrent_per_s']:,.1f}/s"
                row.compared = level["concurrent_per_s"]
            else:
                row.compared = level["per_s"]
    return [ratio, *levels.values()]


def validation_rows(found: dict[str, Any] | None, _: str) -> list[Row]:
    rate = Row("Validation of a ~200 KB B-LTA PDF from embedded data: /s, 1 core",
               targets=(Target(14, ">=", 10, "/s"),), compared_unit="/s")
    memory = Row("Validation of a 50 MiB B-LTA PDF (`acar validate`): peak RSS",
                 targets=(Target(14, "<", 400, " MiB"),), compared_unit=" MiB")
    if found:
        rate.figure = f"{found['per_s']:,.1f}/s ({found['cpu_ms']:.0f} ms CPU)"
        rate.reference = (f"pyHanko `ades_lta_validation` {found['pyhanko_per_s']:,.1f}/s "
                          f"({found['pyhanko_cpu_ms']:.0f} ms CPU; CPU ratio {found['ratio_cpu']:.2f})")
        rate.compared = found["per_s"]
        memory.figure = f"{found['large_peak_rss_mib']:,.0f} MiB"
        memory.compared = found["large_peak_rss_mib"]
    return [rate, memory]


def pki_rows(found: dict[str, Any] | None, _: str) -> list[Row]:
    rows = {name: Row(f"{label}: responses/s, 1 core", targets=(Target(11, ">=", 1000, "/s"),), compared_unit="/s")
            for name, label in (("ocsp", "OCSP responder (nonce)"), ("tsa", "RFC 3161 TSA (audited)"))}
    if found:
        for name, row in rows.items():
            row.figure = f"{found[name]['per_s']:,.0f}/s"
            row.reference = f"GET /healthz {found['healthz']['per_s']:,.0f}/s"
            row.compared = found[name]["per_s"]
    return list(rows.values())


def hsm_rows(found: dict[str, Any] | None, _: str) -> list[Row]:
    row = Row("Token endpoint, PKCS#11 key (SoftHSM2) / software key", targets=(Target(11, ">=", 0.70, "×"),),
              compared_unit="×")
    if found:
        row.figure = f"{found['pkcs11_per_s']:,.0f}/s"
        row.reference = f"software key {found['software_per_s']:,.0f}/s"
        row.compared = found["ratio"]
    return [row]


def rss_rows(found: dict[str, Any] | None, _: str) -> list[Row]:
    row = Row("One `acar serve` after warm-up: VmRSS", targets=(Target(17, "<", 200, " MB"),),
              compared_unit=" MB")
    if found:
        row.figure = f"{found['rss_mb']:,.0f} MB (peak {found['hwm_mb']:,.0f} MB)"
        row.reference = (f"after start-up {found['start_rss_mb']:,.0f} MB; warm-up {found['requests']} requests, "
                         f"{found['rounds']} logins, {found['level']} seals, validations")
        row.compared = found["rss_mb"]
    return [row]


def scale_rows(found: dict[str, Any] | None, _: str) -> list[Row]:
    row = Row("`acar serve --workers 2` / `--workers 1`, token endpoint: capacity 2 × CPU(1) / CPU(2)",
              targets=(Target(17, ">=", 1.8, "×"),), compared_unit="×")
    if found:
        row.figure = (f"{found['rps_2']:,.0f}/s on 2 cores ({found['cpu_ms_2']:.3f} ms CPU); wall-clock ratio "
                      f"{found['throughput_ratio']:.2f}×; busiest worker {found['top_worker_share']:.0%}")
        row.reference = f"1 worker {found['rps_1']:,.0f}/s ({found['cpu_ms_1']:.3f} ms CPU)"
        row.compared = found["capacity_ratio"]
    return [row]


BENCHES = [
    # four alternating rounds: the machine's speed drifts between the peer's run and Açar's, and the ratio is the
    # median of the rounds' ratios (two rounds of the same code gave 0.96 and 1.12 on 2026-12-07)
    Bench("token", "bench_token.py", ["--rounds", "4", "--repeat", "1", "--duration", "8"],
          ["--rounds", "1", "--repeat", "1", "--duration", "3"], token_rows("uvicorn")),
    Bench("token-granian", "bench_token.py", ["--rounds", "2", "--repeat", "1", "--duration", "8"],
          ["--rounds", "1", "--repeat", "1", "--duration", "3"], token_rows("granian"), extra=["--server", "granian"]),
    Bench("code-exchange", "bench_code_exchange.py",
          ["--codes", "30000", "--runs", "3", "--duration", "4", "--warmup", "2"],
          ["--codes", "6000", "--runs", "1", "--duration", "2", "--warmup", "1"], code_exchange_rows),
    Bench("passkey", "bench_passkey_login.py", ["--runs", "5", "--duration", "6"],
          ["--runs", "1", "--duration", "2", "--persons", "16"], passkey_rows, extra=["--no-wait"]),
    Bench("webeid", "bench_webeid.py", ["--runs", "5", "--seconds", "1"], ["--runs", "1", "--seconds", "0.3",
                                                                           "--tokens", "300"],
          webeid_rows, database=False),
    Bench("signing", "bench_signing.py", ["--runs", "5", "--per-run", "12"], ["--runs", "1", "--per-run", "4"],
          signing_rows),
    Bench("validation", "bench_validation.py", ["--runs", "5", "--per-run", "8"], ["--runs", "1", "--per-run", "2"],
          validation_rows),
    Bench("pki", "bench_pki.py", ["--runs", "3", "--duration", "5"], ["--runs", "1", "--duration", "2"], pki_rows),
    Bench("token-hsm", "bench_token_hsm.py", ["--runs", "5", "--duration", "5"], ["--runs", "1", "--duration", "2"],
          hsm_rows),
    Bench("rss", "bench_rss.py", ["--rounds", "30"], ["--rounds", "5"], rss_rows),
    Bench("scale", "bench_scale.py", ["--runs", "3", "--duration", "8"], ["--runs", "1", "--duration", "3",
                                                                          "--warmup", "1"], scale_rows),
]


def accepts(script: Path, option: str) -> bool:
    """Whether the script's --help names `option` (bench_token.py's --server is being added separately)."""
    proc = subprocess.run([sys.executable, str(script), "--help"], capture_output=True, text=True, check=False)
    return option in proc.stdout


def run_one(bench: Bench, args: argparse.Namespace, env: dict[str, str]) -> tuple[list[Row], float]:
    script = BENCH / bench.script
    cmd = [sys.executable, str(script), *(bench.quick if args.quick else bench.full), *bench.extra]
    if bench.database and not args.sqlite:
        cmd.append("--postgresql")
    if bench.extra and not accepts(script, bench.extra[0]):
        rows = bench.rows(None, "")
        for row in rows:
            row.note = f"not run: {bench.script} has no {bench.extra[0]} option yet"
        return rows, 0.0
    log = args.logs / f"{bench.name}.log"
    print(f"[{time.strftime('%H:%M:%S')}] {bench.name}: {' '.join(cmd[1:])}  (load {load_average()})", flush=True)
    started = time.monotonic()
    with log.open("w") as out:
        proc = subprocess.run(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=out, text=True, check=False)
        out.write(proc.stdout)
    elapsed = time.monotonic() - started
    found = last_json(proc.stdout)
    rows = bench.rows(found, proc.stdout)
    if proc.returncode != 0 or all(row.compared is None for row in rows):
        tail = (log.read_text().strip().splitlines() or ["no output"])[-1][:200]
        for row in rows:
            row.note = f"the script failed (exit {proc.returncode}): {tail}"
    print(f"           {elapsed:.0f} s: " + "; ".join(f"{r.compared_text()} {r.met_text()}" for r in rows), flush=True)
    return rows, elapsed


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="a smoke run of a few minutes: one short run per figure")
    ap.add_argument("--sqlite", action="store_true", help="SQLite in each data dir instead of PostgreSQL")
    ap.add_argument("--only", default="", help="comma-separated names: " + ",".join(b.name for b in BENCHES))
    ap.add_argument("--doc", type=Path, default=ROOT / "docs" / "performance.md")
    ap.add_argument("--logs", type=Path)
    ap.add_argument("--no-write", action="store_true", help="print the table only")
    args = ap.parse_args()
    args.logs = args.logs or Path(tempfile.mkdtemp(prefix="acar-bench-"))
    args.logs.mkdir(parents=True, exist_ok=True)
    chosen = [b for b in BENCHES if not args.only or b.name in args.only.split(",")]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}  # the checkout's code, whatever .venv/bin/acar would import
    env.setdefault("PVENV", str(Path(sys.executable).parent.parent))  # the harness's check_token.py needs PyJWT

    host = machine()
    if host["postgresql"] == "not reachable" and not args.sqlite:
        raise SystemExit("PostgreSQL does not answer on 127.0.0.1:5432 (user postgres): start it, or use --sqlite")
    # the servers' first start would compile the checkout's modules, which on a busy machine outlasts their wait
    subprocess.run([sys.executable, "-m", "compileall", "-q", *(str(ROOT / p) for p in PACKAGES), str(BENCH)],
                   stdout=subprocess.DEVNULL, check=False)
    before, started = load_average(), dt.datetime.now(dt.UTC)
    rows: list[Row] = []
    for bench in chosen:
        got, _ = run_one(bench, args, env)
        rows.extend(got)
    minutes = (dt.datetime.now(dt.UTC) - started).total_seconds() / 60
    mode = "quick smoke run: one short run per figure, not for comparing" if args.quick else "full run"
    database = "SQLite" if args.sqlite else "PostgreSQL " + host["postgresql"]
    run = (f"**Latest `make bench`** ({mode}), {started:%Y-%m-%d %H:%M} UTC, {minutes:.0f} min, database "
           f"{database}, commit `{git_head()}`.")
    where = (f"Machine: {host['cpu']}, {host['cores']} cores, {host['ram']} RAM, Linux {host['kernel']}, Python "
             f"{host['python']}. Load average (1, 5, 15 min) before: {before}; after: {load_average()}.")
    header = [run, where, HOW]
    block = render(rows, header)
    print(block)
    if not args.no_write:
        args.doc.write_text(replace_block(args.doc.read_text(), block))
        print(f"written: {args.doc}")
    print(f"logs: {args.logs}")


def git_head() -> str:
    proc = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                          check=False)
    dirty = subprocess.run(["git", "-C", str(ROOT), "status", "--porcelain", "--untracked-files=no"],
                           capture_output=True, text=True, check=False).stdout.strip()
    return (proc.stdout.strip() or "?") + ("+changes" if dirty else "")


if __name__ == "__main__":
    main()

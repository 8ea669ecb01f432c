"""api.metrics without a server: the per-start directories (what a start removes and what it keeps), and the tally
that stands in for prometheus_client's per-request calls (the same counts and buckets as observe())."""

from __future__ import annotations

import os
from pathlib import Path

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from starlette.routing import Route

from api.metrics import fresh_directory, held
from api.metrics.instruments import LATENCY_BUCKETS, HttpMeter, Tally

LABELS = ["route", "method", "status"]


def test_a_start_removes_earlier_runs_and_keeps_live_ones_and_everything_else(tmp_path: Path) -> None:
    first, first_lock = fresh_directory(tmp_path, "serve")
    (first / "counter_1.db").write_bytes(b"")
    stale = tmp_path / "worker-stale"
    stale.mkdir()
    (stale / ".lock").touch()
    unlocked = tmp_path / "serve-nolock"
    unlocked.mkdir()
    bystander = tmp_path / "backups"  # an ACAR_METRICS_DIR pointed at a directory holding other things
    bystander.mkdir()
    (tmp_path / "notes.txt").write_text("kept")
    try:
        assert held(first) and not held(stale)
        second, second_lock = fresh_directory(tmp_path, "worker")
        try:
            assert first.exists() and (first / "counter_1.db").exists()  # held by a live process
            assert not stale.exists() and not unlocked.exists()
            assert bystander.exists() and (tmp_path / "notes.txt").read_text() == "kept"
            assert second.name.startswith("worker-") and held(second)
        finally:
            os.close(second_lock)
    finally:
        os.close(first_lock)
    assert not held(first)  # the lock dies with its holder: the next start removes the directory
    third, third_lock = fresh_directory(tmp_path, "serve")
    os.close(third_lock)
    assert not first.exists() and not second.exists() and third.exists()


def test_the_tally_adds_what_observe_would() -> None:
    """Flushing the tally leaves the same exposition as calling observe() and inc() for each request."""
    direct, tallied = CollectorRegistry(), CollectorRegistry()
    metrics = {}
    for name, registry in (("direct", direct), ("tallied", tallied)):
        metrics[name] = (Histogram("t_seconds", "t", LABELS, buckets=LATENCY_BUCKETS, registry=registry),
                         Counter("t_requests", "t", LABELS, registry=registry))
    durations = [0.0, 0.0004, 0.0005, 0.0007, 0.003, 0.01, 0.2, 9.0, 11.0, 123.0]
    histogram, counter = metrics["direct"]
    for seconds in durations:
        histogram.labels("/x", "GET", "2xx").observe(seconds)
        counter.labels("/x", "GET", "2xx").inc()
    histogram, counter = metrics["tallied"]
    tally = Tally()
    meter = HttpMeter(tally, histogram, counter)
    route = Route("/x", lambda request: None)
    for seconds in durations[:4]:
        meter.observe({"route": route, "method": "GET"}, 200, seconds)
    tally.flush()
    for seconds in durations[4:]:
        meter.observe({"route": route, "method": "GET"}, 200, seconds)
    tally.flush()
    tally.flush()  # nothing new: adds nothing

    def lines(registry: CollectorRegistry) -> list[str]:
        return [line for line in generate_latest(registry).decode().splitlines() if "_created" not in line]

    assert lines(tallied) == lines(direct)

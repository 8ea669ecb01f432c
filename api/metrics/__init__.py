"""Prometheus metrics (docs/metrics.md): what is counted (api.metrics.instruments), how /metrics is served and to
whom (api.metrics.exposition), and, here, where the processes of one machine keep their counts.

prometheus_client decides at its import whether it runs in multiprocess mode (PROMETHEUS_MULTIPROC_DIR set: every
value an mmap'd file per process, summed at scrape). `acar serve --workers N` runs N uvicorn worker processes and
`acar worker` runs signing workers beside them, so `prepare` is the first thing both commands do, before anything
imports prometheus_client:

- ACAR_METRICS_DIR (default ACAR_DATA_DIR/metrics) holds one directory per start of `acar serve` or `acar worker`
  (serve-XXXX, worker-XXXX), fresh each time; the starting process holds an exclusive lock on its `.lock` for as
  long as it lives (its uvicorn workers write into it, the lock dies with the supervisor). A directory whose lock
  nobody holds is a previous run's: the next start removes it, and no scrape reads it (a restarted process starts
  its counters at zero, which Prometheus reads as a counter reset, as it should).
- A scrape of any serve worker sums the files of every live directory of the machine: its own instance's workers,
  and `acar worker` processes sharing the directory (a worker on another machine or in a container without this
  volume is not seen; its queue still is, from the database).
- A process that imported prometheus_client without the directory (tests, an application server other than
  `acar serve`) counts in single-process mode, and /metrics serves its own registry.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Final, Literal

from api.settings import Settings, SettingsError

MULTIPROC_ENV: Final = "PROMETHEUS_MULTIPROC_DIR"
LOCK_NAME: Final = ".lock"
ROLES: Final = ("serve-", "worker-")
_held: list[int] = []
"""The lock of this process's directory, held (open) until the process exits."""


def prepare(settings: Settings, role: Literal["serve", "worker"]) -> Path | None:
    """Give this process (and the uvicorn workers it will spawn) a fresh multiprocess directory under
    ACAR_METRICS_DIR, removing the directories of earlier runs; then install the counting (instruments.install).
    Returns the directory; None when prometheus_client was imported already (in-process use: single-process
    mode). Raises SettingsError naming ACAR_METRICS_DIR when the directory cannot be made."""
    if "prometheus_client" in sys.modules:
        _install(settings, role)
        return None
    base = settings.resolved_metrics_dir
    try:
        own, lock = fresh_directory(base, role)
    except OSError as exc:
        raise SettingsError(f"ACAR_METRICS_DIR ({base}): cannot keep the metrics files there: "
                            f"{exc.strerror or exc}") from None
    _held.append(lock)
    os.environ[MULTIPROC_ENV] = str(own)
    _install(settings, role)  # now: prometheus_client reads the variable at its import
    return own


def _install(settings: Settings, role: str) -> None:
    from api.metrics import exposition, instruments

    instruments.install()
    if role == "serve":
        exposition.read_token(settings)  # an unreadable or short token stops the start here, in one line


def fresh_directory(base: Path, role: str) -> tuple[Path, int]:
    """A new directory `role`-XXXX in `base` and the descriptor of its lock, held; the directories of earlier runs
    (nobody holds their lock) removed first. One start at a time sweeps and creates (a lock on base/.lock)."""
    base.mkdir(parents=True, exist_ok=True, mode=0o700)
    with open(base / LOCK_NAME, "a+b") as sweeping:
        fcntl.flock(sweeping, fcntl.LOCK_EX)
        for old in _instances(base):
            if not held(old):
                shutil.rmtree(old, ignore_errors=True)
        own = Path(tempfile.mkdtemp(prefix=f"{role}-", dir=base))
        lock = os.open(own / LOCK_NAME, os.O_CREAT | os.O_RDWR, 0o600)  # not inherited by children (PEP 446)
        fcntl.flock(lock, fcntl.LOCK_EX)
    return own, lock


def held(directory: Path) -> bool:
    """Whether a live process holds `directory` (the lock on its .lock file); False for one without a lock file
    that is not being created right now (prepare creates them under the directory-wide lock)."""
    try:
        fd = os.open(directory / LOCK_NAME, os.O_RDWR)
    except FileNotFoundError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    finally:
        os.close(fd)  # closing releases a lock taken here
    return False


def live_directories() -> list[Path]:
    """This process's multiprocess directory and every live sibling of it (empty in single-process mode)."""
    own = os.environ.get(MULTIPROC_ENV)
    if not own:
        return []
    mine = Path(own)
    found = [mine]
    with contextlib.suppress(OSError):
        found += [d for d in _instances(mine.parent) if d != mine and held(d)]
    return found


def _instances(base: Path) -> list[Path]:
    """The directories of starts of `acar serve` and `acar worker` in `base`: only these are ever removed (an
    ACAR_METRICS_DIR pointed at a directory holding anything else loses nothing else)."""
    return sorted(d for d in base.iterdir() if d.name.startswith(ROLES) and d.is_dir())

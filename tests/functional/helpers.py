"""Run `acar` (in this process, or as the real installed command) and real server processes in tests."""

from __future__ import annotations

import contextlib
import io
import json
import os
import signal
import ssl
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from api.cli import main
from tests.local_http import free_port

ACAR = str(Path(sys.executable).with_name("acar"))


def acar_env(settings_env: Mapping[str, str]) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("ACAR_")}
    env.update(settings_env)
    return env


def run_acar(env: Mapping[str, str], *args: str, check: bool = True, input_: str | None = None,
             ) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run([ACAR, *args], env=dict(env), capture_output=True, text=True, timeout=120,
                          check=False, input=input_)
    if check and proc.returncode != 0:
        raise AssertionError(f"acar {' '.join(args)} failed ({proc.returncode}): {proc.stderr}")
    return proc


def acar_json(env: Mapping[str, str], *args: str) -> Any:
    return json.loads(run_acar(env, *args, "--json").stdout)


@dataclass(frozen=True)
class CliResult:
    """What a run of `acar` left: its exit code and output, as subprocess.CompletedProcess names them."""

    returncode: int
    stdout: str
    stderr: str


class InProcessAcar:
    """`acar` in this process: api.cli.main(argv), as the console script calls it, on a worker thread (the
    command runs its own event loop), with the ACAR_* variables of `env` and its output captured by capsys.

    Faster than a subprocess by the interpreter start-up and imports; the tests of argument parsing,
    validation and output go through here, and a few tests keep running the installed command (run_acar).
    Without `capsys` (a module fixture has none) the output is captured by redirecting sys.stdout and sys.stderr
    while the command runs.
    """

    def __init__(self, env: Mapping[str, str], monkeypatch: pytest.MonkeyPatch,
                 capsys: pytest.CaptureFixture[str] | None = None) -> None:
        self.env = dict(env)
        self._monkeypatch = monkeypatch
        self._capsys = capsys

    def __call__(self, *args: str, check: bool = True, env: Mapping[str, str] | None = None) -> CliResult:
        with self._monkeypatch.context() as patch:
            for name in [name for name in os.environ if name.startswith("ACAR_")]:
                patch.delenv(name)
            for name, value in (self.env if env is None else env).items():
                if name.startswith("ACAR_"):
                    patch.setenv(name, value)
            if self._capsys is not None:
                self._capsys.readouterr()  # output of earlier steps is not this command's
                code = self._run(args)
                out, err = self._capsys.readouterr()
            else:
                stdout, stderr = io.StringIO(), io.StringIO()
                with contextlib.redirect_stdout(stdout), contextlib.redirect_stderr(stderr):
                    code = self._run(args)
                out, err = stdout.getvalue(), stderr.getvalue()
        result = CliResult(code, out, err)
        if check and code != 0:
            raise AssertionError(f"acar {' '.join(args)} failed ({code}): {err}")
        return result

    @staticmethod
    def _run(args: Sequence[str]) -> int:
        with ThreadPoolExecutor(max_workers=1) as pool:
            return pool.submit(main, list(args)).result()

    def json(self, *args: str, env: Mapping[str, str] | None = None) -> Any:
        return json.loads(self(*args, "--json", env=env).stdout)


class Server:
    """A real `acar serve` process in its own process group; with `init`, `acar start serve`: what `acar init`
    makes, then the server, in one process (one interpreter start and import fewer than `acar init` first)."""

    def __init__(self, env: Mapping[str, str], port: int | None = None, log_path: Path | None = None,
                 args: Sequence[str] = (), scheme: str = "http", *, init: bool = False) -> None:
        self.port = port or free_port()
        self.base = f"{scheme}://127.0.0.1:{self.port}"
        self.log_path = log_path
        out = open(log_path, "wb") if log_path else subprocess.DEVNULL  # noqa: SIM115 - closed in stop()
        self._out = out
        self.proc = subprocess.Popen(
            [ACAR, *(("start",) if init else ()), "serve", "--port", str(self.port), *args], env=dict(env),
            stdout=out, stderr=out,
            start_new_session=True,
        )

    def wait_ready(self, timeout: float = 60.0) -> float:
        start = time.monotonic()
        while time.monotonic() - start < timeout:
            if self.proc.poll() is not None:
                raise AssertionError(f"server exited early with {self.proc.returncode}: {self.log()}")
            try:
                if httpx.get(self.base + "/readyz", timeout=2, verify=False).status_code == 200:  # noqa: S501 - loopback
                    return time.monotonic() - start
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        raise AssertionError(f"server not ready within {timeout}s: {self.log()}")

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")[-3000:] if self.log_path else ""

    def stop(self, sig: int = signal.SIGTERM) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
        if self._out is not subprocess.DEVNULL:
            self._out.close()  # type: ignore[union-attr]
        return self.proc.returncode


def tls_client_context(cafile: Path, certificate: tuple[Path, Path] | None = None, *,
                       versions: tuple[ssl.TLSVersion, ssl.TLSVersion] | None = None) -> ssl.SSLContext:
    """A TLS client context trusting `cafile`, presenting `certificate` (PEM chain file, key file) when the server
    asks for one, limited to `versions` (minimum, maximum) when given."""
    context = ssl.create_default_context(cafile=str(cafile))
    if versions is not None:
        context.minimum_version, context.maximum_version = versions
    if certificate is not None:
        context.load_cert_chain(*certificate)
    return context

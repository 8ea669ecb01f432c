"""The container image's steps, outside a container (issue 17): no container builder runs on every machine, so this
test does what the Dockerfile does. It builds the wheel from exactly the files the Dockerfile's build stage copies,
installs it into a clean virtual environment, and runs the Dockerfile's own ENTRYPOINT + CMD (read from the file,
so the two cannot drift) on an empty data directory with only ACAR_ISSUER set: the wheel must carry its package data
(templates, static files, locales, migrations), `acar start` must migrate and prepare the volume, and the
HEALTHCHECK's command must report the instance healthy.

The clean environment installs the wheel alone (--no-deps --no-index); the third-party packages come from the
development environment's site-packages as a plain path in a .pth file (nothing is downloaded). A plain path does
not run that directory's own .pth files, so the editable install's finder, which would import the source tree,
stays off: the test checks that `api` is imported from the clean environment.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import sysconfig
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import asyncpg
import httpx
import pytest
from sqlalchemy.engine import make_url

from tests.conftest import TEST_DB
from tests.local_http import free_port

ROOT = Path(__file__).resolve().parents[2]
DOCKERFILE = ROOT / "Dockerfile"
PRODUCTION = {
    "ACAR_ENV": "production", "ACAR_ISSUER": "https://login.example.az",
    "ACAR_CERTIFICATE_POLICY_OID": "1.3.6.1.4.1.61234.1.1", "ACAR_TSA_POLICY_OID": "1.3.6.1.4.1.61234.1.2",
}


# --- the Dockerfile, read -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Image:
    copies: list[tuple[list[str], str]]
    """The build stage's COPY instructions: sources, destination (relative to its WORKDIR)."""
    entrypoint: list[str]
    cmd: list[str]
    healthcheck: list[str]
    env: dict[str, str]


def _instructions(text: str) -> list[tuple[str, str]]:
    joined = re.sub(r"\\\n", " ", text)
    lines = [line.strip() for line in joined.splitlines()]
    return [(line.split(None, 1)[0].upper(), line.split(None, 1)[1]) for line in lines
            if line and not line.startswith("#")]


def read_dockerfile() -> Image:
    stages: list[list[tuple[str, str]]] = []
    for keyword, rest in _instructions(DOCKERFILE.read_text()):
        if keyword == "FROM":
            stages.append([])
        stages[-1].append((keyword, rest))
    build, final = stages[0], stages[-1]
    copies = [(parts[:-1], parts[-1]) for keyword, rest in build if keyword == "COPY"
              for parts in [rest.split()]]
    found = dict(final)
    check = found["HEALTHCHECK"]
    healthcheck = json.loads(check[check.index("CMD") + 3:].strip())
    env = dict(item.split("=", 1) for item in shlex.split(found["ENV"]))
    return Image(copies, json.loads(found["ENTRYPOINT"]), json.loads(found["CMD"]), healthcheck, env)


# --- the wheel and the clean environment (once per module) -----------------------------------------------------


def _copy_build_context(dest: Path, image: Image) -> None:
    for sources, target in image.copies:
        for source in sources:
            path = ROOT / source
            to = dest / target / path.name if target.endswith("/") else dest / target
            if path.is_dir():
                shutil.copytree(path, to, ignore=shutil.ignore_patterns("__pycache__"))
            else:
                to.parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(path, to)


def _build_wheel(src: Path, out: Path) -> Path:
    """The wheel the Dockerfile's build stage makes (`pip wheel`), offline: no build isolation, so the
    environment's setuptools and wheel (the dev extras) build it, nothing is downloaded."""
    out.mkdir()
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "--no-build-isolation",
                    "--no-index", "--wheel-dir", str(out), str(src)], check=True, timeout=300)
    return next(out.glob("acar-*.whl"))


@dataclass(frozen=True)
class Installed:
    image: Image
    bin: Path
    env: dict[str, str]
    """The environment of a container: no ACAR_ variable, no PYTHONPATH (the source tree stays out)."""

    def command(self, argv: list[str]) -> list[str]:
        """An argv of the Dockerfile, its program taken from the clean environment (as the image's PATH does)."""
        return [str(self.bin / argv[0]), *argv[1:]]


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Installed:
    image = read_dockerfile()
    work = tmp_path_factory.mktemp("image")
    _copy_build_context(work / "src", image)
    wheel = _build_wheel(work / "src", work / "wheels")
    venv = work / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True, timeout=120)
    python = venv / "bin" / "python"
    subprocess.run([sys.executable, "-m", "pip", "--python", str(python), "install", "--quiet", "--no-deps",
                    "--no-index", "--disable-pip-version-check", str(wheel)], check=True, timeout=300)
    purelib = subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                             check=True, capture_output=True, text=True).stdout.strip()
    (Path(purelib) / "acar_test_dependencies.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    env = {k: v for k, v in os.environ.items() if not k.startswith("ACAR_") and k not in ("PYTHONPATH", "PYTHONHOME")}
    env.update(image.env)
    return Installed(image, venv / "bin", env)


@pytest.mark.one_pass("postgresql")  # an empty volume of its own (SQLite), in the pass that builds the wheel anyway
def test_the_wheel_is_what_runs(installed: Installed) -> None:
    """The clean environment imports the installed package, with its data, not the source tree."""
    probe = ("import json, api, api.cli, migrations; from pathlib import Path; p = Path(api.cli.__file__).parent; "
             "print(json.dumps([[*api.__path__, api.cli.__file__, migrations.__file__], "
             "sorted(x.name for x in (p / 'locales').iterdir()), "
             "(Path(migrations.__file__).parent / 'script.py.mako').is_file()]))")
    out = subprocess.run([str(installed.bin / "python"), "-c", probe], env=installed.env, cwd=installed.bin,
                         check=True, capture_output=True, text=True, timeout=120)
    files, locales, mako = json.loads(out.stdout)
    venv = str(installed.bin.parent)
    assert all(f.startswith(venv) for f in files), files  # api is a namespace package: every part of it
    assert {"az.json", "en.json", "ru.json"} <= set(locales) and mako


# --- processes ------------------------------------------------------------------------------------------------


class Container:
    """One run of the image's entrypoint, as `docker run` would start it (own process group, output to a file)."""

    def __init__(self, installed: Installed, argv: list[str], env: dict[str, str], log: Path) -> None:
        self.log_path = log
        self._out = log.open("wb")
        self.proc = subprocess.Popen(installed.command(argv), env=env, stdout=self._out, stderr=subprocess.STDOUT,
                                     cwd=log.parent, start_new_session=True)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def wait_for(self, predicate: Callable[[], bool], what: str, timeout: float = 120.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if predicate():
                return
            if self.proc.poll() is not None:
                raise AssertionError(f"exited with {self.proc.returncode} before {what}: {self.log()[-3000:]}")
            time.sleep(0.2)
        raise AssertionError(f"no {what} within {timeout}s: {self.log()[-3000:]}")

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
        self._out.close()
        return self.proc.returncode


def _ready(base: str) -> bool:
    try:
        return httpx.get(base + "/readyz", timeout=2).status_code == 200
    except httpx.HTTPError:
        return False


def _serve_argv(installed: Installed, port: int) -> list[str]:
    """ENTRYPOINT + CMD of the Dockerfile, on a free port instead of 8000 (tests run side by side)."""
    cmd = list(installed.image.cmd)
    cmd[cmd.index("--port") + 1] = str(port)
    return [*installed.image.entrypoint, *cmd]


def _healthy(installed: Installed, port: int) -> bool:
    """The Dockerfile's HEALTHCHECK command, on the test's port, run as the container runtime would run it."""
    argv = [part.replace(":8000/", f":{port}/") for part in installed.image.healthcheck]
    proc = subprocess.run(installed.command(argv), env=installed.env, capture_output=True, timeout=60, check=False)
    return proc.returncode == 0


@contextlib.contextmanager
def _serving(installed: Installed, env: dict[str, str], log: Path, port: int) -> Iterator[Container]:
    container = Container(installed, _serve_argv(installed, port), env, log)
    try:
        container.wait_for(lambda: _ready(f"http://127.0.0.1:{port}"), "/readyz ready")
        yield container
    finally:
        container.stop()


# --- databases ------------------------------------------------------------------------------------------------


async def _pg(dsn: str, statement: str) -> list[asyncpg.Record]:
    conn = await asyncpg.connect(dsn, timeout=10)
    try:
        return await conn.fetch(statement)
    finally:
        await conn.close()


def _plain_dsn(url: str) -> str:
    return make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)


@pytest.fixture
def empty_pg_url(pg_base_url: str) -> Iterator[str]:
    """A new PostgreSQL database with nothing in it (no migrations: the entrypoint applies them)."""
    name = f"acar_image_{os.urandom(6).hex()}"
    admin = _plain_dsn(pg_base_url)
    asyncio.run(_pg(admin, f'CREATE DATABASE "{name}"'))
    try:
        yield make_url(pg_base_url).set(database=name).render_as_string(hide_password=False)
    finally:
        asyncio.run(_pg(admin, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


@pytest.fixture
def database_env(request: pytest.FixtureRequest) -> dict[str, str]:
    """Nothing in the SQLite pass (SQLite in the data dir, the image's default); an empty database in the
    PostgreSQL pass."""
    if TEST_DB != "postgresql":
        return {}
    url: str = request.getfixturevalue("empty_pg_url")
    return {"ACAR_DATABASE_URL": url}


def _schema(url: str) -> str:
    return str(asyncio.run(_pg(_plain_dsn(url), "SELECT version_num FROM alembic_version"))[0][0])


# --- the entrypoint -------------------------------------------------------------------------------------------


@pytest.mark.one_pass("postgresql")  # an empty volume of its own (SQLite), in the pass that builds the wheel anyway
def test_entrypoint_starts_on_an_empty_volume_and_again(installed: Installed, tmp_path: Path,
                                                        database_env: dict[str, str]) -> None:
    """Only ACAR_ISSUER: migrated, initialized, ready and healthy, tokens issued; a second start on the same volume
    keeps what the first made (same master key, same token keys)."""
    data = tmp_path / "data"  # the empty volume
    data.mkdir()
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    env = {**installed.env, "ACAR_DATA_DIR": str(data), "ACAR_ISSUER": base, **database_env}
    with _serving(installed, env, tmp_path / "first.log", port) as first:
        assert _healthy(installed, port)
        discovery = httpx.get(base + "/.well-known/openid-configuration", timeout=10).json()
        assert discovery["issuer"] == base
        jwks = httpx.get(discovery["jwks_uri"], timeout=10).json()
        assert jwks["keys"]
        home = httpx.get(base + "/", timeout=10)  # a page: the templates and locales came with the wheel
        assert home.status_code == 200 and "<html" in home.text
        added = subprocess.run(installed.command(["acar", "--json", "client", "add", "--name", "Probe",
                                                  "--grant-type", "client_credentials"]),
                               env=env, capture_output=True, text=True, timeout=120, check=True)
        client = json.loads(added.stdout)
        token = httpx.post(discovery["token_endpoint"], data={"grant_type": "client_credentials"},
                           auth=(client["client_id"], client["client_secret"]), timeout=10)
        assert token.status_code == 200, token.text
        assert token.json()["token_type"] == "Bearer"
    # uvicorn shuts down gracefully on SIGTERM, then ends by the signal as the default handler would (exit 143)
    assert first.proc.returncode == -signal.SIGTERM and "Application shutdown complete" in first.log(), first.log()
    assert "master_key_created=True" in first.log()
    master_key = (data / "master.key").read_bytes()
    with _serving(installed, env, tmp_path / "second.log", port) as second:
        assert httpx.get(discovery["jwks_uri"], timeout=10).json() == jwks
        assert "master_key_created=False" in second.log() and "token_keys_created=[]" in second.log()
    assert second.proc.returncode == -signal.SIGTERM and (data / "master.key").read_bytes() == master_key


@pytest.mark.one_pass("postgresql")  # an empty volume of its own (SQLite), in the pass that builds the wheel anyway
def test_worker_variant_starts_and_stops_on_sigterm(installed: Installed, tmp_path: Path,
                                                    database_env: dict[str, str]) -> None:
    """The same image with the command `worker` (README, Container): prepared like serve, then a signing worker
    that a SIGTERM ends cleanly."""
    data = tmp_path / "data"
    data.mkdir()
    env = {**installed.env, "ACAR_DATA_DIR": str(data), "ACAR_ISSUER": "http://127.0.0.1:8000", **database_env}
    worker = Container(installed, [*installed.image.entrypoint, "worker"], env, tmp_path / "worker.log")
    try:
        worker.wait_for(lambda: '"started": true' in worker.log(), "worker start")
    finally:
        code = worker.stop()
    assert code == 0, worker.log()[-3000:]


@pytest.mark.postgresql
def test_two_replicas_start_at_once_on_one_database(installed: Installed, tmp_path: Path, empty_pg_url: str) -> None:
    """Two containers on one empty PostgreSQL database and one shared volume, started together: one prepares,
    the other waits for it (advisory lock) and finds everything made; both serve the same key set."""
    data = tmp_path / "data"
    data.mkdir()
    ports = [free_port(), free_port()]
    env = {**installed.env, "ACAR_DATA_DIR": str(data), "ACAR_ISSUER": "http://127.0.0.1:8000",
           "ACAR_DATABASE_URL": empty_pg_url}
    replicas = [Container(installed, _serve_argv(installed, port), env, tmp_path / f"replica{i}.log")
                for i, port in enumerate(ports)]
    try:
        for replica, port in zip(replicas, ports, strict=True):
            replica.wait_for(lambda port=port: _ready(f"http://127.0.0.1:{port}"), "/readyz ready")
        key_sets = [httpx.get(f"http://127.0.0.1:{port}/jwks.json", timeout=10).json() for port in ports]
        logs = [replica.log() for replica in replicas]
    finally:
        codes = [replica.stop() for replica in replicas]
    assert codes == [-signal.SIGTERM, -signal.SIGTERM], logs
    assert key_sets[0] == key_sets[1] and key_sets[0]["keys"]
    assert sorted("master_key_created=True" in log for log in logs) == [False, True]
    assert sorted("token_keys_created=[]" in log for log in logs) == [False, True]


@pytest.mark.postgresql
def test_two_migrations_at_once(installed: Installed, tmp_path: Path, empty_pg_url: str) -> None:
    """`acar migrate` twice at once on an empty database: one upgrade waits for the other (advisory lock)."""
    env = {**installed.env, "ACAR_DATA_DIR": str(tmp_path), "ACAR_DATABASE_URL": empty_pg_url}
    runs = [subprocess.Popen(installed.command(["acar", "migrate"]), env=env, stdout=subprocess.PIPE,
                             stderr=subprocess.STDOUT, text=True) for _ in range(2)]
    outputs = [run.communicate(timeout=300)[0] for run in runs]
    assert [run.returncode for run in runs] == [0, 0], outputs
    head = outputs[0].strip().removeprefix("schema=")
    assert _schema(empty_pg_url) == head and outputs[1].strip() == outputs[0].strip()


# --- production refuses what it must not make -----------------------------------------------------------------


@pytest.fixture
def production_env(installed: Installed, tmp_path: Path, empty_pg_url: str) -> dict[str, str]:
    """A production container: the database URL, the pairwise salt and the master key as secret files."""
    from keys.software import MasterKey

    secrets = tmp_path / "secrets"
    secrets.mkdir()
    MasterKey.create_file(secrets / "master.key")  # provisioned by the operator (the key ceremony), not by Açar
    (secrets / "database_url").write_text(empty_pg_url + "\n")
    (secrets / "pairwise_salt").write_text(os.urandom(24).hex() + "\n")
    data = tmp_path / "data"
    data.mkdir()
    return {**installed.env, **PRODUCTION, "ACAR_DATA_DIR": str(data),
            "ACAR_MASTER_KEY_FILE": str(secrets / "master.key"),
            "ACAR_DATABASE_URL_FILE": str(secrets / "database_url"),
            "ACAR_PAIRWISE_SALT_FILE": str(secrets / "pairwise_salt")}


REFUSALS = {
    "master key missing": ({"ACAR_MASTER_KEY_FILE": "/run/secrets/missing.key"}, "ACAR_MASTER_KEY_FILE: no such file"),
    "master key unset": ({"ACAR_MASTER_KEY_FILE": None}, "ACAR_MASTER_KEY_FILE must be set in production"),
    "database unset": ({"ACAR_DATABASE_URL_FILE": None}, "ACAR_DATABASE_URL must point at PostgreSQL in production"),
    "database secret missing": ({"ACAR_DATABASE_URL_FILE": "/run/secrets/missing"},
                                "ACAR_DATABASE_URL_FILE: cannot read"),
    "database down": ({"ACAR_DATABASE_URL_FILE": None, "ACAR_DATABASE_URL": "unreachable"},
                      "ACAR_DATABASE_URL: the database does not answer"),
    "no CA": ({}, "the CA is not imported"),
}
"""What production lacks -> the start of its one-line refusal (the last: everything but the CA)."""


@pytest.mark.postgresql
def test_production_refuses_what_is_missing_in_one_line(installed: Installed, production_env: dict[str, str],
                                                        empty_pg_url: str) -> None:
    """Each start, all at once (each is a whole process start), ends with exit 1 and one line saying what to do;
    none generates a key. Without a CA the schema is migrated first, so `acar ca import` can run next."""
    runs = {}
    for case, (change, _) in REFUSALS.items():
        env = dict(production_env)
        for name, value in change.items():
            if value is None:
                env.pop(name)
            elif value == "unreachable":  # a port where nothing listens
                env[name] = f"postgresql+asyncpg://postgres@127.0.0.1:{free_port()}/acar"
            else:
                env[name] = value
        runs[case] = subprocess.Popen(installed.command(_serve_argv(installed, free_port())), env=env,
                                      stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    for case, run in runs.items():
        stdout, stderr = run.communicate(timeout=300)
        lines = stderr.splitlines()
        assert run.returncode == 1 and len(lines) == 1, (case, stdout, stderr)
        assert lines[0].startswith(f"acar: error: {REFUSALS[case][1]}"), (case, stderr)
    assert "acar ca import" in stderr  # the last case names the command to run
    assert _schema(empty_pg_url)
    assert list(Path(production_env["ACAR_DATA_DIR"]).iterdir()) == []


@pytest.mark.postgresql
def test_production_starts_once_the_ca_is_imported(installed: Installed, production_env: dict[str, str],
                                                   tmp_path: Path) -> None:
    """The production path of README, Container: the start migrated and refused, the operator imports the CA
    (root offline, issuing with its key) with the image's `acar`, and the next start serves, ready."""
    from tests.functional.test_pki import _openssl_hierarchy

    ext = _openssl_hierarchy(tmp_path)
    acar = [*installed.command(["acar"]), "ca", "import"]
    subprocess.run([*installed.command(["acar", "migrate"])], env=production_env, check=True, timeout=300,
                   capture_output=True)
    for name, key in (("root", []), ("issuing", ["--key", str(ext["issuing.key"])])):
        imported = subprocess.run([*acar, "--name", name, "--cert", str(ext[f"{name}.pem"]), *key],
                                  env=production_env, capture_output=True, text=True, timeout=300, check=False)
        assert imported.returncode == 0, imported.stderr
    port = free_port()
    with _serving(installed, production_env, tmp_path / "production.log", port) as container:
        assert httpx.get(f"http://127.0.0.1:{port}/jwks.json", timeout=10).json()["keys"]
    assert "master_key_created=False" in container.log() and "ca_created=[]" in container.log()

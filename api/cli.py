"""The `acar` command line. Every command prints JSON with --json and fails with one clear line.

Exit codes: 0 success, 1 the operation was refused or failed (the message says why), 2 bad usage.

`main(argv)` returns the exit code (the console script hands it to sys.exit), so tests call it in-process.
Start-up stays fast: this module imports only the standard library; a command imports what it uses, and
builds only the services it uses (CommandServices), never the whole graph of api.deps.build_services.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Awaitable, Callable, Iterator, Sequence
from functools import cached_property
from typing import TYPE_CHECKING, Any, NoReturn

if TYPE_CHECKING:
    from datetime import date

    from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

    from api.settings import Settings
    from idp.core.webauthn import PasskeyService
    from idp.sql.enrollment import EnrollmentPolicy
    from keys.interfaces import KeyStore
    from keys.pki import PkiService
    from keys.token_keys import TokenKeyService
    from storage.direct import DirectDatabase


class CliError(Exception):
    """A one-line error for the user."""


class _Exit(Exception):
    """argparse's exit (--help, bad usage) as a return code for main()."""

    def __init__(self, code: int, message: str | None = None) -> None:
        super().__init__(code, message)
        self.code = code
        self.message = message


def _error(message: str, code: int = 1) -> int:
    """Write the one-line error and return the exit code."""
    print(f"acar: error: {' '.join(message.splitlines())}", file=sys.stderr)
    return code


def _print_json(data: object) -> None:
    """The --json output: one JSON document on one line."""
    print(json.dumps(data, ensure_ascii=False, indent=None, default=str))


def _emit(args: argparse.Namespace, data: dict[str, Any] | list[Any]) -> None:
    if args.json:
        _print_json(data)
        return
    rows = data if isinstance(data, list) else [data]
    for row in rows:
        if isinstance(row, dict):
            print("  ".join(f"{k}={v}" for k, v in row.items() if v is not None))
        else:
            print(row)


class CommandServices:
    """The services one command uses, each built on first use by an api.deps builder and closed at the end.

    `acar person add` opens the database and nothing else; `acar keys rotate` adds the key store and the
    token keys; only `acar serve` builds the whole graph (api.deps.build_services).
    """

    def __init__(self, settings: Settings) -> None:
        from api.deps import build_database

        self.settings = settings
        self.engine: AsyncEngine
        self.sessions: async_sessionmaker[AsyncSession]
        self.engine, self.sessions = build_database(settings)

    @cached_property
    def key_store(self) -> KeyStore:
        from api.deps import build_key_store

        return build_key_store(self.settings)  # a missing or malformed master key fails here

    @cached_property
    def token_keys(self) -> TokenKeyService:
        from api.deps import build_token_keys

        return build_token_keys(self.settings, self.sessions, self.key_store)

    @cached_property
    def direct(self) -> DirectDatabase:
        from api.deps import build_direct

        return build_direct(self.settings, self.engine, self.sessions)

    @cached_property
    def pki(self) -> PkiService:
        from api.deps import build_pki

        return build_pki(self.settings, self.sessions, self.key_store, self.direct)

    @cached_property
    def passkeys(self) -> PasskeyService:
        from api.deps import build_passkeys

        return build_passkeys(self.settings)

    @cached_property
    def enrollment_policy(self) -> EnrollmentPolicy:
        from api.deps import build_enrollment_policy

        return build_enrollment_policy(self.settings)

    async def close(self) -> None:
        built = vars(self)  # cached_property keeps what was built in the instance dict
        if "pki" in built:
            await self.pki.close()
        if "key_store" in built:
            self.key_store.close()
        if "direct" in built:
            await self.direct.close()
        await self.engine.dispose()


Work = Callable[[CommandServices, "AsyncSession"], Awaitable[Any]]


async def _in_transaction(settings: Settings, work: Work) -> Any:
    """Run `work` in one unit of work: commit on success, roll back (write nothing) on any error."""
    services = CommandServices(settings)
    try:
        async with services.sessions() as session, session.begin():
            return await work(services, session)
    finally:
        await services.close()


def _run(settings: Settings, work: Work) -> Any:
    import asyncio

    return asyncio.run(_in_transaction(settings, work))


# --- commands --------------------------------------------------------------------------------------------


async def _sealed_master_key_ids(settings: Settings) -> list[str]:
    """Ids of the master keys that live software keys in the database are sealed with."""
    from api.deps import build_database
    from keys.software import sealed_master_key_ids

    engine, sessions = build_database(settings)
    try:
        async with sessions() as session:
            return await sealed_master_key_ids(session)
    finally:
        await engine.dispose()


def _refuse_lost_master_key(settings: Settings, *, starting: bool = False) -> None:
    """Stop when the software key store's master key file is missing while the database holds keys sealed with a
    master key (lost, or not restored with the database: docs/deployment.md, Backup and restore): one line naming
    the file and the id of the key to put back, never a new master key or a hint to run `acar init`.

    `starting` (serve, worker): a database that cannot tell (none yet, not migrated) leaves the start to the key
    store's own error about the missing file; a SQLite file that does not exist is not created to ask."""
    import asyncio
    from pathlib import Path

    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import SQLAlchemyError

    if settings.key_backend != "software" or settings.resolved_master_key_file.exists():
        return
    url = make_url(settings.resolved_database_url)
    if starting and url.get_backend_name() == "sqlite" and not Path(url.database or "").is_file():
        return
    try:
        sealed = asyncio.run(_sealed_master_key_ids(settings))
    except (OSError, SQLAlchemyError):
        if not starting:
            raise
        return
    if sealed:
        raise CliError(f"ACAR_MASTER_KEY_FILE: {settings.resolved_master_key_file} does not exist, but the "
                       f"database holds keys sealed with master key {', '.join(sealed)}; restore that file")


def cmd_init(args: argparse.Namespace, settings: Settings) -> None:

    from api import migrate
    from keys.software import MasterKey, SoftwareKeyStore

    created_master = False
    settings.data_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    migrate.upgrade(settings.resolved_database_url)
    if settings.key_backend == "software" and not settings.resolved_master_key_file.exists():
        if settings.env == "production":
            raise CliError("ACAR_MASTER_KEY_FILE does not exist; production master keys are provisioned, not generated")
        _refuse_lost_master_key(settings)
        MasterKey.create_file(settings.resolved_master_key_file)
        created_master = True

    async def work(services: CommandServices, session: AsyncSession) -> dict[str, Any]:
        if isinstance(services.key_store, SoftwareKeyStore):
            await services.key_store.check_master_key(session)  # a wrong master key fails here, creating nothing
        created = await services.token_keys.ensure_keys(session, actor="cli:init")
        # the CA hierarchy is created in development only; production imports it (`acar ca import`)
        pki = await services.pki.initialize(session, actor="cli:init", create_hierarchy=settings.env == "development")
        return {"token_keys_created": created, **pki}

    result = _run(settings, work)
    _emit(args, {"data_dir": str(settings.data_dir.resolve()), "master_key_created": created_master,
                 "schema": migrate.head_revision(), **result})


def cmd_migrate(args: argparse.Namespace, settings: Settings) -> None:
    from api import migrate

    migrate.upgrade(settings.resolved_database_url)
    _emit(args, {"schema": migrate.head_revision()})


def cmd_serve(args: argparse.Namespace, settings: Settings) -> None:
    from api.metrics import prepare as prepare_metrics  # here, not at the top: `acar --help` stays fast

    prepare_metrics(settings, "serve")  # first: before anything imports prometheus_client (api.metrics)
    import asyncio

    from api.app import startup_checks
    from api.deps import build_services
    from api.server import ListenError, granian_refusal, mtls_client_cas, serve, tls_context, tls_listeners

    if args.port < 1 or args.port > 65535:
        raise CliError("--port must be between 1 and 65535")
    if args.workers < 1:
        raise CliError("--workers must be at least 1")
    if settings.mtls_port == args.port:
        raise CliError(f"ACAR_MTLS_PORT must differ from --port ({args.port}): the mTLS listener is a second socket")
    server = args.server or settings.server
    if server == "granian" and (refusal := granian_refusal(settings)) is not None:
        raise CliError(refusal)  # a combination granian cannot serve without weakening an edge rule
    if settings.tls_cert_file is not None and settings.tls_key_file is not None:
        tls_context(settings.tls_cert_file, settings.tls_key_file)  # a pair that does not load stops here, first
    _refuse_lost_master_key(settings, starting=True)

    async def check_keys() -> tuple[bytes, ...]:
        services = build_services(settings)  # a missing or malformed master key, or an unusable token, stops here
        try:
            await startup_checks(services)  # and a wrong master key here: before uvicorn starts, in one line
            return await mtls_client_cas(settings, services.card)
        finally:
            await services.close()

    client_cas = asyncio.run(check_keys())
    tls = tls_listeners(settings, client_cas)  # a certificate or key that does not load stops the start here
    try:
        serve(settings, host=args.host, port=args.port, workers=args.workers, tls=tls, server=server)
    except ListenError as exc:
        raise CliError(str(exc)) from None


def _parse_date(value: str | None) -> date | None:
    import datetime as dt

    if value is None:
        return None
    try:
        return dt.date.fromisoformat(value)
    except ValueError:
        raise CliError(f"--birthdate must be a date as YYYY-MM-DD (got {value!r})") from None


def cmd_person_add(args: argparse.Namespace, settings: Settings) -> None:
    from idp.sql.persons import PersonService

    birthdate = _parse_date(args.birthdate)

    async def work(services: CommandServices, session: AsyncSession) -> dict[str, Any]:
        person = await PersonService(session).add(
            fin=args.fin, given_name=args.given_name, family_name=args.family_name, birthdate=birthdate,
            category=args.category, document_type=args.document_type, document_country=args.document_country,
            document_number=args.document_number, status=args.status,
            given_name_cyrillic=args.given_name_cyrillic, family_name_cyrillic=args.family_name_cyrillic, actor="cli",
        )
        return person.as_json()

    _print_json(_run(settings, work))  # JSON with or without --json


def cmd_person_show(args: argparse.Namespace, settings: Settings) -> None:
    from idp.sql.persons import PersonService

    async def work(services: CommandServices, session: AsyncSession) -> dict[str, Any]:
        return (await PersonService(session).get_by_fin(args.fin)).as_json()

    _emit(args, _run(settings, work))


def cmd_person_set_status(args: argparse.Namespace, settings: Settings) -> None:
    from idp.sql.persons import PersonService

    async def work(services: CommandServices, session: AsyncSession) -> dict[str, Any]:
        people = PersonService(session, logout_retry_seconds=settings.backchannel_logout_retry_seconds)
        return (await people.set_status(args.fin, args.status, actor="cli")).as_json()

    _emit(args, _run(settings, work))


def cmd_import(args: argparse.Namespace, settings: Settings) -> int:
    """`acar import persons|entities|mandates FILE.csv`: the whole file in one transaction, or nothing and every
    bad row reported: one line each on stderr before the one-line error; with --json, the report as one JSON
    document on stdout (as validate's verdict) beside the one-line error."""
    from idp.core.errors import ImportRejected
    from idp.sql import registry_import

    data = _read_file(args.file, "FILE")

    async def work(services: CommandServices, session: AsyncSession) -> dict[str, Any]:
        if args.kind == "persons":
            return (await registry_import.import_persons(session, data, actor="cli")).as_json()
        if args.kind == "entities":
            return (await registry_import.import_entities(session, data, actor="cli")).as_json()
        return (await registry_import.import_mandates(session, data, actor="cli")).as_json()

    try:
        summary = _run(settings, work)
    except ImportRejected as exc:
        problems = [{"line": line, "column": column, "reason": reason} for line, column, reason in exc.problems]
        if args.json:  # the report on stdout (as validate's verdict), the one-line error on stderr
            _print_json({"error": exc.code, "detail": exc.detail, "file": args.file, "problems": problems})
        else:
            for line, column, reason in exc.problems:
                where = f"line {line}" + (f", column {column}" if column else "")
                print(f"acar: {args.file}: {where}: {' '.join(reason.splitlines())}", file=sys.stderr)
        return _error(exc.detail)
    if args.json:
        _print_json(summary)
    else:
        print(f"imported {summary['imported']} {args.kind} from {args.file} (sha256 {summary['sha256']})")
    return 0


def _role_json(grant: Any) -> dict[str, Any]:
    from idp.core.roles import ROLE_SCOPES

    return {"id": grant.id, "person_id": grant.person_id, "role": grant.role, "agency_voen": grant.agency_voen,
            "scope": ROLE_SCOPES[grant.role]}


def cmd_role_grant(args: argparse.Namespace, settings: Settings) -> None:
    """`acar role grant FIN ROLE [--agency VOEN]`: how the first system administrator is made (audited role.granted,
    actor cli); granting a role already held prints it again."""
    from idp.sql.roles import RoleService

    async def work(services: CommandServices, session: AsyncSession) -> dict[str, Any]:
        return _role_json(await RoleService(session).grant(fin=args.fin, role=args.role, agency_voen=args.agency,
                                                           actor="cli"))

    _emit(args, _run(settings, work))


def cmd_role_revoke(args: argparse.Namespace, settings: Settings) -> None:
    from idp.sql.roles import RoleService

    async def work(services: CommandServices, session: AsyncSession) -> dict[str, Any]:
        revoked = await RoleService(session).revoke(fin=args.fin, role=args.role, agency_voen=args.agency,
                                                    actor="cli")
        return {"fin": args.fin.strip().upper(), "role": args.role, "agency_voen": args.agency, "revoked": revoked}

    result = _run(settings, work)
    if args.json:
        _print_json(result)
    elif result["revoked"]:
        print(f"revoked {args.role} of {result['fin']}")
    else:
        print(f"{result['fin']} did not hold {args.role}" + (f" for {args.agency}" if args.agency else ""))


def cmd_role_list(args: argparse.Namespace, settings: Settings) -> None:
    from idp.sql.persons import PersonService
    from idp.sql.roles import RoleService

    async def work(services: CommandServices, session: AsyncSession) -> list[dict[str, Any]]:
        person = await PersonService(session).person(args.fin)
        return [_role_json(g) for g in await RoleService(session).roles_of(person.id)]

    rows = _run(settings, work)
    if args.json:
        _print_json(rows)
    elif not rows:
        print("no staff role (a citizen)")
    else:
        for row in rows:
            print(row["role"] + (f"  agency={row['agency_voen']}" if row["agency_voen"] else ""))


def cmd_entity_add(args: argparse.Namespace, settings: Settings) -> None:
    from idp.sql.registry import EntityService

    async def work(services: CommandServices, session: AsyncSession) -> dict[str, Any]:
        return (await EntityService(session).add(voen=args.voen, name=args.name, legal_form=args.legal_form,
                                                 status=args.status, director_fin=args.director,
                                                 actor="cli")).as_json()

    _print_json(_run(settings, work))


def cmd_entity_show(args: argparse.Namespace, settings: Settings) -> None:
    from idp.sql.registry import EntityService

    async def work(services: CommandServices, session: AsyncSession) -> dict[str, Any]:
        return (await EntityService(session).get(args.voen)).as_json()

    _emit(args, _run(settings, work))


def cmd_entity_set_status(args: argparse.Namespace, settings: Settings) -> None:
    from idp.sql.registry import EntityService

    async def work(services: CommandServices, session: AsyncSession) -> dict[str, Any]:
        return (await EntityService(session).set_status(args.voen, args.status, actor="cli")).as_json()

    _emit(args, _run(settings, work))


def cmd_entity_set_director(args: argparse.Namespace, settings: Settings) -> None:
    from idp.sql.registry import EntityService

    if (args.fin is None) == (not args.none):
        raise CliError("give the director's FIN, or --none to record no director")

    async def work(services: CommandServices, session: AsyncSession) -> dict[str, Any]:
        return (await EntityService(session).set_director(args.voen, args.fin, actor="cli")).as_json()

    _emit(args, _run(settings, work))


def _parse_instant(value: str | None, option: str) -> Any:
    """A mandate's bound as the CSV import reads it (idp.sql.registry_import.parse_instant), or None."""
    from idp.core.errors import InvalidIdentifier
    from idp.sql.registry_import import parse_instant

    if value is None:
        return None
    try:
        return parse_instant(value)
    except InvalidIdentifier as exc:
        raise CliError(f"{option}: {exc.detail}") from None


def cmd_mandate_grant(args: argparse.Namespace, settings: Settings) -> None:
    from idp.sql.registry import MandateService

    valid_from = _parse_instant(args.valid_from, "--valid-from")
    valid_to = _parse_instant(args.valid_to, "--valid-to")

    async def work(services: CommandServices, session: AsyncSession) -> dict[str, Any]:
        return (await MandateService(session).grant(
            fin=args.fin, voen=args.voen, powers=args.power, valid_from=valid_from, valid_to=valid_to,
            granted_by=args.granted_by, granted_via=args.granted_via, actor="cli")).as_json()

    _print_json(_run(settings, work))


def cmd_mandate_revoke(args: argparse.Namespace, settings: Settings) -> None:
    from idp.sql.registry import MandateService

    async def work(services: CommandServices, session: AsyncSession) -> dict[str, Any]:
        return (await MandateService(session).revoke(args.mandate_id, actor="cli")).as_json()

    _emit(args, _run(settings, work))


def cmd_mandate_list(args: argparse.Namespace, settings: Settings) -> None:
    from idp.sql.persons import PersonService
    from idp.sql.registry import MandateService

    at = _parse_instant(args.at, "--at")

    async def work(services: CommandServices, session: AsyncSession) -> list[dict[str, Any]]:
        person = await PersonService(session).person(args.fin)
        mandates = MandateService(session)
        found = await (mandates.all_of(person.id) if args.all else mandates.valid(person.id, at=at))
        return [m.as_json() for m in found]

    _emit(args, _run(settings, work))


def cmd_keys_rotate(args: argparse.Namespace, settings: Settings) -> None:
    from keys.software import SoftwareKeyStore

    async def work(services: CommandServices, session: AsyncSession) -> list[dict[str, Any]]:
        algs = args.alg or None
        if isinstance(services.key_store, SoftwareKeyStore):
            await services.key_store.check_master_key(session)  # a wrong master key fails first, changing nothing
        changes = await services.token_keys.rotate(session, algorithms=algs, actor="cli", force=args.force)
        await services.token_keys.remove_expired(session, actor="cli")
        return changes

    _emit(args, _run(settings, work))


def cmd_keys_list(args: argparse.Namespace, settings: Settings) -> None:
    from sqlalchemy import select

    from keys.models import TokenKey

    async def work(services: CommandServices, session: AsyncSession) -> list[dict[str, Any]]:
        rows = (await session.execute(select(TokenKey).order_by(TokenKey.alg, TokenKey.created_at))).scalars()
        return [{"kid": r.kid, "alg": r.alg, "state": r.state, "created_at": r.created_at.isoformat(),
                 "activated_at": r.activated_at.isoformat() if r.activated_at else None,
                 "remove_after": r.remove_after.isoformat() if r.remove_after else None} for r in rows]

    _emit(args, _run(settings, work))


def cmd_admin_token(args: argparse.Namespace, settings: Settings) -> None:
    from api.auth import mint_admin_token, record_mint

    async def work(services: CommandServices, session: AsyncSession) -> dict[str, Any]:
        try:
            minted = await mint_admin_token(services, subject=args.subject, scopes=set(args.scope.split()),
                                            ttl_seconds=args.ttl)
        except ValueError as exc:
            raise CliError(str(exc)) from None
        record_mint(session, minted, actor="cli", subject=args.subject, ttl=args.ttl)
        return minted

    _emit(args, _run(settings, work))


def _read_file(path: str, option: str) -> bytes:
    from pathlib import Path

    try:
        return Path(path).read_bytes()
    except OSError as exc:
        raise CliError(f"{option}: cannot read {path}: {exc.strerror}") from None


def cmd_ca_import(args: argparse.Namespace, settings: Settings) -> None:
    from keys.software import SoftwareKeyStore

    certificate = _read_file(args.cert, "--cert")
    key_pem = _read_file(args.key, "--key") if args.key else None
    password = _read_file(args.key_password_file, "--key-password-file").rstrip(b"\r\n") \
        if args.key_password_file else None
    offline = not (args.key or args.pkcs11_label)
    if offline and args.name != "root":
        raise CliError(f"the {args.name} CA needs its key: pass --key or --pkcs11-label "
                       "(only the root CA may stay offline)")
    if password is not None and key_pem is None:
        raise CliError("--key-password-file goes with --key")

    async def work(services: CommandServices, session: AsyncSession) -> dict[str, Any]:
        pki, store = services.pki, services.key_store
        await pki.ca.check_import(session, args.name, certificate)  # before any key is touched
        if offline:  # the root's key stays offline: its CRLs are signed there (`acar crl import`)
            await pki.ca.import_ca(session, args.name, certificate, None, actor="cli")
            made = await pki.initialize(session, actor="cli:ca-import", create_hierarchy=False)
            return {"ca": args.name, "key_offline": True, **made}
        if args.pkcs11_label:
            from keys.pkcs11 import Pkcs11KeyStore

            if not isinstance(store, Pkcs11KeyStore):
                raise CliError("--pkcs11-label needs ACAR_KEY_BACKEND=pkcs11")
            handle = await store.adopt(session, token_label=args.pkcs11_label, purpose="ca")
        else:
            if not isinstance(store, SoftwareKeyStore) or key_pem is None:
                raise CliError("--key imports into the software key store; with ACAR_KEY_BACKEND=pkcs11 "
                               "generate or import the key on the HSM and pass --pkcs11-label")
            handle = await store.import_private_key(session, key_pem, purpose="ca", label=f"ca-{args.name}",
                                                    password=password)
        await pki.ca.import_ca(session, args.name, certificate, handle, actor="cli")
        made = await pki.initialize(session, actor="cli:ca-import", create_hierarchy=False)
        return {"ca": args.name, "key_offline": False, "key_id": handle.key_id, "backend": store.backend, **made}

    _emit(args, _run(settings, work))


def cmd_crl_import(args: argparse.Namespace, settings: Settings) -> None:
    data = _read_file(args.file, "FILE")

    async def work(services: CommandServices, session: AsyncSession) -> dict[str, Any]:
        record, revoked = await services.pki.import_crl(session, args.ca, data, actor="cli")
        return {"ca": args.ca, "crl_number": record.number, "this_update": record.this_update.isoformat(),
                "next_update": record.next_update.isoformat(), "newly_revoked": revoked}

    _emit(args, _run(settings, work))


def _subject(args: argparse.Namespace) -> tuple[Any, Any]:
    from keys.profiles import LegalPerson, NaturalPerson, Profile

    profile = Profile(args.profile)
    if profile is Profile.LEGAL_PERSON_SEAL:
        extra = [opt for opt, value in (("--fin", args.fin), ("--given-name", args.given_name),
                                        ("--surname", args.surname)) if value is not None]
        if extra:
            raise CliError(f"{profile.value} certifies an organization: drop {', '.join(extra)}")
        return profile, LegalPerson.create(voen=args.voen, organization=args.org, common_name=args.common_name)
    extra = [opt for opt, value in (("--voen", args.voen), ("--org", args.org)) if value is not None]
    if extra:
        raise CliError(f"{profile.value} certifies a natural person: drop {', '.join(extra)}")
    return profile, NaturalPerson.create(fin=args.fin, given_name=args.given_name, surname=args.surname,
                                         common_name=args.common_name)


def cmd_cert_issue(args: argparse.Namespace, settings: Settings) -> None:
    from keys.ca import certificate_pem
    from keys.x509 import subject_key_from_csr, subject_key_from_pem

    profile, subject = _subject(args)
    if args.csr:
        public_key = subject_key_from_csr(_read_file(args.csr, "--csr"))
    else:
        public_key = subject_key_from_pem(_read_file(args.public_key, "--public-key"))

    async def work(services: CommandServices, session: AsyncSession) -> dict[str, Any]:
        ca = services.pki.ca
        row = await ca.issue(session, profile=profile, subject=subject, public_key=public_key, days=args.days,
                             actor="cli")
        chain = [certificate_pem(await ca.ca_row(session, name)) for name in ("issuing", "root")]
        return {"serial": row.serial_hex, "issuer": row.issuer_ca, "profile": row.profile, "subject": row.subject,
                "not_before": row.not_before.isoformat(), "not_after": row.not_after.isoformat(),
                "certificate_pem": certificate_pem(row), "chain_pem": chain}

    _print_json(_run(settings, work))  # JSON with or without --json


def cmd_cert_revoke(args: argparse.Namespace, settings: Settings) -> None:
    async def work(services: CommandServices, session: AsyncSession) -> dict[str, Any]:
        row = await services.pki.revoke(session, args.serial, args.reason, actor="cli")
        return {"serial": row.serial_hex, "issuer": row.issuer_ca, "revoked_at": row.revoked_at,
                "reason": row.revocation_reason}

    _emit(args, _run(settings, work))


def cmd_cert_show(args: argparse.Namespace, settings: Settings) -> None:
    from api.schemas.pki import CertificateView
    from storage.base import utcnow

    async def work(services: CommandServices, session: AsyncSession) -> dict[str, Any]:
        row = await services.pki.ca.get(session, args.serial)
        return CertificateView.from_row(row, utcnow()).model_dump(mode="json")

    _emit(args, _run(settings, work))


def cmd_admin_revoke_token(args: argparse.Namespace, settings: Settings) -> None:
    from api.auth import revoke_admin_token

    async def work(services: CommandServices, session: AsyncSession) -> dict[str, Any]:
        # idempotent, as POST /admin/tokens/{jti}/revoke (RFC 7009 section 2.2): revoked now or before, the same
        await revoke_admin_token(session, args.jti, reason=args.reason, actor="cli")
        return {"jti": args.jti, "revoked": True}

    _emit(args, _run(settings, work))


def cmd_seal_assign(args: argparse.Namespace, settings: Settings) -> None:
    """Register an agency client's electronic seal: its legal person (VÖEN, organization) and a seal key with a
    legal-person-seal certificate from the built-in CA (kept when the legal person is unchanged and the
    certificate still usable)."""
    from idp.sql.clients import ClientRegistry
    from signing.sql.seals import assign_seal

    async def work(services: CommandServices, session: AsyncSession) -> dict[str, Any]:
        client = await ClientRegistry(session).get(args.client_id)
        if client is None:
            raise CliError(f"no client {args.client_id!r} is registered")
        assigned = await assign_seal(session, ca=services.pki.ca, store=services.key_store, client_id=args.client_id,
                                     voen=args.voen, organization=args.organization, actor="cli", days=args.days)
        seal = assigned.seal
        return {"client_id": seal.client_id, "voen": seal.voen, "organization": seal.organization,
                "key_id": seal.key_id, "certificate_serial": assigned.serial, "new_key": assigned.created_key,
                "signing_scope": "signing" in client.scopes}

    _emit(args, _run(settings, work))


def cmd_entity_signing_set(args: argparse.Namespace, settings: Settings) -> None:
    """Set how a registered legal entity's representatives sign (issue 16): `seal` with the entity's seal (a key and
    legal-person-seal certificate from the built-in CA, organizationIdentifier NTRAZ-<VÖEN>, kept while the name is
    unchanged and the certificate usable) or `person` with their own signing certificate and a claimed role."""
    from idp.sql.registry import EntityService
    from signing.core.interfaces import EntityForm
    from signing.sql.entities import configure_entity

    async def work(services: CommandServices, session: AsyncSession) -> dict[str, Any]:
        entity = await EntityService(session).get(args.voen)  # EntityNotFound: a one-line error
        if entity.status != "active":
            raise CliError(f"the legal entity {entity.voen} is {entity.status}: activate it first "
                           f"(acar entity set-status {entity.voen} active)")
        organization = args.organization or entity.name
        if len(organization) > 64:
            raise CliError(f"the entity's name has {len(organization)} characters, a certificate's organizationName "
                           "at most 64 (RFC 5280 upper bound): give a shorter one with --organization")
        configured = await configure_entity(session, ca=services.pki.ca, store=services.key_store, voen=entity.voen,
                                            form=EntityForm(args.form), organization=organization, actor="cli",
                                            days=args.days)
        return {"voen": configured.entity.voen, "name": entity.name, "form": configured.entity.form.value,
                "organization": configured.entity.organization, "key_id": configured.entity.key_id,
                "certificate_serial": configured.serial, "new_key": configured.created_key}

    _emit(args, _run(settings, work))


def cmd_entity_signing_show(args: argparse.Namespace, settings: Settings) -> None:
    from idp.sql.registry import normalize_voen
    from signing.sql.entities import entity_configuration

    async def work(services: CommandServices, session: AsyncSession) -> dict[str, Any]:
        voen = normalize_voen(args.voen)
        found = await entity_configuration(session, voen)
        if found is None:
            raise CliError(f"the legal entity {voen} has no signing configuration (acar entity-signing set {voen} "
                           "--form seal|person)")
        return {"voen": found.voen, "form": found.form.value, "organization": found.organization,
                "key_id": found.key_id}

    _emit(args, _run(settings, work))


def cmd_worker(args: argparse.Namespace, settings: Settings) -> None:
    """Run a signing worker until SIGTERM or SIGINT (the first ends it after the document in hand, a second at
    once): claims approved documents' jobs and signs them (signing.core.jobs), and delivers the requests'
    completion callbacks (signing.core.callbacks); any number may run beside `acar serve` and each other. It builds
    the service graph `acar serve` does (the engine's in-process TSA and PKI), without the HTTP server."""
    from api.metrics import prepare as prepare_metrics  # here, not at the top: `acar --help` stays fast

    prepare_metrics(settings, "worker")  # first: before anything imports prometheus_client (api.metrics)
    import asyncio
    import contextlib
    import signal

    from api.app import startup_checks
    from api.deps import build_services

    if args.interval <= 0:
        raise CliError("--interval must be positive")
    _refuse_lost_master_key(settings, starting=True)

    async def run() -> None:
        services = build_services(settings)
        try:
            await startup_checks(services)  # a wrong master key stops it here
            await services.audit_log.start()  # the TSA's audit events are group-committed
            worker = services.signing.worker
            task = asyncio.create_task(services.signing.run(args.interval))  # with the callbacks
            loop = asyncio.get_running_loop()
            signals = 0

            def on_signal() -> None:  # the first signal ends the worker between documents, a second at once
                nonlocal signals
                signals += 1
                services.signing.stop() if signals == 1 else task.cancel()

            for sig in (signal.SIGTERM, signal.SIGINT):
                loop.add_signal_handler(sig, on_signal)
            print(json.dumps({"worker": worker.name, "started": True}), flush=True)
            with contextlib.suppress(asyncio.CancelledError):
                await task
        finally:
            await services.close()

    asyncio.run(run())


def cmd_start(args: argparse.Namespace, settings: Settings) -> int | None:
    """The container's entrypoint (Dockerfile): make the volume and the database ready, then run `acar serve` or
    `acar worker` with the arguments that follow (`acar start serve --port 8000`, `acar start worker`).

    Ready means what `acar init` makes (cmd_init, idempotent; its summary goes to stderr): the schema at the
    migrations head, then the token keys and, in development only, a master key and the development CA on an empty
    data dir. Production generates neither: a missing master key, database or CA refuses the start in one line saying
    what to do. Replicas that start at once on one PostgreSQL database prepare one after the other (an advisory lock,
    api.migrate.exclusive).
    """
    import asyncio
    import contextlib

    from sqlalchemy.exc import SQLAlchemyError

    from api import migrate

    command = build_parser().parse_args([args.role, *args.arguments])  # bad arguments stop here, before any work
    refused = _refused_argument(command)
    if refused is not None:
        raise _Exit(2, f"acar start {args.role}: {refused}")
    command.json = command.json or args.json

    async def prepare() -> None:
        async with contextlib.AsyncExitStack() as stack:
            try:
                await stack.enter_async_context(migrate.exclusive(settings.resolved_database_url, migrate.START_LOCK))
            except (OSError, SQLAlchemyError) as exc:
                raise CliError(f"ACAR_DATABASE_URL: the database does not answer ({type(exc).__name__}); check the "
                               "URL (or ACAR_DATABASE_URL_FILE) and that the database server is up") from None
            await asyncio.to_thread(_prepare_volume, args, settings)  # cmd_init runs its own event loops

    with contextlib.redirect_stdout(sys.stderr):  # what init made goes to the log; stdout is the command's own
        asyncio.run(prepare())
    code: int | None = command.func(command, settings)
    return code


async def _missing_cas(settings: Settings) -> list[str]:
    """The CAs of the built-in hierarchy that do not exist in the database (production imports them)."""
    from keys.ca import CA_NAMES

    async def work(services: CommandServices, session: AsyncSession) -> list[str]:
        return [name for name in CA_NAMES if not await services.pki.ca.exists(session, name)]

    result: list[str] = await _in_transaction(settings, work)
    return result


def _prepare_volume(args: argparse.Namespace, settings: Settings) -> None:
    """What `acar start` does before serving: migrations, the production CA check, then `acar init`."""
    import asyncio

    from api import migrate

    if settings.env == "production":
        migrate.upgrade(settings.resolved_database_url)  # the CA check reads the schema
        missing = asyncio.run(_missing_cas(settings))
        if missing:
            raise CliError(f"the CA is not imported ({', '.join(missing)} missing; production never generates one): "
                           "run `acar ca import --name root --cert ROOT.pem`, then `acar ca import --name issuing "
                           "--cert CA.pem --key KEY.pem` (or --pkcs11-label LABEL)")
    cmd_init(args, settings)


def _client_registration(args: argparse.Namespace) -> Any:
    """The registration of `acar client add`, checked before any database work (idp.sql.clients rules)."""
    from idp.sql.clients import DEFAULT_GRANT_TYPES, ClientRegistration, default_scopes, validate_registration

    jwks = None
    if args.jwks_file:
        from api.text import UnreadableJson, parse_json, refused_json

        try:
            jwks = parse_json(_read_file(args.jwks_file, "--jwks-file"))
        except UnreadableJson as exc:
            raise CliError(f"--jwks-file: {args.jwks_file} {exc.reason}") from None
        if not isinstance(jwks, dict):
            raise CliError(f"--jwks-file: {args.jwks_file} must hold a JWK Set (a JSON object with keys)")

        refused = refused_json(jwks)
        if refused is not None:
            raise CliError(f"--jwks-file: {'.'.join(str(p) for p in refused[0])} {refused[1]}")
    registration = ClientRegistration(
        name=args.name, redirect_uris=args.redirect_uri or [], post_logout_redirect_uris=args.post_logout_redirect_uri
        or [], grant_types=args.grant_type or list(DEFAULT_GRANT_TYPES),
        scopes=[s for value in args.scope for s in value.split()] if args.scope
        else list(default_scopes(args.grant_type or DEFAULT_GRANT_TYPES)),
        auth_method=args.auth_method, subject_type=args.subject_type, jwks=jwks, jwks_uri=args.jwks_uri,
        sector_identifier_uri=args.sector_identifier_uri, backchannel_logout_uri=args.backchannel_logout_uri,
        id_token_alg=args.id_token_alg, introspect_clients=args.introspect_client or [], purpose=args.purpose,
        agency_voen=args.agency,
    )
    validate_registration(registration)
    return registration


def _emit_client(args: argparse.Namespace, data: dict[str, Any]) -> None:
    if args.json:
        _print_json(data)
    else:
        for key, value in data.items():
            if value is None or value == []:
                continue
            text = " ".join(map(str, value)) if isinstance(value, list) else value
            print(f"{key}: {json.dumps(text, ensure_ascii=False) if isinstance(text, dict) else text}")
        if data.get("client_secret"):
            print("acar: the client secret is shown only this once; store it now", file=sys.stderr)


def cmd_client_add(args: argparse.Namespace, settings: Settings) -> None:
    from api.schemas.clients import ClientView
    from idp.sql.clients import ClientRegistry

    registration = _client_registration(args)

    async def work(services: CommandServices, session: AsyncSession) -> dict[str, Any]:
        client, secret = await ClientRegistry(session, signing_algs=settings.token_key_algorithms).add(
            registration, actor="cli")
        return {**ClientView.of(client).model_dump(mode="json"), "client_secret": secret}

    _emit_client(args, _run(settings, work))


def cmd_client_list(args: argparse.Namespace, settings: Settings) -> None:
    from api.schemas.clients import ClientView
    from idp.sql.clients import ClientRegistry

    async def work(services: CommandServices, session: AsyncSession) -> list[dict[str, Any]]:
        return [ClientView.of(c).model_dump(mode="json") for c in await ClientRegistry(session).list()]

    rows = _run(settings, work)
    if args.json:
        _print_json(rows)
        return
    for row in rows:
        state = "disabled" if row["disabled"] else "active"
        print(f"{row['client_id']}  {row['auth_method']}  {state}  {row['name']}")


def cmd_client_show(args: argparse.Namespace, settings: Settings) -> None:
    from api.schemas.clients import ClientView
    from idp.core.errors import ClientNotFound
    from idp.sql.clients import ClientRegistry

    async def work(services: CommandServices, session: AsyncSession) -> dict[str, Any]:
        client = await ClientRegistry(session).get(args.client_id)
        if client is None:
            raise ClientNotFound(f"no client {args.client_id!r} is registered")
        return ClientView.of(client).model_dump(mode="json")

    _emit_client(args, _run(settings, work))


def cmd_client_update(args: argparse.Namespace, settings: Settings) -> None:
    from api.schemas.clients import ClientView
    from idp.sql.clients import ClientRegistry

    introspect = args.introspect_client is not None or args.no_introspect_clients
    agency = args.agency is not None or args.no_agency
    if not introspect and not agency:
        raise CliError("nothing to change: give --introspect-client ID (repeatable), --no-introspect-clients, "
                       "--agency VOEN or --no-agency")

    async def work(services: CommandServices, session: AsyncSession) -> dict[str, Any]:
        registry = ClientRegistry(session)  # an unknown client_id: ClientNotFound
        if introspect:
            client = await registry.set_introspect_clients(args.client_id, args.introspect_client or [], actor="cli")
        if agency:
            client = await registry.set_agency(args.client_id, args.agency, actor="cli")
        return ClientView.of(client).model_dump(mode="json")

    _emit_client(args, _run(settings, work))


def cmd_client_disable(args: argparse.Namespace, settings: Settings) -> None:
    from api.schemas.clients import ClientView
    from idp.sql.clients import ClientRegistry

    async def work(services: CommandServices, session: AsyncSession) -> dict[str, Any]:
        client = await ClientRegistry(session).disable(args.client_id, actor="cli")
        return ClientView.of(client).model_dump(mode="json")

    _emit_client(args, _run(settings, work))


def cmd_client_rotate_secret(args: argparse.Namespace, settings: Settings) -> None:
    from idp.sql.clients import ClientRegistry

    async def work(services: CommandServices, session: AsyncSession) -> dict[str, Any]:
        secret = await ClientRegistry(session).rotate_secret(args.client_id, actor="cli")
        return {"client_id": args.client_id, "client_secret": secret}

    _emit_client(args, _run(settings, work))


def cmd_enroll_code(args: argparse.Namespace, settings: Settings) -> None:
    from idp.sql.enrollment import issue_for_fin
    from storage.base import utcnow

    async def work(services: CommandServices, session: AsyncSession) -> dict[str, Any]:
        person, issued, removed = await issue_for_fin(
            session, services.enrollment_policy, services.passkeys, fin=args.fin, issued_by="cli",
            revoke_credentials=args.revoke_credentials, clock=utcnow)
        return {"code": issued.code, "code_id": issued.code_id, "expires_at": issued.expires_at.isoformat(),
                "person": person.id, "fin": person.fin, "credentials_revoked": removed}

    _emit(args, _run(settings, work))
    if not args.json:
        print("acar: the activation code is shown only this once; hand it to the person now", file=sys.stderr)



def cmd_audit_verify(args: argparse.Namespace, settings: Settings) -> int:
    """Walk the audit trail's hash chains and checkpoints (storage.audit_chain): one line, or the report as JSON.
    With --seal, the events not sealed yet are sealed (and checkpointed) first, as the sealing schedule does. Exit
    code 0 when every chain is intact, 1 naming the first broken link (the event's id, seq and type, or the
    checkpoint)."""
    import asyncio

    from api.deps import build_audit_checkpoints
    from storage.audit_chain import VerifyReport, seal_all, verify_trail

    async def run() -> VerifyReport:
        services = CommandServices(settings)
        try:
            signer = build_audit_checkpoints(settings, services.token_keys)
            if args.seal:
                await seal_all(services.direct, signer)
            return await verify_trail(services.direct, signer)
        finally:
            await services.close()

    report = asyncio.run(run())
    if args.json:
        _print_json(report.as_dict())
    else:
        print(report.summary())
    return 0 if report.intact else 1


def cmd_validate(args: argparse.Namespace, settings: Settings) -> int:
    """Validate the signatures of a PDF as POST /api/v1/validations does (api.validation: the same trust policy and
    audit, actor "cli"): the report as a summary or, with --json, as the API's JSON. Exit code 0 only when every
    signature is TOTAL-PASSED, 1 otherwise, 2 (one line) for a file that cannot be read or is refused, or when no
    verdict can be given (no CA yet, the trusted list or the revocation sources unavailable)."""
    import asyncio
    import datetime as dt
    from pathlib import Path

    from api.logging import quiet_validation_libraries
    from api.validation import Caller, parse_at
    from signing.core.errors import InvalidValidationRequest, SigningError

    quiet_validation_libraries()
    try:
        at = parse_at(args.at, dt.datetime.now(dt.UTC))
    except InvalidValidationRequest as exc:
        raise _Exit(2, str(exc)) from None
    try:
        source = Path(args.file).open("rb")  # noqa: SIM115 - closed below
    except OSError as exc:
        raise _Exit(2, f"{args.file}: {exc.strerror or exc}") from None

    async def run() -> Any:
        from api.deps import build_validation
        from signing.core.revocation import ValidationDataSource
        from storage.audit import record_event

        services = CommandServices(settings)
        data: list[ValidationDataSource] = []

        async def fetching() -> ValidationDataSource:
            from asn1crypto import x509

            root = x509.Certificate.load(await services.pki.ca_certificate("root"))
            data.append(ValidationDataSource(trust_roots=[root], local=services.pki))
            return data[-1]

        class SessionAudit:
            async def record(self, event_type: str, *, actor: str, subject: str | None = None,
                             detail: Any = None, request_id: str | None = None, clock: Any = None) -> None:
                async with services.sessions() as session, session.begin():
                    record_event(session, event_type, actor=actor, subject=subject, detail=dict(detail or {}),
                                 request_id=request_id, clock=clock)

        try:
            validation = build_validation(settings, services.pki, fetching, SessionAudit())
            return await validation.validate(source, at=at, caller=Caller(client_id=None, address="local",
                                                                          name="cli"))
        finally:
            for source_data in data:
                await source_data.close()
            await services.close()

    try:
        report = asyncio.run(run())
    except SigningError as exc:  # refused input, and no verdict at all (no CA yet, trust or revocation unavailable)
        raise _Exit(2, f"{args.file}: {exc.detail}") from None
    finally:
        source.close()
    if args.json:
        _print_json(report.as_json())
    else:
        for line in validation_summary(report):
            print(line)
    return 0 if report.all_passed else 1


def validation_summary(report: Any) -> list[str]:
    """The human summary of `acar validate`: the document, each signature's status and reasons, the verdict."""
    lines = [f"document  sha256={report.sha256}  size={report.size}",
             f"validation time  {report.validation_time.isoformat()}"
             + ("  (embedded data only)" if report.embedded_only else ""),
             f"trust  {', '.join(report.trust_sources)}"]
    lines.extend(f"  ! {finding.code}: {finding.message}" for finding in report.findings)
    for signature in report.signatures:
        status = signature.indication.value + (f"/{signature.sub_indication.value}" if signature.sub_indication else "")
        signer = signature.signer
        who = f"{signer.name}" + (f" ({signer.identifier})" if signer and signer.identifier else "") if signer else "?"
        lines.append(f"{signature.id}  {status}  {signature.kind.value}  {who}  level={signature.level or 'none'}")
        if signature.best_signature_time is not None:
            best = signature.best_signature_time
            lines.append(f"  existed at {best.time.isoformat()} ({best.source})")
        lines.extend(f"  ! {finding.code}: {finding.message}" for finding in signature.findings)
    for revision in report.revisions:
        if revision.classification is not None:
            changes = "; ".join(f"{c.description} ({c.classification.value})" for c in revision.changes) or "-"
            lines.append(f"revision {revision.number}  {revision.classification.value}  {changes}")
    if not report.signatures:
        lines.append("result: the document has no signature")
    elif report.all_passed:
        lines.append(f"result: every signature is TOTAL-PASSED ({len(report.signatures)})")
    else:
        passed = sum(1 for s in report.signatures if s.indication.value == "TOTAL-PASSED")
        lines.append(f"result: {passed} of {len(report.signatures)} signatures TOTAL-PASSED")
    return lines

# --- parser ----------------------------------------------------------------------------------------------


class _Parser(argparse.ArgumentParser):
    """argparse that returns to main() instead of exiting the process (main is called in-process by tests)."""

    def error(self, message: str) -> NoReturn:
        raise _Exit(2, f"{self.prog}: {message}")

    def exit(self, status: int = 0, message: str | None = None) -> NoReturn:
        if message:
            print(message, end="", file=sys.stderr)
        raise _Exit(status)


class _Choices:
    """argparse choices read from idp.core.interfaces on first use, so `acar --help` does not import the idp package.

    Give the option a metavar: argparse iterates the choices of an option without one when it is added.
    """

    def __init__(self, name: str) -> None:
        self._name = name

    @cached_property
    def _values(self) -> tuple[str, ...]:
        import idp.core.interfaces

        values: tuple[str, ...] = getattr(idp.core.interfaces, self._name)
        return values

    def __contains__(self, value: object) -> bool:
        return value in self._values

    def __iter__(self) -> Iterator[str]:
        return iter(self._values)


def _json_flag() -> tuple[_Parser, _Parser]:
    """The top-level parser and the parent of every command, each taking the global --json.

    A command's --json defaults to SUPPRESS: argparse copies a subcommand's defaults over the values parsed
    before it, and a plain False default would undo `acar --json CMD`.
    """
    parser = _Parser(prog="acar", description="Açar digital identity and e-signature service")
    parser.add_argument("--json", action="store_true", help="print machine-readable JSON")
    common = _Parser(add_help=False)
    common.add_argument("--json", action="store_true", default=argparse.SUPPRESS, help="print machine-readable JSON")
    return parser, common


def _validate_parser(sub: Any, common: _Parser) -> None:
    p = sub.add_parser("validate", parents=[common], help="validate the signatures of a PDF (exit 0: all TOTAL-PASSED)")
    p.add_argument("file", metavar="FILE.pdf")
    p.add_argument("--at", metavar="DATE", help="validate as of this past RFC 3339 date-time, from embedded data only")
    p.set_defaults(func=cmd_validate)


def _verdict_parsers(sub: Any, common: _Parser) -> None:
    """The commands whose exit code is a verdict: `validate` and `audit verify`."""
    _validate_parser(sub, common)
    audit = sub.add_parser("audit", parents=[common], help="the audit trail").add_subparsers(
        dest="audit_command", required=True, parser_class=_Parser)
    p = audit.add_parser("verify", parents=[common], help="check the audit trail's hash chain and signed checkpoints "
                         "(exit 1 naming the first broken link)")
    p.add_argument("--seal", action="store_true", help="seal and checkpoint the events not sealed yet first")
    p.set_defaults(func=cmd_audit_verify)


def build_parser() -> argparse.ArgumentParser:
    parser, common = _json_flag()
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    p = sub.add_parser("init", parents=[common], help="create the data dir, run migrations, create development keys")
    p.set_defaults(func=cmd_init)
    p = sub.add_parser("migrate", parents=[common], help="apply database migrations")
    p.set_defaults(func=cmd_migrate)
    _verdict_parsers(sub, common)
    p = sub.add_parser("serve", parents=[common], help="run the HTTP service")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8000)
    p.add_argument("--workers", type=int, default=1)
    p.add_argument("--server", choices=["uvicorn", "granian"],
                   help="the HTTP server (default ACAR_SERVER, else uvicorn; docs/performance.md, Issue 17)")
    p.set_defaults(func=cmd_serve)

    _add_person_commands(sub, common)
    _add_registry_commands(sub, common)
    _add_role_commands(sub, common)

    keys = sub.add_parser("keys", parents=[common], help="token-signing keys").add_subparsers(
        dest="keys_command", required=True, parser_class=_Parser)
    p = keys.add_parser("rotate", parents=[common], help="next -> current -> retired, and a new next key")
    p.add_argument("--alg", action="append", choices=["ES256", "RS256", "EdDSA"])
    p.add_argument("--force", action="store_true",
                   help="promote a next key younger than the JWKS cache time (emergency, e.g. key compromise)")
    p.set_defaults(func=cmd_keys_rotate)
    p = keys.add_parser("list", parents=[common], help="list token-signing keys and their states")
    p.set_defaults(func=cmd_keys_list)

    admin = sub.add_parser("admin", parents=[common], help="admin API access").add_subparsers(
        dest="admin_command", required=True, parser_class=_Parser)
    p = admin.add_parser("token", parents=[common], help="mint an admin bearer token (printed once)")
    p.add_argument("--subject", required=True, help="the operator who will use the token")
    p.add_argument("--scope", default="acar:admin", help="space-separated: acar:admin acar:cert:revoke acar:token:mint "
                   "acar:client:manage acar:enroll")
    p.add_argument("--ttl", type=int, default=900, help="lifetime in seconds")
    p.set_defaults(func=cmd_admin_token)
    p = admin.add_parser("revoke-token", parents=[common], help="revoke an admin token by its jti")
    p.add_argument("jti")
    p.add_argument("--reason", default="revoked by an operator")
    p.set_defaults(func=cmd_admin_revoke_token)
    _add_pki_commands(sub, common)
    _add_client_commands(sub, common)
    _add_signing_commands(sub, common)
    p = sub.add_parser("enroll-code", parents=[common], help="issue a passkey activation code for a person (20 "
                       "symbols, XXXX-XXXX-XXXX-XXXX-XXXX, printed once, with its code_id for the audit trail); "
                       "their earlier unused codes stop working")
    p.add_argument("--fin", required=True, help="the person's FIN")
    p.add_argument("--revoke-credentials", action="store_true",
                   help="recovery: remove every passkey the person has registered")
    p.set_defaults(func=cmd_enroll_code)
    _add_start_command(sub, common)
    return parser


def _add_start_command(sub: Any, common: _Parser) -> None:
    p = sub.add_parser("start", parents=[common], help="the container entrypoint: migrate and prepare the data dir "
                       "(development: `acar init`; production: refuse what is missing), then serve or work")
    p.add_argument("role", choices=["serve", "worker"], help="what to run once ready")
    p.add_argument("arguments", nargs=argparse.REMAINDER, help="the arguments of `acar serve` or `acar worker`")
    p.set_defaults(func=cmd_start)


def _add_person_commands(sub: Any, common: argparse.ArgumentParser) -> None:
    person = sub.add_parser("person", parents=[common], help="person registry").add_subparsers(
        dest="person_command", required=True, parser_class=_Parser)
    p = person.add_parser("add", parents=[common], help="register a person")
    p.add_argument("--fin", help="personal identification number (7 letters/digits)")
    p.add_argument("--given-name", required=True)
    p.add_argument("--family-name", required=True)
    p.add_argument("--birthdate", help="YYYY-MM-DD")
    p.add_argument("--category", choices=["citizen", "foreigner", "stateless"], default="citizen")
    p.add_argument("--document-type", choices=["passport", "residence_permit", "stateless_travel_document"])
    p.add_argument("--document-country", help="ISO 3166-1 alpha-3 code of the issuing country")
    p.add_argument("--document-number")
    p.add_argument("--status", choices=["active", "suspended", "deceased"], default="active")
    p.add_argument("--given-name-cyrillic", help="the given name in Cyrillic script (optional)")
    p.add_argument("--family-name-cyrillic", help="the family name in Cyrillic script (optional)")
    p.set_defaults(func=cmd_person_add)
    p = person.add_parser("show", parents=[common], help="show a person by FIN")
    p.add_argument("fin")
    p.set_defaults(func=cmd_person_show)
    p = person.add_parser("set-status", parents=[common], help="change a person's status (only active persons log in; "
                          "suspending ends their sessions and tokens at once)")
    p.add_argument("fin")
    p.add_argument("status", choices=["active", "suspended", "deceased"])
    p.set_defaults(func=cmd_person_set_status)


def _add_role_commands(sub: Any, common: argparse.ArgumentParser) -> None:
    role = sub.add_parser("role", parents=[common], help="staff roles (docs/registry.md, Roles)").add_subparsers(
        dest="role_command", required=True, parser_class=_Parser)
    for name, func, text in (("grant", cmd_role_grant, "give a person a staff role"),
                             ("revoke", cmd_role_revoke, "end a person's staff role (at their next request)")):
        p = role.add_parser(name, parents=[common], help=text)
        p.add_argument("fin")
        p.add_argument("role", choices=["registration_officer", "agency_admin", "system_admin"])
        p.add_argument("--agency", metavar="VOEN", help="the agency's VÖEN (agency_admin only, required there)")
        p.set_defaults(func=func)
    p = role.add_parser("list", parents=[common], help="the staff roles a person holds now")
    p.add_argument("fin")
    p.set_defaults(func=cmd_role_list)


def _add_registry_commands(sub: Any, common: argparse.ArgumentParser) -> None:
    p = sub.add_parser("import", parents=[common], help="import persons, legal entities or mandates from a UTF-8 CSV "
                       "file (docs/registry.md), all rows or none: every bad row is reported")
    p.add_argument("kind", choices=["persons", "entities", "mandates"])
    p.add_argument("file", metavar="FILE.csv")
    p.set_defaults(func=cmd_import)

    entity = sub.add_parser("entity", parents=[common], help="legal entities (by VÖEN)").add_subparsers(
        dest="entity_command", required=True, parser_class=_Parser)
    p = entity.add_parser("add", parents=[common], help="register a legal entity")
    p.add_argument("--voen", required=True, help="taxpayer identification number (10 digits, the last 1 or 2)")
    p.add_argument("--name", required=True)
    p.add_argument("--legal-form", required=True, help="as in the state register, e.g. MMC, ASC, QSC")
    p.add_argument("--status", choices=["active", "liquidated", "suspended"], default="active")
    p.add_argument("--director", metavar="FIN", help="the FIN of the entity's director (a registered, active "
                   "person): they grant and revoke its mandates on their account page")
    p.set_defaults(func=cmd_entity_add)
    p = entity.add_parser("show", parents=[common], help="show a legal entity by VÖEN")
    p.add_argument("voen")
    p.set_defaults(func=cmd_entity_show)
    p = entity.add_parser("set-status", parents=[common], help="change an entity's status (mandates act only for an "
                          "active one)")
    p.add_argument("voen")
    p.add_argument("status", choices=["active", "liquidated", "suspended"])
    p.set_defaults(func=cmd_entity_set_status)
    p = entity.add_parser("set-director", parents=[common], help="record the entity's director (they grant and "
                          "revoke its mandates on their account page), or --none")
    p.add_argument("voen")
    p.add_argument("fin", nargs="?", help="the director's FIN (a registered, active person)")
    p.add_argument("--none", action="store_true", help="record that the entity has no director")
    p.set_defaults(func=cmd_entity_set_director)

    mandate = sub.add_parser("mandate", parents=[common], help="mandates: a person acting for an entity")
    mandate = mandate.add_subparsers(dest="mandate_command", required=True, parser_class=_Parser)
    p = mandate.add_parser("grant", parents=[common], help="grant a person powers for an entity")
    p.add_argument("--fin", required=True, help="the representative's FIN")
    p.add_argument("--voen", required=True, help="the entity's VÖEN")
    p.add_argument("--power", action="append", required=True, choices=["sign_declarations", "represent_at_login"],
                   help="repeatable")
    p.add_argument("--valid-from", help="YYYY-MM-DD (midnight UTC) or RFC 3339 date-time; default now")
    p.add_argument("--valid-to", help="exclusive end, as --valid-from; default: until revoked")
    p.add_argument("--granted-via", choices=["officer", "director"], default="officer")
    p.add_argument("--granted-by", required=True, help="who granted it: the officer's or the director's name or id")
    p.set_defaults(func=cmd_mandate_grant)
    p = mandate.add_parser("revoke", parents=[common], help="revoke a mandate now")
    p.add_argument("mandate_id")
    p.set_defaults(func=cmd_mandate_revoke)
    p = mandate.add_parser("list", parents=[common], help="a person's mandates valid now (or --at), or --all")
    p.add_argument("--fin", required=True)
    which = p.add_mutually_exclusive_group()
    which.add_argument("--at", help="valid at this date or date-time instead of now")
    which.add_argument("--all", action="store_true", help="every mandate, revoked and expired ones too")
    p.set_defaults(func=cmd_mandate_list)


def _add_pki_commands(sub: Any, common: argparse.ArgumentParser) -> None:
    ca = sub.add_parser("ca", parents=[common], help="the CA hierarchy").add_subparsers(
        dest="ca_command", required=True, parser_class=_Parser)
    p = ca.add_parser("import", parents=[common], help="import a CA certificate and its key (production); "
                      "the root may be imported without its key, which then stays offline")
    p.add_argument("--name", required=True, choices=["root", "issuing"])
    p.add_argument("--cert", required=True, help="the CA certificate (PEM or DER)")
    source = p.add_mutually_exclusive_group()
    source.add_argument("--key", help="the CA private key (PEM) for the software key store")
    source.add_argument("--pkcs11-label", help="the CKA_LABEL of the CA key pair already on the HSM")
    p.add_argument("--key-password-file", help="file holding the password of an encrypted --key")
    p.set_defaults(func=cmd_ca_import)

    crl = sub.add_parser("crl", parents=[common], help="CRLs of a CA whose key is offline").add_subparsers(
        dest="crl_command", required=True, parser_class=_Parser)
    p = crl.add_parser("import", parents=[common], help="import a CRL signed offline (served as the CA's CRL)")
    p.add_argument("--ca", required=True, choices=["root", "issuing"])
    p.add_argument("file", metavar="FILE", help="the CRL (PEM or DER)")
    p.set_defaults(func=cmd_crl_import)

    cert = sub.add_parser("cert", parents=[common], help="certificates").add_subparsers(
        dest="cert_command", required=True, parser_class=_Parser)
    p = cert.add_parser("issue", parents=[common], help="issue a certificate (prints JSON: serial and PEM)")
    p.add_argument("--profile", required=True,
                   choices=["natural-person-signing", "legal-person-seal", "authentication"])
    p.add_argument("--fin", help="natural persons: personal identification number (7 letters/digits)")
    p.add_argument("--given-name")
    p.add_argument("--surname")
    p.add_argument("--voen", help="legal persons: taxpayer identification number (10 digits)")
    p.add_argument("--org", help="legal persons: organization name")
    p.add_argument("--common-name", help="subject CN (default: given name and surname, or the organization)")
    key = p.add_mutually_exclusive_group(required=True)
    key.add_argument("--public-key", help="the subject's public key (PEM SubjectPublicKeyInfo)")
    key.add_argument("--csr", help="a PKCS#10 request (PEM or DER) whose signature proves possession of the key")
    p.add_argument("--days", type=int, help="validity in days (default 365)")
    p.set_defaults(func=cmd_cert_issue)
    p = cert.add_parser("revoke", parents=[common], help="revoke a certificate and publish a new CRL")
    p.add_argument("serial", help="the serial number in hexadecimal")
    p.add_argument("--reason", required=True, help="RFC 5280 reason: unspecified, keyCompromise, cACompromise, "
                   "affiliationChanged, superseded, cessationOfOperation, certificateHold, privilegeWithdrawn, "
                   "aACompromise")
    p.set_defaults(func=cmd_cert_revoke)
    p = cert.add_parser("show", parents=[common], help="show a certificate and its status")
    p.add_argument("serial", help="the serial number in hexadecimal")
    p.set_defaults(func=cmd_cert_show)


def _add_signing_commands(sub: Any, common: argparse.ArgumentParser) -> None:
    seal = sub.add_parser("seal", parents=[common], help="agencies' electronic seals").add_subparsers(
        dest="seal_command", required=True, parser_class=_Parser)
    p = seal.add_parser("assign", parents=[common], help="register a client's seal (VÖEN, organization) and create "
                        "its seal key and legal-person-seal certificate")
    p.add_argument("client_id")
    p.add_argument("--voen", required=True, help="the organization's taxpayer identification number (10 digits)")
    p.add_argument("--organization", required=True, help="the organization's name (at most 64 characters)")
    p.add_argument("--days", type=int, help="validity of a new certificate in days (default 365)")
    p.set_defaults(func=cmd_seal_assign)
    signing_entity = sub.add_parser("entity-signing", parents=[common], help="how legal entities' representatives "
                                    "sign (seal or person form)").add_subparsers(
        dest="entity_signing_command", required=True, parser_class=_Parser)
    p = signing_entity.add_parser("set", parents=[common], help="set a registered entity's signing form; seal: "
                                  "create its seal key and legal-person-seal certificate")
    p.add_argument("voen", help="the entity's VÖEN (registered with acar entity add)")
    p.add_argument("--form", required=True, choices=["seal", "person"],
                   help="seal: the entity's seal certificate; person: the representative's own certificate with a "
                   "claimed role naming the entity")
    p.add_argument("--organization", help="the seal's organization name, at most 64 characters (default: the "
                   "registered name)")
    p.add_argument("--days", type=int, help="validity of a new seal certificate in days (default 365)")
    p.set_defaults(func=cmd_entity_signing_set)
    p = signing_entity.add_parser("show", parents=[common], help="show an entity's signing configuration")
    p.add_argument("voen")
    p.set_defaults(func=cmd_entity_signing_show)
    p = sub.add_parser("worker", parents=[common], help="run a signing worker (signs approved documents, delivers "
                       "completion callbacks) until SIGTERM")
    p.add_argument("--interval", type=float, default=2.0, help="seconds between looks for due jobs (default 2)")
    p.set_defaults(func=cmd_worker)


def _add_client_commands(sub: Any, common: argparse.ArgumentParser) -> None:
    client = sub.add_parser("client", parents=[common], help="OpenID Connect clients").add_subparsers(
        dest="client_command", required=True, parser_class=_Parser)
    p = client.add_parser("add", parents=[common], help="register a client (its secret is printed once)")
    p.add_argument("--name", required=True)
    p.add_argument("--redirect-uri", action="append", help="exact https URI (http only on loopback); repeatable")
    p.add_argument("--post-logout-redirect-uri", action="append", help="repeatable")
    p.add_argument("--grant-type", action="append", choices=_Choices("GRANT_TYPES"), metavar="GRANT_TYPE",
                   help="%(choices)s; repeatable; default authorization_code and refresh_token")
    p.add_argument("--scope", action="append", help="repeatable; default openid profile (none for client_credentials)")
    p.add_argument("--auth-method", choices=_Choices("AUTH_METHODS"), metavar="METHOD", default="client_secret_basic",
                   help="%(choices)s (default %(default)s)")
    keys = p.add_mutually_exclusive_group()
    keys.add_argument("--jwks-uri", help="private_key_jwt: URL of the client's JWK Set")
    keys.add_argument("--jwks-file", help="private_key_jwt: file holding the client's public JWK Set")
    p.add_argument("--sector-identifier-uri", help="JSON array of the redirect URIs of one sector (OIDC Core 8.1)")
    p.add_argument("--backchannel-logout-uri")
    p.add_argument("--subject-type", choices=["pairwise", "public"], default="pairwise")
    p.add_argument("--id-token-alg", choices=["ES256", "RS256", "EdDSA"], default="ES256")
    p.add_argument("--introspect-client", action="append", metavar="CLIENT_ID",
                   help="a client whose tokens this one may introspect besides its own (RFC 7662); repeatable")
    p.add_argument("--purpose", help="what the agency uses citizens' data for, shown to them in their access record "
                   "(at most 500 characters)")
    p.add_argument("--agency", metavar="VOEN", help="the agency owning the client: its agency administrators "
                   "manage it (docs/registry.md, Roles)")
    p.set_defaults(func=cmd_client_add)
    p = client.add_parser("list", parents=[common], help="list registered clients")
    p.set_defaults(func=cmd_client_list)
    p = client.add_parser("show", parents=[common], help="show a client (never its secret)")
    p.add_argument("client_id")
    p.set_defaults(func=cmd_client_show)
    p = client.add_parser("update", parents=[common], help="change a client's settings")
    p.add_argument("client_id")
    which = p.add_mutually_exclusive_group()
    which.add_argument("--introspect-client", action="append", metavar="CLIENT_ID",
                       help="the clients whose tokens this one may introspect besides its own (RFC 7662), replacing "
                            "the list; repeatable")
    which.add_argument("--no-introspect-clients", action="store_true", help="introspect its own tokens only")
    owner = p.add_mutually_exclusive_group()
    owner.add_argument("--agency", metavar="VOEN", help="the agency owning the client (its agency administrators "
                       "manage it)")
    owner.add_argument("--no-agency", action="store_true", help="owned by no agency: system administrators only")
    p.set_defaults(func=cmd_client_update)
    p = client.add_parser("disable", parents=[common], help="disable a client (its tokens stop at once)")
    p.add_argument("client_id")
    p.set_defaults(func=cmd_client_disable)
    p = client.add_parser("rotate-secret", parents=[common], help="give a client a new secret (printed once)")
    p.add_argument("client_id")
    p.set_defaults(func=cmd_client_rotate_secret)


def main(argv: Sequence[str] | None = None) -> int:
    """Run one `acar` command and return its exit code; the one-line error, if any, goes to stderr."""
    try:
        return _main(argv)
    except _Exit as exc:  # --help (0) or bad usage (2)
        return _error(exc.message, exc.code) if exc.message else exc.code
    except KeyboardInterrupt:
        return 130


def _refused_argument(args: argparse.Namespace) -> str | None:
    """The first argument holding text storage cannot hold (api.text: NUL, an unpaired surrogate, which is how
    Python carries a command-line byte that is not UTF-8, or a noncharacter), checked before any command runs."""
    from api.text import refusal

    for name, value in vars(args).items():
        for item in value if isinstance(value, list) else [value]:
            reason = refusal(item) if isinstance(item, str) else None
            if reason is not None:
                return f"{name.replace('_', '-')} {reason}"
    return None


def _main(argv: Sequence[str] | None) -> int:
    args = build_parser().parse_args(argv)
    refused = _refused_argument(args)
    if refused is not None:
        return _error(refused, 2)
    from sqlalchemy.exc import SQLAlchemyError

    from api.settings import SettingsError, load_settings
    from idp.core.errors import IdpError
    from keys.errors import KeysError

    try:
        settings = load_settings()
    except SettingsError as exc:
        return _error(str(exc))
    try:
        code = args.func(args, settings)
    except (CliError, IdpError, KeysError, SettingsError) as exc:
        return _error(str(exc))
    except SQLAlchemyError as exc:
        return _error(f"database error ({type(exc).__name__}); is ACAR_DATABASE_URL reachable and migrated "
                      "(`acar migrate`)?")
    return code if isinstance(code, int) else 0  # a command that answers a verdict (validate) returns its code


if __name__ == "__main__":  # pragma: no cover
    import os

    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    sys.exit(main())

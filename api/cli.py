"""The `acar` command line. Every command prints JSON with --json and fails with one clear line.

Exit codes: 0 success, 1 the operation was refused or failed (the message says why), 2 bad usage.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import json
import os
import sys
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, NoReturn

from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncSession

from api import migrate
from api.deps import Services, build_services
from api.settings import Settings, SettingsError, load_settings
from idp.errors import IdpError
from idp.persons import PersonService
from keys.errors import KeysError
from keys.software import MasterKey


class CliError(Exception):
    """A one-line error for the user."""


def _fail(message: str, code: int = 1) -> NoReturn:
    print(f"acar: error: {message}", file=sys.stderr)
    raise SystemExit(code)


def _emit(args: argparse.Namespace, data: dict[str, Any] | list[Any]) -> None:
    if args.json:
        print(json.dumps(data, ensure_ascii=False, indent=None, default=str))
        return
    rows = data if isinstance(data, list) else [data]
    for row in rows:
        if isinstance(row, dict):
            print("  ".join(f"{k}={v}" for k, v in row.items() if v is not None))
        else:
            print(row)


async def _in_transaction(settings: Settings, work: Callable[[Services, AsyncSession], Awaitable[Any]]) -> Any:
    """Run `work` in one unit of work: commit on success, roll back (write nothing) on any error."""
    services = build_services(settings)
    try:
        async with services.sessions() as session, session.begin():
            return await work(services, session)
    finally:
        await services.close()


def _run(settings: Settings, work: Callable[[Services, AsyncSession], Awaitable[Any]]) -> Any:
    return asyncio.run(_in_transaction(settings, work))


# --- commands --------------------------------------------------------------------------------------------


def cmd_init(args: argparse.Namespace, settings: Settings) -> None:
    created_master = False
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    if settings.key_backend == "software" and not settings.resolved_master_key_file.exists():
        if settings.env == "production":
            raise CliError("ACAR_MASTER_KEY_FILE does not exist; production master keys are provisioned, not generated")
        MasterKey.create_file(settings.resolved_master_key_file)
        created_master = True
    migrate.upgrade(settings.resolved_database_url)

    async def work(services: Services, session: AsyncSession) -> dict[str, Any]:
        return {"token_keys_created": await services.token_keys.ensure_keys(session, actor="cli:init")}

    result = _run(settings, work)
    _emit(args, {"data_dir": str(settings.data_dir.resolve()), "master_key_created": created_master,
                 "schema": migrate.head_revision(), **result})


def cmd_migrate(args: argparse.Namespace, settings: Settings) -> None:
    migrate.upgrade(settings.resolved_database_url)
    _emit(args, {"schema": migrate.head_revision()})


def cmd_serve(args: argparse.Namespace, settings: Settings) -> None:
    import uvicorn

    from api.deps import build_key_store

    build_key_store(settings)  # a missing or malformed master key stops the start here, in one line
    if args.port < 1 or args.port > 65535:
        raise CliError("--port must be between 1 and 65535")
    if args.workers < 1:
        raise CliError("--workers must be at least 1")
    uvicorn.run(
        "api.app:create_app", factory=True, host=args.host, port=args.port, workers=args.workers,
        log_config=None, access_log=False, server_header=False, proxy_headers=False,
    )


def _parse_date(value: str | None) -> dt.date | None:
    if value is None:
        return None
    try:
        return dt.date.fromisoformat(value)
    except ValueError:
        raise CliError(f"--birthdate must be a date as YYYY-MM-DD (got {value!r})") from None


def cmd_person_add(args: argparse.Namespace, settings: Settings) -> None:
    birthdate = _parse_date(args.birthdate)

    async def work(services: Services, session: AsyncSession) -> dict[str, Any]:
        person = await PersonService(session).add(
            fin=args.fin, given_name=args.given_name, family_name=args.family_name, birthdate=birthdate,
            category=args.category, document_type=args.document_type, document_country=args.document_country,
            document_number=args.document_number, actor="cli",
        )
        return person.as_json()

    data = _run(settings, work)
    print(json.dumps(data, ensure_ascii=False))


def cmd_person_show(args: argparse.Namespace, settings: Settings) -> None:
    async def work(services: Services, session: AsyncSession) -> dict[str, Any]:
        return (await PersonService(session).get_by_fin(args.fin)).as_json()

    _emit(args, _run(settings, work))


def cmd_keys_rotate(args: argparse.Namespace, settings: Settings) -> None:
    async def work(services: Services, session: AsyncSession) -> list[dict[str, Any]]:
        algs = args.alg or None
        changes = await services.token_keys.rotate(session, algorithms=algs, actor="cli")
        await services.token_keys.remove_expired(session, actor="cli")
        return changes

    _emit(args, _run(settings, work))


def cmd_keys_list(args: argparse.Namespace, settings: Settings) -> None:
    from sqlalchemy import select

    from keys.models import TokenKey

    async def work(services: Services, session: AsyncSession) -> list[dict[str, Any]]:
        rows = (await session.execute(select(TokenKey).order_by(TokenKey.alg, TokenKey.created_at))).scalars()
        return [{"kid": r.kid, "alg": r.alg, "state": r.state, "created_at": r.created_at.isoformat(),
                 "activated_at": r.activated_at.isoformat() if r.activated_at else None,
                 "remove_after": r.remove_after.isoformat() if r.remove_after else None} for r in rows]

    _emit(args, _run(settings, work))


def cmd_admin_token(args: argparse.Namespace, settings: Settings) -> None:
    from api.auth import mint_admin_token

    async def work(services: Services, session: AsyncSession) -> dict[str, Any]:
        try:
            minted = await mint_admin_token(services, subject=args.subject, scopes=set(args.scope.split()),
                                            ttl_seconds=args.ttl)
        except ValueError as exc:
            raise CliError(str(exc)) from None
        from storage.audit import record_event

        record_event(session, "admin_token.minted", actor="cli", subject=args.subject,
                     detail={"scope": minted["scope"], "ttl": args.ttl, "kid": minted["kid"]})
        return minted

    _emit(args, _run(settings, work))


# --- parser ----------------------------------------------------------------------------------------------


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        _fail(f"{self.prog}: {message}", 2)


def build_parser() -> argparse.ArgumentParser:
    common = _Parser(add_help=False)
    common.add_argument("--json", action="store_true", help="print machine-readable JSON")
    parser = _Parser(prog="acar", description="Açar digital identity and e-signature service", parents=[common])
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    p = sub.add_parser("init", parents=[common], help="create the data dir, run migrations, create development keys")
    p.set_defaults(func=cmd_init)
    p = sub.add_parser("migrate", parents=[common], help="apply database migrations")
    p.set_defaults(func=cmd_migrate)
    p = sub.add_parser("serve", parents=[common], help="run the HTTP service")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8000)
    p.add_argument("--workers", type=int, default=1)
    p.set_defaults(func=cmd_serve)

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
    p.set_defaults(func=cmd_person_add)
    p = person.add_parser("show", parents=[common], help="show a person by FIN")
    p.add_argument("fin")
    p.set_defaults(func=cmd_person_show)

    keys = sub.add_parser("keys", parents=[common], help="token-signing keys").add_subparsers(
        dest="keys_command", required=True, parser_class=_Parser)
    p = keys.add_parser("rotate", parents=[common], help="next -> current -> retired, and a new next key")
    p.add_argument("--alg", action="append", choices=["ES256", "RS256", "EdDSA"])
    p.set_defaults(func=cmd_keys_rotate)
    p = keys.add_parser("list", parents=[common], help="list token-signing keys and their states")
    p.set_defaults(func=cmd_keys_list)

    admin = sub.add_parser("admin", parents=[common], help="admin API access").add_subparsers(
        dest="admin_command", required=True, parser_class=_Parser)
    p = admin.add_parser("token", parents=[common], help="mint an admin bearer token (printed once)")
    p.add_argument("--subject", required=True, help="the operator who will use the token")
    p.add_argument("--scope", default="acar:admin", help="space-separated: acar:admin acar:cert:revoke acar:token:mint")
    p.add_argument("--ttl", type=int, default=900, help="lifetime in seconds")
    p.set_defaults(func=cmd_admin_token)
    return parser


def main(argv: Sequence[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    try:
        settings = load_settings()
    except SettingsError as exc:
        _fail(str(exc))
    try:
        args.func(args, settings)
    except (CliError, IdpError, KeysError) as exc:
        _fail(str(exc))
    except SQLAlchemyError as exc:
        _fail(f"database error ({type(exc).__name__}); is ACAR_DATABASE_URL reachable and migrated (`acar migrate`)?")
    except KeyboardInterrupt:
        raise SystemExit(130) from None


if __name__ == "__main__":  # pragma: no cover
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    main()

"""The ``coview`` command: run the server and administer accounts from a shell.

Account commands talk to the database directly rather than to a running server,
so an operator locked out of the web UI (lost admin password, locked account)
can always recover with shell access alone.
"""

from __future__ import annotations

import argparse
import asyncio
import getpass
import logging
import sys
from collections.abc import Callable
from importlib import metadata
from typing import Any

from .passwords import check_password_policy
from .store import Store, StoreError, normalize_email

__all__ = ["build_parser", "main"]

DESCRIPTION = "Coview: self-hosted screen sharing and chat for customer support."

EPILOG = """\
examples:
  coview serve --port 8000 --db var/coview.db
  coview create-user alice@example.com --name "Alice Agent"
  echo "$PASSWORD" | coview create-user bob@example.com --name Bob --admin --password-stdin
  coview reset-password admin@coview.local
  COVIEW_TURN_URLS=turn:turn.example.com COVIEW_TURN_SECRETS=$SECRET coview turn-config

Settings come from built-in defaults, then --config FILE.toml, then COVIEW_*
environment variables (e.g. COVIEW_DATABASE_URL), then command-line options.
On first start with an empty database, `serve` creates an admin account
(COVIEW_ADMIN_EMAIL, default admin@coview.local); its password is
COVIEW_ADMIN_PASSWORD if set, otherwise generated and printed once.
Run `coview COMMAND --help` for the options of each command.
"""

DB_HELP = (
    "database: a file path for SQLite (created if missing) or a SQLAlchemy async URL "
    "such as postgresql+asyncpg://user@host/coview (default: from settings)"
)


class CliError(Exception):
    """A problem the operator can fix; printed without a traceback."""


def _version() -> str:
    try:
        return metadata.version("coview")
    except metadata.PackageNotFoundError:
        return "unknown"


def _db_url(db: str) -> str:
    return db if "://" in db else f"sqlite+aiosqlite:///{db}"


def _redacted(url: str) -> str:
    from sqlalchemy.engine import make_url

    return make_url(url).render_as_string(hide_password=True)


def _load_settings(args: argparse.Namespace, **overrides: Any) -> Any:
    from .settings import Settings

    if args.db:
        overrides["database_url"] = _db_url(args.db)
    try:
        return Settings.load(args.config, overrides)
    except (OSError, ValueError) as exc:
        raise CliError(f"cannot load settings: {exc}") from None


def _database_url(args: argparse.Namespace) -> str:
    # An explicit --db must work even when settings cannot be loaded.
    if args.db:
        return _db_url(args.db)
    url: str = _load_settings(args).database_url
    return url


def _read_password(from_stdin: bool) -> str:
    if from_stdin:
        # Only the line ending is removed: spaces may be part of a passphrase.
        password = sys.stdin.readline().rstrip("\r\n")
    else:
        password = getpass.getpass("New password: ")
        if getpass.getpass("Repeat password: ") != password:
            raise CliError("passwords do not match")
    try:
        check_password_policy(password)
    except ValueError as exc:
        raise CliError(str(exc)) from None
    return password


# --- commands -------------------------------------------------------------------


def cmd_serve(args: argparse.Namespace) -> int:
    settings = _load_settings(args, host=args.host, port=args.port, log_level=args.log_level)

    import uvicorn

    from coview.protocol import MAX_MESSAGE_BYTES

    from .app import create_app

    # Our own loggers ("coview.*") print beside uvicorn's, at the same level.
    handler = logging.StreamHandler()
    handler.setFormatter(logging.Formatter("%(levelname)s:    %(name)s: %(message)s"))
    root = logging.getLogger("coview")
    root.addHandler(handler)
    root.setLevel(settings.log_level.upper())
    root.propagate = False
    uvicorn.run(
        create_app(settings),
        host=settings.host,
        port=settings.port,
        log_level=settings.log_level,
        server_header=False,
        # Frames over twice our message cap are refused by the WebSocket layer itself.
        ws_max_size=2 * MAX_MESSAGE_BYTES,
    )
    return 0


def cmd_migrate(args: argparse.Namespace) -> int:
    url = _database_url(args)

    async def run() -> None:
        store = await Store.open(url)
        await store.close()

    asyncio.run(run())
    print(f"Database {_redacted(url)} is at the latest schema version.")
    return 0


def cmd_create_user(args: argparse.Namespace) -> int:
    try:
        email = normalize_email(args.email)
    except ValueError:
        raise CliError(f"not a valid email address: {args.email!r}") from None
    url = _database_url(args)
    password = _read_password(args.password_stdin)
    role = "admin" if args.admin else "agent"

    async def run() -> int:
        store = await Store.open(url)
        try:
            user = await store.create_user(email, args.name, password, role=role)
        except StoreError as exc:
            if exc.code == "email_taken":
                raise CliError(f"a user with email {email} already exists") from None
            raise
        finally:
            await store.close()
        return user.id

    user_id = asyncio.run(run())
    print(f"Created {role} {email} (id {user_id}).")
    return 0


def cmd_reset_password(args: argparse.Namespace) -> int:
    url = _database_url(args)
    password = _read_password(args.password_stdin)

    async def run() -> str:
        store = await Store.open(url)
        try:
            user = await store.get_user_by_email(args.email)
            if user is None:
                raise CliError(f"no user with email {args.email!r}")
            await store.set_password(user.id, password)
            return user.email
        finally:
            await store.close()

    email = asyncio.run(run())
    print(f"Password changed for {email}; their sessions were signed out and any lockout lifted.")
    return 0


def cmd_turn_config(args: argparse.Namespace) -> int:
    from .turn import coturn_config

    settings = _load_settings(args)
    try:
        text = coturn_config(settings, realm=args.realm)
    except ValueError as exc:
        raise CliError(str(exc)) from None
    sys.stdout.write(text)
    return 0


# --- parser -----------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="coview",
        description=DESCRIPTION,
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"coview {_version()}")
    commands = parser.add_subparsers(title="commands", metavar="COMMAND", dest="command")
    commands.required = True

    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--config", metavar="FILE.toml", help="read settings from this TOML file")
    common.add_argument("--db", metavar="PATH_OR_URL", help=DB_HELP)

    def add(
        name: str, func: Callable[[argparse.Namespace], int], summary: str, details: str
    ) -> argparse.ArgumentParser:
        sub = commands.add_parser(
            name, parents=[common], help=summary, description=f"{summary}. {details}"
        )
        sub.set_defaults(func=func)
        return sub

    serve = add(
        "serve",
        cmd_serve,
        "run the Coview web server",
        "Upgrades the database schema if needed and creates the first admin account "
        "when the database has no users.",
    )
    serve.add_argument("--host", help="interface to listen on (default: 127.0.0.1)")
    serve.add_argument("--port", type=int, help="TCP port to listen on (default: 8000)")
    serve.add_argument(
        "--log-level",
        choices=["critical", "error", "warning", "info", "debug"],
        help="server log verbosity (default: info)",
    )

    add(
        "migrate",
        cmd_migrate,
        "create the database or upgrade it to the current schema",
        "Safe to run repeatedly; `serve` does the same on start, so this is for "
        "upgrading ahead of a deploy or preparing a database.",
    )

    create = add(
        "create-user",
        cmd_create_user,
        "add a support agent (or, with --admin, an administrator)",
        "Prompts for the password twice unless --password-stdin is given.",
    )
    create.add_argument("email", metavar="EMAIL", help="login email (case-insensitive)")
    create.add_argument("--name", required=True, help="display name shown to visitors")
    create.add_argument("--admin", action="store_true", help="give the user the admin role")
    create.add_argument(
        "--password-stdin",
        action="store_true",
        help="read the password from the first line of standard input (for scripts)",
    )

    reset = add(
        "reset-password",
        cmd_reset_password,
        "set a new password for a user",
        "Also signs the user out of every session and lifts a login lockout.",
    )
    reset.add_argument("email", metavar="EMAIL", help="the user's login email")
    reset.add_argument(
        "--password-stdin",
        action="store_true",
        help="read the password from the first line of standard input (for scripts)",
    )

    turn_config = add(
        "turn-config",
        cmd_turn_config,
        "print a coturn configuration matching Coview's TURN settings",
        "Uses turn_urls and turn_secrets (COVIEW_TURN_URLS, COVIEW_TURN_SECRETS); the "
        "output contains the secrets: write it to a file only coturn can read, e.g. "
        "`coview turn-config > /etc/turnserver.conf`. See docs/deploy.md.",
    )
    turn_config.add_argument(
        "--realm", help="coturn realm (default: the host of the first TURN URL)"
    )
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``coview`` script; returns the process exit status."""
    args = build_parser().parse_args(argv)
    func: Callable[[argparse.Namespace], int] = args.func
    try:
        return func(args)
    except CliError as exc:
        print(f"coview: error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())

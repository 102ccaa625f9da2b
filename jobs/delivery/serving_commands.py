"""The serving commands of `cdp`: start the endpoint for a role, manage its users."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from jobs.platform.config import Settings


def cmd_serve(settings: Settings, args: argparse.Namespace) -> None:
    from jobs.delivery.serving import serve
    from jobs.delivery.serving_auth import ServingAuthError

    try:
        serve(settings, args.role, args.port)
    except (ServingAuthError, LookupError) as exc:
        sys.exit(f"cdp serve: {exc}")


def cmd_serve_user(settings: Settings, args: argparse.Namespace) -> None:
    import getpass

    from jobs.delivery.serving_auth import ServingAuthError, add_user, read_users, remove_user

    users = settings.paths.serving_users
    if args.action == "list":
        readers = set(settings.serving.silver_readers)
        for name in read_users(users):
            print(f"{name}\t{'analyst, silver_reader' if name in readers else 'analyst'}")
        return
    if not args.name:
        sys.exit(f"cdp serve-user {args.action}: name the user")
    if args.action == "remove":
        print(f"removed {args.name}" if remove_user(users, args.name) else f"no user {args.name} in {users}")
        return
    if args.password_stdin:
        password = sys.stdin.readline().rstrip("\n")
    else:
        password = getpass.getpass(f"password for {args.name}: ")
        if getpass.getpass("again: ") != password:
            sys.exit("cdp serve-user add: the passwords differ")
    try:
        new = add_user(users, args.name, password)
    except ServingAuthError as exc:
        sys.exit(f"cdp serve-user add: {exc}")
    print(f"{'added' if new else 'changed the password of'} {args.name} in {users}")


def add_commands(sub: Any) -> None:
    """The serving subcommands on `cdp`'s subparsers."""
    srv = sub.add_parser("serve", help="serve the bi views (read-only, to users of serve-user) over JDBC/ODBC "
                         "(Spark Thrift Server) until stopped")
    srv.add_argument("--role", choices=["analyst", "silver_reader"], default="analyst",
                     help="analyst: the bi views; silver_reader: also silver but the PII vault, to the users of "
                     "conf serving.silver_readers only")
    srv.add_argument("--port", type=int, help="default from conf serving.port (silver_reader: silver_reader_port)")
    srv.set_defaults(func=cmd_serve)

    su = sub.add_parser("serve-user", help="add a user of the serving endpoint (or set a new password), remove "
                        "one, or list them (paths.serving_users: salted password hashes)")
    su.add_argument("action", choices=["add", "remove", "list"])
    su.add_argument("name", nargs="?")
    su.add_argument("--password-stdin", action="store_true", help="read the password from the first line of stdin "
                    "instead of asking for it")
    su.set_defaults(func=cmd_serve_user)

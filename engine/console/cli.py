"""``synvoice console passwd USER [--role operator|auditor]``: set a console account."""

from __future__ import annotations

import argparse
import getpass
import sys
from typing import Any

from engine.console.config import console_dir
from engine.console.users import ROLES, Users


def _cmd_passwd(args: argparse.Namespace) -> int:
    from engine.cli import CliError

    if args.password_stdin:
        password = sys.stdin.readline().rstrip("\n")
    else:
        password = getpass.getpass(f"new password for {args.user}: ")
        if getpass.getpass("again: ") != password:
            raise CliError("the passwords differ")
    acc = Users(console_dir(args.data) / "users.json").set_password(args.user, password, args.role)
    print(f"console account {acc.name} ({acc.role}) set; its open sessions end")
    return 0


def register(sub: Any) -> None:
    from engine.cli import add_data_arg

    cp = sub.add_parser("console", help="web console accounts")
    csub = cp.add_subparsers(dest="console_command", required=True, metavar="ACTION")
    p = csub.add_parser("passwd", help="set a console account's password (and role)")
    p.add_argument("user")
    p.add_argument("--role", choices=ROLES, help="operator (default) or auditor (read-only)")
    p.add_argument("--password-stdin", action="store_true", help="read the password from stdin")
    add_data_arg(p)
    p.set_defaults(handler=_cmd_passwd)

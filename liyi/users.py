"""``liyi users``: accounts for the web admin and the agent panel, from the command line.

Why on the command line: there is no default account and no default
password, so the first admin has to come from someone with a shell on the
server (``liyi users add NAME --role admin``). Passwords are prompted for
twice, or read from one line of stdin with ``--password-stdin`` (for
scripts); never taken as an argument, where ``ps`` and shell history would
show them. Every change goes to the audit trail as ``cli:USER``.
"""

from __future__ import annotations

import argparse
import asyncio
import getpass
import sys
from collections.abc import Awaitable, Callable
from typing import TextIO

from db.accounts import ROLES, AccountError, Accounts

ACTIONS = ("list", "add", "passwd", "role", "remove")


def cli_actor() -> str:
    """Who the audit trail says made a command-line change: ``cli:`` and the OS user."""
    try:
        return f"cli:{getpass.getuser()}"
    except Exception:  # noqa: BLE001 - no user name in this environment
        return "cli"


def read_password(args: argparse.Namespace, name: str, stdin: TextIO) -> str | None:
    """The new password: one line of stdin, or typed twice at a prompt (None if they differ)."""
    if args.password_stdin:
        return stdin.readline().rstrip("\r\n")
    password = getpass.getpass(f"password for {name}: ")
    if getpass.getpass("again: ") != password:
        print("the two passwords differ; nothing changed", file=sys.stderr)
        return None
    return password


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser],  # noqa: SLF001
               set_fn: Callable[[argparse.Namespace], int]) -> None:
    """Register ``liyi users`` on the CLI's subcommands."""
    us = sub.add_parser(
        "users", help="accounts for the web admin and agent panel: list, add, passwd, role, remove",
        description="Roles: admin (everything), supervisor (reads every admin page, changes "
                    "nothing), agent (the agent panel only). Make the first admin with "
                    "`liyi users add NAME --role admin`.")
    us.add_argument("action", choices=ACTIONS)
    us.add_argument("name", nargs="?", help="the account (all but list)")
    us.add_argument("new_role", nargs="?", choices=ROLES, metavar="ROLE",
                    help="for `role NAME ROLE`")
    us.add_argument("--role", choices=ROLES, help="the role for add (default agent) or role")
    us.add_argument("--password-stdin", action="store_true",
                    help="read the password from one line of stdin instead of prompting")
    us.add_argument("--config")
    us.add_argument("--db", help="SQLite file or SQLAlchemy URL (default from config / liyi.db)")
    us.set_defaults(fn=set_fn)


def run(args: argparse.Namespace, database_url: str, *, stdin: TextIO | None = None,
        out: TextIO | None = None) -> int:
    """Carry out one ``liyi users`` command; 0 done, 1 refused (the reason on stderr)."""
    stdin = stdin or sys.stdin
    out = out or sys.stdout
    if args.action != "list" and not args.name:
        print(f"liyi users {args.action} needs an account name", file=sys.stderr)
        return 1
    actor = cli_actor()
    change: Callable[[Accounts], Awaitable[str]]
    if args.action == "list":
        async def change(acc: Accounts) -> str:
            found = await acc.list_accounts()
            if not found:
                return ("no accounts yet — make the first admin with "
                        "`liyi users add NAME --role admin`")
            width = max(len(a.name) for a in found)
            return "\n".join(f"{a.name:<{width}}  {a.role:<10}  "
                             f"{a.updated_at:%Y-%m-%d %H:%M} UTC" for a in found)
    elif args.action in ("add", "passwd"):
        password = read_password(args, args.name, stdin)
        if password is None:
            return 1
        role = args.role or args.new_role or "agent"
        if args.action == "add":
            async def change(acc: Accounts) -> str:
                await acc.add(args.name, password, role, actor=actor)
                return f"added {args.name} ({role})"
        else:
            async def change(acc: Accounts) -> str:
                await acc.reset_password(args.name, password, actor=actor)
                return f"password set for {args.name}"
    elif args.action == "role":
        role = args.new_role or args.role
        if role is None:
            print(f"which role? liyi users role NAME {{{','.join(ROLES)}}}", file=sys.stderr)
            return 1

        async def change(acc: Accounts) -> str:
            await acc.set_role(args.name, role, actor=actor)
            return f"{args.name} is now {role}"
    else:
        async def change(acc: Accounts) -> str:
            await acc.remove(args.name, actor=actor)
            return f"removed {args.name}"
    try:
        message = asyncio.run(_with_accounts(database_url, change))
    except AccountError as exc:
        print(str(exc), file=sys.stderr)
        return 1
    print(message, file=out)
    return 0


async def _with_accounts(url: str, change: Callable[[Accounts], Awaitable[str]]) -> str:
    accounts = Accounts(url)
    await accounts.start()
    try:
        return await change(accounts)
    finally:
        await accounts.close()

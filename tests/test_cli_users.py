"""``liyi users``: the first admin from the command line, roles, passwords, removal, audit."""

from __future__ import annotations

import asyncio
import io
from pathlib import Path
from typing import Any

import pytest

from db.accounts import Accounts
from liyi import cli


def run(args: list[str], monkeypatch: pytest.MonkeyPatch, stdin: str = "") -> int:
    monkeypatch.setattr("sys.stdin", io.StringIO(stdin))
    return cli.main(["users", *args])


def check(db: Path, name: str, password: str) -> tuple[str | None, list[Any]]:
    """The role ``password`` signs ``name`` in with, and the audit trail, read back."""
    async def go() -> tuple[str | None, list[Any]]:
        acc = Accounts(f"sqlite+aiosqlite:///{db}")
        await acc.start()
        try:
            return await acc.authenticate(name, password), await acc.audit_entries()
        finally:
            await acc.close()
    return asyncio.run(go())


class TestUsersCommand:
    def test_first_admin_from_stdin(self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                    capsys: pytest.CaptureFixture[str]) -> None:
        """`users add NAME --role admin --password-stdin` makes an admin who can sign in."""
        db = tmp_path / "u.db"
        assert run(["add", "boss", "--role", "admin", "--password-stdin", "--db", str(db)],
                   monkeypatch, "boss-secret-1\n") == 0
        assert "added boss (admin)" in capsys.readouterr().out
        role, trail = check(db, "boss", "boss-secret-1")
        assert role == "admin"
        assert trail[0].action == "user-add" and trail[0].actor.startswith("cli")

    def test_prompted_password_must_match(self, tmp_path: Path,
                                          monkeypatch: pytest.MonkeyPatch) -> None:
        """Typed twice at the prompt; two different entries change nothing."""
        db = tmp_path / "u.db"
        answers = iter(["first-secret", "other-secret"])
        monkeypatch.setattr("getpass.getpass", lambda prompt="": next(answers))
        assert run(["add", "boss", "--role", "admin", "--db", str(db)], monkeypatch) == 1
        answers = iter(["same-secret", "same-secret"])
        assert run(["add", "boss", "--role", "admin", "--db", str(db)], monkeypatch) == 0
        assert check(db, "boss", "same-secret")[0] == "admin"

    def test_list_role_passwd_remove(self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                     capsys: pytest.CaptureFixture[str]) -> None:
        """list shows names and roles; role, passwd and remove change what sign-in accepts."""
        db = str(tmp_path / "u.db")
        assert run(["list", "--db", db], monkeypatch) == 0
        assert "liyi users add NAME --role admin" in capsys.readouterr().out  # none yet
        run(["add", "boss", "--role", "admin", "--password-stdin", "--db", db], monkeypatch,
            "boss-secret-1\n")
        run(["add", "sue", "--password-stdin", "--db", db], monkeypatch, "sue-secret-1\n")
        capsys.readouterr()
        assert run(["list", "--db", db], monkeypatch) == 0
        lines = capsys.readouterr().out.splitlines()
        assert [line.split()[:2] for line in lines] == [["boss", "admin"], ["sue", "agent"]]
        assert run(["role", "sue", "supervisor", "--db", db], monkeypatch) == 0
        assert run(["passwd", "sue", "--password-stdin", "--db", db], monkeypatch,
                   "sue-secret-2\n") == 0
        assert check(tmp_path / "u.db", "sue", "sue-secret-1")[0] is None
        assert check(tmp_path / "u.db", "sue", "sue-secret-2")[0] == "supervisor"
        assert run(["remove", "sue", "--db", db], monkeypatch) == 0
        role, trail = check(tmp_path / "u.db", "sue", "sue-secret-2")
        assert role is None
        assert [e.action for e in trail][:3] == ["user-remove", "passwd", "role"]

    def test_refusals_say_why_and_change_nothing(self, tmp_path: Path,
                                                 monkeypatch: pytest.MonkeyPatch,
                                                 capsys: pytest.CaptureFixture[str]) -> None:
        """Short password, taken name, unknown account, last admin: exit 1 with the reason."""
        db = str(tmp_path / "u.db")
        run(["add", "boss", "--role", "admin", "--password-stdin", "--db", db], monkeypatch,
            "boss-secret-1\n")
        capsys.readouterr()
        cases = [
            (["add", "x", "--password-stdin", "--db", db], "short\n", "at least 8"),
            (["add", "boss", "--password-stdin", "--db", db], "long-enough\n", "already exists"),
            (["passwd", "nobody", "--password-stdin", "--db", db], "long-enough\n",
             "no account named"),
            (["remove", "boss", "--db", db], "", "last admin"),
            (["role", "boss", "agent", "--db", db], "", "last admin"),
            (["remove", "--db", db], "", "needs an account name"),
        ]
        for args, stdin, reason in cases:
            assert run(args, monkeypatch, stdin) == 1, args
            assert reason in capsys.readouterr().err, args
        assert check(tmp_path / "u.db", "boss", "boss-secret-1")[0] == "admin"

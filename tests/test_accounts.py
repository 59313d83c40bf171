"""Agent accounts: argon2 hashes in ``agent_accounts``, verify, reset, and the 0002 migration."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any, Literal

import pytest
import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from alembic.script import ScriptDirectory
from argon2 import PasswordHasher
from sqlalchemy.ext.asyncio import create_async_engine

from db import CallStore
from db.accounts import AccountError, AgentAccount, AgentAccounts, set_agent_password
from db.migrations import alembic_config, downgrade_to, upgrade
from db.models import Base

PASSWORD = "correct horse 马"


def cheap_hasher(time_cost: int = 1) -> PasswordHasher:
    """Argon2id with tiny costs, so tests stay fast (production uses the library defaults)."""
    return PasswordHasher(time_cost=time_cost, memory_cost=1024, parallelism=1)


class CountingHasher(PasswordHasher):
    """A cheap hasher that counts verify calls."""

    def __init__(self) -> None:
        super().__init__(time_cost=1, memory_cost=1024, parallelism=1)
        self.verifies = 0

    def verify(self, hash: str | bytes, password: str | bytes) -> Literal[True]:
        self.verifies += 1
        return super().verify(hash, password)


def url_of(path: Path) -> str:
    return f"sqlite+aiosqlite:///{path}"


@pytest.fixture
async def accounts(tmp_path: Path) -> AsyncIterator[AgentAccounts]:
    acc = AgentAccounts(url_of(tmp_path / "acc.db"), hasher=cheap_hasher())
    await acc.start()
    yield acc
    await acc.close()


async def stored_rows(url: str) -> list[Any]:
    engine = create_async_engine(url)
    try:
        async with engine.connect() as conn:
            return list(await conn.execute(sa.text(
                "SELECT name, password_hash, updated_at FROM agent_accounts ORDER BY name")))
    finally:
        await engine.dispose()


class TestAgentAccounts:
    async def test_stores_an_argon2_hash_not_the_password(self, tmp_path: Path) -> None:
        """set_password stores an argon2id PHC string that does not contain the password."""
        url = url_of(tmp_path / "a.db")
        acc = AgentAccounts(url, hasher=cheap_hasher())
        await acc.start()
        await acc.set_password("王芳", PASSWORD)
        await acc.close()
        rows = await stored_rows(url)
        assert [r.name for r in rows] == ["王芳"]
        assert rows[0].password_hash.startswith("$argon2id$")
        assert PASSWORD not in rows[0].password_hash
        assert rows[0].updated_at is not None

    async def test_verify_right_and_wrong(self, accounts: AgentAccounts) -> None:
        """verify accepts the password; refuses a wrong one, another agent's, an unknown agent."""
        await accounts.set_password("agent1", PASSWORD)
        await accounts.set_password("agent2", "another-secret")
        assert await accounts.verify("agent1", PASSWORD)
        assert not await accounts.verify("agent1", PASSWORD + "x")
        assert not await accounts.verify("agent1", "another-secret")
        assert not await accounts.verify("nobody", PASSWORD)
        assert not await accounts.verify("agent1", "")

    async def test_set_twice_replaces_the_password(self, tmp_path: Path) -> None:
        """Setting a password again replaces the hash in the same row; the old one stops working."""
        url = url_of(tmp_path / "twice.db")
        acc = AgentAccounts(url, hasher=cheap_hasher())
        await acc.start()
        await acc.set_password("agent1", "first-password")
        first = (await stored_rows(url))[0].password_hash
        await acc.set_password("agent1", "second-password")
        assert await acc.verify("agent1", "second-password")
        assert not await acc.verify("agent1", "first-password")
        assert await acc.names() == ["agent1"]
        await acc.close()
        rows = await stored_rows(url)
        assert len(rows) == 1 and rows[0].password_hash != first

    async def test_unknown_agent_still_costs_a_hash(self, tmp_path: Path) -> None:
        """verify runs argon2 for an unknown agent too, so timing does not reveal agent names."""
        hasher = CountingHasher()
        acc = AgentAccounts(url_of(tmp_path / "t.db"), hasher=hasher)
        await acc.start()
        try:
            assert not await acc.verify("nobody", "liyi-no-such-agent")
            assert not await acc.verify("nobody", PASSWORD)
            assert hasher.verifies == 2
        finally:
            await acc.close()

    async def test_old_parameters_are_rehashed_on_sign_in(self, tmp_path: Path) -> None:
        """A hash made with weaker parameters is replaced at the next good verify."""
        url = url_of(tmp_path / "re.db")
        weak = AgentAccounts(url, hasher=cheap_hasher(time_cost=1))
        await weak.start()
        await weak.set_password("agent1", PASSWORD)
        await weak.close()
        strong = AgentAccounts(url, hasher=cheap_hasher(time_cost=2))
        await strong.start()
        assert await strong.verify("agent1", PASSWORD)
        await strong.close()
        assert "t=2" in (await stored_rows(url))[0].password_hash

    async def test_names_sorted(self, accounts: AgentAccounts) -> None:
        """names lists the agents that have a password, sorted."""
        assert await accounts.names() == []
        for name in ("zhao", "agent2", "agent1"):
            await accounts.set_password(name, PASSWORD)
        assert await accounts.names() == ["agent1", "agent2", "zhao"]

    @pytest.mark.parametrize(("name", "password"), [
        ("", PASSWORD), (" agent1", PASSWORD), ("a\x00b", PASSWORD), ("agent1", "short"),
        ("agent1", "x" * 2000),
    ])
    async def test_bad_names_and_passwords_refused(
        self, accounts: AgentAccounts, name: str, password: str
    ) -> None:
        """An empty, padded or control-character name, or a too short/long password, is refused."""
        with pytest.raises(AccountError):
            await accounts.set_password(name, password)
        assert await accounts.names() == []

    async def test_set_agent_password_one_shot(self, tmp_path: Path) -> None:
        """The CLI helper creates the table on a fresh database and sets the password."""
        url = url_of(tmp_path / "cli.db")
        await set_agent_password(url, "agent1", PASSWORD)
        acc = AgentAccounts(url, hasher=cheap_hasher())
        await acc.start()
        try:
            assert await acc.verify("agent1", PASSWORD)
        finally:
            await acc.close()


class TestMigration:
    async def test_0002_creates_the_table_and_matches_the_model(self, tmp_path: Path) -> None:
        """upgrade head creates agent_accounts as the model says; downgrade to 0001 drops it."""
        engine = create_async_engine(url_of(tmp_path / "m.db"))
        assert AgentAccount.__table__ is Base.metadata.tables["agent_accounts"]
        try:
            await upgrade(engine)
            async with engine.connect() as conn:
                version = await conn.scalar(sa.text("SELECT version_num FROM alembic_version"))
                # Later revisions (0003 follow-ups…) come on top; upgrade goes to the newest.
                assert version == ScriptDirectory.from_config(alembic_config()).get_current_head()
                tables = await conn.run_sync(lambda c: sa.inspect(c).get_table_names())
                assert "agent_accounts" in tables

                def diffs(sync_conn: sa.Connection) -> list[Any]:
                    ctx = MigrationContext.configure(sync_conn, opts={"compare_type": True})
                    return list(compare_metadata(ctx, Base.metadata))

                assert await conn.run_sync(diffs) == []
            async with engine.begin() as conn:
                await conn.run_sync(downgrade_to, "0001")
            async with engine.connect() as conn:
                tables = await conn.run_sync(lambda c: sa.inspect(c).get_table_names())
                assert "agent_accounts" not in tables and "calls" in tables
        finally:
            await engine.dispose()

    async def test_call_store_start_creates_the_accounts_table(self, tmp_path: Path) -> None:
        """The call log's own migration at start brings agent_accounts too (one database)."""
        url = url_of(tmp_path / "shared.db")
        store = CallStore(url)
        await store.start()
        await store.close()
        engine = create_async_engine(url)
        try:
            async with engine.connect() as conn:
                tables = await conn.run_sync(lambda c: sa.inspect(c).get_table_names())
        finally:
            await engine.dispose()
        assert "agent_accounts" in tables

    async def test_0005_makes_existing_accounts_agents_and_adds_the_audit_log(
            self, tmp_path: Path) -> None:
        """An agent account made before roles is an agent after 0005; downgrade drops audit_log."""
        engine = create_async_engine(url_of(tmp_path / "m5.db"))
        try:
            async with engine.begin() as conn:
                await conn.run_sync(lambda c: command_upgrade(c, "0003"))
                await conn.execute(sa.text(
                    "INSERT INTO agent_accounts (name, password_hash, updated_at) "
                    "VALUES ('old-agent', 'x', '2026-11-30 00:00:00')"))
            await upgrade(engine)
            async with engine.connect() as conn:
                role = await conn.scalar(sa.text(
                    "SELECT role FROM agent_accounts WHERE name = 'old-agent'"))
                tables = await conn.run_sync(lambda c: sa.inspect(c).get_table_names())
            assert role == "agent" and "audit_log" in tables
            async with engine.begin() as conn:
                await conn.run_sync(downgrade_to, "0003")
            async with engine.connect() as conn:
                tables = await conn.run_sync(lambda c: sa.inspect(c).get_table_names())
                columns = await conn.run_sync(
                    lambda c: [col["name"] for col in sa.inspect(c).get_columns("agent_accounts")])
            assert "audit_log" not in tables and "role" not in columns
            assert "agent_accounts" in tables
        finally:
            await engine.dispose()


def command_upgrade(connection: sa.Connection, revision: str) -> None:
    """``alembic upgrade REVISION`` on an open connection."""
    from alembic import command

    command.upgrade(alembic_config(connection=connection), revision)


class TestRoles:
    async def test_roles_add_change_remove_and_the_trail(self, accounts: AgentAccounts) -> None:
        """add/set_role/reset_password/remove change what authenticate says, each one audited."""
        await accounts.add("boss", PASSWORD, "admin", actor="setup")
        await accounts.add("sue", PASSWORD, "supervisor", actor="boss", address="10.0.0.7")
        assert await accounts.authenticate("sue", PASSWORD) == "supervisor"
        await accounts.set_role("sue", "agent", actor="boss")
        assert await accounts.authenticate("sue", PASSWORD) == "agent"
        await accounts.reset_password("sue", "a-new-password", actor="boss")
        assert await accounts.authenticate("sue", PASSWORD) is None
        await accounts.remove("sue", actor="boss")
        assert await accounts.authenticate("sue", "a-new-password") is None
        trail = await accounts.audit_entries()
        assert [(e.actor, e.action) for e in trail] == [
            ("boss", "user-remove"), ("boss", "passwd"), ("boss", "role"), ("boss", "user-add"),
            ("setup", "user-add")]
        assert trail[3].address == "10.0.0.7" and trail[2].detail == "sue: supervisor → agent"

    async def test_refusals_change_nothing(self, accounts: AgentAccounts) -> None:
        """Unknown role, unknown account, taken name, last admin: AccountError, nothing written."""
        await accounts.add("boss", PASSWORD, "admin")
        before = await accounts.audit_entries()
        for attempt in (accounts.add("x", PASSWORD, "root"), accounts.set_role("nobody", "agent"),
                        accounts.add("boss", PASSWORD, "agent"), accounts.remove("boss"),
                        accounts.set_role("boss", "supervisor"),
                        accounts.reset_password("nobody", PASSWORD)):
            with pytest.raises(AccountError):
                await attempt
        assert await accounts.audit_entries() == before
        assert await accounts.role_of("boss") == "admin"

"""Alembic migrations of the call log, shipped inside the package.

Why inside the package: an installed ``liyi`` must be able to create and
upgrade its own database without a checkout or an ``alembic.ini`` on disk.
The Alembic configuration is therefore built in code, with
``script_location`` pointing at this directory.

For maintainers, a new revision is made from a checkout with::

    python -c "from db.migrations import revision; revision('sqlite:///liyi.db', 'what changed')"

(autogenerate compares ``db.models`` with the database at that URL).
"""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import AsyncEngine

MIGRATIONS_DIR = Path(__file__).resolve().parent


def alembic_config(url: str | None = None, connection: Connection | None = None) -> Config:
    """An Alembic ``Config`` for the call log: a URL to connect to, or an open connection."""
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    if url is not None:
        # ConfigParser interpolation treats "%" specially (URL-encoded passwords).
        config.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    if connection is not None:
        config.attributes["connection"] = connection
    return config


def upgrade_to_head(connection: Connection) -> None:
    """Bring the schema on ``connection`` to the newest revision (run via ``run_sync``)."""
    command.upgrade(alembic_config(connection=connection), "head")


def downgrade_to(connection: Connection, revision: str) -> None:
    """Take the schema on ``connection`` back to ``revision`` ("base" drops every table)."""
    command.downgrade(alembic_config(connection=connection), revision)


async def upgrade(engine: AsyncEngine) -> None:
    """Run ``upgrade head`` on an async engine, in one transaction."""
    async with engine.begin() as conn:
        await conn.run_sync(upgrade_to_head)


def revision(url: str, message: str) -> None:
    """Autogenerate a new revision against the database at ``url`` (maintainers only)."""
    command.revision(alembic_config(url=url), message=message, autogenerate=True)

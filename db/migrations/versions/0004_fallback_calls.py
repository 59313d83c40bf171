"""Calls the dialplan fallback served: ``calls.handled_by`` and ``calls.asterisk_linkedid``.

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-05

Every call already in the log was the controller's: ``handled_by`` defaults
to 'liyi'. ``asterisk_linkedid`` is set only on calls imported from
Asterisk's CEL record (issue 9); its unique index is what makes an import
exactly once, also when two imports run at the same time. A unique index
rather than a constraint: SQLite adds it without rebuilding the table, and
both backends let any number of rows hold NULL.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0004"
down_revision: str | Sequence[str] | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    """Add ``handled_by`` and the unique ``asterisk_linkedid`` to ``calls``."""
    op.add_column("calls", sa.Column("handled_by", sa.Text(), nullable=False,
                                     server_default="liyi"))
    op.add_column("calls", sa.Column("asterisk_linkedid", sa.Text(), nullable=True))
    op.create_index("ix_calls_asterisk_linkedid", "calls", ["asterisk_linkedid"], unique=True)


def downgrade() -> None:
    """Drop them again (imported calls stay, as ordinary rows)."""
    op.drop_index("ix_calls_asterisk_linkedid", table_name="calls")
    with op.batch_alter_table("calls") as batch:
        batch.drop_column("asterisk_linkedid")
        batch.drop_column("handled_by")

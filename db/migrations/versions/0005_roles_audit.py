"""Roles on accounts (admin / supervisor / agent) and the audit trail of the web admin.

Revision ID: 0005
Revises: 0004 (calls.handled_by)
Create Date: 2026-12-05

``agent_accounts`` keeps its name and rows: every account made before roles
existed was an agent's panel password, so it becomes role ``agent``. The
first admin is made on the command line (``liyi users add NAME --role
admin``); no row is ever inserted here, so there is no default password.

``audit_log`` is append-only: who (account name, or ``cli``), when, what
(a short action word such as ``user-add``), and a detail line.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0005"
down_revision: str | Sequence[str] | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    """Add ``agent_accounts.role`` (existing accounts are agents) and create ``audit_log``."""
    with op.batch_alter_table("agent_accounts") as batch:
        batch.add_column(sa.Column("role", sa.Text(), nullable=False, server_default="agent"))
    op.create_table(
        "audit_log",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("actor", sa.Text(), nullable=False),
        sa.Column("action", sa.Text(), nullable=False),
        sa.Column("detail", sa.Text(), nullable=False),
        sa.Column("address", sa.Text(), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_audit_log")),
    )
    op.create_index("ix_audit_log_at", "audit_log", ["at"])


def downgrade() -> None:
    """Drop ``audit_log`` and the role column."""
    op.drop_index("ix_audit_log_at", table_name="audit_log")
    op.drop_table("audit_log")
    with op.batch_alter_table("agent_accounts") as batch:
        batch.drop_column("role")

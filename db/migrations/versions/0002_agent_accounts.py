"""Agent accounts: one argon2 password hash per agent, for the agent panel.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-23

Only the hash is stored (``argon2id``, PHC string format, which carries its
own salt and cost parameters), never the password.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0002"
down_revision: str | Sequence[str] | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    """Create ``agent_accounts``."""
    op.create_table(
        "agent_accounts",
        sa.Column("name", sa.Text(), nullable=False),
        sa.Column("password_hash", sa.Text(), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("name", name=op.f("pk_agent_accounts")),
    )


def downgrade() -> None:
    """Drop ``agent_accounts``."""
    op.drop_table("agent_accounts")

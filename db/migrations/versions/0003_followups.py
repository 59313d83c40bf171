"""Follow-ups: promises and callback requests with working-day due dates (R8).

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-24

``due`` is a ``Date`` (a day at the center, not an instant). The follow-up
belongs to the call it was made on: deleting a call deletes its follow-ups,
as it does its timeline and compliance rows.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0003"
down_revision: str | Sequence[str] | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    """Create ``followups``."""
    op.create_table(
        "followups",
        sa.Column("id", sa.Text(), nullable=False),
        sa.Column("call_id", sa.Text(), nullable=False),
        sa.Column("kind", sa.Text(), nullable=False),
        sa.Column("text", sa.Text(), nullable=False),
        sa.Column("number", sa.Text(), nullable=False),
        sa.Column("owner", sa.Text(), nullable=False),
        sa.Column("queue", sa.Text(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("due", sa.Date(), nullable=False),
        sa.Column("state", sa.Text(), nullable=False),
        sa.Column("done_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("done_by", sa.Text(), nullable=True),
        sa.Column("overdue_flagged_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("last_attempt_call_id", sa.Text(), nullable=True),
        sa.ForeignKeyConstraint(
            ["call_id"],
            ["calls.id"],
            name=op.f("fk_followups_call_id_calls"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_followups")),
    )
    op.create_index("ix_followups_state_due", "followups", ["state", "due"])
    op.create_index("ix_followups_call_id", "followups", ["call_id"])
    op.create_index("ix_followups_owner", "followups", ["owner"])


def downgrade() -> None:
    """Drop ``followups``."""
    op.drop_index("ix_followups_owner", table_name="followups")
    op.drop_index("ix_followups_call_id", table_name="followups")
    op.drop_index("ix_followups_state_due", table_name="followups")
    op.drop_table("followups")

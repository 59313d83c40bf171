"""Call log: calls, timeline, compliance, agents, journal marks (R10, R12).

Revision ID: 0001
Revises:
Create Date: 2026-11-23

Timestamps are ``DateTime(timezone=True)`` (``timestamptz`` on PostgreSQL);
``db.models.UTCDateTime`` normalises them to UTC on both backends, so the
migration names only the underlying type and never imports the models.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0001"
down_revision: str | Sequence[str] | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    """Create the call-log tables."""
    op.create_table(
        "calls",
        sa.Column("id", sa.Text(), nullable=False),
        sa.Column("channel_id", sa.Text(), nullable=True),
        sa.Column("caller_number", sa.Text(), nullable=True),
        sa.Column("caller_name", sa.Text(), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("answered_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("ended_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("first_hangup", sa.Text(), nullable=True),
        sa.Column("agent", sa.Text(), nullable=True),
        sa.Column("outcome", sa.Text(), nullable=True),
        sa.Column("state", sa.Text(), nullable=True),
        sa.Column("summary", sa.JSON(none_as_null=True), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_calls")),
    )
    op.create_index("ix_calls_created_at", "calls", ["created_at"])
    op.create_index("ix_calls_ended_at", "calls", ["ended_at"])
    op.create_index("ix_calls_agent", "calls", ["agent"])

    op.create_table(
        "timeline",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("call_id", sa.Text(), nullable=False),
        sa.Column("seq", sa.Integer(), nullable=False),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("source", sa.Text(), nullable=False),
        sa.Column("kind", sa.Text(), nullable=False),
        sa.Column("detail", sa.JSON(), nullable=False),
        sa.ForeignKeyConstraint(
            ["call_id"],
            ["calls.id"],
            name=op.f("fk_timeline_call_id_calls"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_timeline")),
        sa.UniqueConstraint("call_id", "seq", name="uq_timeline_call_id_seq"),
    )

    op.create_table(
        "compliance",
        sa.Column("call_id", sa.Text(), nullable=False),
        sa.Column("rule", sa.Text(), nullable=False),
        sa.Column("status", sa.Text(), nullable=False),
        sa.Column("evidence", sa.JSON(), nullable=False),
        sa.ForeignKeyConstraint(
            ["call_id"],
            ["calls.id"],
            name=op.f("fk_compliance_call_id_calls"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("call_id", "rule", name=op.f("pk_compliance")),
    )
    op.create_index("ix_compliance_rule_status", "compliance", ["rule", "status"])

    op.create_table(
        "agents",
        sa.Column("name", sa.Text(), nullable=False),
        sa.Column("endpoint", sa.Text(), nullable=False),
        sa.Column("registered", sa.Boolean(), nullable=False),
        sa.Column("device_state", sa.Text(), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("name", name=op.f("pk_agents")),
    )

    op.create_table(
        "journal_marks",
        sa.Column("journal_id", sa.Text(), nullable=False),
        sa.Column("applied_through", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("journal_id", name=op.f("pk_journal_marks")),
    )


def downgrade() -> None:
    """Drop the call-log tables."""
    op.drop_table("journal_marks")
    op.drop_table("agents")
    op.drop_index("ix_compliance_rule_status", table_name="compliance")
    op.drop_table("compliance")
    op.drop_table("timeline")
    op.drop_index("ix_calls_agent", table_name="calls")
    op.drop_index("ix_calls_ended_at", table_name="calls")
    op.drop_index("ix_calls_created_at", table_name="calls")
    op.drop_table("calls")

"""Alerts and their incident-log notes, policy decisions, and the access audit.

Revision ID: 0002
Revises: 0001
"""
import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

_Id = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "alerts",
        sa.Column("id", _Id, primary_key=True, autoincrement=True),
        sa.Column("ref", sa.String(16), nullable=False, unique=True),
        sa.Column("time", sa.DateTime(timezone=True), nullable=False),
        sa.Column("theme", sa.String(32), nullable=False),
        sa.Column("severity", sa.String(8), nullable=False),
        sa.Column("username", sa.String(256)),
        sa.Column("person", sa.String(256)),
        sa.Column("profile", sa.String(64)),
        sa.Column("device", sa.String(128)),
        sa.Column("evidence", sa.Text, nullable=False),
        sa.Column("route", sa.String(64), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_index("ix_alerts_time", "alerts", ["time"])
    op.create_index("ix_alerts_status_time", "alerts", ["status", "time"])
    op.create_table(
        "alert_notes",
        sa.Column("id", _Id, primary_key=True, autoincrement=True),
        sa.Column("alert_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
                  sa.ForeignKey("alerts.id", ondelete="CASCADE"), nullable=False, index=True),
        sa.Column("time", sa.DateTime(timezone=True), nullable=False),
        sa.Column("author", sa.String(256), nullable=False),
        sa.Column("action", sa.String(32), nullable=False),
        sa.Column("note", sa.Text, nullable=False),
    )
    op.create_table(
        "policy_decisions",
        sa.Column("id", _Id, primary_key=True, autoincrement=True),
        sa.Column("time", sa.DateTime(timezone=True), nullable=False),
        sa.Column("author", sa.String(256), nullable=False),
        sa.Column("rationale", sa.Text, nullable=False),
        sa.Column("change", sa.Text, nullable=False),
    )
    op.create_table(
        "access_audit",
        sa.Column("id", _Id, primary_key=True, autoincrement=True),
        sa.Column("time", sa.DateTime(timezone=True), nullable=False),
        sa.Column("viewer", sa.String(256), nullable=False),
        sa.Column("subject", sa.String(256), nullable=False),
        sa.Column("what", sa.String(512), nullable=False),
    )
    op.create_index("ix_access_audit_time", "access_audit", ["time"])


def downgrade() -> None:
    op.drop_table("access_audit")
    op.drop_table("policy_decisions")
    op.drop_table("alert_notes")
    op.drop_table("alerts")

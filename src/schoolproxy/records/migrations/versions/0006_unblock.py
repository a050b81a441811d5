"""Unblock requests from the block page, and the expiring overrides that approvals and teachers'
class allows create (each with rationale, author, date and expiry).

Revision ID: 0006
Revises: 0005
"""
import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None

_Id = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "expiring_overrides",
        sa.Column("id", _Id, primary_key=True, autoincrement=True),
        sa.Column("site", sa.String(512), nullable=False),        # host[/path], normalised
        sa.Column("action", sa.String(8), nullable=False),        # allow
        sa.Column("scope", sa.String(8), nullable=False),         # profile | group | user
        sa.Column("scope_value", sa.String(256), nullable=False),
        sa.Column("rationale", sa.Text, nullable=False),
        sa.Column("author", sa.String(256), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("source", sa.String(16), nullable=False),       # unblock | class | cli
        sa.Column("revoked_at", sa.DateTime(timezone=True)),
        sa.Column("revoked_by", sa.String(256)),
    )
    op.create_index("ix_expiring_overrides_expires_at", "expiring_overrides", ["expires_at"])
    op.create_table(
        "unblock_requests",
        sa.Column("id", _Id, primary_key=True, autoincrement=True),
        sa.Column("ref", sa.String(16), nullable=False, unique=True),
        sa.Column("time", sa.DateTime(timezone=True), nullable=False),
        sa.Column("username", sa.String(256), nullable=False),
        sa.Column("profile", sa.String(64), nullable=False),
        sa.Column("client_ip", sa.String(64), nullable=False),
        sa.Column("device", sa.String(128)),
        sa.Column("host", sa.String(253), nullable=False),
        sa.Column("url", sa.Text, nullable=False),                # query values redacted
        sa.Column("block_ref", sa.String(16)),                    # the block page's reference
        sa.Column("rule", sa.String(256), nullable=False),
        sa.Column("categories", sa.String(512), nullable=False),
        sa.Column("reason", sa.Text, nullable=False),
        sa.Column("status", sa.String(16), nullable=False),       # pending | approved | refused
        sa.Column("decided_by", sa.String(256)),
        sa.Column("decided_at", sa.DateTime(timezone=True)),
        sa.Column("note", sa.Text),
        sa.Column("override_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
                  sa.ForeignKey("expiring_overrides.id", ondelete="SET NULL")),
        sa.Column("told_at", sa.DateTime(timezone=True)),         # the requester saw the outcome
    )
    op.create_index("ix_unblock_requests_status_time", "unblock_requests", ["status", "time"])
    op.create_index("ix_unblock_requests_username_time", "unblock_requests", ["username", "time"])


def downgrade() -> None:
    op.drop_table("unblock_requests")
    op.drop_table("expiring_overrides")

"""The console's sign-in sessions and its record of failed sign-ins (for throttling password guessing).

Revision ID: 0004
Revises: 0003
"""
import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None

_Id = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "console_sessions",
        sa.Column("id", sa.String(64), primary_key=True),        # SHA-256 of the cookie's token, never the token
        sa.Column("username", sa.String(256), nullable=False),
        sa.Column("groups", sa.Text, nullable=False, server_default=""),
        sa.Column("csrf", sa.String(64), nullable=False),
        sa.Column("address", sa.String(64), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("last_seen", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_index("ix_console_sessions_last_seen", "console_sessions", ["last_seen"])
    op.create_table(
        "console_signin_attempts",
        sa.Column("id", _Id, primary_key=True, autoincrement=True),
        sa.Column("time", sa.DateTime(timezone=True), nullable=False),
        sa.Column("address", sa.String(64), nullable=False),
        sa.Column("account", sa.String(128), nullable=False),
        sa.Column("outcome", sa.String(16), nullable=False),     # checking | failed
    )
    op.create_index("ix_console_signin_attempts_address_time", "console_signin_attempts", ["address", "time"])
    op.create_index("ix_console_signin_attempts_account_time", "console_signin_attempts", ["account", "time"])


def downgrade() -> None:
    op.drop_table("console_signin_attempts")
    op.drop_table("console_sessions")

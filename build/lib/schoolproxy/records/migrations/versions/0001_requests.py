"""Request records and the supply register.

Revision ID: 0001
Revises:
"""
import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

_Id = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "requests",
        sa.Column("id", _Id, primary_key=True, autoincrement=True),
        sa.Column("ref", sa.String(16), nullable=False, unique=True),
        sa.Column("time", sa.DateTime(timezone=True), nullable=False),
        sa.Column("username", sa.String(256)),
        sa.Column("person", sa.String(256)),
        sa.Column("profile", sa.String(64), nullable=False),
        sa.Column("client_ip", sa.String(64), nullable=False),
        sa.Column("device", sa.String(128)),
        sa.Column("method", sa.String(16), nullable=False),
        sa.Column("scheme", sa.String(8), nullable=False),
        sa.Column("host", sa.String(253), nullable=False),
        sa.Column("port", sa.Integer, nullable=False),
        sa.Column("path", sa.Text, nullable=False),
        sa.Column("status", sa.Integer),
        sa.Column("bytes", sa.BigInteger, nullable=False),
        sa.Column("category", sa.String(64), nullable=False),
        sa.Column("categories", sa.String(512), nullable=False),
        sa.Column("action", sa.String(8), nullable=False),
        sa.Column("rule", sa.String(256), nullable=False),
        sa.Column("reason", sa.String(512), nullable=False),
        sa.Column("search_term", sa.String(512)),
        sa.Column("layer", sa.String(16), nullable=False),
        sa.Column("identity_source", sa.String(32), nullable=False),
        sa.Column("duration_ms", sa.Float),
        sa.Column("error", sa.String(200)),
    )
    op.create_index("ix_requests_user_time", "requests", ["username", "time"])
    op.create_index("ix_requests_time", "requests", ["time"])
    op.create_index("ix_requests_action_time", "requests", ["action", "time"])
    op.create_index("ix_requests_category_time", "requests", ["category", "time"])
    op.create_table(
        "supply_register",
        sa.Column("id", _Id, primary_key=True, autoincrement=True),
        sa.Column("logon", sa.String(256), nullable=False),
        sa.Column("person", sa.String(256), nullable=False),
        sa.Column("class_taught", sa.String(256)),
        sa.Column("starts", sa.DateTime(timezone=True), nullable=False),
        sa.Column("ends", sa.DateTime(timezone=True)),
        sa.Column("created_by", sa.String(256), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_index("ix_supply_register_logon_starts", "supply_register", ["logon", "starts"])


def downgrade() -> None:
    op.drop_table("supply_register")
    op.drop_table("requests")

"""Acceptances of the acceptable-use notice: who, when, which version of the text.

Revision ID: 0007
Revises: 0006
"""
import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None

_Id = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "notice_acceptances",
        sa.Column("id", _Id, primary_key=True, autoincrement=True),
        sa.Column("time", sa.DateTime(timezone=True), nullable=False),
        sa.Column("subject", sa.String(300), nullable=False),    # lower-case logon, or "ip:ADDRESS"
        sa.Column("username", sa.String(256)),
        sa.Column("profile", sa.String(64), nullable=False),
        sa.Column("client_ip", sa.String(64), nullable=False),
        sa.Column("version", sa.String(16), nullable=False),     # hash of the text shown
    )
    op.create_index("ix_notice_acceptances_time", "notice_acceptances", ["time"])
    op.create_index("ix_notice_acceptances_subject", "notice_acceptances", ["subject", "time"])


def downgrade() -> None:
    op.drop_table("notice_acceptances")

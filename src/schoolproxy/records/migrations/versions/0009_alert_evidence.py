"""Evidence of an alert: every search, visit or page that raised it or repeated it (issue 13).

Revision ID: 0009
Revises: 0008
"""
import sqlalchemy as sa
from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None

_Id = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "alert_evidence",
        sa.Column("id", _Id, primary_key=True, autoincrement=True),
        sa.Column("alert_id", _Id, sa.ForeignKey("alerts.id", ondelete="CASCADE"), nullable=False),
        sa.Column("time", sa.DateTime(timezone=True), nullable=False),
        sa.Column("kind", sa.String(8), nullable=False),
        sa.Column("rule", sa.String(64), nullable=False),
        sa.Column("words", sa.String(512)),
        sa.Column("matched", sa.String(512)),
        sa.Column("host", sa.String(253), nullable=False),
        sa.Column("url", sa.String(320)),
        sa.Column("action", sa.String(8), nullable=False),
        sa.Column("request_ref", sa.String(16)),
    )
    op.create_index("ix_alert_evidence_alert_id", "alert_evidence", ["alert_id"])


def downgrade() -> None:
    op.drop_table("alert_evidence")

"""The checks log: each run of `schoolproxy checks run` (when, who, the result) and what it tested.

Revision ID: 0005
Revises: 0004
"""
import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None

_Id = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "check_runs",
        sa.Column("id", _Id, primary_key=True, autoincrement=True),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("finished_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("run_by", sa.String(256), nullable=False),
        sa.Column("passed", sa.Boolean, nullable=False),
        sa.Column("tested", sa.Integer, nullable=False),
        sa.Column("failed", sa.Integer, nullable=False),
        sa.Column("alert_ref", sa.String(16)),          # the alert a failed run raised
    )
    op.create_index("ix_check_runs_started_at", "check_runs", ["started_at"])
    op.create_table(
        "check_results",
        sa.Column("id", _Id, primary_key=True, autoincrement=True),
        sa.Column("run_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
                  sa.ForeignKey("check_runs.id", ondelete="CASCADE"), nullable=False),
        sa.Column("name", sa.String(64), nullable=False),
        sa.Column("what", sa.String(512), nullable=False),
        sa.Column("outcome", sa.String(8), nullable=False),   # pass | fail | skip
        sa.Column("detail", sa.Text, nullable=False),
    )
    op.create_index("ix_check_results_run_id", "check_results", ["run_id"])


def downgrade() -> None:
    op.drop_table("check_results")
    op.drop_table("check_runs")

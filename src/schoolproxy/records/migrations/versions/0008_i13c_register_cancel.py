"""A cancelled visit stays in the register, stamped with who cancelled it and when, instead of vanishing.

Revision ID: 0008_i13c_cancel
Revises: 0007_i15
"""
import sqlalchemy as sa
from alembic import op

revision = "0008_i13c_cancel"
down_revision = "0007_i15"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("supply_register") as t:
        t.add_column(sa.Column("cancelled_by", sa.String(256)))
        t.add_column(sa.Column("cancelled_at", sa.DateTime(timezone=True)))


def downgrade() -> None:
    with op.batch_alter_table("supply_register") as t:
        t.drop_column("cancelled_at")
        t.drop_column("cancelled_by")

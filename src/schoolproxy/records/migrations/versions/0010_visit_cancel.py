"""A cancelled visit stays in the register, stamped with who cancelled it and when, instead of vanishing.

Revision ID: 0010
Revises: 0009
"""
import sqlalchemy as sa
from alembic import op

revision = "0010"
down_revision = "0009"
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

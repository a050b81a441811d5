"""Reports find one person's records whatever case their name was typed in: an index on lower(username).

Revision ID: 0008
Revises: 0007
"""
import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index("ix_requests_username_ci_time", "requests", [sa.text("lower(username)"), "time"])


def downgrade() -> None:
    op.drop_index("ix_requests_username_ci_time", "requests")

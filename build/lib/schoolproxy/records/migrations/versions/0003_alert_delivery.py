"""Alert details (rule, score, search term, the request behind it, repeats) and the delivery outbox.

Revision ID: 0003
Revises: 0002
"""
import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None

_Id = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    with op.batch_alter_table("alerts") as batch:
        batch.add_column(sa.Column("rule", sa.String(64), nullable=False, server_default=""))
        batch.add_column(sa.Column("score", sa.Integer))
        batch.add_column(sa.Column("client_ip", sa.String(64)))
        batch.add_column(sa.Column("request_ref", sa.String(16)))
        batch.add_column(sa.Column("search_term", sa.String(512)))
        batch.add_column(sa.Column("repeats", sa.Integer, nullable=False, server_default="0"))
        batch.add_column(sa.Column("digested_at", sa.DateTime(timezone=True)))
    op.create_index("ix_alerts_username_time", "alerts", ["username", "time"])
    op.create_table(
        "alert_outbox",
        sa.Column("id", _Id, primary_key=True, autoincrement=True),
        sa.Column("alert_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
                  sa.ForeignKey("alerts.id", ondelete="CASCADE")),
        sa.Column("kind", sa.String(16), nullable=False),         # alert | digest
        sa.Column("channel", sa.String(16), nullable=False),      # email | webhook
        sa.Column("recipient", sa.String(320), nullable=False),
        sa.Column("subject", sa.String(300), nullable=False),
        sa.Column("body", sa.Text, nullable=False),
        sa.Column("status", sa.String(16), nullable=False),       # pending | sent
        sa.Column("attempts", sa.Integer, nullable=False, server_default="0"),
        sa.Column("next_attempt", sa.DateTime(timezone=True), nullable=False),
        sa.Column("last_error", sa.String(300)),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("sent_at", sa.DateTime(timezone=True)),
    )
    op.create_index("ix_alert_outbox_status_next", "alert_outbox", ["status", "next_attempt"])


def downgrade() -> None:
    op.drop_table("alert_outbox")
    op.drop_index("ix_alerts_username_time", "alerts")
    with op.batch_alter_table("alerts") as batch:
        for c in ("rule", "score", "client_ip", "request_ref", "search_term", "repeats", "digested_at"):
            batch.drop_column(c)

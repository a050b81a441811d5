"""The database schema (SQLAlchemy Core). Alembic migrations in ``migrations/`` create and evolve it;
this module is what the code queries against, and must match the head revision."""

from __future__ import annotations

from sqlalchemy import (BigInteger, Boolean, Column, DateTime, Float, ForeignKey, Index, Integer, MetaData, String,
                        Table, Text, func, text)

metadata = MetaData()

# SQLite only auto-increments an INTEGER PRIMARY KEY; PostgreSQL gets a 64-bit identity.
_Id = BigInteger().with_variant(Integer(), "sqlite")

requests = Table(
    "requests", metadata,
    Column("id", _Id, primary_key=True, autoincrement=True),
    Column("ref", String(16), nullable=False, unique=True),   # shown on the block page; idempotency key
    Column("time", DateTime(timezone=True), nullable=False),
    Column("username", String(256)),
    Column("person", String(256)),        # the real person behind a shared logon (supply register)
    Column("profile", String(64), nullable=False),
    Column("client_ip", String(64), nullable=False),
    Column("device", String(128)),
    Column("method", String(16), nullable=False),
    Column("scheme", String(8), nullable=False),
    Column("host", String(253), nullable=False),
    Column("port", Integer, nullable=False),
    Column("path", Text, nullable=False),  # after redaction
    Column("status", Integer),
    Column("bytes", BigInteger, nullable=False, default=0),
    Column("category", String(64), nullable=False),   # the deciding category (indexed)
    Column("categories", String(512), nullable=False),
    Column("action", String(8), nullable=False),
    Column("rule", String(256), nullable=False),
    Column("reason", String(512), nullable=False),
    Column("search_term", String(512)),
    Column("layer", String(16), nullable=False),
    Column("identity_source", String(32), nullable=False),
    Column("duration_ms", Float),
    Column("error", String(200)),
    Index("ix_requests_user_time", "username", "time"),
    Index("ix_requests_username_ci_time", func.lower(text("username")), "time"),  # report user, any case
    Index("ix_requests_time", "time"),
    Index("ix_requests_action_time", "action", "time"),
    Index("ix_requests_category_time", "category", "time"),
)

supply_register = Table(
    "supply_register", metadata,
    Column("id", _Id, primary_key=True, autoincrement=True),
    Column("logon", String(256), nullable=False),
    Column("person", String(256), nullable=False),
    Column("class_taught", String(256)),
    Column("starts", DateTime(timezone=True), nullable=False),
    Column("ends", DateTime(timezone=True)),
    Column("created_by", String(256), nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False),
    # A visit cancelled before it started: kept, with who cancelled it; no longer in the register.
    Column("cancelled_by", String(256)),
    Column("cancelled_at", DateTime(timezone=True)),
    Index("ix_supply_register_logon_starts", "logon", "starts"),
)

alerts = Table(
    "alerts", metadata,
    Column("id", _Id, primary_key=True, autoincrement=True),
    Column("ref", String(16), nullable=False, unique=True),
    Column("time", DateTime(timezone=True), nullable=False),
    Column("theme", String(32), nullable=False),
    Column("severity", String(8), nullable=False),
    Column("username", String(256)),
    Column("person", String(256)),
    Column("profile", String(64)),
    Column("device", String(128)),
    Column("evidence", Text, nullable=False),
    Column("route", String(64), nullable=False),
    Column("status", String(16), nullable=False, default="new"),  # new → acknowledged → actioned → closed
    Column("updated_at", DateTime(timezone=True), nullable=False),
    Column("rule", String(64), nullable=False, server_default=""),
    Column("score", Integer),
    Column("client_ip", String(64)),
    Column("request_ref", String(16)),     # the request record behind the alert
    Column("search_term", String(512)),
    Column("repeats", Integer, nullable=False, server_default="0"),  # further matches within the throttle window
    Column("digested_at", DateTime(timezone=True)),                   # sent in a weekly digest
    Index("ix_alerts_time", "time"),
    Index("ix_alerts_status_time", "status", "time"),
    Index("ix_alerts_username_time", "username", "time"),
)

alert_outbox = Table(
    "alert_outbox", metadata,
    Column("id", _Id, primary_key=True, autoincrement=True),
    Column("alert_id", ForeignKey("alerts.id", ondelete="CASCADE")),
    Column("kind", String(16), nullable=False),          # alert | digest
    Column("channel", String(16), nullable=False),       # email | webhook
    Column("recipient", String(320), nullable=False),
    Column("subject", String(300), nullable=False),
    Column("body", Text, nullable=False),
    Column("status", String(16), nullable=False),        # pending | sent
    Column("attempts", Integer, nullable=False, server_default="0"),
    Column("next_attempt", DateTime(timezone=True), nullable=False),
    Column("last_error", String(300)),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("sent_at", DateTime(timezone=True)),
    Index("ix_alert_outbox_status_next", "status", "next_attempt"),
)

alert_notes = Table(
    "alert_notes", metadata,
    Column("id", _Id, primary_key=True, autoincrement=True),
    Column("alert_id", ForeignKey("alerts.id", ondelete="CASCADE"), nullable=False, index=True),
    Column("time", DateTime(timezone=True), nullable=False),
    Column("author", String(256), nullable=False),
    Column("action", String(32), nullable=False),
    Column("note", Text, nullable=False),
)

#: What raised an alert and each repeat counted on it: the searches as typed, the sites, the pages' words.
#: The first monitoring.evidence.MAX_PER_ALERT of each alert; alerts.repeats still counts them all.
alert_evidence = Table(
    "alert_evidence", metadata,
    Column("id", _Id, primary_key=True, autoincrement=True),
    Column("alert_id", ForeignKey("alerts.id", ondelete="CASCADE"), nullable=False, index=True),
    Column("time", DateTime(timezone=True), nullable=False),
    Column("kind", String(8), nullable=False),          # search | visit | content
    Column("rule", String(64), nullable=False),         # the alert rule it matched (search-phrases, category:x…)
    Column("words", String(512)),                       # the search as typed, or the words as on the page
    Column("matched", String(512)),                     # the words of the search that matched, as typed
    Column("host", String(253), nullable=False),
    Column("url", String(320)),                         # query values redacted, cut short; none for adult sites
    Column("action", String(8), nullable=False),        # allow | block
    Column("request_ref", String(16)),                  # the request record
)

policy_decisions = Table(
    "policy_decisions", metadata,
    Column("id", _Id, primary_key=True, autoincrement=True),
    Column("time", DateTime(timezone=True), nullable=False),
    Column("author", String(256), nullable=False),
    Column("rationale", Text, nullable=False),
    Column("change", Text, nullable=False),
)

access_audit = Table(
    "access_audit", metadata,
    Column("id", _Id, primary_key=True, autoincrement=True),
    Column("time", DateTime(timezone=True), nullable=False),
    Column("viewer", String(256), nullable=False),
    Column("subject", String(256), nullable=False),
    Column("what", String(512), nullable=False),
    Index("ix_access_audit_time", "time"),
)

console_sessions = Table(
    "console_sessions", metadata,
    Column("id", String(64), primary_key=True),          # SHA-256 of the cookie's token, never the token
    Column("username", String(256), nullable=False),
    Column("groups", Text, nullable=False, server_default=""),   # directory groups at sign-in, one a line
    Column("csrf", String(64), nullable=False),
    Column("address", String(64), nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("last_seen", DateTime(timezone=True), nullable=False),
    Index("ix_console_sessions_last_seen", "last_seen"),
)

console_signin_attempts = Table(
    "console_signin_attempts", metadata,
    Column("id", _Id, primary_key=True, autoincrement=True),
    Column("time", DateTime(timezone=True), nullable=False),
    Column("address", String(64), nullable=False),
    Column("account", String(128), nullable=False),
    Column("outcome", String(16), nullable=False),       # checking | failed
    Index("ix_console_signin_attempts_address_time", "address", "time"),
    Index("ix_console_signin_attempts_account_time", "account", "time"),
)

check_runs = Table(
    "check_runs", metadata,
    Column("id", _Id, primary_key=True, autoincrement=True),
    Column("started_at", DateTime(timezone=True), nullable=False),
    Column("finished_at", DateTime(timezone=True), nullable=False),
    Column("run_by", String(256), nullable=False),
    Column("passed", Boolean, nullable=False),
    Column("tested", Integer, nullable=False),
    Column("failed", Integer, nullable=False),
    Column("alert_ref", String(16)),          # the alert a failed run raised
    Index("ix_check_runs_started_at", "started_at"),
)

check_results = Table(
    "check_results", metadata,
    Column("id", _Id, primary_key=True, autoincrement=True),
    Column("run_id", ForeignKey("check_runs.id", ondelete="CASCADE"), nullable=False, index=True),
    Column("name", String(64), nullable=False),
    Column("what", String(512), nullable=False),
    Column("outcome", String(8), nullable=False),   # pass | fail | skip
    Column("detail", Text, nullable=False),
)

expiring_overrides = Table(
    "expiring_overrides", metadata,
    Column("id", _Id, primary_key=True, autoincrement=True),
    Column("site", String(512), nullable=False),        # host[/path], normalised
    Column("action", String(8), nullable=False),        # allow
    Column("scope", String(8), nullable=False),         # profile | group | user
    Column("scope_value", String(256), nullable=False),
    Column("rationale", Text, nullable=False),
    Column("author", String(256), nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("expires_at", DateTime(timezone=True), nullable=False),
    Column("source", String(16), nullable=False),       # unblock | class | cli
    Column("revoked_at", DateTime(timezone=True)),
    Column("revoked_by", String(256)),
    Index("ix_expiring_overrides_expires_at", "expires_at"),
)

unblock_requests = Table(
    "unblock_requests", metadata,
    Column("id", _Id, primary_key=True, autoincrement=True),
    Column("ref", String(16), nullable=False, unique=True),
    Column("time", DateTime(timezone=True), nullable=False),
    Column("username", String(256), nullable=False),
    Column("profile", String(64), nullable=False),
    Column("client_ip", String(64), nullable=False),
    Column("device", String(128)),
    Column("host", String(253), nullable=False),
    Column("url", Text, nullable=False),                # query values redacted
    Column("block_ref", String(16)),                    # the block page's reference
    Column("rule", String(256), nullable=False),
    Column("categories", String(512), nullable=False),
    Column("reason", Text, nullable=False),
    Column("status", String(16), nullable=False),       # pending | approved | refused
    Column("decided_by", String(256)),
    Column("decided_at", DateTime(timezone=True)),
    Column("note", Text),
    Column("override_id", ForeignKey("expiring_overrides.id", ondelete="SET NULL")),
    Column("told_at", DateTime(timezone=True)),         # the requester saw the outcome
    Index("ix_unblock_requests_status_time", "status", "time"),
    Index("ix_unblock_requests_username_time", "username", "time"),
)

notice_acceptances = Table(
    "notice_acceptances", metadata,
    Column("id", _Id, primary_key=True, autoincrement=True),
    Column("time", DateTime(timezone=True), nullable=False),
    Column("subject", String(300), nullable=False),    # lower-case logon, or "ip:ADDRESS"
    Column("username", String(256)),
    Column("profile", String(64), nullable=False),
    Column("client_ip", String(64), nullable=False),
    Column("version", String(16), nullable=False),     # hash of the text shown
    Index("ix_notice_acceptances_time", "time"),
    Index("ix_notice_acceptances_subject", "subject", "time"),
)

service_status = Table(
    "service_status", metadata,
    Column("name", String(64), primary_key=True),        # what is reported on: "search_alerts"
    Column("ok", Boolean, nullable=False),
    Column("detail", Text, nullable=False),              # why not, in words ("" when ok)
    Column("since", DateTime(timezone=True), nullable=False),       # when it became what it is
    Column("reported_at", DateTime(timezone=True), nullable=False),  # last said by the running proxy
)

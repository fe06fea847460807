"""The initial schema: users, clients, sessions, signing keys, audit events.

Revision ID: 0001
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None

# PostgreSQL keeps aware timestamps; SQLite keeps integer microseconds since the epoch,
# exact and comparable in SQL.
TIME = sa.DateTime(timezone=True).with_variant(sa.BigInteger(), "sqlite")
BIGID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "users",
        sa.Column("id", sa.Text, primary_key=True),
        sa.Column("username", sa.Text, nullable=False, unique=True),
        sa.Column("password_hash", sa.Text, nullable=False),
        sa.Column("enabled", sa.Boolean, nullable=False),
        sa.Column("created_at", TIME, nullable=False),
        sa.Column("password_changed_at", TIME, nullable=False),
    )
    op.create_table(
        "clients",
        sa.Column("id", sa.Text, primary_key=True),
        sa.Column("type", sa.Text, nullable=False),
        sa.Column("secret_hash", sa.Text),
        sa.Column("redirect_uris", sa.Text, nullable=False),
        sa.Column("grant_types", sa.Text, nullable=False),
        sa.Column("scope", sa.Text, nullable=False),
        sa.Column("delivery", sa.Text, nullable=False),
        sa.Column("audience", sa.Text, nullable=False),
        sa.Column("access_token_ttl", sa.Integer),
        sa.Column("session_idle_ttl", sa.Integer),
        sa.Column("session_max_ttl", sa.Integer),
        sa.Column("enabled", sa.Boolean, nullable=False),
        sa.Column("created_at", TIME, nullable=False),
        sa.Column("allowed_origins", sa.Text, nullable=False),
        sa.Column("can_introspect", sa.Boolean, nullable=False),
    )
    op.create_table(
        "sessions",
        sa.Column("id", sa.Text, primary_key=True),
        sa.Column(
            "user_id", sa.Text, sa.ForeignKey("users.id", ondelete="CASCADE"), nullable=False
        ),
        sa.Column(
            "client_id", sa.Text, sa.ForeignKey("clients.id", ondelete="CASCADE"), nullable=False
        ),
        sa.Column("scope", sa.Text, nullable=False),
        sa.Column("salt", sa.LargeBinary, nullable=False),
        sa.Column("generation", sa.BigInteger, nullable=False),
        sa.Column("mac_key_id", sa.Integer, nullable=False),
        sa.Column("created_at", TIME, nullable=False),
        sa.Column("authenticated_at", TIME),
        sa.Column("last_used_at", TIME, nullable=False),
        sa.Column("rotated_at", TIME),
        sa.Column("idle_expires_at", TIME, nullable=False),
        sa.Column("absolute_expires_at", TIME, nullable=False),
        sa.Column("revoked_at", TIME),
        sa.Column("revoked_reason", sa.Text),
        sa.Column("user_agent", sa.Text),
        sa.Column("ip", sa.Text),
        sa.Column("device_name", sa.Text),
        # Room on each page for the new row version of a rotation: with no index on
        # the columns a rotation changes, PostgreSQL updates the row in place (HOT).
        postgresql_with={"fillfactor": 80},
    )
    op.create_index("sessions_user_id", "sessions", ["user_id"])
    op.create_index("sessions_client_id", "sessions", ["client_id"])
    op.create_index("sessions_absolute_expires_at", "sessions", ["absolute_expires_at"])
    op.create_index("sessions_revoked_at", "sessions", ["revoked_at"])
    op.create_table(
        "signing_keys",
        sa.Column("kid", sa.Text, primary_key=True),
        sa.Column("use", sa.Text, nullable=False),
        sa.Column("alg", sa.Text, nullable=False),
        sa.Column("state", sa.Text, nullable=False),
        sa.Column("public_jwk", sa.Text),
        sa.Column("encrypted_private", sa.LargeBinary, nullable=False),
        sa.Column("created_at", TIME, nullable=False),
        sa.Column("activated_at", TIME),
        sa.Column("retired_at", TIME),
        sa.Column("publish_until", TIME),
    )
    op.create_table(
        "audit_events",
        sa.Column("id", BIGID, primary_key=True, autoincrement=True),
        sa.Column("type", sa.Text, nullable=False),
        sa.Column("at", TIME, nullable=False),
        sa.Column("user_id", sa.Text),
        sa.Column("client_id", sa.Text),
        sa.Column("session_id", sa.Text),
        sa.Column("generation", sa.BigInteger),
        sa.Column("reason", sa.Text),
        sa.Column("user_agent", sa.Text),
        sa.Column("ip", sa.Text),
        sa.Column("device_name", sa.Text),
        sa.Column("detail", sa.Text),
    )
    op.create_index("audit_events_at", "audit_events", ["at"])
    op.create_index("audit_events_type_at", "audit_events", ["type", "at"])
    op.create_index("audit_events_session_id", "audit_events", ["session_id"])

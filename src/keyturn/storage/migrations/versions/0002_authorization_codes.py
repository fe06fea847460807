"""Authorization codes (RFC 6749 §4.1.2), kept as hashes, single use.

Revision ID: 0002
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"

TIME = sa.DateTime(timezone=True).with_variant(sa.BigInteger(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "authorization_codes",
        sa.Column("code_hash", sa.Text, primary_key=True),
        sa.Column(
            "client_id", sa.Text, sa.ForeignKey("clients.id", ondelete="CASCADE"), nullable=False
        ),
        sa.Column(
            "user_id", sa.Text, sa.ForeignKey("users.id", ondelete="CASCADE"), nullable=False
        ),
        sa.Column("redirect_uri", sa.Text, nullable=False),
        sa.Column("redirect_uri_given", sa.Boolean, nullable=False),
        sa.Column("code_challenge", sa.Text, nullable=False),
        sa.Column("scope", sa.Text, nullable=False),
        sa.Column("authenticated_at", TIME, nullable=False),
        sa.Column("created_at", TIME, nullable=False),
        sa.Column("expires_at", TIME, nullable=False),
        sa.Column("used_at", TIME),
        # No foreign key: the session may be purged before the code is.
        sa.Column("session_id", sa.Text),
        sa.Column("user_agent", sa.Text),
        sa.Column("ip", sa.Text),
    )
    op.create_index("authorization_codes_expires_at", "authorization_codes", ["expires_at"])


def downgrade() -> None:
    op.drop_table("authorization_codes")

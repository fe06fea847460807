"""Rotation policies: each client's policy, each session's replay log and DPoP key, and
the closed set of reasons a session ends for.

Revision ID: 0003
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"

# The reasons written before the closed set of `keyturn.core.models.RevocationReason`,
# written out here: a migration must not change when the code does.
RENAMED = {
    "reuse_detected": "reuse_outside_window",
    "admin": "admin_revoked",
    "superseded": "superseded_at_login",
    "code_reused": "code_replayed",
}


def upgrade() -> None:
    # A client's registered policy as JSON (`keyturn.storage.rows.rotation_json`):
    # read with the client, never by a query, so one column keeps new knobs migration-free.
    op.add_column("clients", sa.Column("rotation", sa.Text, nullable=False, server_default="{}"))
    # The replay log: bit i of replay_bits stands for generation replay_newest - i.
    op.add_column(
        "sessions",
        sa.Column("replay_newest", sa.BigInteger, nullable=False, server_default="-1"),
    )
    op.add_column(
        "sessions", sa.Column("replay_bits", sa.BigInteger, nullable=False, server_default="0")
    )
    op.add_column("sessions", sa.Column("dpop_jkt", sa.Text))
    sessions = sa.table("sessions", sa.column("revoked_reason", sa.Text))
    events = sa.table("audit_events", sa.column("reason", sa.Text))
    for old, new in RENAMED.items():
        op.execute(
            sessions.update().where(sessions.c.revoked_reason == old).values(revoked_reason=new)
        )
        op.execute(events.update().where(events.c.reason == old).values(reason=new))


def downgrade() -> None:
    sessions = sa.table("sessions", sa.column("revoked_reason", sa.Text))
    events = sa.table("audit_events", sa.column("reason", sa.Text))
    for old, new in RENAMED.items():
        op.execute(
            sessions.update().where(sessions.c.revoked_reason == new).values(revoked_reason=old)
        )
        op.execute(events.update().where(events.c.reason == new).values(reason=old))
    with op.batch_alter_table("sessions") as batch:
        batch.drop_column("dpop_jkt")
        batch.drop_column("replay_bits")
        batch.drop_column("replay_newest")
    with op.batch_alter_table("clients") as batch:
        batch.drop_column("rotation")

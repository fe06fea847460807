"""The index on `sessions.revoked_at` holds ended sessions only, as `(revoked_at, id)`.

Every hot statement looks a session up by its id with `revoked_at IS NULL` beside it.
Without statistics (a freshly migrated database) PostgreSQL takes `IS NULL` to match one
row in two hundred and chose the full index on `revoked_at` over the primary key: a
rotation then read every live session. A partial index over ended sessions cannot serve
`IS NULL` at all, so the primary key is the only plan for those statements whatever the
statistics say; the queries that do read ended sessions (the revocation feed's keyset,
`(revoked_at, id) > (...)`, and the purge's `revoked_at < ...`) imply `IS NOT NULL` and
use it as before. A live session, which is nearly every row, is no longer in the index
at all, so opening one writes one index entry fewer.

Revision ID: 0005
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"

_ENDED = "revoked_at IS NOT NULL"


def upgrade() -> None:
    op.drop_index("sessions_revoked_at", table_name="sessions")
    op.create_index(
        "sessions_revoked",
        "sessions",
        ["revoked_at", "id"],
        postgresql_where=sa.text(_ENDED),
        sqlite_where=sa.text(_ENDED),
    )


def downgrade() -> None:
    op.drop_index("sessions_revoked", table_name="sessions")
    op.create_index("sessions_revoked_at", "sessions", ["revoked_at"])

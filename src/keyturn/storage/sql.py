"""The SQL both SQL stores run, written once.

Texts use PostgreSQL's numbered placeholders (`$1`, `$2`, ...). The SQLite store runs
each through `for_sqlite`, which turns them into SQLite's own numbered form (`?1`,
`?2`, ...): a text binds the same arguments, in the same order, on both. Times are
bound as each store converts them (`to_db`). A statement that differs by more than its
placeholders stays in its store's module; so do the two rotation statements
(`sqlite._ATTEMPT`, `postgres._ATTEMPTS`), hand-written per dialect for speed.

Table and column names are this module's constants, never input.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Sequence

from keyturn.storage import rows

_NUMBERED = re.compile(r"\$(\d+)")


@functools.cache
def for_sqlite(sql: str) -> str:
    """`sql` with each `$n` written `?n` (computed once per text)."""
    return _NUMBERED.sub(r"?\1", sql)


def placeholders(count: int, start: int = 1) -> str:
    return ", ".join(f"${i}" for i in range(start, start + count))


def insert(table: str, columns: Sequence[str], start: int = 1) -> str:
    names = ", ".join(columns)
    return f"INSERT INTO {table} ({names}) VALUES ({placeholders(len(columns), start)})"  # noqa: S608 - fixed names


INSERT_USER = insert("users", rows.USER_COLUMNS)
INSERT_CLIENT = insert("clients", rows.CLIENT_COLUMNS)
INSERT_SESSION = insert("sessions", rows.SESSION_COLUMNS)
INSERT_EVENT = insert("audit_events", rows.EVENT_COLUMNS)
INSERT_CODE = insert("authorization_codes", rows.CODE_COLUMNS)
UPSERT_KEY = (
    insert("signing_keys", rows.KEY_COLUMNS)
    + " ON CONFLICT (kid) DO UPDATE SET "
    + ", ".join(f"{c} = excluded.{c}" for c in rows.KEY_COLUMNS if c != "kid")
)

# Reads

USER_BY_ID = "SELECT * FROM users WHERE id = $1"
USER_BY_NAME = "SELECT * FROM users WHERE username = $1"
USERS = "SELECT * FROM users ORDER BY username"
CLIENT_BY_ID = "SELECT * FROM clients WHERE id = $1"
CLIENTS = "SELECT * FROM clients ORDER BY id"
SESSION_BY_ID = "SELECT * FROM sessions WHERE id = $1"
SESSION_WITH_USER = rows.SESSION_WITH_USER.format(param="$1")
PRESENTATION = rows.PRESENTATION.format(client="$1", session="$2")
# A user's sessions, or everyone's, newest first; $2 (or $1): revoked ones too. Apart,
# for the reason given for `EVENTS`.
SESSIONS_OF_USER = (
    "SELECT * FROM sessions WHERE user_id = $1 AND ($2 OR revoked_at IS NULL) "
    "ORDER BY created_at DESC, id DESC"
)
ALL_SESSIONS = (
    "SELECT * FROM sessions WHERE ($1 OR revoked_at IS NULL) ORDER BY created_at DESC, id DESC"
)
CODE_BY_HASH = "SELECT * FROM authorization_codes WHERE code_hash = $1"
KEYS = "SELECT * FROM signing_keys ORDER BY created_at, kid"

# Oldest first, by the filters given: (by type, since). Separate statements rather than
# `($1 IS NULL OR col = $1)`: once PostgreSQL switches a prepared statement to its
# generic plan, such a disjunction can no longer use the index.
EVENTS = {
    (False, False): "SELECT * FROM audit_events ORDER BY id LIMIT $1",
    (True, False): "SELECT * FROM audit_events WHERE type = $1 ORDER BY id LIMIT $2",
    (False, True): "SELECT * FROM audit_events WHERE at >= $1 ORDER BY id LIMIT $2",
    (True, True): "SELECT * FROM audit_events WHERE type = $1 AND at >= $2 ORDER BY id LIMIT $3",
}
# One session's events after an id (ids start at 1), by the index on session_id.
SESSION_EVENTS = "SELECT * FROM audit_events WHERE session_id = $1 AND id > $2 ORDER BY id LIMIT $3"

# Writes

DISABLE_USER = "UPDATE users SET enabled = false WHERE id = $1"
SET_PASSWORD = "UPDATE users SET password_hash = $1, password_changed_at = $2 WHERE id = $3"
AUTHENTICATED = "UPDATE sessions SET authenticated_at = $1 WHERE id = $2 AND user_id = $3"
SET_ROTATION = "UPDATE clients SET rotation = $2 WHERE id = $1"
DISABLE_CLIENT = "UPDATE clients SET enabled = false WHERE id = $1"

# The two-step rotation (`advance_generation`). A compare-and-swap rather than
# `SELECT ... FOR UPDATE` then `UPDATE`: one round trip, and no row lock held while the
# answer crosses the network. Of N concurrent presenters of generation p, exactly one
# UPDATE matches (PostgreSQL: the others wait for its row lock, re-check `generation =
# $2` on the new row version and change nothing; SQLite: one writer at a time).
# `revoked_at IS NULL` makes a committed revocation final. The columns set here carry
# no index, so on PostgreSQL the update is HOT and touches no index page.
ADVANCE = """
UPDATE sessions
SET generation = $2 + 1, rotated_at = $3, last_used_at = $3, idle_expires_at = $4,
    rotated_ip = $5
WHERE id = $1 AND generation = $2 AND revoked_at IS NULL
"""
# A use of a live token that does not rotate.
KEEP = """
UPDATE sessions SET last_used_at = $3, idle_expires_at = $4
WHERE id = $1 AND generation = $2 AND revoked_at IS NULL
"""
# Inside the state-changing transactions: $1 revoked_at, $2 reason, then the keys of
# `where`, one of its store's fixed clauses.
REVOKE_LIVE = (
    "UPDATE sessions SET revoked_at = $1, revoked_reason = $2 "
    "WHERE revoked_at IS NULL AND {where} RETURNING id, client_id"
)

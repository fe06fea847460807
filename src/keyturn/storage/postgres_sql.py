"""The statements only PostgreSQL runs: a row written and its audit event recorded in
one statement (data-modifying CTEs, in autocommit), and the purge that skips locked
rows. The texts both SQL stores share are in `storage.sql`; the rotation's own
statement (`postgres._ATTEMPTS`) stays beside the code that batches it.

Table and column names are this module's constants, never input.
"""

from __future__ import annotations

from keyturn.storage import rows
from keyturn.storage.sql import INSERT_EVENT, insert, placeholders

EVENT_ARGS = len(rows.EVENT_COLUMNS)


def _with_event(insert_row: str) -> str:
    """One statement that inserts a row and records its event: both commit, or neither
    (a unique violation records nothing). The event's values come first ($1..$11)."""
    return f"WITH written AS ({insert_row}) {INSERT_EVENT}"


ADD_USER = _with_event(insert("users", rows.USER_COLUMNS, EVENT_ARGS + 1))
ADD_CLIENT = _with_event(insert("clients", rows.CLIENT_COLUMNS, EVENT_ARGS + 1))
CREATE_SESSION = _with_event(insert("sessions", rows.SESSION_COLUMNS, EVENT_ARGS + 1))
_REVOKED_AT = f"${EVENT_ARGS + 1}"
_REASON = f"${EVENT_ARGS + 2}"
_FIRST_KEY = EVENT_ARGS + 3


def _revoke_and_record(where: str) -> str:
    """One statement that revokes the live sessions `where` selects and records the
    event, returning the revoked ids: the revocation and its audit row commit together,
    in autocommit, even though the request that decided them will fail. Parameters: the
    event ($1..$11), `revoked_at`, the reason, then `where`'s own from $14."""
    return f"""
WITH ended AS (
    UPDATE sessions SET revoked_at = {_REVOKED_AT}, revoked_reason = {_REASON}
    WHERE revoked_at IS NULL AND {where}
    RETURNING id, client_id
), recorded AS ({INSERT_EVENT})
SELECT id, client_id FROM ended
"""  # noqa: S608 - `where` is one of this module's fixed clauses


REVOKE_SESSION = _revoke_and_record(f"id = ${_FIRST_KEY}")
REVOKE_USER_SESSIONS = _revoke_and_record(
    f"user_id = ${_FIRST_KEY} AND id IS DISTINCT FROM ${_FIRST_KEY + 1}"
)

# The event's parameters as a SELECT list: outside VALUES, PostgreSQL would take the
# untyped parameters as text.
_EVENT_SELECT = ", ".join(
    f"${i}::{ {'at': 'timestamptz', 'generation': 'int8'}.get(c, 'text') }"
    for i, c in enumerate(rows.EVENT_COLUMNS, 1)
)

# A replay answered: the log written only if it is still as read (concurrent replays
# each count on the log the one before wrote), and its audit row with it. $1..$11 the
# event, then the session, the log as read, the log to write.
RECORD_REPLAY = f"""
WITH logged AS (
    UPDATE sessions SET replay_newest = ${EVENT_ARGS + 4}, replay_bits = ${EVENT_ARGS + 5}
    WHERE id = ${EVENT_ARGS + 1} AND replay_newest = ${EVENT_ARGS + 2}
      AND replay_bits = ${EVENT_ARGS + 3} AND revoked_at IS NULL
    RETURNING id
), recorded AS (
    INSERT INTO audit_events ({", ".join(rows.EVENT_COLUMNS)})
    SELECT {_EVENT_SELECT} WHERE EXISTS (SELECT 1 FROM logged)
)
SELECT count(*) FROM logged
"""  # noqa: S608 - fixed names

ADD_CODE = _with_event(insert("authorization_codes", rows.CODE_COLUMNS, EVENT_ARGS + 1))


def _redeem(with_session: bool) -> str:
    """One statement that uses the code if it is unused, opens its session (when there
    is one) and records the event, or does nothing at all. Parameters: the event
    ($1..$11), `used_at`, `session_id`, `code_hash`, then the session's columns. Of
    concurrent redemptions, the first takes the row lock; the others re-check `used_at
    IS NULL` on the row it committed, match nothing and insert nothing."""
    first = EVENT_ARGS + 4
    columns = ", ".join(rows.SESSION_COLUMNS)
    values = placeholders(len(rows.SESSION_COLUMNS), first)
    open_session = (
        f", opened AS (INSERT INTO sessions ({columns}) SELECT {values} FROM taken)"  # noqa: S608 - fixed names
        if with_session
        else ""
    )
    event_columns = ", ".join(rows.EVENT_COLUMNS)
    return f"""
WITH taken AS (
    UPDATE authorization_codes SET used_at = ${EVENT_ARGS + 1}, session_id = ${EVENT_ARGS + 2}
    WHERE code_hash = ${EVENT_ARGS + 3} AND used_at IS NULL
    RETURNING code_hash
){open_session}, recorded AS (
    INSERT INTO audit_events ({event_columns})
    SELECT {placeholders(EVENT_ARGS)} FROM taken
)
SELECT count(*) FROM taken
"""  # noqa: S608 - fixed names


REDEEM_WITH_SESSION = _redeem(with_session=True)
BURN_CODE = _redeem(with_session=False)

# FOR UPDATE SKIP LOCKED: a row being rotated or revoked right now is left for the next
# batch, so the purge never waits on, or deadlocks with, the hot path. Without an index
# on idle_expires_at (one would make every rotation a non-HOT update) this scans until
# it has a batch; the purge is a background chore, the rotation is not.
PURGE = """
WITH sessions_gone AS (
    DELETE FROM sessions WHERE id IN (
        SELECT id FROM sessions
        WHERE revoked_at < $1 OR idle_expires_at < $1 OR absolute_expires_at < $1
        LIMIT $2
        FOR UPDATE SKIP LOCKED
    )
    RETURNING 1
), codes_gone AS (
    DELETE FROM authorization_codes WHERE code_hash IN (
        SELECT code_hash FROM authorization_codes WHERE expires_at < $3
        LIMIT $2
        FOR UPDATE SKIP LOCKED
    )
    RETURNING 1
), events_gone AS (
    -- $4 NULL (no audit retention): `at < NULL` holds for no row.
    DELETE FROM audit_events WHERE id IN (
        SELECT id FROM audit_events WHERE at < $4
        ORDER BY at
        LIMIT $2
        FOR UPDATE SKIP LOCKED
    )
    RETURNING 1
)
SELECT (SELECT count(*) FROM sessions_gone) + (SELECT count(*) FROM codes_gone)
    + (SELECT count(*) FROM events_gone)
"""

"""The PostgreSQL compare-and-swap across OS processes: I1 at the store, below the engine.

4 processes × 4 tasks, each process with its own `PostgresStore` on one fresh schema,
released at once by a barrier. A test-only trigger logs every row version of `sessions`
with a sequence number and the server's clock, so the order PostgreSQL actually
committed the updates in is checked, not inferred from the callers' clocks.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from datetime import timedelta

import asyncpg
import pytest
from pg_cas_racer import ADVANCE, REVOKE, Racers, Trial

from keyturn.core.models import RevocationReason, Session
from keyturn.storage.postgres import open_postgres
from support.store_values import T0, a_client, a_session, a_user, an_event

PROCESSES = 4
TASKS = 4
TRIALS = 30

pytestmark = pytest.mark.slow


@dataclass(frozen=True)
class Race:
    url: str
    schema: str


_VERSION_LOG = """
CREATE TABLE {schema}.session_versions (
    seq bigserial PRIMARY KEY,
    session_id text NOT NULL,
    old_generation bigint NOT NULL,
    new_generation bigint NOT NULL,
    old_revoked boolean NOT NULL,
    new_revoked boolean NOT NULL,
    written_at timestamptz NOT NULL DEFAULT clock_timestamp()
);
CREATE FUNCTION {schema}.log_session_version() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO {schema}.session_versions
        (session_id, old_generation, new_generation, old_revoked, new_revoked)
    VALUES (NEW.id, OLD.generation, NEW.generation,
            OLD.revoked_at IS NOT NULL, NEW.revoked_at IS NOT NULL);
    RETURN NEW;
END $$;
CREATE TRIGGER log_versions AFTER UPDATE ON {schema}.sessions
    FOR EACH ROW EXECUTE FUNCTION {schema}.log_session_version();
"""


@pytest.fixture
def race(postgres_url: str, pg_schema: str) -> Race:
    async def install() -> None:
        conn = await asyncpg.connect(postgres_url, timeout=5)
        try:
            await conn.execute(_VERSION_LOG.format(schema=pg_schema))
        finally:
            await conn.close()

    asyncio.run(install())
    return Race(postgres_url, pg_schema)


def create_sessions(race: Race, generations: list[int]) -> list[Session]:
    """One live session per entry, at that generation (the user and client made once)."""

    async def create() -> list[Session]:
        store = await open_postgres(race.url, timeout=5, pool_size=1, schema=race.schema)
        try:
            user, client = (await store.list_users()), (await store.list_clients())
            if not user:
                user, client = [a_user()], [a_client()]
                await store.add_user(user[0], an_event())
                await store.add_client(client[0], an_event())
            made = [a_session(user[0], client[0], generation=g) for g in generations]
            for session in made:
                await store.create_session(session, an_event())
            return made
        finally:
            await store.close()

    return asyncio.run(create())


def read_back(race: Race, session_id: str) -> tuple[asyncpg.Record, list[asyncpg.Record]]:
    """The session row and its logged versions, in the order PostgreSQL wrote them."""

    async def read() -> tuple[asyncpg.Record, list[asyncpg.Record]]:
        conn = await asyncpg.connect(
            race.url, timeout=5, server_settings={"search_path": race.schema}
        )
        try:
            row = await conn.fetchrow("SELECT * FROM sessions WHERE id = $1", session_id)
            versions = await conn.fetch(
                "SELECT * FROM session_versions WHERE session_id = $1 ORDER BY seq", session_id
            )
        finally:
            await conn.close()
        assert row is not None
        return row, list(versions)

    return asyncio.run(read())


def test_sixteen_presenters_in_four_processes_advance_each_generation_exactly_once(
    race: Race,
) -> None:
    (session,) = create_sessions(race, [0])
    with Racers(race.url, race.schema, PROCESSES, TASKS) as racers:
        for generation in range(TRIALS):
            trial = Trial(session.id, generation, (ADVANCE,) * TASKS)
            results = [r for answer in racers.race([trial] * PROCESSES) for r in answer]
            assert len(results) == PROCESSES * TASKS
            winners = [won for _, won in results if won]
            assert len(winners) == 1, f"generation {generation}: {len(winners)} winners"
    row, versions = read_back(race, session.id)
    assert row["generation"] == TRIALS
    assert row["revoked_at"] is None
    # I1 in PostgreSQL's own order: one row version per generation, each one step.
    assert [(v["old_generation"], v["new_generation"]) for v in versions] == [
        (g, g + 1) for g in range(TRIALS)
    ]


def _actions(trial: int) -> list[tuple[str, ...]]:
    """Each process's actions: 2 revokers among the 16 tasks, placed differently in each
    trial, the other 14 advance."""
    revokers = {trial % 16, (trial * 7 + 5) % 16}
    return [
        tuple(REVOKE if p * TASKS + k in revokers else ADVANCE for k in range(TASKS))
        for p in range(PROCESSES)
    ]


def test_a_revocation_racing_rotations_is_final(race: Race) -> None:
    sessions = create_sessions(race, [t % 5 for t in range(TRIALS)])
    orders: set[str] = set()
    with Racers(race.url, race.schema, PROCESSES, TASKS) as racers:
        for trial, session in enumerate(sessions):
            g = session.generation
            plans = [Trial(session.id, g, actions) for actions in _actions(trial)]
            results = [r for answer in racers.race(plans) for r in answer]
            revoked = [won for action, won in results if action == REVOKE]
            advanced = [won for action, won in results if action == ADVANCE]
            assert revoked.count(True) == 1, (trial, results)  # exactly one revoker wins
            assert advanced.count(True) <= 1, (trial, results)  # and at most one rotation

            row, versions = read_back(race, session.id)
            assert row["revoked_at"] is not None
            assert row["generation"] in {g, g + 1}
            assert row["generation"] == g + advanced.count(True)
            # Nothing ever changed a revoked row: no rotation committed after the revocation.
            assert not any(v["old_revoked"] for v in versions), versions
            revocation = [v for v in versions if v["new_revoked"]]
            assert len(revocation) == 1
            if True in advanced:
                (rotation,) = [v for v in versions if v["new_generation"] != v["old_generation"]]
                # The rotation that won was written before the revocation, by the
                # server's order and clock (rotated_at <= revoked_at where it counts).
                assert rotation["seq"] < revocation[0]["seq"]
                assert rotation["written_at"] <= revocation[0]["written_at"]
                assert row["rotated_at"] is not None
                orders.add("rotation first")
            else:
                assert row["rotated_at"] is None
                orders.add("revocation first")
    # Informative, not a requirement of correctness: which orders the races produced.
    print(f"orders seen over {TRIALS} trials: {sorted(orders)}")


def test_the_log_trigger_sees_the_store_writes(race: Race) -> None:
    """The checks above rely on the trigger: prove it records a rotation and a revocation."""
    (session,) = create_sessions(race, [0])

    async def write() -> None:
        store = await open_postgres(race.url, timeout=5, pool_size=1, schema=race.schema)
        try:
            at = T0 + timedelta(minutes=1)
            assert await store.advance_generation(session.id, 0, at, at)
            assert await store.revoke_session(
                session.id, RevocationReason.ADMIN_REVOKED, at, an_event()
            )
        finally:
            await store.close()

    asyncio.run(write())
    _, versions = read_back(race, session.id)
    assert [
        (v["old_generation"], v["new_generation"], v["old_revoked"], v["new_revoked"])
        for v in versions
    ] == [(0, 1, False, False), (1, 1, False, True)]

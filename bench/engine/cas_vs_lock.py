"""Compare-and-swap versus a row lock for the rotation write, on PostgreSQL.

    .venv/bin/python -m bench.engine.cas_vs_lock

DESIGN.md leaves the choice to a measurement. Both advance one session's generation:

- cas:  one autocommit `UPDATE ... WHERE id = $1 AND generation = $2` (one round trip);
- lock: `BEGIN; SELECT ... FOR UPDATE; UPDATE ...; COMMIT` (four round trips, the row
  locked across the network in between).

C concurrent callers, each on its own session row of a preloaded table, for a fixed
time, through an asyncpg pool. Writes the table into docs/benchmarks.md.
"""

from __future__ import annotations

import asyncio
import statistics
import time
import uuid

import asyncpg

from bench.engine.report import replace_section
from bench.engine.rotations import PG, ROOT

ROWS = 100_000
SECONDS = 8.0


async def run(pool: asyncpg.Pool, mode: str, callers: int) -> tuple[float, float, float]:
    latencies: list[int] = []
    deadline = time.perf_counter() + SECONDS

    async def caller(row: int) -> None:
        generation = 0
        while time.perf_counter() < deadline:
            began = time.perf_counter_ns()
            async with pool.acquire() as conn:
                if mode == "cas":
                    status = await conn.execute(
                        "UPDATE s SET generation = $2 + 1, at = now() "
                        "WHERE id = $1 AND generation = $2",
                        row,
                        generation,
                    )
                    assert status == "UPDATE 1"
                else:
                    async with conn.transaction():
                        current = await conn.fetchval(
                            "SELECT generation FROM s WHERE id = $1 FOR UPDATE", row
                        )
                        await conn.execute(
                            "UPDATE s SET generation = $2 + 1, at = now() WHERE id = $1",
                            row,
                            current,
                        )
            generation += 1
            latencies.append(time.perf_counter_ns() - began)

    await asyncio.gather(*(caller(i * 997 % ROWS + 1) for i in range(callers)))
    latencies.sort()
    return (
        len(latencies) / SECONDS,
        statistics.median(latencies) / 1e6,
        latencies[int(0.99 * len(latencies))] / 1e6,
    )


async def main() -> None:
    schema = f"bench_{uuid.uuid4().hex[:8]}"
    admin = await asyncpg.connect(PG)
    await admin.execute(f"CREATE SCHEMA {schema}")
    await admin.execute(
        f"CREATE TABLE {schema}.s (id bigint PRIMARY KEY, generation bigint NOT NULL, "
        "at timestamptz) WITH (fillfactor = 80)"
    )
    await admin.execute(
        f"INSERT INTO {schema}.s SELECT i, 0, now() FROM generate_series(1, {ROWS}) i"
    )
    rows = []
    try:
        pool = await asyncpg.create_pool(
            PG, min_size=32, max_size=32, server_settings={"search_path": schema}
        )
        for callers in (16, 64):
            for mode in ("cas", "lock"):
                await admin.execute(f"UPDATE {schema}.s SET generation = 0")
                rate, p50, p99 = await run(pool, mode, callers)
                rows.append((mode, callers, rate, p50, p99))
                figures = f"writes/s={rate:8.0f} p50={p50:.2f}ms p99={p99:.2f}ms"
                print(f"{mode:5} callers={callers:3} {figures}")
        await pool.close()
    finally:
        await admin.execute(f"DROP SCHEMA {schema} CASCADE")
        await admin.close()
    lines = [
        "## Rotation write: compare-and-swap or row lock",
        "",
        "The generation write alone on PostgreSQL, each caller on its own row of 100,000, "
        f"{SECONDS:.0f} s per line, pool of 32 (`.venv/bin/python -m bench.engine.cas_vs_lock`).",
        "",
        "| write | callers | writes/s | p50 ms | p99 ms |",
        "| --- | ---: | ---: | ---: | ---: |",
    ]
    lines += [f"| {m} | {c} | {r:,.0f} | {a:.2f} | {b:.2f} |" for m, c, r, a, b in rows]
    best = {c: max((r for m, cc, r, _, _ in rows if cc == c)) for c in (16, 64)}
    winners = {c: next(m for m, cc, r, _, _ in rows if cc == c and r == best[c]) for c in best}
    lines += [
        "",
        f"Faster: {winners[16]} at 16 callers, {winners[64]} at 64. keyturn rotates with the "
        "compare-and-swap: one round trip, no lock held while the network carries the "
        "next statement, and a lost race is simply zero rows changed.",
    ]
    body = "\n".join(lines)
    replace_section(ROOT / "docs" / "benchmarks.md", "cas", body)
    print(body)


if __name__ == "__main__":
    asyncio.run(main())

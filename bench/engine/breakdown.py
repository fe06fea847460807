"""Where the time of one rotation goes, at one caller, on SQLite and PostgreSQL.

    .venv/bin/python -m bench.engine.breakdown

Real rotations through a `Refresher` built on the engine's own store and token
service, each wrapped so that every call the refresher makes is timed: the
refresh-token decode (checksum, HMAC), the store read (session and user), the
compare-and-swap write, the access-token signing, the refresh-token encode. What the
parts leave of each rotation's total is everything else (the pure decision, the
dataclasses, the event loop, the `await`s). Chains run on sessions drawn at random from
100,000 preloaded ones. Then, for each signing algorithm (ES256, EdDSA, RS256),
`Tokens.mint_access` is timed on its own and the whole rotation again. Writes
`bench/results/breakdown-<date>.json` and the `breakdown` section of docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import asyncio
import random
import statistics
import sys
import tempfile
import time
from collections import defaultdict
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, TypeVar, cast

from bench.engine.preload import Target, dispose, first_tokens, prepare, session_id
from bench.engine.report import machine, machine_line, replace_section, table, write_json
from bench.load.logins import CLIENT
from keyturn.core.ports import Store
from keyturn.service.client_auth import AuthMethod, ClientCredentials
from keyturn.service.ending import SessionEnding
from keyturn.service.engine import Engine
from keyturn.service.refresh import Refresher
from keyturn.service.tokens import Tokens
from keyturn.settings import Settings
from keyturn.wiring import SystemClock, open_engine

T = TypeVar("T")

SESSIONS = 100_000
CHAINS = 500
ALGORITHMS = ("ES256", "EdDSA", "RS256")

DECODE = "refresh-token decode (checksum, HMAC)"
STORE = (
    "store: read client, session and user, guarded compare-and-swap, committed "
    "(one statement on PostgreSQL)"
)
SIGN = "access-token signing"
ENCODE = "refresh-token encode"
ELSE = "everything else"
TOTAL = "whole rotation"
STEPS = (DECODE, STORE, SIGN, ENCODE)


class Stopwatch:
    """Nanoseconds per named step, for the rotation in progress."""

    def __init__(self) -> None:
        self.parts: dict[str, int] = defaultdict(int)

    async def time(self, step: str, work: Awaitable[T]) -> T:
        began = time.perf_counter_ns()
        try:
            return await work
        finally:
            self.parts[step] += time.perf_counter_ns() - began


class TimedStore:
    """The engine's store, with every call a rotation makes timed as one step: the
    one-statement attempt, and the read and compare-and-swap of a rotation that
    falls back to them (a first sight of the client, a lost race)."""

    def __init__(self, store: Store, watch: Stopwatch) -> None:
        self._store = store
        self._watch = watch

    def __getattr__(self, name: str) -> Any:
        return getattr(self._store, name)

    async def attempt_rotation(self, *args: Any) -> Any:
        return await self._watch.time(STORE, self._store.attempt_rotation(*args))

    async def get_presentation(self, *args: Any) -> Any:
        return await self._watch.time(STORE, self._store.get_presentation(*args))

    async def get_session_with_user(self, *args: Any) -> Any:
        return await self._watch.time(STORE, self._store.get_session_with_user(*args))

    async def advance_generation(self, *args: Any) -> bool:
        return await self._watch.time(STORE, self._store.advance_generation(*args))


class TimedTokens:
    """The engine's token service, with the codec and the signer timed."""

    def __init__(self, tokens: Tokens, watch: Stopwatch) -> None:
        self._tokens = tokens
        self._watch = watch

    def __getattr__(self, name: str) -> Any:
        return getattr(self._tokens, name)

    async def decode_refresh(self, *args: Any) -> Any:
        return await self._watch.time(DECODE, self._tokens.decode_refresh(*args))

    async def encode_refresh(self, *args: Any) -> str:
        return await self._watch.time(ENCODE, self._tokens.encode_refresh(*args))

    async def mint_access(self, **kwargs: Any) -> str:
        return await self._watch.time(SIGN, self._tokens.mint_access(**kwargs))


async def rotations(engine: Engine, chains: list[str], count: int) -> dict[str, list[int]]:
    """Rotate `count` times, round-robin over `chains` (updated in place); the
    nanoseconds of each step of each rotation."""
    watch = Stopwatch()
    store = cast(Store, TimedStore(engine.store, watch))
    clock = SystemClock()
    refresher = Refresher(
        store,
        cast(Tokens, TimedTokens(engine.tokens, watch)),
        clock,
        engine.config,
        engine.clients,
        SessionEnding(store, clock, engine.config),
    )
    credentials = ClientCredentials(CLIENT, None, AuthMethod.NONE)
    samples: dict[str, list[int]] = defaultdict(list)
    for n in range(count):
        k = n % len(chains)
        watch.parts.clear()
        began = time.perf_counter_ns()
        issued = await refresher.refresh_for(credentials, chains[k])
        total = time.perf_counter_ns() - began
        assert issued.refresh_token
        assert issued.refresh_token != chains[k]
        chains[k] = issued.refresh_token
        for step in STEPS:
            samples[step].append(watch.parts[step])
        samples[ELSE].append(total - sum(watch.parts[s] for s in STEPS))
        samples[TOTAL].append(total)
    return samples


async def median_us(work: Callable[[], Awaitable[object]], rounds: int) -> float:
    samples = []
    for _ in range(rounds):
        began = time.perf_counter_ns()
        await work()
        samples.append(time.perf_counter_ns() - began)
    return statistics.median(samples) / 1000


async def mint_median_us(engine: Engine, rounds: int = 500) -> float:
    """`Tokens.mint_access` alone, with the active signing key."""
    client = await engine.admin.get_client(CLIENT)
    now = datetime.now(UTC)
    return await median_us(
        lambda: engine.tokens.mint_access(
            subject="bench-user",
            client=client,
            scope="read write",
            session_id=session_id(1),
            issued_at=now,
            expires_at=now + timedelta(minutes=15),
        ),
        rounds,
    )


async def read_medians_us(
    engine: Engine, target: Target, rng: random.Random, rounds: int = 2000
) -> tuple[float, float]:
    """The store read of a random session as two queries (`get_session`, then
    `get_user`) and as the one join the rotation uses."""

    async def two_queries() -> None:
        sid = session_id(rng.randrange(1, target.sessions + 1))
        found = await engine.store.get_session(sid)
        assert found is not None
        await engine.store.get_user(found.user_id)

    async def one_query() -> None:
        sid = session_id(rng.randrange(1, target.sessions + 1))
        assert await engine.store.get_session_with_user(sid) is not None

    return await median_us(two_queries, rounds), await median_us(one_query, rounds)


async def with_algorithm(target: Target, alg: str) -> Engine:
    """An engine on `target` whose active signing key is of `alg`."""
    settings = target.settings(signing_alg=alg)
    engine = await open_engine(settings, schema=target.schema)
    ring = await engine.tokens.ring()
    if ring.signing is None or ring.signing.alg != alg:
        await engine.admin.rotate_keys()  # the next key (old algorithm) becomes active
        await engine.admin.rotate_keys()  # the next key made of `alg` becomes active
    ring = await engine.tokens.ring()
    assert ring.signing is not None
    assert ring.signing.alg == alg
    return engine


async def measure_store(target: Target, count: int, rng: random.Random) -> dict[str, Any]:
    picks = rng.sample(range(1, target.sessions + 1), CHAINS)
    out: dict[str, Any] = {"per_algorithm": {}}
    chains: list[str] = []
    for alg in ALGORITHMS:
        engine = await with_algorithm(target, alg)
        try:
            if not chains:
                chains = await first_tokens(engine, target, picks)
            await rotations(engine, chains, min(200, count))  # warm-up
            samples = await rotations(engine, chains, count if alg == "ES256" else count // 2)

            out["per_algorithm"][alg] = {
                "mint_access_median_us": await mint_median_us(engine),
                "rotation_mean_us": statistics.mean(samples[TOTAL]) / 1000,
                "rotation_median_us": statistics.median(samples[TOTAL]) / 1000,
            }
            if alg == "ES256":
                out["steps"] = {
                    step: {
                        "mean_us": statistics.mean(values) / 1000,
                        "median_us": statistics.median(values) / 1000,
                    }
                    for step, values in samples.items()
                }
                out["rotations"] = len(samples[TOTAL])

                two, one = await read_medians_us(engine, target, rng)
                out["read_two_queries_median_us"] = two
                out["read_one_query_median_us"] = one
        finally:
            await engine.close()
    return out


def section(facts: dict[str, str], figures: dict[str, dict[str, Any]], count: int) -> str:
    sq, pg = figures["sqlite"], figures["postgres"]

    def cell(store: dict[str, Any], step: str) -> list[str]:
        mean = store["steps"][step]["mean_us"]
        share = 100 * mean / store["steps"][TOTAL]["mean_us"]
        return [f"{mean:,.0f}", f"{store['steps'][step]['median_us']:,.0f}", f"{share:.0f} %"]

    steps = [
        [name, *cell(sq, step), *cell(pg, step)]
        for name, step in [
            (f"(a) {DECODE}", DECODE),
            (f"(b) {STORE}", STORE),
            (f"(c) {SIGN}, ES256", SIGN),
            (f"(d) {ENCODE}", ENCODE),
            (f"(e) {ELSE}", ELSE),
            (f"**{TOTAL}**", TOTAL),
        ]
    ]
    algs = [
        [
            alg,
            f"{sq['per_algorithm'][alg]['mint_access_median_us']:,.0f}",
            f"{pg['per_algorithm'][alg]['mint_access_median_us']:,.0f}",
            f"{sq['per_algorithm'][alg]['rotation_median_us']:,.0f}",
            f"{pg['per_algorithm'][alg]['rotation_median_us']:,.0f}",
        ]
        for alg in ALGORITHMS
    ]
    return "\n".join(
        [
            "## Cost of one rotation",
            "",
            f"{count:,} rotations at one caller through a `Refresher` whose store and token "
            "service time every call it makes, on chains of 500 sessions drawn at random "
            f"from {SESSIONS:,} preloaded ones; ES256 signing (the default). Microseconds "
            "per rotation: the means add up to the whole; (e) is what the timed parts leave "
            "(the pure decision, building values, the event loop). "
            "`.venv/bin/python -m bench.engine.breakdown`",
            "",
            machine_line(facts),
            "",
            *table(
                [
                    "step",
                    "SQLite mean µs",
                    "median µs",
                    "share",
                    "PostgreSQL mean µs",
                    "median µs",
                    "share",
                ],
                "lrrrrrr",
                steps,
            ),
            "",
            "A rotation is one store operation (`Store.attempt_rotation`): it reads the "
            "client, the session and its user, and advances the session only if it is "
            "what the rules rotate, in one statement on PostgreSQL, a lock-free read then "
            "one guarded `UPDATE` on SQLite. The read alone joins the session and its user; "
            "as two queries "
            f"(`get_session`, then `get_user`) it would take "
            f"{sq['read_two_queries_median_us']:,.0f} µs on SQLite and "
            f"{pg['read_two_queries_median_us']:,.0f} µs on PostgreSQL against "
            f"{sq['read_one_query_median_us']:,.0f} and {pg['read_one_query_median_us']:,.0f} "
            "µs for the join (medians, random sessions).",
            "",
            "By signing algorithm: `Tokens.mint_access` alone (median of 500), and the whole "
            "rotation (median):",
            "",
            *table(
                [
                    "algorithm",
                    "mint_access µs (SQLite run)",
                    "mint_access µs (PostgreSQL run)",
                    "rotation µs, SQLite",
                    "rotation µs, PostgreSQL",
                ],
                "lrrrr",
                algs,
            ),
        ]
    )


def main(argv: list[str]) -> dict[str, dict[str, Any]]:
    """Measure, print, write (unless `--no-write`); returns the figures per store."""
    parser = argparse.ArgumentParser(prog="python -m bench.engine.breakdown")
    parser.add_argument("--rotations", type=int, default=3000)
    parser.add_argument("--no-write", action="store_true")
    args = parser.parse_args(argv)
    rng = random.Random(7)
    figures: dict[str, dict[str, Any]] = {}
    pool = Settings.model_fields["db_pool_size"].default
    with tempfile.TemporaryDirectory(prefix="keyturn-breakdown-") as folder:
        for store in ("sqlite", "postgres"):
            target = prepare(store, SESSIONS, Path(folder), pool)
            try:
                figures[store] = asyncio.run(measure_store(target, args.rotations, rng))
            finally:
                dispose(target)
            steps = figures[store]["steps"]
            print(
                f"{store}: " + ", ".join(f"{k} {v['mean_us']:.0f} µs" for k, v in steps.items()),
                flush=True,
            )
    facts = machine()
    body = section(facts, figures, args.rotations)
    print(body)
    if not args.no_write:
        write_json(f"breakdown-{facts['date']}.json", {"machine": facts, "figures": figures})
        replace_section("breakdown", body)
    return figures


if __name__ == "__main__":
    main(sys.argv[1:])

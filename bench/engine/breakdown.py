"""Where the time of one rotation goes, step by step, at one caller.

    .venv/bin/python -m bench.engine.breakdown

Times each step of `Refresher.refresh` on its own, on SQLite and PostgreSQL, and the
whole rotation; the remainder is orchestration (the decision, dataclasses, asyncio).
Writes the table into docs/benchmarks.md.
"""

from __future__ import annotations

import asyncio
import statistics
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from tempfile import TemporaryDirectory

from bench.engine.report import replace_section
from bench.engine.rotations import ROOT, Target, dispose, prepare, session_id, settings
from keyturn.core.ids import SessionId
from keyturn.core.models import ClientType, GrantType
from keyturn.settings import Settings
from keyturn.wiring import open_engine

ROUNDS = 2000


async def timed(step: Callable[[], Awaitable[object]], rounds: int = ROUNDS) -> float:
    """Median microseconds of one call."""
    samples = []
    for _ in range(rounds):
        began = time.perf_counter_ns()
        await step()
        samples.append(time.perf_counter_ns() - began)
    return statistics.median(samples) / 1000


async def breakdown(target: Target) -> dict[str, float]:
    engine = await open_engine(settings(target))
    try:
        client = await engine.admin.get_client("bench")
        user = await engine.admin.user_named("bench")
        sid = session_id(1)
        session = await engine.store.get_session(SessionId(sid))
        assert session is not None
        token = await engine.tokens.encode_refresh(session, 0)
        now = datetime.now(UTC)
        later = now + timedelta(days=1)
        generation = [0]

        async def cas() -> bool:
            ok = await engine.store.advance_generation(session.id, generation[0], now, later)
            generation[0] += 1
            return ok

        parts = {
            "refresh-token decode (checksum, HMAC)": await timed(
                lambda: engine.tokens.decode_refresh(token)
            ),
            "read session and user (one query)": await timed(
                lambda: engine.store.get_session_with_user(session.id)
            ),
            "compare-and-swap write (commit)": await timed(cas),
            "refresh-token encode": await timed(lambda: engine.tokens.encode_refresh(session, 1)),
        }
        for alg in ("ES256", "EdDSA", "RS256"):
            engine_alg = await open_engine(
                Settings(**{**settings(target).model_dump(), "signing_alg": alg})
            )
            try:
                await engine_alg.admin.rotate_keys()  # make a key of this algorithm active
                await engine_alg.admin.rotate_keys()
                parts[f"access-token signing, {alg}"] = await timed(
                    lambda e=engine_alg: e.tokens.mint_access(
                        subject=user.id,
                        client=client,
                        scope="read write",
                        session_id=session.id,
                        issued_at=now,
                        expires_at=later,
                    ),
                    500,
                )
            finally:
                await engine_alg.close()
        await engine.admin.rotate_keys()  # back to ES256 for the whole rotation
        await engine.admin.rotate_keys()
        fresh = await engine.admin.add_client(
            "breakdown",
            ClientType.PUBLIC,
            grant_types={GrantType.PASSWORD, GrantType.REFRESH_TOKEN},
        )
        issued = await engine.login.login("bench", "a long bench passphrase", fresh.client)
        chain = [issued.refresh_token or ""]

        async def rotate() -> None:
            chain[0] = (await engine.refresher.refresh(chain[0], fresh.client)).refresh_token or ""

        parts["whole rotation (ES256)"] = await timed(rotate)
        return parts
    finally:
        await engine.close()


def main() -> None:
    table: dict[str, dict[str, float]] = {}
    with TemporaryDirectory(prefix="keyturn-breakdown-") as tmp:
        for store in ("sqlite", "postgres"):
            target = prepare(store, 10_000, Path(tmp))
            try:
                table[store] = asyncio.run(breakdown(target))
            finally:
                dispose(target)
    steps = list(table["sqlite"])
    lines = [
        "## Cost of one rotation",
        "",
        "Median microseconds per step at one caller, measured step by step with "
        "`.venv/bin/python -m bench.engine.breakdown`. The whole rotation runs the ES256 "
        "signer; the steps not listed (the pure decision, building the answer, asyncio "
        "scheduling) are the remainder.",
        "",
        "| step | SQLite µs | PostgreSQL µs |",
        "| --- | ---: | ---: |",
    ]
    for step in steps:
        lines.append(f"| {step} | {table['sqlite'][step]:,.0f} | {table['postgres'][step]:,.0f} |")
    for store in ("sqlite", "postgres"):
        t = table[store]
        steps_of_a_rotation = [k for k in t if not k.startswith(("whole", "access-token"))]
        listed = sum(t[k] for k in steps_of_a_rotation) + t["access-token signing, ES256"]
        t["remainder"] = t["whole rotation (ES256)"] - listed
    lines.append(
        f"| remainder (orchestration) | {table['sqlite']['remainder']:,.0f} "
        f"| {table['postgres']['remainder']:,.0f} |"
    )
    body = "\n".join(lines)
    print(body)
    replace_section(ROOT / "docs" / "benchmarks.md", "breakdown", body)


if __name__ == "__main__":
    main()

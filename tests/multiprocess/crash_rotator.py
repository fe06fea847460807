"""Rotates one refresh token in a loop, printing every token it receives, until killed.

    python crash_rotator.py DATABASE_URL SCHEMA|- FIRST_TOKEN

The crash test kills it with SIGKILL at random moments and checks that the last token
it printed still works, directly or as a replay inside the grace window.
"""

from __future__ import annotations

import asyncio
import sys

from support.engine import engine_with


async def rotate_forever(database_url: str, schema: str | None, token: str) -> None:
    engine = await engine_with(database_url, schema=schema, grace_seconds=10)
    client = await engine.admin.get_client("native")
    print("ready", flush=True)
    while True:
        issued = await engine.refresher.refresh(token, client)
        token = issued.refresh_token or ""
        print(token, flush=True)


if __name__ == "__main__":
    url, schema_arg, first = sys.argv[1:4]
    asyncio.run(rotate_forever(url, None if schema_arg == "-" else schema_arg, first))

"""`keyturn demo`: a narrated walk through rotation, replay and reuse on a fresh SQLite.

Everything it shows is real: a real database file, real keys, real tokens (shown
abbreviated: a full refresh token is never printed).
"""

from __future__ import annotations

import asyncio
import base64
import json
import secrets
import tempfile
from pathlib import Path
from typing import Any

import click

from keyturn.core.audit import EventType
from keyturn.core.errors import InvalidGrant
from keyturn.core.ids import SessionId
from keyturn.core.models import ClientType, Delivery, GrantType
from keyturn.service.engine import Engine
from keyturn.settings import Settings
from keyturn.wiring import migrate, open_engine

GRACE = 2


def short(token: str | None) -> str:
    """A refresh token abbreviated to its prefix and last characters: enough to tell
    tokens apart, never enough to use one."""
    text = token or ""
    return f"{text[:6]}…{text[-6:]}"


def jwt_parts(token: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """Header and claims of a JWT, decoded for display only (not verified)."""
    header, payload, _ = token.split(".")

    def part(text: str) -> dict[str, Any]:
        decoded: dict[str, Any] = json.loads(
            base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
        )
        return decoded

    return part(header), part(payload)


class Narrator:
    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self.step = 0

    def heading(self, title: str, why: str) -> None:
        self.step += 1
        click.echo()
        click.secho(f"{self.step}. {title}", bold=True)
        click.echo(f"   {why}")

    def say(self, text: str) -> None:
        click.echo(f"   {text}")

    async def show_session(self, sid: SessionId | None) -> None:
        assert sid is not None  # noqa: S101 - every grant in the demo opens a session
        session = await self.engine.store.get_session(sid)
        assert session is not None  # noqa: S101
        state = (
            f"revoked ({session.revoked_reason.value if session.revoked_reason else '?'})"
            if session.revoked
            else "live"
        )
        click.secho(
            f"   database: session {session.id[:8]}… generation={session.generation} {state}",
            fg="cyan",
        )


async def walk(database_url: str, db_file: Path) -> None:
    settings = Settings(
        database_url=database_url,
        grace_seconds=GRACE,
        access_token_ttl=30,
        session_idle_ttl=3600,
        session_max_ttl=86400,
        issuer="http://localhost:8000",
    )
    await asyncio.to_thread(migrate, settings)
    engine = await open_engine(settings)
    try:
        await narrate(Narrator(engine), engine)
    finally:
        await engine.close()
    click.echo()
    click.secho("What you saw", bold=True)
    click.echo(
        "   A refresh token is good for one rotation. Presented again within the grace\n"
        "   window, it gets the identical successor (parallel tabs and retries converge);\n"
        "   presented later, it is reuse: keyturn ends the whole session, so a thief's\n"
        "   copy and the victim's copy die together and the audit trail says why.\n"
        f"   The database is {db_file}; inspect it with keyturn --db {database_url} sessions"
        " list --all."
    )


async def narrate(n: Narrator, engine: Engine) -> None:
    n.heading("Set up", "A fresh SQLite file, a user and a first-party client.")
    password = secrets.token_urlsafe(12)
    await engine.admin.add_user("demo", password)
    created = await engine.admin.add_client(
        "demo-app",
        ClientType.PUBLIC,
        grant_types={GrantType.PASSWORD, GrantType.REFRESH_TOKEN},
        scope=frozenset({"read", "write"}),
        delivery=Delivery.BODY,
    )
    client = created.client
    n.say(f"user demo, password {password}; public client demo-app (scope read write)")

    n.heading("Log in", "Username and password open a session at generation 0.")
    tokens = await engine.login.login("demo", password, client)
    header, claims = jwt_parts(tokens.access_token)
    n.say(f"access token header: {json.dumps(header)}")
    n.say(f"access token claims: {json.dumps(claims)}")
    n.say(f"lifetime exp - iat = {claims['exp'] - claims['iat']} s")
    n.say(f"refresh token: {short(tokens.refresh_token)}")
    await n.show_session(tokens.session_id)

    n.heading("Rotate three times", "Each refresh token is exchanged for its successor.")
    history = [tokens]
    for _ in range(3):
        tokens = await engine.refresher.refresh(tokens.refresh_token or "", client)
        history.append(tokens)
        n.say(f"new refresh token {short(tokens.refresh_token)}")
        await n.show_session(tokens.session_id)

    n.heading(
        "Replay inside the grace window",
        "The previous token again, as a second tab or a retry would send it.",
    )
    parent = history[-2]
    again = await engine.refresher.refresh(parent.refresh_token or "", client)
    same = again.refresh_token == tokens.refresh_token
    n.say(f"successor {short(again.refresh_token)}; identical: {'yes' if same else 'NO'}")
    await n.show_session(again.session_id)

    n.heading(
        "Reuse after the grace window",
        f"Wait {GRACE + 0.5} s, then present an old token, as a thief would.",
    )
    await asyncio.sleep(GRACE + 0.5)
    try:
        await engine.refresher.refresh(parent.refresh_token or "", client)
        n.say("accepted (unexpected)")
    except InvalidGrant as refused:
        n.say(f"refused: {refused.code}")
    await n.show_session(tokens.session_id)
    events = await engine.store.list_events(type=EventType.REUSE_DETECTED.value)
    for recorded in events:
        e = recorded.event
        n.say(f"audit: {e.type.value} session={str(e.session_id)[:8]}… generation={e.generation}")
    try:
        await engine.refresher.refresh(tokens.refresh_token or "", client)
        n.say("latest token accepted (unexpected)")
    except InvalidGrant as refused:
        n.say(f"the latest token, too, is refused: {refused.code}")

    n.heading("Log out", "A new login, then logout: the session ends at once.")
    fresh = await engine.login.login("demo", password, client)
    await engine.sessions.logout(fresh.refresh_token or "", client)
    await n.show_session(fresh.session_id)


@click.command()
@click.option("--db", "database_url", metavar="URL", help="Where to keep the demo's database.")
def demo(database_url: str | None) -> None:
    """A narrated walk-through of rotation, replay and reuse on a fresh SQLite file."""
    if database_url is None:
        folder = Path(tempfile.mkdtemp(prefix="keyturn-demo-"))
        db_file = folder / "demo.db"
        database_url = f"sqlite:///{db_file}"
    else:
        db_file = Path(database_url.removeprefix("sqlite:///"))
    click.secho("keyturn demo", bold=True)
    asyncio.run(walk(database_url, db_file))

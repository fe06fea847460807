"""`keyturn sessions explain SID`: the operator's answer to "why was this user logged
out?" in one command, as text (last line: the end and its reason) and as JSON."""

from __future__ import annotations

import asyncio
import json

import pytest

from keyturn.core.errors import InvalidGrant
from keyturn.core.models import Device
from keyturn.service.context import RequestContext
from keyturn.wiring import open_engine
from support.cli import FULL_REFRESH_TOKEN, Cli, cli_fixture  # noqa: F401 - `cli`

PASSPHRASE = "a fine long passphrase"
PHONE = RequestContext(device=Device(user_agent="Phone/1.0", ip="198.51.100.7"))
THIEF = RequestContext(device=Device(user_agent="curl/8.0\x1b[31m", ip="203.0.113.66"))


def _seed(cli: Cli) -> None:
    cli.json("users", "add", "alice", "--password-stdin", stdin=PASSPHRASE + "\n")
    cli.json(
        "clients", "add", "phone", "--type", "public", "--grant", "password", "--grant",
        "refresh_token", "--scope", "read", "--kind", "native", "--replay-budget", "1/16",
    )  # fmt: skip


def _story(cli: Cli, *, thief: bool) -> str:
    """A login, three rotations and, with `thief`, a replay then a second replayed
    generation that ends the session. Returns the session id."""

    async def play() -> str:
        engine = await open_engine(cli.settings())
        try:
            client = await engine.admin.get_client("phone")
            issued = await engine.login.login("alice", PASSPHRASE, client, context=PHONE)
            tokens = [issued.refresh_token or ""]
            for _ in range(3):
                rotated = await engine.refresher.refresh(tokens[-1], client, None, PHONE)
                tokens.append(rotated.refresh_token or "")
            if thief:
                await engine.refresher.refresh(tokens[2], client, None, THIEF)
                rotated = await engine.refresher.refresh(tokens[-1], client, None, PHONE)
                tokens.append(rotated.refresh_token or "")
                with pytest.raises(InvalidGrant):
                    await engine.refresher.refresh(tokens[3], client, None, THIEF)
            return issued.session_id or ""
        finally:
            await engine.close()

    return asyncio.run(play())


def test_explain_ends_with_how_the_session_ended_and_why(cli: Cli) -> None:
    _seed(cli)
    sid = _story(cli, thief=True)
    result = cli("sessions", "explain", sid)
    assert result.exit_code == 0, result.output
    lines = result.stdout.strip().splitlines()
    assert lines[0].startswith(f"session {sid}")
    body = "\n".join(lines)
    for expected in (
        "login_succeeded",
        "0->3",
        "refresh_replayed",
        "replayed_concurrent",  # a replay within seconds of its rotation
        "3->4",
        "reuse_detected",
        "203.0.113.66",
    ):
        assert expected in body, expected
    assert "\x1b" not in result.stdout  # a hostile user agent cannot drive the terminal
    assert lines[-1].startswith("ended ")
    assert "at generation 4: replay_budget_exceeded" in lines[-1]
    assert "recorded by this session's event" in lines[-1]
    assert not FULL_REFRESH_TOKEN.search(result.stdout)


def test_explain_of_a_live_session_says_it_is_live(cli: Cli) -> None:
    _seed(cli)
    sid = _story(cli, thief=False)
    result = cli("sessions", "explain", sid)
    assert result.exit_code == 0, result.output
    last = result.stdout.strip().splitlines()[-1]
    assert last.startswith("live at generation 3, last used ")


def test_explain_json_has_every_entry_and_the_end(cli: Cli) -> None:
    _seed(cli)
    sid = _story(cli, thief=True)
    explained = cli.json("sessions", "explain", sid)
    assert explained["session"]["sid"] == sid
    assert "salt" not in explained["session"]
    assert [(e["kind"], e.get("reason"), e.get("generation")) for e in explained["entries"]] == [
        ("login_succeeded", None, 0),
        ("rotations", None, None),
        ("refresh_replayed", "replayed_concurrent", 2),
        ("rotations", None, None),
        ("reuse_detected", "replay_budget_exceeded", 3),
    ]
    first, second = explained["entries"][1], explained["entries"][3]
    assert (first["from_generation"], first["to_generation"], first["last_at"]) == (0, 3, None)
    assert (second["from_generation"], second["to_generation"], second["count"]) == (3, 4, 1)
    assert second["last_at"] is not None
    replay = explained["entries"][2]
    assert (replay["ip"], replay["live_generation"]) == ("203.0.113.66", 3)
    assert explained["end"] | {"event": None} == {
        "live": False,
        "source": "session_event",
        "at": explained["entries"][-1]["at"],
        "reason": "replay_budget_exceeded",
        "explanation": explained["end"]["explanation"],
        "generation": 4,
        "event": None,
    }
    assert explained["end"]["event"]["id"] == explained["entries"][-1]["id"]
    assert explained["complete"] is True
    assert not FULL_REFRESH_TOKEN.search(json.dumps(explained))


@pytest.mark.parametrize("sid", ["00000000-0000-4000-8000-000000000000", "nope", "' OR 1=1 --"])
def test_explain_of_an_unknown_session_is_a_one_line_not_found(cli: Cli, sid: str) -> None:
    result = cli("sessions", "explain", sid)
    assert result.exit_code == 1
    assert result.output == "keyturn: error: No such session.\n"
    revoked = cli("sessions", "revoke", sid)
    assert (revoked.exit_code, revoked.output) == (result.exit_code, result.output)

"""The `keyturn` command on SQLite and PostgreSQL: every command with `--json`, and
one-line errors for bad input."""

from __future__ import annotations

import asyncio
import base64
import json
import os
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from keyturn.crypto.access_tokens import verify
from keyturn.wiring import open_engine
from support.cli import FULL_REFRESH_TOKEN, SECRET, Cli, cli_fixture  # noqa: F401 - `cli`


def test_users_add_list_disable(cli: Cli) -> None:
    added = cli.json("users", "add", "alice", "--password-stdin", stdin="a fine long passphrase\n")
    assert set(added) == {"id", "username"}
    assert added["username"] == "alice"
    listed = cli.json("users", "list")
    assert [u["username"] for u in listed] == ["alice"]
    assert listed[0]["enabled"] is True
    disabled = cli.json("users", "disable", "alice")
    assert disabled == {"username": "alice", "sessions_ended": 0}
    assert cli.json("users", "list")[0]["enabled"] is False


def test_password_from_stdin_really_is_the_password(cli: Cli) -> None:
    cli.json("users", "add", "alice", "--password-stdin", stdin="a fine long passphrase\n")
    cli.json(
        "clients", "add", "app", "--type", "public", "--grant", "password", "--grant",
        "refresh_token", "--scope", "read",
    )  # fmt: skip

    async def login() -> str | None:
        engine = await open_engine(cli.settings())
        try:
            client = await engine.admin.get_client("app")
            issued = await engine.login.login("alice", "a fine long passphrase", client)
            return issued.session_id
        finally:
            await engine.close()

    assert asyncio.run(login())


@pytest.mark.parametrize(
    ("password", "message"), [("password1", "too common"), ("short", "at least 8")]
)
def test_weak_passwords_are_refused_in_one_line(cli: Cli, password: str, message: str) -> None:
    result = cli("users", "add", "bob", "--password-stdin", stdin=password + "\n")
    assert result.exit_code == 1
    assert message in result.output
    assert result.output.count("\n") == 1


def test_duplicate_and_unknown_users_are_one_line_errors(cli: Cli) -> None:
    cli.json("users", "add", "alice", "--password-stdin", stdin="a fine long passphrase\n")
    again = cli("users", "add", "alice", "--password-stdin", stdin="a fine long passphrase\n")
    assert again.exit_code == 1
    assert "exists" in again.output
    unknown = cli("users", "disable", "nobody")
    assert unknown.exit_code == 1
    assert unknown.output.strip() == "keyturn: error: No user named 'nobody'."


def test_confidential_secret_is_shown_once_and_never_listed(cli: Cli) -> None:
    created = cli.json("clients", "add", "conf", "--type", "confidential", "--scope", "read write")
    secret = created["client_secret"]
    assert created["client_id"] == "conf"
    assert secret.startswith("kt_cs_")
    public = cli.json("clients", "add", "spa", "--type", "public", "--delivery", "cookie")
    assert public == {"client_id": "spa", "client_secret": None}
    for output in (cli("clients", "list", "--json").output, cli("clients", "list").output):
        assert secret not in output
        assert "sha256$" not in output
    listed = cli.json("clients", "list")
    assert [c["client_id"] for c in listed] == ["conf", "spa"]
    assert listed[0]["scope"] == ["read", "write"]
    assert cli.json("clients", "disable", "spa") == {"client_id": "spa", "sessions_ended": 0}


def test_clients_carry_a_rotation_policy_set_by_kind_and_updated(cli: Cli) -> None:
    cli.json("clients", "add", "app", "--type", "public", "--kind", "native")
    cli.json(
        "clients", "add", "svc", "--type", "confidential", "--kind", "service",
        "--retry-window", "10m", "--replay-budget", "3/12",
    )  # fmt: skip
    listed = {c["client_id"]: c for c in cli.json("clients", "list")}
    assert listed["app"]["kind"] == "native"
    assert listed["app"]["retry_window"] is None  # the preset's: not pinned at registration
    assert (listed["svc"]["retry_window"], listed["svc"]["replay_budget"]) == (600, "3/12")
    updated = cli.json("clients", "update", "app", "--retry-window", "unbounded", "--no-rotate")
    assert (updated["kind"], updated["retry_window"], updated["rotate"]) == (
        "native",
        "unbounded",
        False,
    )
    again = cli.json("clients", "update", "app", "--replay-budget", "off")
    assert (again["retry_window"], again["replay_budget"]) == ("unbounded", "off")
    audit = cli.json("audit", "--type", "client_updated")
    assert [e["detail"] for e in audit] == [
        "kind=native retry_window=unbounded rotate=False",
        "kind=native retry_window=unbounded replay_budget=off rotate=False",
    ]
    assert cli("clients", "update", "nobody", "--rotate").exit_code != 0


@pytest.mark.parametrize(
    "args",
    [
        ("clients", "add", "x", "--type", "public", "--kind", "robot"),
        ("clients", "add", "x", "--type", "public", "--retry-window", "soon"),
        ("clients", "add", "x", "--type", "public", "--replay-budget", "9/4"),
        ("clients", "add", "x", "--type", "public", "--same-key-generations", "99"),
        ("clients", "add", "x", "--type", "bogus"),
        ("clients", "add", "x", "--type", "public", "--grant", "implicit"),
        ("users", "add"),
        ("sessions", "frobnicate"),
        ("audit", "--since", "yesterday-ish"),
    ],
)
def test_bad_arguments_are_one_line_and_exit_2(cli: Cli, args: tuple[str, ...]) -> None:
    result = cli.process(*args)
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1
    assert lines[0].startswith("keyturn: error: ")
    assert "Traceback" not in result.stderr


def test_unreachable_database_is_one_line_without_traceback(tmp_path: Path) -> None:
    env = {**os.environ, "KEYTURN_SECRET_KEY": SECRET, "KEYTURN_DB_TIMEOUT": "2"}
    started = time.monotonic()
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "keyturn",
            "--db",
            "postgresql://root:pw@127.0.0.1:1/test",
            "users",
            "list",
        ],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
        check=False,
    )
    assert result.returncode == 1
    assert result.stderr.strip() == (
        "keyturn: error: the database is unreachable (postgresql://root:***@127.0.0.1:1/test)"
    )
    assert time.monotonic() - started < 30


def test_invalid_setting_is_one_line(tmp_path: Path) -> None:
    runner = Cli(
        {"KEYTURN_GRACE_SECONDS": "-1", "KEYTURN_DATABASE_URL": f"sqlite:///{tmp_path}/x.db"}
    )
    result = runner("users", "list")
    assert result.exit_code == 2
    assert result.output.startswith("keyturn: error: invalid setting grace_seconds")
    assert result.output.count("\n") == 1


def test_md04_keys_rotate_shows_the_life_cycle_and_old_tokens_still_verify(cli: Cli) -> None:
    before = cli.json("keys", "list")
    signing = {k["state"]: k["kid"] for k in before if k["use"] == "sig"}
    assert set(signing) == {"active", "next"}
    cli.json("users", "add", "alice", "--password-stdin", stdin="a fine long passphrase\n")
    cli.json("clients", "add", "app", "--type", "public", "--scope", "read")

    async def mint_then_rotate() -> tuple[str, dict[str, Any]]:
        engine = await open_engine(cli.settings())
        try:
            client = await engine.admin.get_client("app")
            issued = await engine.login.login("alice", "a fine long passphrase", client)
            return issued.access_token, (await engine.tokens.jwks())
        finally:
            await engine.close()

    old_token, _ = asyncio.run(mint_then_rotate())
    rotated = cli.json("keys", "rotate")
    assert {k["state"] for k in rotated} == {"retired", "active", "next"}
    after = {k["kid"]: k["state"] for k in cli.json("keys", "list") if k["use"] == "sig"}
    assert after[signing["active"]] == "retired"
    assert after[signing["next"]] == "active"
    assert sorted(after.values()) == ["active", "next", "retired"]

    async def check() -> str:
        engine = await open_engine(cli.settings())
        try:
            ring = await engine.tokens.reload()
            claims = verify(
                old_token,
                ring.verification_keys,
                issuer=engine.config.issuer,
                audience=engine.config.default_audience,
                now=datetime.now(UTC),
            )
            client = await engine.admin.get_client("app")
            fresh = await engine.login.login("alice", "a fine long passphrase", client)
            header = json.loads(base64.urlsafe_b64decode(fresh.access_token.split(".")[0] + "=="))
            return str(claims["sub"]) + "|" + header["kid"]
        finally:
            await engine.close()

    _, new_kid = asyncio.run(check()).split("|")
    assert new_kid == signing["next"]


def test_sessions_list_revoke_audit_and_purge(cli: Cli) -> None:
    cli.json("users", "add", "alice", "--password-stdin", stdin="a fine long passphrase\n")
    cli.json("clients", "add", "app", "--type", "public", "--scope", "read")

    async def login() -> str:
        engine = await open_engine(cli.settings())
        try:
            client = await engine.admin.get_client("app")
            issued = await engine.login.login("alice", "a fine long passphrase", client)
            return issued.session_id or ""
        finally:
            await engine.close()

    sid = asyncio.run(login())
    live = cli.json("sessions", "list", "--user", "alice")
    assert [s["sid"] for s in live] == [sid]
    assert live[0]["generation"] == 0
    assert "salt" not in live[0]
    assert cli.json("sessions", "revoke", sid) == {"sid": sid, "revoked": True}
    assert cli.json("sessions", "list") == []
    ended = cli.json("sessions", "list", "--all")
    assert ended[0]["revoked_reason"] == "admin_revoked"
    logins = cli.json("audit", "--type", "login_succeeded", "--since", "1h")
    assert [e["session_id"] for e in logins] == [sid]
    assert cli.json("audit", "--since", "2000-01-01")
    assert cli.json("purge") == {"deleted": 0}
    unknown_type = cli("audit", "--type", "nonsense")
    assert unknown_type.exit_code == 1


def test_demo_runs_and_never_prints_a_whole_refresh_token(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "keyturn", "demo", "--db", f"sqlite:///{tmp_path / 'demo.db'}"],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        env={**os.environ, "KEYTURN_SECRET_KEY": SECRET},
    )
    assert result.returncode == 0, result.stderr
    assert "identical: yes" in result.stdout
    assert "reuse_detected" in result.stdout
    assert not FULL_REFRESH_TOKEN.search(result.stdout)

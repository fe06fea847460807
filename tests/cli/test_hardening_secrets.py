"""H-17 (master secret): through the real `keyturn` command.

With PostgreSQL every host must share one master secret: a secret created silently on
one host cannot open the keys another host sealed, so keyturn refuses to start without
one. Whatever its source, a short or predictable master secret is refused with a line
that says why and how to make a good one.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from pathlib import Path

import asyncpg
import pytest

STRONG = "Vq7pT2xLm9RkW4sZ-hN3cJ8yFb6GdE1u"  # 32 random characters
PASSPHRASE = "correct horse battery staple and more words"
HEX_64 = "c14e6b1bbbbf68ed8e6a8b5e7df02a99e5aee9a09d95dc6be76ea5de39e1ce2e"  # openssl rand -hex 32
GENERATED = "EwcSPgQurv0eR9TDPQq70BSoUCaW8o5mcrMT48n0VFc"  # secrets.token_urlsafe(32)


def keyturn(cwd: Path, env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("KEYTURN_")}
    return subprocess.run(
        [sys.executable, "-m", "keyturn", *args],
        cwd=cwd,
        env={**clean, **env},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def _one_line_error(result: subprocess.CompletedProcess[str]) -> str:
    assert result.returncode != 0, result.stdout
    assert "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("keyturn: error: ")
    return lines[0]


async def _key_count(url: str, schema: str) -> int:
    conn = await asyncpg.connect(url, timeout=5)
    try:
        count: int = await conn.fetchval(f"SELECT count(*) FROM {schema}.signing_keys")  # noqa: S608 - a schema name the fixture made
        return count
    finally:
        await conn.close()


@pytest.mark.parametrize("command", [("migrate",), ("serve", "--port", "1"), ("users", "list")])
def test_h17_postgres_without_secret_refuses_to_start(
    tmp_path: Path, postgres_url: str, pg_schema: str, command: tuple[str, ...]
) -> None:
    env = {"KEYTURN_DATABASE_URL": postgres_url, "KEYTURN_DB_SCHEMA": pg_schema}
    line = _one_line_error(keyturn(tmp_path, env, *command))
    assert "KEYTURN_SECRET_KEY" in line
    assert "KEYTURN_SECRET_KEY_FILE" in line
    # Nothing was made up on this host: no secret file, no keys sealed with one.
    assert list(tmp_path.iterdir()) == []
    assert asyncio.run(_key_count(postgres_url, pg_schema)) == 0


def test_h17_postgres_with_a_shared_secret_starts(
    tmp_path: Path, postgres_url: str, pg_schema: str
) -> None:
    secret_file = tmp_path / "master.secret"
    secret_file.write_text(STRONG + "\n")
    secret_file.chmod(0o600)
    env = {"KEYTURN_DATABASE_URL": postgres_url, "KEYTURN_DB_SCHEMA": pg_schema}
    by_file = keyturn(tmp_path, {**env, "KEYTURN_SECRET_KEY_FILE": str(secret_file)}, "migrate")
    assert by_file.returncode == 0, by_file.stderr
    by_value = keyturn(tmp_path, {**env, "KEYTURN_SECRET_KEY": STRONG}, "users", "list")
    assert by_value.returncode == 0, by_value.stderr


def test_h17_sqlite_without_secret_keeps_generating_one_beside_the_database(
    tmp_path: Path,
) -> None:
    folder = tmp_path / "data"
    env = {"KEYTURN_DATABASE_URL": f"sqlite:///{folder / 'keyturn.db'}"}
    result = keyturn(tmp_path, env, "migrate")
    assert result.returncode == 0, result.stderr
    secret = folder / "keyturn.secret"
    assert secret.stat().st_mode & 0o777 == 0o600
    again = keyturn(tmp_path, env, "users", "list")  # the generated secret passes the check
    assert again.returncode == 0, again.stderr


@pytest.mark.parametrize(
    "weak",
    [
        "a" * 40,
        "short-but-random-9f3K",
        "e2e-master-secret-" + "x" * 20,
        "password" * 5,
        "abcdefghijklmnopqrstuvwxyz0123456789",
        "sha256$" + "ab" * 32,
    ],
)
def test_h17_weak_secret_refused(tmp_path: Path, weak: str) -> None:
    env = {"KEYTURN_DATABASE_URL": f"sqlite:///{tmp_path / 'keyturn.db'}"}
    line = _one_line_error(keyturn(tmp_path, {**env, "KEYTURN_SECRET_KEY": weak}, "migrate"))
    assert "secret" in line
    assert "openssl rand" in line
    assert weak not in line  # the refusal never echoes the secret
    # The same rule for a secret kept in a file.
    secret_file = tmp_path / "weak.secret"
    secret_file.write_text(weak + "\n")
    secret_file.chmod(0o600)
    by_file = keyturn(tmp_path, {**env, "KEYTURN_SECRET_KEY_FILE": str(secret_file)}, "migrate")
    assert "openssl rand" in _one_line_error(by_file)


@pytest.mark.parametrize("good", [STRONG, PASSPHRASE, HEX_64, GENERATED])
def test_h17_strong_secret_and_long_passphrase_accepted(tmp_path: Path, good: str) -> None:
    env = {"KEYTURN_DATABASE_URL": f"sqlite:///{tmp_path / 'keyturn.db'}"}
    result = keyturn(tmp_path, {**env, "KEYTURN_SECRET_KEY": good}, "migrate")
    assert result.returncode == 0, result.stderr

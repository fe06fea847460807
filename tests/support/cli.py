"""The `keyturn` command run by a test: in this process through its real entry point
(CliRunner), or as a process, against one database."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from keyturn.cli.main import main
from keyturn.settings import Settings
from support.databases import create_pg_schema, drop_pg_schema

SECRET = "cli-master-secret-HqQbTDMq0GWF4cOgzr0078iufZvBlVLd"
FULL_REFRESH_TOKEN = re.compile(r"kt_rt_[A-Za-z0-9_-]{20,}")


@dataclass(frozen=True)
class Outcome:
    exit_code: int
    output: str
    stdout: str


class Cli:
    """Runs `keyturn` against one database, in process (CliRunner) or as a process."""

    def __init__(self, env: dict[str, str]) -> None:
        self.env = env

    def __call__(self, *args: str, stdin: str | None = None) -> Outcome:
        """Run `keyturn.cli.main.main`, the real entry point, in this process."""
        with CliRunner().isolation(input=stdin, env=self.env) as streams:
            try:
                main(list(args))
                code = 0
            except SystemExit as exited:
                code = int(exited.code or 0)
        stdout, stderr = streams[0].getvalue().decode(), streams[1].getvalue().decode()
        return Outcome(code, stdout + stderr, stdout)

    def json(self, *args: str, stdin: str | None = None) -> Any:
        result = self(*args, "--json", stdin=stdin)
        assert result.exit_code == 0, result.output
        return json.loads(result.stdout)

    def process(self, *args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
        env = {**os.environ, **self.env}
        return subprocess.run(
            [sys.executable, "-m", "keyturn", *args],
            input=stdin,
            capture_output=True,
            text=True,
            env=env,
            timeout=60,
            check=False,
        )

    def settings(self) -> Settings:
        return Settings(
            database_url=self.env["KEYTURN_DATABASE_URL"],
            secret_key=self.env["KEYTURN_SECRET_KEY"],
            db_schema=self.env.get("KEYTURN_DB_SCHEMA"),
        )


@pytest.fixture(name="cli", params=["sqlite", "postgres"])
def cli_fixture(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Cli]:
    env = {"KEYTURN_SECRET_KEY": SECRET}
    if request.param == "sqlite":
        env["KEYTURN_DATABASE_URL"] = f"sqlite:///{tmp_path / 'cli.db'}"
        runner = Cli(env)
        assert runner("migrate").exit_code == 0
        yield runner
        return
    pg = request.getfixturevalue("postgres_url")
    schema = create_pg_schema(pg)
    env |= {"KEYTURN_DATABASE_URL": pg, "KEYTURN_DB_SCHEMA": schema}
    runner = Cli(env)
    assert runner("migrate").exit_code == 0
    yield runner
    drop_pg_schema(pg, schema)

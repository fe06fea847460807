"""`python -m bench.sizing` still works at tiny sizes: every section serves keyturn,
drives it, reads what it measures and writes its JSON, with no request refused.

Behaviour only: no figure is compared with any speed. The benchmark reaches PostgreSQL
at `bench.engine.preload.PG`; the `postgres_url` fixture only says whether one is up."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[2]
BIG = 2000

pytestmark = pytest.mark.slow

SMOKE = [
    "--only", "cpu,pgwork,big,scale,pgbench",
    "--stores", "sqlite,postgres",
    "--seconds", "1",
    "--warmup", "0.5",
    "--concurrency", "8",
    "--login-users", "3",
    "--login-concurrency", "2",
    "--cc-concurrency", "4",
    "--pgwork-workers", "1",
    "--big-sessions", str(BIG),
    "--big-workers", "1",
    "--processes", "1",
    "--tokens", "40",
    "--pgbench-seconds", "1",
    "--quiet-wait", "0",
]  # fmt: skip


def _served(row: dict[str, Any]) -> None:
    """A load line: every request answered as asked, some measured, CPU accounted."""
    assert row["errors"] == {}, row
    assert row["rotations" if row["request"] == "rotation" else "granted"] > 0, row
    assert row["server_cpu_percent"] > 0, row
    assert "per_keyturn_cpu_second" in row
    assert "database_vcpu_per_1000_per_second" in row


def test_sizing_measures_every_section_and_writes_its_json(
    tmp_path: Path, postgres_url: str
) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "bench.sizing", *SMOKE, "--out", str(tmp_path)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    [written] = tmp_path.glob("sizing-*.json")
    payload = json.loads(written.read_text())
    assert payload["failures"] == {}
    assert payload["command"].startswith("python -m bench.sizing --only")
    argon2 = payload["keyturn_settings"]["argon2"]
    assert argon2["type"] == "id"
    assert {"memory_cost_kib", "time_cost", "parallelism"} <= argon2.keys()
    assert payload["keyturn_settings"]["db_pool_size"] > 0

    cpu = payload["cpu"]
    assert {(r["store"], r["request"]) for r in cpu} == {
        (store, request)
        for store in ("sqlite", "postgres")
        for request in ("rotation", "login", "client_credentials")
    }
    for row in cpu:
        _served(row)
        if row["store"] == "sqlite":
            assert row["database_cpu_percent"] is None

    [work] = payload["pgwork"]
    _served(work)
    assert work["workers"] == 1
    assert work["wal"]["delta"]["wal_records"] > 0
    assert work["database"]["delta"]["xact_commit"] > 0
    assert work["tables"]["sessions"]["delta"]["n_tup_upd"] > 0
    if work["statements"] is None:
        assert work["statements_missing"]
    else:
        assert work["statements"]["calls"] > 0

    big = payload["big"]
    assert big["sessions"] == BIG
    assert big["disk"]["bytes_per_session"]["total"] > 0
    [rotations] = big["rotations"]
    _served(rotations)
    assert big["user_list"]["sessions_per_user"] > 0
    assert big["full_list"]["outcome"] == "ok"
    assert big["full_list"]["rows"] == BIG
    purge = big["purge"]
    assert purge["ended_sessions"] == BIG // purge["every"]
    assert purge["outcome"] == "ok"
    assert purge["deleted"] >= purge["ended_sessions"]

    [scaled] = payload["scale"]
    _served(scaled)
    assert scaled["workers"] == 1

    assert [r["clients"] for r in payload["pgbench"]] == [16, 64]
    assert all(r["tps"] > 0 for r in payload["pgbench"])

"""`python -m bench.continuity --quick` still works: devices and thieves played against
keyturn's engine on SQLite and the peers' models, figures written where asked.

Behaviour only: no figure is compared with any threshold but what the rules make
certain (strict mode and single-use Keycloak agree move for move, since both end the
session on any second presentation)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.slow


def test_quick_continuity_plays_every_policy_and_writes_its_outputs(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "bench.continuity", "--quick", "--out", str(tmp_path)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    [written] = tmp_path.glob("continuity-*.json")
    payload = json.loads(written.read_text())
    policies = {p["policy"]: p for p in payload["policies"]}
    assert {"strict", "grace-10s", "grace-300s"} <= policies.keys()
    assert {"window-new-token-30s", "parent-until-child-used", "count-reuse-0", "none"} <= (
        policies.keys()
    )
    assert payload["meta"]["store"] == "sqlite"
    for policy in policies.values():
        assert policy["refreshes"] > 0
        assert policy["thieves"]["thefts"] == payload["meta"]["thefts"]
        assert policy["legit_device_days"] == payload["meta"]["legit_device_days"]
    strict, counted = policies["strict"], policies["count-reuse-0"]
    assert strict["legit_logouts"] == counted["legit_logouts"]
    for figure in ("undetected_share", "tokens_to_thief_mean", "thief_in_at_end_share"):
        assert strict["thieves"][figure] == counted["thieves"][figure]
    # The engine keeps microseconds, the model the simulated float seconds.
    assert strict["thieves"]["detection_seconds_median"] == pytest.approx(
        counted["thieves"]["detection_seconds_median"], abs=0.01
    )
    assert policies["none"]["thieves"]["undetected_share"] == 1.0
    assert (tmp_path / "rotation-policies.png").stat().st_size > 0
    doc = (tmp_path / "rotation-policies.md").read_text()
    assert doc.count("<!-- continuity:begin -->") == doc.count("<!-- continuity:end -->") == 1

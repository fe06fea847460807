"""`serve --demo` under a server whose access tokens live shorter than the demo's default
(H-17: a client's lifetime may not exceed the server's, and the demo is a client)."""

from __future__ import annotations

from pathlib import Path

import httpx

from support.engine import SECRET
from support.server import server_process


def test_h17_demo_on_a_server_with_shorter_access_tokens_starts(tmp_path: Path) -> None:
    env = {
        "KEYTURN_DATABASE_URL": f"sqlite:///{tmp_path / 'keyturn.db'}",
        "KEYTURN_SECRET_KEY": SECRET,
        "KEYTURN_ACCESS_TOKEN_TTL": "20",
    }
    with server_process(env, args=["--demo"], host_name="localhost") as (base, proc):
        assert httpx.get(f"{base}/healthz").status_code == 200
        assert proc.stdout is not None
        proc.terminate()  # so its stdout ends, and is read before server_process closes it
        banner = proc.stdout.read()
    # The banner names the lifetime the demo client got: the server's, not 30 s.
    assert "access tokens of 20 s" in banner, banner

"""`keyturn serve --demo` on one database, started again and again: the printed
password is always the one that works, nothing is registered twice, and a database set
up for another origin is refused with a message. Real processes, no browser."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import httpx
from browser_demo import demo_environment, printed_password

from support.server import free_port, server_process


def start_and_read_password(env: dict[str, str], port: int) -> tuple[str, str]:
    """Start the demo, sign in with the password it printed; returns the password and
    the status of a sign-in with it."""
    with server_process(env, args=["--demo"], host_name="localhost", port=port) as (base, proc):
        password = printed_password(proc)
        return password, str(sign_in(base, password).status_code)


def sign_in(base: str, password: str) -> httpx.Response:
    return httpx.post(
        f"{base}/auth/login",
        json={"username": "demo", "password": password, "client_id": "demo-web"},
        headers={"Origin": base, "X-Keyturn-CSRF": "1"},
        timeout=30,
    )


def test_a_second_start_prints_a_new_password_that_works(tmp_path: Path) -> None:
    env = demo_environment(f"sqlite:///{tmp_path / 'keyturn.db'}")
    port = free_port()
    first, first_status = start_and_read_password(env, port)
    second, second_status = start_and_read_password(env, port)
    assert first_status == second_status == "200"
    assert second != first
    assert len(second) >= 20
    with server_process(env, args=["--demo"], host_name="localhost", port=port) as (base, _):
        assert sign_in(base, first).status_code == 401


def test_a_database_set_up_for_another_origin_is_refused_with_a_message(
    tmp_path: Path,
) -> None:
    env = demo_environment(f"sqlite:///{tmp_path / 'keyturn.db'}")
    start_and_read_password(env, free_port())
    port = free_port()
    refused = subprocess.run(
        [sys.executable, "-m", "keyturn", "serve", "--demo", "--port", str(port)],
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert refused.returncode == 1
    assert "demo-web" in refused.stderr
    assert f"http://localhost:{port}" in refused.stderr


def test_the_demo_api_answers_for_a_live_session_only(tmp_path: Path) -> None:
    env = demo_environment(f"sqlite:///{tmp_path / 'keyturn.db'}")
    with server_process(env, args=["--demo"], host_name="localhost") as (base, proc):
        password = printed_password(proc)
        signed_in = sign_in(base, password)
        token = signed_in.json()["access_token"]
        cookie = signed_in.cookies["__Host-keyturn_rt_demo-web"]

        me = httpx.get(f"{base}/demo/api/me", headers={"Authorization": f"Bearer {token}"})
        assert me.status_code == 200
        assert me.json()["user"] == "demo"
        assert me.json()["client_id"] == "demo-web"
        assert me.headers["cache-control"] == "no-store"

        for headers in ({}, {"Authorization": "Bearer not-a-token"}):
            refused = httpx.get(f"{base}/demo/api/me", headers=headers)
            assert refused.status_code == 401
            assert 'error="invalid_token"' in refused.headers["www-authenticate"]

        logout = httpx.post(
            f"{base}/auth/logout",
            json={"client_id": "demo-web"},
            headers={
                "Origin": base,
                "X-Keyturn-CSRF": "1",
                "Cookie": f"__Host-keyturn_rt_demo-web={cookie}",
            },
        )
        assert logout.status_code == 204
        ended = httpx.get(f"{base}/demo/api/me", headers={"Authorization": f"Bearer {token}"})
        assert ended.status_code == 401
        assert ended.headers["www-authenticate"].startswith("Bearer ")

"""The server's log over real HTTP: one JSON object per line on stderr, an access line
per request by route template, and never a token, a client secret or a password,
even when a client puts one in the URL."""

from __future__ import annotations

import asyncio
import json
import uuid
from pathlib import Path
from typing import Any

import httpx

from keyturn.core.models import ClientType, Delivery, GrantType
from keyturn.settings import Settings
from keyturn.storage import upgrade
from keyturn.wiring import open_engine
from support.engine import PASSWORD
from support.server import running_server

SECRET = "logs-master-secret-H15THQ2hN2PA1_Ysqj91zUrGDlemODSs"
SCOPE = frozenset({"read"})
ACCESS_FIELDS = {"timestamp", "level", "logger", "message", "request_id", "method", "route"}


async def _seed(settings: Settings) -> dict[str, str]:
    """alice; `native` (public), `conf` (confidential, first-party login and refresh),
    `rs` (may introspect). Returns the client secrets."""
    engine = await open_engine(settings)
    try:
        await engine.admin.add_user("alice", PASSWORD)
        await engine.admin.add_client(
            "native",
            ClientType.PUBLIC,
            grant_types={GrantType.PASSWORD, GrantType.REFRESH_TOKEN},
            scope=SCOPE,
            delivery=Delivery.BODY,
        )
        conf = await engine.admin.add_client(
            "conf",
            ClientType.CONFIDENTIAL,
            grant_types={GrantType.PASSWORD, GrantType.REFRESH_TOKEN},
            scope=SCOPE,
        )
        rs = await engine.admin.add_client(
            "rs",
            ClientType.CONFIDENTIAL,
            grant_types={GrantType.CLIENT_CREDENTIALS},
            can_introspect=True,
        )
        return {"conf": conf.secret or "", "rs": rs.secret or ""}
    finally:
        await engine.close()


def _server_env(tmp_path: Path, **extra: str) -> tuple[dict[str, str], dict[str, str]]:
    url = f"sqlite:///{tmp_path / 'keyturn.db'}"
    upgrade(url)
    secrets = asyncio.run(_seed(Settings(database_url=url, secret_key=SECRET)))
    env = {"KEYTURN_SECRET_KEY": SECRET, "KEYTURN_DATABASE_URL": url, **extra}
    return env, secrets


def _post_json(base: str, path: str, body: dict[str, Any]) -> httpx.Response:
    return httpx.post(f"{base}{path}", json=body, timeout=30)


def _drive(base: str, secrets: dict[str, str]) -> list[str]:
    """Every flow that handles a secret, plus one in the URL. Returns what must not be
    logged."""
    seen = [PASSWORD, *secrets.values()]
    login = _post_json(
        base, "/auth/login", {"username": "alice", "password": PASSWORD, "client_id": "native"}
    )
    assert login.status_code == 200, login.text
    seen += [login.json()["refresh_token"], login.json()["access_token"]]
    refreshed = _post_json(
        base,
        "/auth/refresh",
        {"client_id": "native", "refresh_token": login.json()["refresh_token"]},
    )
    assert refreshed.status_code == 200, refreshed.text
    rt = refreshed.json()["refresh_token"]
    seen += [rt, refreshed.json()["access_token"]]

    conf_login = _post_json(
        base,
        "/auth/login",
        {
            "username": "alice",
            "password": PASSWORD,
            "client_id": "conf",
            "client_secret": secrets["conf"],
        },
    )
    assert conf_login.status_code == 200, conf_login.text
    seen += [conf_login.json()["refresh_token"], conf_login.json()["access_token"]]
    conf = ("conf", secrets["conf"])  # client_secret_basic
    token = httpx.post(
        f"{base}/oauth/token",
        data={"grant_type": "refresh_token", "refresh_token": conf_login.json()["refresh_token"]},
        auth=conf,
        timeout=30,
    )
    assert token.status_code == 200, token.text
    seen += [token.json()["refresh_token"], token.json()["access_token"]]
    introspected = httpx.post(
        f"{base}/oauth/introspect",
        data={"token": token.json()["access_token"]},
        auth=("rs", secrets["rs"]),
        timeout=30,
    )
    assert introspected.json()["active"] is True
    revoked = httpx.post(
        f"{base}/oauth/revoke",
        data={"token": token.json()["refresh_token"], "token_type_hint": "refresh_token"},
        auth=conf,
        timeout=30,
    )
    assert revoked.status_code == 200

    wrong = f"not-the-password-{uuid.uuid4().hex}"
    seen.append(wrong)
    failed = _post_json(
        base, "/auth/login", {"username": "alice", "password": wrong, "client_id": "native"}
    )
    assert failed.status_code == 401

    # Secrets in the URL: refused, or ignored, and never written down.
    in_url = httpx.post(
        f"{base}/auth/refresh",
        params={"refresh_token": rt, "client_id": "native"},
        json={"client_id": "native", "refresh_token": rt},
        timeout=30,
    )
    assert in_url.status_code == 400
    assert httpx.get(f"{base}/healthz", params={"refresh_token": rt, "password": PASSWORD})
    token_in_url = httpx.post(
        f"{base}/oauth/token",
        params={"grant_type": "refresh_token", "refresh_token": rt},
        auth=conf,
        timeout=30,
    )
    assert token_in_url.status_code == 400
    garbage = "kt_rt_" + uuid.uuid4().hex
    seen.append(garbage)
    refused = httpx.post(
        f"{base}/oauth/token",
        data={"grant_type": "refresh_token", "refresh_token": garbage},
        auth=conf,
        timeout=30,
    )
    assert refused.status_code == 400  # logged as a refusal, with its detail
    return seen


def _records(path: Path) -> tuple[list[str], list[dict[str, Any]]]:
    lines = [line for line in path.read_text().splitlines() if line]
    return lines, [json.loads(line) for line in lines]  # every line is one JSON object


def test_the_log_is_json_lines_with_an_access_line_per_request_and_no_secret(
    tmp_path: Path,
) -> None:
    env, secrets = _server_env(tmp_path, KEYTURN_LOG_LEVEL="DEBUG")
    log = tmp_path / "stderr.log"
    with running_server(env, log_path=log) as base:
        never = _drive(base, secrets)
    lines, records = _records(log)

    for line in lines:
        for secret in never:
            assert secret not in line
        assert "refresh_token=" not in line
        assert "kt_rt_" not in line
        assert "kt_cs_" not in line
    access = [r for r in records if r["logger"] == "keyturn.access"]
    for entry in access:
        assert set(entry) >= ACCESS_FIELDS
        assert entry["level"] == "INFO"
        assert entry["client_ip"] == "127.0.0.1"
        assert isinstance(entry["duration_ms"], int | float)
        assert entry["message"].startswith(f"{entry['method']} {entry['route']} {entry['status']}")
        assert "?" not in entry["message"]
    answered = {(r["method"], r["route"], r["status"]) for r in access}
    assert {
        ("POST", "/auth/login", 200),
        ("POST", "/auth/refresh", 200),
        ("POST", "/oauth/token", 200),
        ("POST", "/oauth/introspect", 200),
        ("POST", "/oauth/revoke", 200),
        ("POST", "/auth/login", 401),
        ("POST", "/auth/refresh", 400),
        ("POST", "/oauth/token", 400),
        ("GET", "/healthz", 200),
    } <= answered
    assert len({r["request_id"] for r in access}) == len(access)
    # A refusal logged while serving a request carries that request's fields.
    refusals = [r for r in records if r["message"].startswith("refused invalid_grant")]
    assert refusals
    assert all(r["route"] == "/oauth/token" and r["request_id"] for r in refusals)


def test_the_text_format_is_redacted_too(tmp_path: Path) -> None:
    env, secrets = _server_env(tmp_path, KEYTURN_LOG_FORMAT="text", KEYTURN_LOG_LEVEL="DEBUG")
    log = tmp_path / "stderr.log"
    with running_server(env, log_path=log) as base:
        never = _drive(base, secrets)
    text = log.read_text()
    assert " INFO keyturn.access POST /auth/login 200 " in text
    for secret in never:
        assert secret not in text

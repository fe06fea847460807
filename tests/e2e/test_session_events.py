"""GET /auth/sessions/{sid}/events over real HTTP: a user reads the story of their own
sessions, paged; another user's session is answered exactly as an unknown one."""

from __future__ import annotations

import base64
import json
import time
from typing import Any

import httpx
import pytest

from conftest import Server
from support import dpop_proofs
from support.engine import PASSWORD
from support.token_endpoint import assert_error

PHONE = "Phone/1.0 (e2e)"
UNKNOWN = "00000000-0000-4000-8000-000000000000"
EVENT_KEYS = {"at", "kind", "reason", "generation", "ip", "user_agent", "device_name"}


def login(server: Server, username: str = "alice", client_id: str = "native") -> dict[str, Any]:
    body = {"username": username, "password": PASSWORD, "client_id": client_id}
    response = httpx.post(
        f"{server.base}/auth/login", json=body, headers={"User-Agent": PHONE}, timeout=30
    )
    assert response.status_code == 200, response.text
    answer: dict[str, Any] = response.json()
    return answer


def refresh(server: Server, token: str) -> httpx.Response:
    return httpx.post(
        f"{server.base}/auth/refresh",
        json={"client_id": "native", "refresh_token": token},
        headers={"User-Agent": PHONE},
        timeout=30,
    )


def sid_of(server: Server, access_token: str) -> str:
    listed = httpx.get(f"{server.base}/auth/sessions", headers=bearer(access_token)).json()
    return str(next(s["sid"] for s in listed if s["current"]))


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def events(server: Server, sid: str, token: str | None, **query: str | int) -> httpx.Response:
    headers = bearer(token) if token is not None else {}
    return httpx.get(
        f"{server.base}/auth/sessions/{sid}/events", headers=headers, params=query, timeout=30
    )


def test_the_user_sees_their_sessions_login_and_replays(server: Server) -> None:
    tokens = login(server)
    first = refresh(server, tokens["refresh_token"]).json()["refresh_token"]
    refresh(server, first)
    # The predecessor again, at once: a second tab, answered with the live token.
    assert refresh(server, first).status_code == 200
    sid = sid_of(server, tokens["access_token"])
    response = events(server, sid, tokens["access_token"])
    assert response.status_code == 200, response.text
    assert response.headers["cache-control"] == "no-store"
    body = response.json()
    assert set(body) == {
        "sid", "client_id", "created_at", "live", "ended_at", "ended_reason", "events",
        "next_cursor",
    }  # fmt: skip
    assert (body["sid"], body["client_id"], body["live"]) == (sid, "native", True)
    assert (body["ended_at"], body["ended_reason"], body["next_cursor"]) == (None, None, None)
    assert [(e["kind"], e["reason"], e["generation"]) for e in body["events"]] == [
        ("login_succeeded", None, 0),
        ("refresh_replayed", "replayed_concurrent", 1),
    ]
    for event in body["events"]:
        assert set(event) == EVENT_KEYS
        assert (event["ip"], event["user_agent"]) == ("127.0.0.1", PHONE)
    assert "kt_rt_" not in response.text
    assert tokens["access_token"] not in response.text
    assert "dpop" not in response.text.lower()


def test_another_users_session_is_answered_exactly_as_an_unknown_one(server: Server) -> None:
    alice = login(server, "alice")
    alice_sid = sid_of(server, alice["access_token"])
    bob = login(server, "bob")["access_token"]
    answers = [
        events(server, sid, bob)
        for sid in (alice_sid, UNKNOWN, "not-a-session", "x" * 65, "%00", "%ED%A0%80", "'--")
    ]
    for answer in answers:
        assert_error(answer, 404, "not_found")
    assert {(a.status_code, a.content, a.headers["content-type"]) for a in answers} == {
        (answers[0].status_code, answers[0].content, answers[0].headers["content-type"])
    }
    # And alice, asking for her own, is answered.
    assert events(server, alice_sid, alice["access_token"]).status_code == 200


def test_no_token_or_a_bad_one_is_refused_as_the_sessions_list_refuses_it(server: Server) -> None:
    alice = login(server)
    sid = sid_of(server, alice["access_token"])
    for token in (None, "not-a-token", alice["refresh_token"]):
        mine = events(server, sid, token)
        theirs = httpx.get(
            f"{server.base}/auth/sessions", headers=bearer(token) if token else {}, timeout=30
        )
        assert_error(mine, 401, "invalid_token")
        assert (mine.status_code, mine.content) == (theirs.status_code, theirs.content)
        assert mine.headers.get("www-authenticate") == theirs.headers.get("www-authenticate")


def test_tokens_of_other_clients_are_answered_as_the_sessions_list_answers_them(
    server: Server,
) -> None:
    # A client's own token (no session, another audience) and a confidential client's
    # token for the user (audience "api"): this endpoint authenticates exactly as
    # GET /auth/sessions does.
    machine = httpx.post(
        f"{server.base}/oauth/token",
        data={"grant_type": "client_credentials"},
        auth=("cc", server.secrets["cc"]),
        timeout=30,
    ).json()["access_token"]
    conf = httpx.post(
        f"{server.base}/auth/login",
        json={
            "username": "alice",
            "password": PASSWORD,
            "client_id": "conf",
            "client_secret": server.secrets["conf"],
        },
        timeout=30,
    ).json()
    conf_sid = _sid_claim(conf["access_token"])
    for token in (machine, conf["access_token"]):
        mine = events(server, conf_sid, token)
        theirs = httpx.get(f"{server.base}/auth/sessions", headers=bearer(token), timeout=30)
        assert mine.status_code == theirs.status_code, (mine.text, theirs.text)
        if theirs.status_code != 200:
            assert mine.content == theirs.content
    assert events(server, conf_sid, machine).status_code == 401


def _sid_claim(jwt: str) -> str:
    payload = jwt.split(".")[1]
    claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    return str(claims["sid"])


def test_events_come_in_pages_that_join_up(server: Server) -> None:
    tokens = login(server)
    first = refresh(server, tokens["refresh_token"]).json()["refresh_token"]
    refresh(server, first)
    for _ in range(4):  # four presentations of one predecessor: four replays recorded
        assert refresh(server, first).status_code == 200
    sid = sid_of(server, tokens["access_token"])
    whole = events(server, sid, tokens["access_token"], limit=200).json()["events"]
    assert len(whole) == 5
    pages, cursor = [], None
    while True:
        query: dict[str, str | int] = {"limit": 2}
        if cursor is not None:
            query["cursor"] = cursor
        page = events(server, sid, tokens["access_token"], **query).json()
        pages.append(page["events"])
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert [len(p) for p in pages] == [2, 2, 1]
    assert [e for p in pages for e in p] == whole


@pytest.mark.parametrize(
    "query",
    [
        {"limit": 0},
        {"limit": 201},
        {"limit": "ten"},
        {"cursor": "-1"},
        {"cursor": "abc"},
        {"cursor": str(2**63)},
        {"cursor": "9" * 40},
    ],
)
def test_a_bad_limit_or_cursor_is_an_invalid_request(
    server: Server, query: dict[str, str | int]
) -> None:
    tokens = login(server)
    sid = sid_of(server, tokens["access_token"])
    assert_error(events(server, sid, tokens["access_token"], **query), 400, "invalid_request")


def test_the_events_of_a_session_after_its_logout(server: Server) -> None:
    this, other = login(server), login(server)
    other_sid = sid_of(server, other["access_token"])
    logout = httpx.post(
        f"{server.base}/auth/logout",
        json={"client_id": "native", "refresh_token": other["refresh_token"]},
        headers={"User-Agent": PHONE},
        timeout=30,
    )
    assert logout.status_code == 204
    # The ended session's own token no longer reads anything; another session's does.
    assert_error(events(server, other_sid, other["access_token"]), 401, "invalid_token")
    body = events(server, other_sid, this["access_token"]).json()
    assert (body["live"], body["ended_reason"]) == (False, "logout")
    assert body["ended_at"] is not None
    assert [(e["kind"], e["reason"]) for e in body["events"]] == [
        ("login_succeeded", None),
        ("session_revoked", "logout"),
    ]


def test_a_stolen_token_ends_the_session_and_the_user_sees_why(server: Server) -> None:
    this, victim = login(server), login(server)
    victim_sid = sid_of(server, victim["access_token"])
    stolen = victim["refresh_token"]
    latest = refresh(server, stolen).json()["refresh_token"]
    refresh(server, latest)
    # Two generations behind: no retry explains it, the session ends.
    assert_error(refresh(server, stolen), 400, "invalid_grant")
    body = events(server, victim_sid, this["access_token"]).json()
    assert (body["live"], body["ended_reason"]) == (False, "reuse_outside_window")
    assert [(e["kind"], e["reason"], e["generation"]) for e in body["events"]] == [
        ("login_succeeded", None, 0),
        ("reuse_detected", "reuse_outside_window", 0),
    ]


def test_a_dpop_bound_token_is_answered_as_the_sessions_list_answers_it(server: Server) -> None:
    key = dpop_proofs.Client()
    nonce: str | None = None

    def send(method: str, path: str, **kwargs: Any) -> httpx.Response:
        """With a fresh proof; once more with the nonce of a challenge (RFC 9449 §8, §9)."""
        nonlocal nonce
        headers = kwargs.pop("headers", {})
        extra = kwargs.pop("proof_claims", {})
        for _ in range(2):
            proof = key.proof(
                htm=method, htu=server.base + path, iat=int(time.time()), nonce=nonce, **extra
            )
            response = httpx.request(
                method, server.base + path, headers={**headers, "DPoP": proof}, timeout=30, **kwargs
            )
            nonce = response.headers.get("dpop-nonce", nonce)
            if "use_dpop_nonce" not in response.text:
                break
        return response

    logged_in = send(
        "POST",
        "/auth/login",
        json={"username": "alice", "password": PASSWORD, "client_id": "native"},
    )
    assert logged_in.status_code == 200, logged_in.text
    assert logged_in.json()["token_type"] == "DPoP"
    access = logged_in.json()["access_token"]
    path = f"/auth/sessions/{_sid_claim(access)}/events"
    # A bound token sent as a bearer token is worth nothing here (RFC 9449 §7.1), as at
    # GET /auth/sessions.
    as_bearer = httpx.get(server.base + path, headers=bearer(access), timeout=30)
    listed = httpx.get(f"{server.base}/auth/sessions", headers=bearer(access), timeout=30)
    assert_error(as_bearer, 401, "invalid_token")
    assert (as_bearer.status_code, as_bearer.content) == (listed.status_code, listed.content)
    answered = send(
        "GET",
        path,
        headers={"Authorization": f"DPoP {access}"},
        proof_claims={"ath": dpop_proofs.ath(access)},
    )
    assert answered.status_code == 200, answered.text
    assert [e["kind"] for e in answered.json()["events"]] == ["login_succeeded"]
    assert key.jkt not in answered.text  # the user is not shown the key's thumbprint

"""The two token-state oracles, closed, over real HTTP on every store.

A thief holding a copy of a public client's refresh token wants the moment its owner
rotates it, to replay just after. It used to learn it from `POST /oauth/introspect`
(asked as the public client, by its `client_id` alone: `active` flipped from true to
false) and from the public `/metrics` (`keyturn_refresh_rotations_total` moved). Now a
public client gets one refusal whatever the token, a confidential client learns nothing
about another client's refresh token, and `/metrics` is closed unless configured open.
Every comparison is of the whole answer: status, body and headers (but `Date`).
"""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from conftest import Server, start_server
from support.token_endpoint import refresh

METRICS_TOKEN = "oracle-metrics-token-0123456789"
INACTIVE = {"active": False}
CLIENT_REFUSAL = {"error": "invalid_client", "error_description": "Client authentication failed."}
METRICS_REFUSAL = {
    "error": "invalid_token",
    "error_description": "The metrics endpoint needs its bearer token.",
}

Answer = tuple[int, bytes, tuple[tuple[str, str], ...]]


def seen(response: httpx.Response) -> Answer:
    """Everything a caller can observe of an answer, but the clock."""
    headers = tuple(sorted((k, v) for k, v in response.headers.items() if k != "date"))
    return response.status_code, response.content, headers


def introspect(server: Server, data: dict[str, str], **kwargs: Any) -> httpx.Response:
    return httpx.post(f"{server.base}/oauth/introspect", data=data, timeout=30, **kwargs)


def as_public(server: Server, token: str, client_id: str = "native") -> httpx.Response:
    return introspect(server, {"token": token, "client_id": client_id})


def as_confidential(server: Server, token: str, client_id: str = "conf2") -> httpx.Response:
    return introspect(server, {"token": token}, auth=(client_id, server.secrets[client_id]))


def metrics(base: str, authorization: str | None = None) -> httpx.Response:
    headers = {"Authorization": authorization} if authorization is not None else {}
    return httpx.get(f"{base}/metrics", headers=headers, timeout=30)


def rotated_pair(server: Server, client_id: str = "native", **auth: str) -> tuple[str, str]:
    """(a rotated refresh token, its live successor) of one new session."""
    parent = server.rt0(client_id)
    answer = refresh(server, parent, client_id=client_id, **auth)
    assert answer.status_code == 200, answer.text
    return parent, answer.json()["refresh_token"]


GARBAGE = ["garbage", "kt_rt_" + "A" * 79, "a.b.c", "eyJhbGciOiJub25lIn0.eyJzdWIiOiJ4In0."]


@pytest.fixture(scope="module", params=["sqlite", "postgres"])
def public_metrics(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Server]:
    """A server whose operator made `/metrics` public on purpose."""
    yield from start_server(request, tmp_path_factory, {"KEYTURN_METRICS_PUBLIC": "true"})


@pytest.fixture(scope="module", params=["sqlite", "postgres"])
def token_metrics(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Server]:
    """A server whose `/metrics` needs `METRICS_TOKEN`."""
    yield from start_server(request, tmp_path_factory, {"KEYTURN_METRICS_TOKEN": METRICS_TOKEN})


# Introspection by a public client


def test_a_public_client_gets_one_refusal_for_its_live_and_rotated_tokens_and_garbage(
    server: Server,
) -> None:
    rotated, live = rotated_pair(server)
    _, access = server.tokens("native")
    others = [server.rt0("spa"), server.rt0("conf")]
    answers = {
        token[:24]: seen(as_public(server, token))
        for token in [live, rotated, access, *others, *GARBAGE]
    }
    answers["no token"] = seen(introspect(server, {"client_id": "native"}))
    # The same refusal as a client that does not exist: an unauthenticated caller.
    answers["unknown client"] = seen(as_public(server, live, client_id="ghost"))
    assert len(set(answers.values())) == 1, answers
    status, body, headers = answers["no token"]
    assert status == 401
    assert httpx.Response(status, content=body).json() == CLIENT_REFUSAL
    assert dict(headers)["cache-control"] == "no-store"
    # The refusal left the token alone: the owner still rotates it.
    assert refresh(server, live).status_code == 200


def test_a_cookie_delivery_public_client_is_refused_too(server: Server) -> None:
    token = server.rt0("spa")
    assert seen(as_public(server, token, "spa")) == seen(as_public(server, "garbage", "spa"))
    assert as_public(server, token, "spa").json() == CLIENT_REFUSAL


def test_a_public_client_still_revokes_its_own_refresh_token(server: Server) -> None:
    token = server.rt0("native")
    answer = httpx.post(
        f"{server.base}/oauth/revoke", data={"token": token, "client_id": "native"}, timeout=30
    )
    assert answer.status_code == 200
    assert refresh(server, token).json()["error"] == "invalid_grant"


def test_introspection_metadata_does_not_offer_public_clients(server: Server) -> None:
    meta = httpx.get(f"{server.base}/.well-known/oauth-authorization-server").json()
    assert meta["introspection_endpoint_auth_methods_supported"] == [
        "client_secret_basic",
        "client_secret_post",
    ]
    assert "none" in meta["revocation_endpoint_auth_methods_supported"]


# Introspection by a confidential client


def test_a_confidential_client_gets_exactly_inactive_for_another_clients_live_refresh_token(
    server: Server,
) -> None:
    rotated, live = rotated_pair(server)
    foreign = as_confidential(server, live)
    assert foreign.status_code == 200
    assert foreign.json() == INACTIVE
    expected = seen(as_confidential(server, "garbage"))
    for token in [live, rotated, *GARBAGE]:
        assert seen(as_confidential(server, token)) == expected, token
    # Asked with client_secret_post instead of Basic: the same.
    post = introspect(
        server, {"token": live, "client_id": "conf2", "client_secret": server.secrets["conf2"]}
    )
    assert seen(post) == seen(
        introspect(
            server,
            {"token": "garbage", "client_id": "conf2", "client_secret": server.secrets["conf2"]},
        )
    )


def test_a_confidential_client_gets_inactive_for_another_clients_access_token(
    server: Server,
) -> None:
    _, access = server.tokens("conf")
    assert seen(as_confidential(server, access)) == seen(as_confidential(server, "a.b.c"))
    assert as_confidential(server, access).json() == INACTIVE


def test_a_confidential_client_still_learns_the_state_of_its_own_refresh_tokens(
    server: Server,
) -> None:
    conf = {"client_secret": server.secrets["conf"]}
    rotated, live = rotated_pair(server, "conf", **conf)
    body = as_confidential(server, live, "conf").json()
    assert body["active"] is True
    assert body["token_type"] == "refresh_token"
    assert body["client_id"] == "conf"
    assert as_confidential(server, rotated, "conf").json() == INACTIVE


def test_a_resource_server_learns_nothing_of_refresh_tokens_and_all_of_access_tokens(
    server: Server,
) -> None:
    rotated, live = rotated_pair(server)
    expected = seen(as_confidential(server, "garbage", "rs"))
    assert seen(as_confidential(server, live, "rs")) == expected
    assert seen(as_confidential(server, rotated, "rs")) == expected
    assert as_confidential(server, live, "rs").json() == INACTIVE
    _, access = server.tokens("native")
    body = as_confidential(server, access, "rs").json()
    assert body["active"] is True
    assert body["client_id"] == "native"


# /metrics


REFUSED_SCRAPES = [
    None,
    "",
    "Bearer",
    "Bearer x",
    f"Bearer {METRICS_TOKEN}",  # the token of another server: this one has none
    f"Basic {METRICS_TOKEN}",
    f"bearer {METRICS_TOKEN[:-1]}",
    f"Bearer {METRICS_TOKEN}x",
    "Bearer " + "t" * 4000,
]


def test_metrics_is_refused_by_default(server: Server) -> None:
    answers = {str(a)[:40]: seen(metrics(server.base, a)) for a in REFUSED_SCRAPES}
    assert len(set(answers.values())) == 1, answers
    answer = metrics(server.base)
    assert answer.status_code == 401
    assert answer.json() == METRICS_REFUSAL
    assert answer.headers["www-authenticate"] == 'Bearer realm="metrics"'
    assert answer.headers["cache-control"] == "no-store"
    assert "keyturn_" not in answer.text


def test_metrics_with_the_public_flag_answers_anyone(public_metrics: Server) -> None:
    for authorization in (None, "Bearer anything-at-all", "Basic Zm9vOmJhcg=="):
        answer = metrics(public_metrics.base, authorization)
        assert answer.status_code == 200, answer.text
        assert answer.headers["content-type"].startswith("text/plain")
        assert "keyturn_refresh_rotations_total" in answer.text


def test_metrics_with_a_token_answers_it_alone_and_refuses_the_rest_alike(
    token_metrics: Server, server: Server
) -> None:
    right = metrics(token_metrics.base, f"Bearer {METRICS_TOKEN}")
    assert right.status_code == 200
    assert "keyturn_refresh_rotations_total" in right.text
    wrong = [a for a in REFUSED_SCRAPES if a != f"Bearer {METRICS_TOKEN}"]
    wrong += [f"Bearer {METRICS_TOKEN[:-1]}", f"Bearer {METRICS_TOKEN.upper()}"]
    answers = {str(a)[:40]: seen(metrics(token_metrics.base, a)) for a in wrong}
    # ... and the same refusal as a server with no token at all: a thief cannot even
    # tell whether one is configured.
    answers["no token configured"] = seen(metrics(server.base, f"Bearer {METRICS_TOKEN}"))
    assert len(set(answers.values())) == 1, answers


# The thief


def test_a_thief_with_a_copied_refresh_token_cannot_tell_when_the_victim_rotates(
    server: Server,
) -> None:
    """The oracle step only: everything the thief can ask, before and after each of the
    victim's rotations, answers the same."""
    victim = server.rt0("native")
    copy = victim
    thief_client = ("conf2", server.secrets["conf2"])  # a client the thief registered

    def probe() -> list[Answer]:
        guess = "Bearer " + secrets.token_urlsafe(24)
        return [
            seen(as_public(server, copy)),
            seen(
                introspect(
                    server,
                    {"token": copy, "token_type_hint": "refresh_token", "client_id": "native"},
                )
            ),
            seen(introspect(server, {"token": copy}, auth=thief_client)),
            seen(introspect(server, {"token": copy}, auth=("rs", server.secrets["rs"]))),
            seen(metrics(server.base)),
            seen(metrics(server.base, guess)),
        ]

    before = probe()
    for _ in range(2):
        rotated = refresh(server, victim)
        assert rotated.status_code == 200, rotated.text
        victim = rotated.json()["refresh_token"]
        assert probe() == before
    assert before[0][0] == 401  # the public client is refused
    assert before[2][1] == b'{"active":false}'
    assert before[4][0] == 401  # /metrics is closed

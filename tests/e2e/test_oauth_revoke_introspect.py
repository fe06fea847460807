"""POST /oauth/revoke (RFC 7009) and POST /oauth/introspect (RFC 7662) over real HTTP:
the RV and IN rows of the checklist."""

from __future__ import annotations

import httpx
import pytest

from conftest import Server
from support.token_endpoint import assert_error, introspect, refresh, revoke


def test_rv01_revoking_a_refresh_token_ends_the_session_and_its_access_tokens(
    server: Server,
) -> None:
    rt, at = server.tokens("conf")
    assert introspect(server, at)["active"] is True
    response = revoke(
        server,
        {"token": rt, "token_type_hint": "refresh_token"},
        auth=("conf", server.secrets["conf"]),
    )
    assert response.status_code == 200
    assert response.content == b""
    assert_error(
        httpx.post(
            f"{server.base}/oauth/token",
            data={"grant_type": "refresh_token", "refresh_token": rt},
            auth=("conf", server.secrets["conf"]),
        ),
        400,
        "invalid_grant",
    )
    assert introspect(server, at) == {"active": False}


@pytest.mark.parametrize("token", ["garbage", "kt_rt_" + "A" * 79, "a.b.c"])
def test_rv03_unknown_tokens_answer_200(server: Server, token: str) -> None:
    response = revoke(server, {"token": token}, auth=("conf", server.secrets["conf"]))
    assert response.status_code == 200


def test_rv04_token_is_required(server: Server) -> None:
    response = revoke(
        server, {"token_type_hint": "refresh_token"}, auth=("conf", server.secrets["conf"])
    )
    assert_error(response, 400, "invalid_request")


def test_rv05_wrong_credentials_are_refused_before_anything_else(server: Server) -> None:
    rt = server.rt0("conf")
    wrong = revoke(server, {"token": rt}, auth=("conf", "wrong"))
    assert_error(wrong, 401, "invalid_client")
    unknown = revoke(server, {"token": rt, "client_id": "ghost", "client_secret": "x"})
    assert_error(unknown, 401, "invalid_client")
    assert (
        refresh(server, rt, client_id="conf", client_secret=server.secrets["conf"]).status_code
        == 200
    )


def test_rv06_another_clients_token_stays_live(server: Server) -> None:
    rt = server.rt0("conf")
    confidential = revoke(server, {"token": rt}, auth=("conf2", server.secrets["conf2"]))
    assert_error(confidential, 400, "invalid_request")
    native_rt = server.rt0("native")
    public = revoke(server, {"token": native_rt, "client_id": "spa"})
    assert public.status_code == 200
    assert (
        refresh(server, rt, client_id="conf", client_secret=server.secrets["conf"]).status_code
        == 200
    )
    assert refresh(server, native_rt).status_code == 200


def test_rv07_revoking_an_access_token_ends_its_session(server: Server) -> None:
    rt, at = server.tokens("conf")
    response = revoke(
        server,
        {"token": at, "token_type_hint": "access_token"},
        auth=("conf", server.secrets["conf"]),
    )
    assert response.status_code == 200
    assert introspect(server, at) == {"active": False}
    assert_error(
        refresh(server, rt, client_id="conf", client_secret=server.secrets["conf"]),
        400,
        "invalid_grant",
    )


def test_rv09_public_client_revokes_its_own_token_with_its_id(server: Server) -> None:
    rt = server.rt0("native")
    assert revoke(server, {"token": rt, "client_id": "native"}).status_code == 200
    assert_error(refresh(server, rt), 400, "invalid_grant")


def test_in01_an_active_access_token(server: Server) -> None:
    _, at = server.tokens("conf")
    for hint in (None, "refresh_token", "nonsense"):
        data = {"token": at} | ({"token_type_hint": hint} if hint else {})
        body = httpx.post(
            f"{server.base}/oauth/introspect", data=data, auth=("rs", server.secrets["rs"])
        ).json()
        assert body["active"] is True
        assert {
            "scope",
            "client_id",
            "sub",
            "exp",
            "iat",
            "iss",
            "aud",
            "jti",
            "token_type",
        } <= set(body)
        assert isinstance(body["exp"], int)
        assert isinstance(body["iat"], int)
        assert body["client_id"] == "conf"


def test_in02_inactive_tokens_say_only_so(server: Server) -> None:
    rt0 = server.rt0()
    rt1 = refresh(server, rt0).json()["refresh_token"]
    refresh(server, rt1)
    for token in ("garbage", rt0, "eyJhbGciOiJub25lIn0.eyJzdWIiOiJ4In0.", "a" * 5000):
        assert introspect(server, token) == {"active": False}


def test_in02_a_live_refresh_token_introspects_active_to_its_own_client(server: Server) -> None:
    rt = server.rt0("conf")
    body = introspect(server, rt, "conf")
    assert body["active"] is True
    assert body["token_type"] == "refresh_token"
    # To anyone else, even a resource server, it is as inactive as garbage (RFC 7662 §4).
    assert introspect(server, rt, "rs") == {"active": False}
    assert introspect(server, rt, "conf2") == {"active": False}


def test_in03_introspection_needs_an_authorised_caller(server: Server) -> None:
    _, at = server.tokens("conf")
    anonymous = httpx.post(f"{server.base}/oauth/introspect", data={"token": at})
    assert_error(anonymous, 401, "invalid_client")
    wrong = httpx.post(f"{server.base}/oauth/introspect", data={"token": at}, auth=("rs", "wrong"))
    assert_error(wrong, 401, "invalid_client")
    assert wrong.headers["www-authenticate"].startswith("Basic")
    # A public client proves nothing with its client_id: refused, whatever the token.
    public = httpx.post(
        f"{server.base}/oauth/introspect", data={"token": at, "client_id": "native"}
    )
    assert_error(public, 401, "invalid_client")
    # An authenticated client that may not introspect this token: inactive (§2.2).
    assert introspect(server, at, "conf2") == {"active": False}

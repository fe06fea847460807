"""The authorization code grant over real HTTP, on SQLite and PostgreSQL: the
authorization endpoint (RFC 6749 §4.1.1-§4.1.2.1, RFC 7636, RFC 9207), its sign-in
page and CSRF defence, and the code exchange at the token endpoint (§4.1.3). Checklist
rows GT-08, GT-09 and MD-02, and one test per error of §4.1.2.1."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any
from urllib.parse import urlencode, urlsplit

import httpx
import jwt
import pytest

from conftest import APP_REDIRECT, LOOPBACK_REDIRECT, Server
from support.authorize import Pkce, new_pkce, query_of, read_form, sign_in, submit
from support.engine import PASSWORD
from support.token_endpoint import assert_error


@pytest.fixture
def http() -> Iterator[httpx.Client]:
    """A browser stand-in: keeps cookies, follows nothing."""
    with httpx.Client(timeout=30, follow_redirects=False) as client:
        yield client


def authorize_url(server: Server, pkce: Pkce | None = None, **params: str | None) -> str:
    values: dict[str, str | None] = {
        "response_type": "code",
        "client_id": "app",
        "redirect_uri": APP_REDIRECT,
        "scope": "read",
        "state": "st-123",
    }
    if pkce is not None:
        values.update(code_challenge=pkce.challenge, code_challenge_method="S256")
    values.update(params)
    query = urlencode({k: v for k, v in values.items() if v is not None})
    return f"{server.base}/oauth/authorize?{query}"


def get_code(
    server: Server, http: httpx.Client, pkce: Pkce, client_id: str = "app", **params: str | None
) -> tuple[str, dict[str, Any]]:
    """Sign in as alice; the code and the whole callback query."""
    if client_id == "web":
        params.setdefault("redirect_uri", None)
    answer = sign_in(
        http, authorize_url(server, pkce, client_id=client_id, **params), "alice", PASSWORD
    )
    assert answer.status_code == 303, answer.text
    query = query_of(answer.headers["location"])
    return query["code"], query


def exchange(
    server: Server, code: str, verifier: str | None, **extra: str | None
) -> httpx.Response:
    form: dict[str, str | None] = {
        "grant_type": "authorization_code",
        "code": code,
        "redirect_uri": APP_REDIRECT,
        "client_id": "app",
        "code_verifier": verifier,
    }
    form.update(extra)
    return httpx.post(
        f"{server.base}/oauth/token",
        data={k: v for k, v in form.items() if v is not None},
        timeout=30,
    )


def refresh(server: Server, token: str, client_id: str = "app") -> httpx.Response:
    return httpx.post(
        f"{server.base}/oauth/token",
        data={"grant_type": "refresh_token", "refresh_token": token, "client_id": client_id},
        timeout=30,
    )


def introspect(server: Server, token: str) -> dict[str, Any]:
    answer = httpx.post(
        f"{server.base}/oauth/introspect",
        data={"token": token},
        auth=("rs", server.secrets["rs"]),
        timeout=30,
    )
    assert answer.status_code == 200
    body: dict[str, Any] = answer.json()
    return body


def assert_page(response: httpx.Response, status: int) -> None:
    """An HTML answer for the user's eyes: never a redirect, never a stack trace."""
    assert response.status_code == status, response.text
    assert "location" not in response.headers
    assert response.headers["content-type"].startswith("text/html")
    assert response.headers["cache-control"] == "no-store"
    assert "Traceback" not in response.text


def assert_error_redirect(
    response: httpx.Response, error: str, redirect: str = APP_REDIRECT, state: str | None = "st-123"
) -> dict[str, Any]:
    """RFC 6749 §4.1.2.1: back to the client's redirect URI with the error and state."""
    assert response.status_code == 302, response.text
    location = response.headers["location"]
    assert location.split("?")[0] == redirect.split("?", maxsplit=1)[0]
    query = query_of(location)
    assert query["error"] == error
    assert query.get("state") == state
    assert "code" not in query
    assert query["iss"].startswith("http://127.0.0.1:")
    assert set(query["error_description"]) <= {chr(c) for c in range(0x20, 0x7F)} - {'"', "\\"}
    return query


# The whole flow


def test_code_with_pkce_gives_tokens_that_rotate_and_verify(
    server: Server, http: httpx.Client
) -> None:
    pkce = new_pkce()
    page = http.get(authorize_url(server, pkce))
    assert_page(page, 200)
    assert "<form" in page.text
    assert 'autocomplete="current-password"' in page.text
    assert 'for="password"' in page.text
    csp = page.headers["content-security-policy"]
    assert "frame-ancestors 'none'" in csp
    assert "form-action 'self' https://app.test" in csp
    assert "script-src" not in csp  # default-src 'none': no script at all
    assert page.headers["referrer-policy"] == "same-origin"
    cookie = page.headers["set-cookie"].lower()
    assert "httponly" in cookie
    assert "samesite=strict" in cookie
    answer = submit(http, page, "alice", PASSWORD)
    assert answer.status_code == 303
    assert answer.headers["cache-control"] == "no-store"
    query = query_of(answer.headers["location"])
    assert answer.headers["location"].startswith(APP_REDIRECT + "?")
    assert query["state"] == "st-123"
    assert query["iss"] == server.base
    assert query["code"].startswith("kt_ac_")

    tokens = exchange(server, query["code"], pkce.verifier)
    assert tokens.status_code == 200, tokens.text
    assert tokens.headers["cache-control"] == "no-store"
    body = tokens.json()
    assert body["token_type"] == "Bearer"
    assert body["scope"] == "read"
    jwks = jwt.PyJWKClient(f"{server.base}/.well-known/jwks.json")
    claims = jwt.decode(
        body["access_token"],
        jwks.get_signing_key_from_jwt(body["access_token"]).key,
        algorithms=["ES256"],
        audience=server.base,
        issuer=server.base,
    )
    assert claims["client_id"] == "app"
    assert claims["scope"] == "read"
    rotated = refresh(server, body["refresh_token"])
    assert rotated.status_code == 200, rotated.text
    assert rotated.json()["refresh_token"] != body["refresh_token"]


def test_confidential_client_with_its_only_redirect_uri_keeps_its_query(
    server: Server, http: httpx.Client
) -> None:
    pkce = new_pkce()
    code, query = get_code(server, http, pkce, client_id="web")
    assert query["tenant"] == "1"
    # The authorization request named no redirect_uri, so the token request may omit it.
    tokens = httpx.post(
        f"{server.base}/oauth/token",
        data={"grant_type": "authorization_code", "code": code, "code_verifier": pkce.verifier},
        auth=("web", server.secrets["web"]),
        timeout=30,
    )
    assert tokens.status_code == 200, tokens.text
    assert jwt.decode(tokens.json()["access_token"], options={"verify_signature": False})[
        "aud"
    ] in ("api", ["api"])


def test_loopback_redirect_uri_may_use_any_port(server: Server, http: httpx.Client) -> None:
    pkce = new_pkce()
    redirect = LOOPBACK_REDIRECT.replace("127.0.0.1", "127.0.0.1:54321")
    code, _ = get_code(server, http, pkce, redirect_uri=redirect)
    assert exchange(server, code, pkce.verifier, redirect_uri=redirect).status_code == 200


def test_private_use_scheme_redirect_for_a_native_app(server: Server, http: httpx.Client) -> None:
    pkce = new_pkce()
    page = http.get(authorize_url(server, pkce, redirect_uri="com.example.app:/cb"))
    assert "form-action 'self' com.example.app:" in page.headers["content-security-policy"]
    answer = submit(http, page, "alice", PASSWORD)
    assert answer.headers["location"].startswith("com.example.app:/cb?code=kt_ac_")


# GT-08 and GT-09


def test_gt08_a_code_used_twice_is_refused_and_kills_what_it_issued(
    server: Server, http: httpx.Client
) -> None:
    pkce = new_pkce()
    code, _ = get_code(server, http, pkce)
    first = exchange(server, code, pkce.verifier)
    assert first.status_code == 200
    issued = first.json()
    assert introspect(server, issued["access_token"])["active"] is True
    assert_error(exchange(server, code, pkce.verifier), 400, "invalid_grant")
    assert_error(refresh(server, issued["refresh_token"]), 400, "invalid_grant")
    assert introspect(server, issued["access_token"]) == {"active": False}


def test_gt08_a_code_rotated_on_before_its_replay_still_ends_the_session(
    server: Server, http: httpx.Client
) -> None:
    pkce = new_pkce()
    code, _ = get_code(server, http, pkce)
    issued = exchange(server, code, pkce.verifier).json()
    later = refresh(server, issued["refresh_token"]).json()
    assert_error(exchange(server, code, pkce.verifier), 400, "invalid_grant")
    assert_error(refresh(server, later["refresh_token"]), 400, "invalid_grant")


@pytest.mark.parametrize("verifier", ["wrong-" + "v" * 50, None, "short", "é" * 50])
def test_gt09_a_wrong_or_missing_verifier_is_invalid_grant_and_burns_the_code(
    server: Server, http: httpx.Client, verifier: str | None
) -> None:
    pkce = new_pkce()
    code, _ = get_code(server, http, pkce)
    assert_error(exchange(server, code, verifier), 400, "invalid_grant")
    assert_error(exchange(server, code, pkce.verifier), 400, "invalid_grant")


def test_gt09_plain_challenge_method_is_an_error_redirect(
    server: Server, http: httpx.Client
) -> None:
    pkce = new_pkce()
    answer = http.get(authorize_url(server, pkce, code_challenge_method="plain"))
    assert_error_redirect(answer, "invalid_request")


def test_gt09_no_challenge_method_means_plain_and_is_refused(
    server: Server, http: httpx.Client
) -> None:
    pkce = new_pkce()
    answer = http.get(authorize_url(server, pkce, code_challenge_method=None))
    assert_error_redirect(answer, "invalid_request")


def test_gt09_no_code_challenge_at_all_is_refused(server: Server, http: httpx.Client) -> None:
    assert_error_redirect(http.get(authorize_url(server)), "invalid_request")


def test_gt09_a_challenge_that_is_no_sha256_digest_is_refused(
    server: Server, http: httpx.Client
) -> None:
    answer = http.get(authorize_url(server, code_challenge="x" * 20, code_challenge_method="S256"))
    assert_error_redirect(answer, "invalid_request")


# The token request for a code (RFC 6749 §4.1.3)


def test_code_of_another_client_is_invalid_grant_and_burnt(
    server: Server, http: httpx.Client
) -> None:
    pkce = new_pkce()
    code, _ = get_code(server, http, pkce)
    stolen = httpx.post(
        f"{server.base}/oauth/token",
        data={"grant_type": "authorization_code", "code": code, "code_verifier": pkce.verifier},
        auth=("web", server.secrets["web"]),
        timeout=30,
    )
    assert_error(stolen, 400, "invalid_grant")
    assert_error(exchange(server, code, pkce.verifier), 400, "invalid_grant")


def test_redirect_uri_must_repeat_the_authorization_requests(
    server: Server, http: httpx.Client
) -> None:
    pkce = new_pkce()
    code, _ = get_code(server, http, pkce)
    assert_error(
        exchange(server, code, pkce.verifier, redirect_uri="https://app.test/other"),
        400,
        "invalid_grant",
    )
    code, _ = get_code(server, http, pkce)
    assert_error(exchange(server, code, pkce.verifier, redirect_uri=None), 400, "invalid_grant")


@pytest.mark.parametrize("code", ["kt_ac_" + "A" * 43, "not-a-code", "kt_ac_" + "x" * 500])
def test_unknown_or_malformed_code_is_invalid_grant(server: Server, code: str) -> None:
    assert_error(exchange(server, code, new_pkce().verifier), 400, "invalid_grant")


def test_missing_code_is_invalid_request(server: Server) -> None:
    assert_error(exchange(server, None, new_pkce().verifier), 400, "invalid_request")  # type: ignore[arg-type]


def test_client_without_the_grant_is_unauthorized_client(server: Server) -> None:
    answer = httpx.post(
        f"{server.base}/oauth/token",
        data={"grant_type": "authorization_code", "code": "kt_ac_x", "code_verifier": "v" * 43},
        auth=("conf", server.secrets["conf"]),
        timeout=30,
    )
    assert_error(answer, 400, "unauthorized_client")


def test_confidential_client_with_a_wrong_secret_is_401(server: Server, http: httpx.Client) -> None:
    pkce = new_pkce()
    code, _ = get_code(server, http, pkce, client_id="web")
    answer = httpx.post(
        f"{server.base}/oauth/token",
        data={"grant_type": "authorization_code", "code": code, "code_verifier": pkce.verifier},
        auth=("web", "wrong"),
        timeout=30,
    )
    assert_error(answer, 401, "invalid_client")
    assert answer.headers["www-authenticate"].startswith("Basic")


# Errors at the authorization endpoint (RFC 6749 §4.1.2.1)


def test_unknown_client_gets_an_error_page_not_a_redirect(
    server: Server, http: httpx.Client
) -> None:
    assert_page(http.get(authorize_url(server, new_pkce(), client_id="nobody")), 400)


def test_missing_client_id_gets_an_error_page(server: Server, http: httpx.Client) -> None:
    assert_page(http.get(authorize_url(server, new_pkce(), client_id=None)), 400)


def test_unregistered_redirect_uri_gets_an_error_page(server: Server, http: httpx.Client) -> None:
    for uri in (
        "https://evil.example/callback",
        APP_REDIRECT + "/",
        APP_REDIRECT.upper(),
        APP_REDIRECT + "?x=1",
        APP_REDIRECT + "#frag",
        "http://127.0.0.1:8080/other",
        "http://localhost/native-cb",
    ):
        answer = http.get(authorize_url(server, new_pkce(), redirect_uri=uri))
        assert_page(answer, 400)
        assert "evil.example" not in answer.headers.get("location", "")


def test_missing_redirect_uri_with_several_registered_gets_an_error_page(
    server: Server, http: httpx.Client
) -> None:
    assert_page(http.get(authorize_url(server, new_pkce(), redirect_uri=None)), 400)


def test_repeated_client_id_or_redirect_uri_gets_an_error_page(
    server: Server, http: httpx.Client
) -> None:
    base = authorize_url(server, new_pkce())
    assert_page(http.get(base + "&client_id=app"), 400)
    assert_page(http.get(base + "&redirect_uri=" + APP_REDIRECT), 400)


def test_missing_response_type_is_invalid_request(server: Server, http: httpx.Client) -> None:
    answer = http.get(authorize_url(server, new_pkce(), response_type=None))
    assert_error_redirect(answer, "invalid_request")


@pytest.mark.parametrize("response_type", ["token", "id_token", "code token", "CODE"])
def test_other_response_types_are_unsupported_response_type(
    server: Server, http: httpx.Client, response_type: str
) -> None:
    answer = http.get(authorize_url(server, new_pkce(), response_type=response_type))
    assert_error_redirect(answer, "unsupported_response_type")


def test_client_without_the_grant_is_redirected_unauthorized_client(
    server: Server, http: httpx.Client
) -> None:
    answer = http.get(
        authorize_url(server, new_pkce(), client_id="native", redirect_uri="https://native.test/cb")
    )
    assert_error_redirect(answer, "unauthorized_client", "https://native.test/cb")


def test_scope_beyond_the_clients_is_invalid_scope(server: Server, http: httpx.Client) -> None:
    answer = http.get(authorize_url(server, new_pkce(), scope="read admin"))
    assert_error_redirect(answer, "invalid_scope")


def test_a_repeated_parameter_is_invalid_request(server: Server, http: httpx.Client) -> None:
    answer = http.get(authorize_url(server, new_pkce()) + "&scope=write")
    assert_error_redirect(answer, "invalid_request")
    answer = http.get(authorize_url(server, new_pkce()) + "&state=again")
    assert_error_redirect(answer, "invalid_request", state=None)


def test_state_is_optional_and_absent_from_the_answer_when_absent(
    server: Server, http: httpx.Client
) -> None:
    pkce = new_pkce()
    _, query = get_code(server, http, pkce, state=None)
    assert "state" not in query


def test_hostile_query_gets_a_page_not_a_crash(server: Server, http: httpx.Client) -> None:
    for query in ("client_id=%00", "client_id=%ff%fe", "a=" + "%" * 5, "x" * 9000):
        answer = http.get(f"{server.base}/oauth/authorize?{query}")
        assert answer.status_code in (400, 414)
        assert answer.headers["content-type"].startswith("text/html")


def test_html_is_escaped(server: Server, http: httpx.Client) -> None:
    pkce = new_pkce()
    page = http.get(authorize_url(server, pkce, state='"><script>alert(1)</script>'))
    assert page.status_code == 200
    assert "<script>" not in page.text
    assert "&lt;script&gt;" in page.text


# The sign-in form


def test_wrong_password_shows_the_form_again_with_401(server: Server, http: httpx.Client) -> None:
    page = http.get(authorize_url(server, new_pkce()))
    answer = submit(http, page, "alice", "not the password")
    assert_page(answer, 401)
    assert 'role="alert"' in answer.text
    assert 'value="alice"' in answer.text
    assert "not the password" not in answer.text
    _, fields = read_form(answer.text)
    assert fields["state"] == "st-123"


def test_a_post_without_the_csrf_cookie_is_refused(server: Server) -> None:
    with httpx.Client(timeout=30) as first, httpx.Client(timeout=30) as other:
        page = first.get(authorize_url(server, new_pkce()))
        answer = submit(other, page, "alice", PASSWORD)
    assert_page(answer, 403)


def test_a_post_with_another_csrf_value_is_refused(server: Server, http: httpx.Client) -> None:
    page = http.get(authorize_url(server, new_pkce()))
    answer = submit(http, page, "alice", PASSWORD, csrf_token="A" * 43)
    assert_page(answer, 403)


@pytest.mark.parametrize(
    "headers",
    [
        {"Origin": "https://evil.example"},
        {"Origin": "null"},
        {"Sec-Fetch-Site": "cross-site"},
        {"Sec-Fetch-Site": "same-site"},
    ],
)
def test_a_cross_site_post_is_refused(
    server: Server, http: httpx.Client, headers: dict[str, str]
) -> None:
    page = http.get(authorize_url(server, new_pkce()))
    action, fields = read_form(page.text)
    fields.update(username="alice", password=PASSWORD)
    answer = http.post(f"{server.base}{action}", data=fields, headers=headers)
    assert_page(answer, 403)


def test_a_same_origin_post_from_a_browser_is_accepted(server: Server, http: httpx.Client) -> None:
    page = http.get(authorize_url(server, new_pkce()))
    action, fields = read_form(page.text)
    fields.update(username="alice", password=PASSWORD)
    answer = http.post(
        f"{server.base}{action}",
        data=fields,
        headers={"Origin": server.base, "Sec-Fetch-Site": "same-origin"},
    )
    assert answer.status_code == 303


def test_two_tabs_share_one_csrf_value(server: Server, http: httpx.Client) -> None:
    first = http.get(authorize_url(server, new_pkce()))
    second = http.get(authorize_url(server, new_pkce()))
    assert submit(http, first, "alice", PASSWORD).status_code == 303
    assert submit(http, second, "alice", PASSWORD).status_code == 303


def test_a_tampered_hidden_field_is_checked_again(server: Server, http: httpx.Client) -> None:
    page = http.get(authorize_url(server, new_pkce()))
    answer = submit(http, page, "alice", PASSWORD, redirect_uri="https://evil.example/cb")
    assert_page(answer, 400)
    answer = submit(http, page, "alice", PASSWORD, scope="read admin")
    assert_error_redirect(answer, "invalid_scope")


def test_a_form_post_with_the_parameters_in_the_url_is_refused(
    server: Server, http: httpx.Client
) -> None:
    answer = http.post(authorize_url(server, new_pkce()), data={"username": "alice"})
    assert_page(answer, 400)


def test_an_oversized_form_is_413(server: Server, http: httpx.Client) -> None:
    answer = http.post(
        f"{server.base}/oauth/authorize",
        content="a=" + "b" * 20_000,
        headers={"Content-Type": "application/x-www-form-urlencoded"},
    )
    assert_page(answer, 413)


# MD-02


def test_md02_metadata_matches_what_the_server_does(server: Server, http: httpx.Client) -> None:
    meta = httpx.get(f"{server.base}/.well-known/oauth-authorization-server").json()
    assert meta["authorization_endpoint"] == f"{server.base}/oauth/authorize"
    assert meta["token_endpoint"] == f"{server.base}/oauth/token"
    assert meta["jwks_uri"] == f"{server.base}/.well-known/jwks.json"
    assert meta["response_types_supported"] == ["code"]
    assert meta["code_challenge_methods_supported"] == ["S256"]
    assert meta["grant_types_supported"] == [
        "authorization_code",
        "refresh_token",
        "client_credentials",
    ]
    assert meta["authorization_response_iss_parameter_supported"] is True
    assert set(meta["scopes_supported"]) == {"read", "write", "keyturn:account"}
    assert meta["revocation_endpoint"] == f"{server.base}/oauth/revoke"
    assert meta["introspection_endpoint"] == f"{server.base}/oauth/introspect"
    assert "none" not in json.dumps({k: v for k, v in meta.items() if "signing_alg" in k})
    # Every advertised client authentication method works at the token endpoint ...
    methods = meta["token_endpoint_auth_methods_supported"]
    assert set(methods) == {"client_secret_basic", "client_secret_post", "none"}
    secret = server.secrets["web"]
    for method in methods:
        pkce = new_pkce()
        if method == "none":
            code, _ = get_code(server, http, pkce)
            assert exchange(server, code, pkce.verifier).status_code == 200
            continue
        code, _ = get_code(server, http, pkce, client_id="web")
        form = {"grant_type": "authorization_code", "code": code, "code_verifier": pkce.verifier}
        if method == "client_secret_basic":
            answer = httpx.post(meta["token_endpoint"], data=form, auth=("web", secret))
        else:
            answer = httpx.post(
                meta["token_endpoint"],
                data={**form, "client_id": "web", "client_secret": secret},
            )
        assert answer.status_code == 200, (method, answer.text)
    # ... and one that is not advertised fails with invalid_client.
    pkce = new_pkce()
    code, _ = get_code(server, http, pkce, client_id="web")
    jwt_assertion = httpx.post(
        meta["token_endpoint"],
        data={
            "grant_type": "authorization_code",
            "code": code,
            "code_verifier": pkce.verifier,
            "client_id": "web",
            "client_assertion_type": "urn:ietf:params:oauth:client-assertion-type:jwt-bearer",
            "client_assertion": "eyJhbGciOiJFUzI1NiJ9.e30.c2ln",
        },
    )
    assert_error(jwt_assertion, 401, "invalid_client")
    assert urlsplit(meta["issuer"]).geturl() == server.base


def test_head_is_answered_like_get(server: Server, http: httpx.Client) -> None:
    url = authorize_url(server, new_pkce())
    assert http.head(url).status_code == http.get(url).status_code == 200

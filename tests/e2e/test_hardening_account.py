"""The account API and the first-party cookies, attacked over real HTTP on SQLite and
PostgreSQL (issue 12: H-03, H-09, H-14, H-15).

H-03: a token minted for another audience, or for a client that is neither first-party
nor granted `keyturn:account`, reads and changes nothing of the user's account.
H-09: a login ends only the same client's and the same user's earlier session, and each
cookie client has its own cookie. H-14: a session authenticated before the user's last
password change is refused at the account API. H-15: a confidential client that may not
see a token is answered `{"active": false}`, exactly as for garbage.
"""

from __future__ import annotations

import asyncio
import re
import secrets
import sqlite3
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from http.cookies import SimpleCookie
from typing import Any

import asyncpg
import httpx
import jwt
import pytest
from test_authorization_code import exchange, get_code

from conftest import ORIGIN, Server
from keyturn.core.ids import ClientId
from keyturn.core.models import ClientType, Delivery, GrantType
from keyturn.service.inspection import ACCOUNT_SCOPE, AccountAccess, account_access
from keyturn.settings import Settings
from keyturn.web.first_party import refresh_cookie
from keyturn.wiring import open_engine
from support.authorize import new_pkce
from support.engine import PASSWORD
from support.store_values import a_client, a_session, a_user
from support.token_endpoint import assert_error

CODE = GrantType.AUTHORIZATION_CODE
ORIGIN2 = "https://app2.test"
NEW_PASSWORD = "an entirely new passphrase 42"
BEARER_REFUSAL = 'Bearer realm="keyturn", error="invalid_token"'
COOKIE_PREFIX = "__Host-keyturn_rt"


# Helpers


def engine_settings(server: Server) -> Settings:
    return Settings(**{**server.settings.model_dump(), "issuer": server.base})


async def _add_user(server: Server, username: str) -> None:
    engine = await open_engine(engine_settings(server))
    try:
        await engine.admin.add_user(username, PASSWORD)
    finally:
        await engine.close()


def new_user(server: Server) -> str:
    """A user of this test alone: password changes and logouts touch no other test."""
    username = f"u-{secrets.token_hex(4)}"
    asyncio.run(_add_user(server, username))
    return username


def call(server: Server, path: str, body: Any = None, **kwargs: Any) -> httpx.Response:
    return httpx.post(f"{server.base}{path}", json=body, timeout=30, **kwargs)


def login(server: Server, username: str, client_id: str = "native", **extra: Any) -> httpx.Response:
    body = {"username": username, "password": PASSWORD, "client_id": client_id, **extra}
    if client_id in ("conf", "conf2"):
        body["client_secret"] = server.secrets[client_id]
    response = call(server, "/auth/login", body)
    assert response.status_code == 200, response.text
    return response


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def claims_of(access_token: str) -> dict[str, Any]:
    claims: dict[str, Any] = jwt.decode(access_token, options={"verify_signature": False})
    return claims


def account_calls(server: Server, sid: str) -> dict[str, tuple[str, str, Any]]:
    """Every endpoint of the account API, with a request that would change the victim's
    account if it were accepted."""
    return {
        "list": ("GET", "/auth/sessions", None),
        "events": ("GET", f"/auth/sessions/{sid}/events", None),
        "end one": ("DELETE", f"/auth/sessions/{sid}", None),
        "logout all": ("POST", "/auth/logout-all", None),
        "password": (
            "POST",
            "/auth/password",
            {"current_password": PASSWORD, "new_password": NEW_PASSWORD},
        ),
    }


def account_call(
    server: Server, method: str, path: str, body: Any, headers: dict[str, str]
) -> httpx.Response:
    return httpx.request(method, f"{server.base}{path}", json=body, headers=headers, timeout=30)


def refresh_body(server: Server, token: str, client_id: str = "native") -> httpx.Response:
    body = {"client_id": client_id, "refresh_token": token}
    if client_id in ("conf", "conf2"):
        body["client_secret"] = server.secrets[client_id]
    return call(server, "/auth/refresh", body)


def assert_still_whole(server: Server, username: str, access: str, refresh: str) -> None:
    """The victim's session lives, its token works, and the password is unchanged."""
    listed = httpx.get(f"{server.base}/auth/sessions", headers=bearer(access), timeout=30)
    assert listed.status_code == 200, listed.text
    assert refresh_body(server, refresh).status_code == 200
    login(server, username)  # the old password still opens a session


def cookies_set(response: httpx.Response) -> dict[str, str]:
    """Each cookie a response sets, by name, with its value."""
    found: dict[str, str] = {}
    for header in response.headers.get_list("set-cookie"):
        name, _, rest = header.partition("=")
        found[name] = rest.split(";", 1)[0]
    return found


def cookie_login(server: Server, client_id: str, origin: str, jar: dict[str, str]) -> str:
    """Sign alice in at cookie client `client_id` from a browser holding `jar` (every
    cookie of the keyturn host, as a browser sends them all); returns the name of the
    cookie it set, and keeps the jar as the browser would."""
    cookie = "; ".join(f"{k}={v}" for k, v in jar.items())
    headers = {"X-Keyturn-CSRF": "1", "Origin": origin, **({"Cookie": cookie} if jar else {})}
    body = {"username": "alice", "password": PASSWORD, "client_id": client_id}
    response = call(server, "/auth/login", body, headers=headers)
    assert response.status_code == 200, response.text
    set_now = cookies_set(response)
    for name, value in set_now.items():
        if value:
            jar[name] = value
        else:
            jar.pop(name, None)
    (name,) = [n for n, v in set_now.items() if v]
    return name


async def _add_cookie_client(server: Server, client_id: str, origin: str) -> None:
    engine = await open_engine(engine_settings(server))
    try:
        await engine.admin.add_client(
            client_id,
            ClientType.PUBLIC,
            grant_types={GrantType.PASSWORD, GrantType.REFRESH_TOKEN},
            scope=frozenset({"read"}),
            delivery=Delivery.COOKIE,
            allowed_origins=[origin],
        )
    finally:
        await engine.close()


@pytest.fixture(scope="module")
def two_cookie_apps(server: Server) -> Server:
    """The e2e server with a second cookie client, `spa2`, on another origin: two
    first-party browser apps signing in at one keyturn host."""
    asyncio.run(_add_cookie_client(server, "spa2", ORIGIN2))
    return server


async def _set_password_changed_at(server: Server, username: str, at: datetime) -> None:
    url = server.settings.database_url
    if url.startswith("sqlite"):
        micros = (at - datetime(1970, 1, 1, tzinfo=UTC)) // timedelta(microseconds=1)
        with sqlite3.connect(url.removeprefix("sqlite:///")) as db:
            db.execute(
                "UPDATE users SET password_changed_at = ? WHERE username = ?", (micros, username)
            )
        return
    conn = await asyncpg.connect(url, timeout=5)
    try:
        schema = server.settings.db_schema
        await conn.execute(
            f"UPDATE {schema}.users SET password_changed_at = $1 WHERE username = $2",  # noqa: S608 - a test schema
            at,
            username,
        )
    finally:
        await conn.close()


# H-03


def test_h03_a_token_of_another_audience_is_refused_at_every_account_endpoint(
    server: Server,
) -> None:
    username = new_user(server)
    victim = login(server, username).json()
    sid = claims_of(victim["access_token"])["sid"]
    # What a resource server `api` receives from the user's confidential app `conf`.
    foreign = login(server, username, "conf", scope="read").json()["access_token"]
    assert claims_of(foreign)["aud"] == "api"
    assert claims_of(foreign)["scope"] == "read"
    answers = {}
    for name, (method, path, body) in account_calls(server, sid).items():
        answer = account_call(server, method, path, body, bearer(foreign))
        answers[name] = (answer.status_code, answer.headers.get("www-authenticate"))
        assert_error(answer, 401, "invalid_token")
    assert set(answers.values()) == {(401, BEARER_REFUSAL)}, answers
    assert_still_whole(server, username, victim["access_token"], victim["refresh_token"])


def test_h03_a_first_party_token_still_works_at_every_account_endpoint(server: Server) -> None:
    username = new_user(server)
    mine, other = login(server, username).json(), login(server, username).json()
    access = mine["access_token"]
    other_sid = claims_of(other["access_token"])["sid"]
    calls = account_calls(server, other_sid)
    for name in ("list", "events", "end one"):
        method, path, body = calls[name]
        answer = account_call(server, method, path, body, bearer(access))
        assert answer.status_code in (200, 204), (name, answer.text)
    method, path, body = calls["password"]
    changed = account_call(server, method, path, body, bearer(access))
    assert changed.status_code == 200, changed.text
    # The session that changed the password is kept, and still acts for the user.
    method, path, body = calls["logout all"]
    assert account_call(server, method, path, body, bearer(access)).status_code == 204


def test_h03_a_keyturn_audience_token_of_a_code_client_needs_the_account_scope(
    server: Server,
) -> None:
    """`app` signs users in with the authorization code flow and gets tokens for
    keyturn's own audience: without `keyturn:account` they are no key to the account."""
    with httpx.Client(timeout=30, follow_redirects=False) as browser:
        pkce = new_pkce()
        code, _ = get_code(server, browser, pkce, scope="read")
    narrow = exchange(server, code, pkce.verifier).json()["access_token"]
    assert claims_of(narrow)["aud"] == server.base
    refused = httpx.get(f"{server.base}/auth/sessions", headers=bearer(narrow), timeout=30)
    assert_error(refused, 403, "insufficient_scope")
    assert refused.headers["www-authenticate"] == (
        f'Bearer realm="keyturn", error="insufficient_scope", scope="{ACCOUNT_SCOPE}"'
    )
    with httpx.Client(timeout=30, follow_redirects=False) as browser:
        pkce = new_pkce()
        code, _ = get_code(server, browser, pkce, scope=f"read {ACCOUNT_SCOPE}")
    granted = exchange(server, code, pkce.verifier).json()["access_token"]
    allowed = httpx.get(f"{server.base}/auth/sessions", headers=bearer(granted), timeout=30)
    assert allowed.status_code == 200, allowed.text


def test_h03_a_refused_token_under_the_dpop_scheme_gets_a_dpop_challenge(server: Server) -> None:
    username = new_user(server)
    foreign = login(server, username, "conf", scope="read").json()["access_token"]
    answer = httpx.get(
        f"{server.base}/auth/sessions", headers={"Authorization": f"DPoP {foreign}"}, timeout=30
    )
    assert_error(answer, 401, "invalid_token")
    assert answer.headers["www-authenticate"].startswith("DPoP ")
    assert 'error="invalid_token"' in answer.headers["www-authenticate"]


# H-09


def test_h09_login_at_one_cookie_app_leaves_the_other_apps_session_and_cookie(
    two_cookie_apps: Server,
) -> None:
    server = two_cookie_apps
    jar: dict[str, str] = {}
    first = cookie_login(server, "spa", ORIGIN, jar)
    first_token = jar[first]
    second = cookie_login(server, "spa2", ORIGIN2, jar)
    assert second != first, "each cookie client has a cookie of its own"
    assert jar.get(first) == first_token, "the other app's cookie was neither replaced nor cleared"
    # The first app's session lives on: its cookie still refreshes.
    again = call(
        server,
        "/auth/refresh",
        {"client_id": "spa"},
        headers={"Cookie": f"{first}={first_token}", "X-Keyturn-CSRF": "1", "Origin": ORIGIN},
    )
    assert again.status_code == 200, again.text
    # Logging out of the second app clears its own cookie only.
    cookie = "; ".join(f"{k}={v}" for k, v in jar.items())
    out = call(
        server,
        "/auth/logout",
        {"client_id": "spa2"},
        headers={"Cookie": cookie, "X-Keyturn-CSRF": "1", "Origin": ORIGIN2},
    )
    assert out.status_code == 204
    assert set(cookies_set(out)) == {second}


def test_h09_another_clients_token_in_this_clients_cookie_ends_nothing(
    two_cookie_apps: Server,
) -> None:
    """A token of `spa` planted under `spa2`'s cookie name, presented at `spa2`'s login."""
    server = two_cookie_apps
    jar: dict[str, str] = {}
    first = cookie_login(server, "spa", ORIGIN, jar)
    planted = {f"{COOKIE_PREFIX}_spa2": jar[first]}
    cookie_login(server, "spa2", ORIGIN2, planted)
    again = call(
        server,
        "/auth/refresh",
        {"client_id": "spa"},
        headers={"Cookie": f"{first}={jar[first]}", "X-Keyturn-CSRF": "1", "Origin": ORIGIN},
    )
    assert again.status_code == 200, again.text


def test_h09_logout_all_clears_only_the_calling_clients_cookie(two_cookie_apps: Server) -> None:
    server = two_cookie_apps
    jar: dict[str, str] = {}
    cookie_login(server, "spa", ORIGIN, jar)
    body = {"username": "alice", "password": PASSWORD, "client_id": "spa2"}
    signed_in = call(
        server, "/auth/login", body, headers={"X-Keyturn-CSRF": "1", "Origin": ORIGIN2}
    )
    access = signed_in.json()["access_token"]
    cookie = "; ".join(f"{k}={v}" for k, v in jar.items())
    out = account_call(
        server, "POST", "/auth/logout-all", None, {**bearer(access), "Cookie": cookie}
    )
    assert out.status_code == 204
    assert cookies_set(out) == {f"{COOKIE_PREFIX}_spa2": '""'}


def test_h09_the_cookie_is_named_for_its_client(server: Server) -> None:
    jar: dict[str, str] = {}
    assert cookie_login(server, "spa", ORIGIN, jar) == f"{COOKIE_PREFIX}_spa"


def test_h09_every_client_id_gets_a_legal_cookie_name_of_its_own() -> None:
    ids = ["spa", "a b", "a%20b", "x;y=z", "é", "a_b", "a.b~c", '"q"', "s/p,a"]
    names = [refresh_cookie(client_id) for client_id in ids]
    assert len(set(names)) == len(ids)
    for name in names:
        assert re.fullmatch(r"__Host-keyturn_rt_[A-Za-z0-9_.~%-]+", name), name
        jar = SimpleCookie()
        jar[name] = "kt_rt_x"  # the standard library refuses an illegal name


def test_h09_a_previous_refresh_token_of_another_user_or_client_ends_nothing(
    server: Server,
) -> None:
    alice, bob = new_user(server), new_user(server)
    bobs = login(server, bob).json()["refresh_token"]
    alices_conf = login(server, alice, "conf").json()["refresh_token"]
    login(server, alice, previous_refresh_token=bobs)
    login(server, alice, previous_refresh_token=alices_conf)
    assert refresh_body(server, bobs).status_code == 200, "another user's session ended"
    assert refresh_body(server, alices_conf, "conf").status_code == 200, (
        "another client's session ended"
    )
    # The same client's and user's earlier session is still superseded, as before.
    earlier = login(server, alice).json()["refresh_token"]
    login(server, alice, previous_refresh_token=earlier)
    assert_error(refresh_body(server, earlier), 400, "invalid_grant")


# H-14


def test_h14_account_api_refuses_pre_change_tokens(server: Server) -> None:
    username = new_user(server)
    keeper, ended = login(server, username).json(), login(server, username).json()
    changed = call(
        server,
        "/auth/password",
        {"current_password": PASSWORD, "new_password": NEW_PASSWORD},
        headers=bearer(keeper["access_token"]),
    )
    assert changed.json() == {"sessions_ended": 1}
    # The session that made the change proved the password: it is kept, and usable.
    kept = httpx.get(
        f"{server.base}/auth/sessions", headers=bearer(keeper["access_token"]), timeout=30
    )
    assert kept.status_code == 200, kept.text
    assert_error(
        httpx.get(f"{server.base}/auth/sessions", headers=bearer(ended["access_token"])),
        401,
        "invalid_token",
    )
    # A session that authenticated before a later password change and was not ended
    # with it (opened from a code minted before the change, or on a host whose clock
    # lags): its token acts for the user no more.
    survivor = call(
        server,
        "/auth/login",
        {"username": username, "password": NEW_PASSWORD, "client_id": "native"},
    ).json()
    later = datetime.now(UTC) + timedelta(seconds=1)
    asyncio.run(_set_password_changed_at(server, username, later))
    sid = claims_of(survivor["access_token"])["sid"]
    for name, (method, path, body) in account_calls(server, sid).items():
        answer = account_call(server, method, path, body, bearer(survivor["access_token"]))
        assert_error(answer, 401, "invalid_token")
        assert answer.headers["www-authenticate"] == BEARER_REFUSAL, name


def test_h14_a_token_from_a_pre_change_code_never_passes_the_account_api(server: Server) -> None:
    """alice signs in at `app`'s sign-in page, then changes her password elsewhere;
    the code minted before the change opens nothing that acts for her account."""
    with httpx.Client(timeout=30, follow_redirects=False) as browser:
        pkce = new_pkce()
        code, _ = get_code(server, browser, pkce, scope=f"read {ACCOUNT_SCOPE}")
    # The change (and back), from a first-party session of alice's.
    this = login(server, "alice").json()["access_token"]
    for old, new in ((PASSWORD, NEW_PASSWORD), (NEW_PASSWORD, PASSWORD)):
        answer = call(
            server,
            "/auth/password",
            {"current_password": old, "new_password": new},
            headers=bearer(this),
        )
        assert answer.status_code == 200, answer.text
    exchanged = exchange(server, code, pkce.verifier)
    if exchanged.status_code == 200:
        token = exchanged.json()["access_token"]
        answer = httpx.get(f"{server.base}/auth/sessions", headers=bearer(token), timeout=30)
        assert_error(answer, 401, "invalid_token")
    else:
        assert_error(exchanged, 400, "invalid_grant")


# H-15


def _seen(response: httpx.Response) -> tuple[int, bytes, tuple[tuple[str, str], ...]]:
    headers = tuple(sorted((k, v) for k, v in response.headers.items() if k != "date"))
    return response.status_code, response.content, headers


def test_h15_a_client_that_may_not_see_a_token_gets_inactive_like_garbage(
    server: Server,
) -> None:
    username = new_user(server)
    tokens = login(server, username).json()
    conf_access = login(server, username, "conf").json()["access_token"]
    cc_access = httpx.post(
        f"{server.base}/oauth/token",
        data={"grant_type": "client_credentials"},
        auth=("cc", server.secrets["cc"]),
        timeout=30,
    ).json()["access_token"]
    theirs = {
        "access": tokens["access_token"],
        "refresh": tokens["refresh_token"],
        "conf access": conf_access,
        "client credentials": cc_access,
    }
    url = f"{server.base}/oauth/introspect"
    for caller in ("conf2", "web", "cc"):
        auth = (caller, server.secrets[caller])
        unknown = httpx.post(url, data={"token": "unknown"}, auth=auth, timeout=30)
        assert unknown.status_code == 200
        assert unknown.json() == {"active": False}
        assert "www-authenticate" not in unknown.headers
        for name, token in theirs.items():
            if caller == "cc" and name == "client credentials":
                continue  # its own
            answer = httpx.post(url, data={"token": token}, auth=auth, timeout=30)
            assert _seen(answer) == _seen(unknown), (caller, name)
    # A resource server may see access tokens, not a client's refresh token.
    rs = ("rs", server.secrets["rs"])
    unknown = httpx.post(url, data={"token": "unknown"}, auth=rs, timeout=30)
    refresh = httpx.post(url, data={"token": tokens["refresh_token"]}, auth=rs, timeout=30)
    assert _seen(refresh) == _seen(unknown)
    # A public client is still refused whatever the token: it proves nothing.
    public = httpx.post(url, data={"token": "unknown", "client_id": "native"}, timeout=30)
    assert_error(public, 401, "invalid_client")


# The rule itself, case by case


def test_h03_h14_account_access_decides_each_case() -> None:
    user, first_party = a_user(), a_client("native")
    code_client = replace(first_party, id=ClientId("app"), grant_types=frozenset({CODE}))
    session = a_session(user, first_party)
    claims = {"client_id": "native", "scope": "read"}
    assert account_access(claims, session, user, first_party) is AccountAccess.GRANTED
    # Whose session, whose client, whose user: each must hold.
    assert account_access(claims, session, None, first_party) is AccountAccess.REFUSED
    disabled_user = replace(user, enabled=False)
    assert account_access(claims, session, disabled_user, first_party) is AccountAccess.REFUSED
    assert account_access(claims, session, user, None) is AccountAccess.REFUSED
    disabled_client = replace(first_party, enabled=False)
    assert account_access(claims, session, user, disabled_client) is AccountAccess.REFUSED
    other = {**claims, "client_id": "app"}
    assert account_access(other, session, user, first_party) is AccountAccess.REFUSED
    # H-14: authenticated before the last password change; re-stamped by it.
    changed = replace(user, password_changed_at=session.created_at + timedelta(seconds=1))
    assert account_access(claims, session, changed, first_party) is AccountAccess.REFUSED
    restamped = replace(session, authenticated_at=changed.password_changed_at)
    assert account_access(claims, restamped, changed, first_party) is AccountAccess.GRANTED
    # A code client: only with the account scope, as a whole scope token.
    theirs = replace(session, client_id=ClientId("app"))
    for scope, expected in (
        ("read", AccountAccess.NEEDS_ACCOUNT_SCOPE),
        ("read keyturn:accounts", AccountAccess.NEEDS_ACCOUNT_SCOPE),
        ("xkeyturn:account", AccountAccess.NEEDS_ACCOUNT_SCOPE),
        (f"read {ACCOUNT_SCOPE}", AccountAccess.GRANTED),
        (ACCOUNT_SCOPE, AccountAccess.GRANTED),
    ):
        asked = {"client_id": "app", "scope": scope}
        assert account_access(asked, theirs, user, code_client) is expected, scope
    no_scope = {"client_id": "app"}
    assert account_access(no_scope, theirs, user, code_client) is (
        AccountAccess.NEEDS_ACCOUNT_SCOPE
    )

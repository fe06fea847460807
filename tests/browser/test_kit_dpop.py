"""The browser kit with DPoP (`new KeyturnClient({dpop: true})`) in headless Chromium
against a real `keyturn serve --demo`: the key is WebCrypto's, non-extractable, kept in
IndexedDB; the session is bound to it through twenty rotations, and the refresh cookie
without it ends the session; nonce challenges (the server requires nonces) are answered
once at the login and at a resource; the tabs of one origin share one key.

The pages import the kit into a JSON answer of the demo (`/healthz`), its CSP (which
allows no script) set aside, as tests/browser/test_kit_dropped_responses.py does.
"""

from __future__ import annotations

import asyncio
import base64
import json
from collections.abc import Iterator
from typing import Any

import pytest
from browser_demo import Demo, beside_playwright
from playwright.sync_api import Browser, BrowserContext, Page, Response

from keyturn.core.audit import EventType
from keyturn.wiring import open_engine

CLIENT = "demo-web"
ROTATIONS = 20

KIT = """async ({ username, password, login }) => {
    const { KeyturnClient } = await import("/static/keyturn.js");
    window.auth = new KeyturnClient({ clientId: "demo-web", dpop: true });
    if (login) await window.auth.login(username, password);
    return window.auth.accessToken;
}"""

READ_KEY = """async () => {
    const db = await new Promise((resolve, reject) => {
        const opening = indexedDB.open("keyturn-dpop");
        opening.onsuccess = () => resolve(opening.result);
        opening.onerror = () => reject(opening.error);
    });
    const record = await new Promise((resolve, reject) => {
        const get = db.transaction("keys").objectStore("keys").get("demo-web");
        get.onsuccess = () => resolve(get.result);
        get.onerror = () => reject(get.error);
    });
    db.close();
    const refusals = [];
    for (const format of ["jwk", "pkcs8"]) {
        try {
            await crypto.subtle.exportKey(format, record.privateKey);
            refusals.push(`${format}: exported`);
        } catch (error) {
            refusals.push(`${format}: ${error.name}`);
        }
    }
    return {
        extractable: record.privateKey.extractable,
        algorithm: record.privateKey.algorithm,
        usages: record.privateKey.usages,
        jwk: record.jwk,
        refusals,
        thumbprint: await window.auth.dpopThumbprint(),
    };
}"""

ROTATE = """async (rotations) => {
    const seen = [];
    for (let i = 0; i < rotations; i++) {
        await window.auth.refresh();
        seen.push({ token: window.auth.accessToken, type: window.auth.tokenType });
    }
    const me = await window.auth.fetch("/demo/api/me");
    return { seen, me: me.status, body: await me.json() };
}"""

# A thief with the refresh cookie (here: the browser's own) and no key.
WITHOUT_THE_KEY = """async () => {
    const answer = await fetch("/auth/refresh", {
        method: "POST",
        credentials: "include",
        headers: { "Content-Type": "application/json", "X-Keyturn-CSRF": "1" },
        body: JSON.stringify({ client_id: "demo-web" }),
    });
    return { status: answer.status, body: await answer.json() };
}"""


def claims_of(jwt: str) -> dict[str, Any]:
    decoded: dict[str, Any] = json.loads(base64.urlsafe_b64decode(jwt.split(".")[1] + "=="))
    return decoded


def proof_claims(proof: str) -> dict[str, Any]:
    return claims_of(proof)


@pytest.fixture
def context(browser: Browser) -> Iterator[BrowserContext]:
    """One browser profile (its tabs share cookies, IndexedDB and channels), with the
    kit importable into any page of the demo."""
    opened = browser.new_context(bypass_csp=True)
    yield opened
    opened.close()


def open_tab(context: BrowserContext, demo: Demo) -> Page:
    page = context.new_page()
    page.goto(f"{demo.base}/healthz")
    return page


def kit(page: Page, demo: Demo, *, login: bool) -> str | None:
    token: str | None = page.evaluate(
        KIT, {"username": "demo", "password": demo.password, "login": login}
    )
    return token


class Answers:
    """Every answer the context received: (method, path, status, request headers)."""

    def __init__(self, context: BrowserContext) -> None:
        self.seen: list[tuple[str, str, int, dict[str, str]]] = []
        context.on("response", self._answer)

    def _answer(self, response: Response) -> None:
        request = response.request
        path = request.url.split("://", 1)[1].split("/", 1)[1].split("?", 1)[0]
        self.seen.append((request.method, "/" + path, response.status, request.all_headers()))

    def to(self, path: str, tabs: list[Page]) -> list[tuple[int, dict[str, str]]]:
        for tab in tabs:  # deliver the events the browser has sent so far
            tab.evaluate("0")
        return [(status, headers) for _, p, status, headers in self.seen if p == path]


def reuse_reasons(demo: Demo, sid: str) -> list[str]:
    async def read() -> list[str]:
        engine = await open_engine(demo.settings)
        try:
            events = await engine.admin.audit(type=EventType.REUSE_DETECTED.value)
        finally:
            await engine.close()
        return [e.event.reason or "" for e in events if e.event.session_id == sid]

    return beside_playwright(asyncio.run, read())


def test_the_key_is_non_extractable_and_kept_in_indexeddb(
    demo: Demo, context: BrowserContext
) -> None:
    page = open_tab(context, demo)
    token = kit(page, demo, login=True)
    assert token is not None
    key: dict[str, Any] = page.evaluate(READ_KEY)
    assert key["extractable"] is False
    assert key["refusals"] == ["jwk: InvalidAccessError", "pkcs8: InvalidAccessError"]
    assert key["algorithm"] == {"name": "ECDSA", "namedCurve": "P-256"}
    assert key["usages"] == ["sign"]
    assert set(key["jwk"]) == {"crv", "kty", "x", "y"}, "the public key only"
    assert claims_of(token)["cnf"] == {"jkt": key["thumbprint"]}
    session = demo.session(claims_of(token)["sid"])
    assert session.dpop_jkt == key["thumbprint"]


def test_twenty_rotations_are_bound_and_the_cookie_without_the_key_ends_the_session(
    demo: Demo, context: BrowserContext
) -> None:
    answers = Answers(context)
    page = open_tab(context, demo)
    first = kit(page, demo, login=True)
    assert first is not None
    jkt = claims_of(first)["cnf"]["jkt"]
    result: dict[str, Any] = page.evaluate(ROTATE, ROTATIONS)
    assert {entry["type"] for entry in result["seen"]} == {"DPoP"}
    tokens = [entry["token"] for entry in result["seen"]]
    assert len(set(tokens)) == ROTATIONS
    assert {claims_of(t)["cnf"]["jkt"] for t in tokens} == {jkt}
    assert (result["me"], result["body"]["sid"]) == (200, claims_of(first)["sid"])
    refreshes = answers.to("/auth/refresh", [page])
    assert [status for status, _ in refreshes] == [200] * ROTATIONS, "the nonce was known"
    for _, headers in refreshes:
        proof = proof_claims(headers["dpop"])
        assert (proof["htm"], proof["htu"]) == ("POST", f"{demo.base}/auth/refresh")
        assert proof["nonce"]
    ((me_status, me_headers),) = answers.to("/demo/api/me", [page])
    assert me_status == 200, "the nonce of keyturn's answers serves its API too"
    assert me_headers["authorization"] == f"DPoP {tokens[-1]}"
    assert "ath" in proof_claims(me_headers["dpop"])
    sid = claims_of(first)["sid"]
    session = demo.session(sid)
    assert (session.generation, session.revoked, session.dpop_jkt) == (ROTATIONS, False, jkt)

    stolen: dict[str, Any] = page.evaluate(WITHOUT_THE_KEY)
    assert (stolen["status"], stolen["body"]["error"]) == (400, "invalid_grant")
    ended = demo.session(sid)
    assert ended.revoked_reason is not None
    assert ended.revoked_reason.value == "reuse_key_mismatch"
    assert reuse_reasons(demo, sid) == ["reuse_key_mismatch"]


def test_nonce_challenges_at_the_login_and_at_a_resource_are_answered_once(
    demo: Demo, context: BrowserContext
) -> None:
    answers = Answers(context)
    page = open_tab(context, demo)
    kit(page, demo, login=True)  # knowing no nonce
    logins = answers.to("/auth/login", [page])
    assert [status for status, _ in logins] == [400, 200]
    assert "nonce" not in proof_claims(logins[0][1]["dpop"])
    assert proof_claims(logins[1][1]["dpop"])["nonce"]
    # Another instance of the kit (as after a reload) knows no nonce: its first call of
    # a resource is challenged, then answered.
    status: int = page.evaluate(
        """async () => {
            const { KeyturnClient } = await import("/static/keyturn.js");
            const fresh = new KeyturnClient({ clientId: "demo-web", dpop: true });
            await fresh.refresh();
            return (await fresh.fetch("/demo/api/me")).status;
        }"""
    )
    assert status == 200
    calls = answers.to("/demo/api/me", [page])
    assert [code for code, _ in calls] == [401, 200]
    assert "nonce" not in proof_claims(calls[0][1]["dpop"])
    assert proof_claims(calls[1][1]["dpop"])["nonce"]


def test_the_tabs_of_one_origin_share_one_key(demo: Demo, context: BrowserContext) -> None:
    tabs = [open_tab(context, demo) for _ in range(3)]
    for tab in tabs:
        kit(tab, demo, login=False)
    # No key yet: the three tabs create one at the same time, and agree on one.
    for tab in tabs:
        tab.evaluate("() => { window.made = window.auth.dpopThumbprint(); }")
    thumbprints = {tab.evaluate("() => window.made") for tab in tabs}
    assert len(thumbprints) == 1
    (jkt,) = thumbprints
    tabs[0].evaluate("([u, p]) => window.auth.login(u, p)", ["demo", demo.password])
    sid = claims_of(tabs[0].evaluate("() => window.auth.accessToken"))["sid"]
    # Each tab refreshes in turn through the shared cookie, each proving with the key.
    for tab in [*tabs[1:], tabs[0]]:
        tab.wait_for_function("() => window.auth.accessToken !== null")
        tab.evaluate("() => window.auth.refresh()")
        token = tab.evaluate("() => window.auth.accessToken")
        assert claims_of(token)["cnf"] == {"jkt": jkt}
    session = demo.session(sid)
    assert (session.generation, session.revoked, session.dpop_jkt) == (3, False, jkt)
    assert reuse_reasons(demo, sid) == []

"""The refresh cookie as a browser holds it (CK-01), refuses to use it for another site
(CK-04) and drops it at logout (CK-07)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from browser_demo import COOKIE, Demo, sign_in
from playwright.sync_api import Page


def refresh_cookie(page: Page) -> dict[str, Any] | None:
    found = [c for c in page.context.cookies() if c["name"] == COOKIE]
    assert len(found) <= 1
    return dict(found[0]) if found else None


def test_ck01_the_browser_holds_a_host_only_httponly_secure_strict_cookie(
    demo: Demo, new_page: Callable[[], Page]
) -> None:
    page = new_page()
    sign_in(page, demo)
    cookie = refresh_cookie(page)
    assert cookie is not None
    assert cookie["value"].startswith("kt_rt_")
    assert cookie["httpOnly"] is True
    assert cookie["secure"] is True
    assert cookie["sameSite"] == "Strict"
    assert cookie["path"] == "/"
    assert cookie["domain"] == "localhost"  # host-only: no Domain attribute
    assert COOKIE not in page.evaluate("document.cookie")  # out of the page's reach


CROSS_SITE_FETCHES = """async (target) => {
    const outcomes = {};
    for (const path of ["/auth/refresh", "/auth/logout"]) {
        const body = JSON.stringify({ client_id: "demo-web" });
        try {
            // What the page itself sends: needs a preflight that keyturn refuses.
            const response = await fetch(target + path, {
                method: "POST",
                credentials: "include",
                headers: { "Content-Type": "application/json", "X-Keyturn-CSRF": "1" },
                body,
            });
            outcomes[path] = "answered " + response.status;
        } catch {
            outcomes[path] = "blocked";
        }
        // A simple request goes out without a preflight, and its answer is unreadable.
        const simple = { method: "POST", mode: "no-cors", credentials: "include", body };
        await fetch(target + path, simple);
    }
    return outcomes;
}"""


def test_ck04_another_site_cannot_refresh_or_log_out_with_the_cookie(
    demo: Demo, new_page: Callable[[], Page], cross_site: str
) -> None:
    page = new_page()
    sid = sign_in(page, demo)
    before = refresh_cookie(page)
    generation = demo.session(sid).generation

    elsewhere = page.context.new_page()
    elsewhere.goto(f"{cross_site}/")
    outcomes = elsewhere.evaluate(CROSS_SITE_FETCHES, demo.base)
    assert outcomes == {"/auth/refresh": "blocked", "/auth/logout": "blocked"}
    for form in ("/refresh-form", "/logout-form"):
        with elsewhere.expect_navigation(url=f"{demo.base}/auth/**"):
            elsewhere.goto(f"{cross_site}{form}")
        assert '"error"' in elsewhere.content()

    assert refresh_cookie(page) == before
    session = demo.session(sid)
    assert session.generation == generation
    assert not session.revoked
    # The page's own refresh, from its own origin, still works with the same cookie.
    status = page.evaluate(
        """async () => (await fetch("/auth/refresh", {
            method: "POST",
            headers: { "Content-Type": "application/json", "X-Keyturn-CSRF": "1" },
            body: JSON.stringify({ client_id: "demo-web" }),
        })).status"""
    )
    assert status == 200
    assert demo.session(sid).generation == generation + 1


def test_ck07_after_logout_the_browser_no_longer_holds_the_cookie(
    demo: Demo, new_page: Callable[[], Page]
) -> None:
    page = new_page()
    sid = sign_in(page, demo)
    assert refresh_cookie(page) is not None
    page.click("#logout")
    page.wait_for_selector("#login-view:not([hidden])")
    assert page.inner_text("#login-message") == "You signed out."
    assert refresh_cookie(page) is None
    assert demo.session(sid).revoked
    page.reload()
    page.wait_for_selector("#login-view:not([hidden])")  # nothing left to resume

"""The demo page in a real browser: sign in, the protected call, rotation without a
reload, and a session ended from another browser sending this one back to sign-in."""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from datetime import datetime

from browser_demo import WAIT_MS, Demo, sign_in
from playwright.sync_api import Error as PlaywrightError
from playwright.sync_api import Page, expect

MARK = "window.keyturnTestMark"


def api_answer(page: Page) -> str:
    """Call the protected endpoint with the page's button and wait for its answer."""
    page.evaluate("document.getElementById('api-result').textContent = ''")
    page.click("#call-api")
    page.wait_for_selector("#api-result:not(:empty)")
    return page.inner_text("#api-result")


def expiry(page: Page) -> datetime:
    return datetime.fromisoformat(page.get_attribute("#token-expiry", "datetime") or "")


def test_signed_in_the_page_calls_the_protected_api(
    rotating_demo: Demo, new_page: Callable[[], Page]
) -> None:
    page = new_page()
    sid = sign_in(page, rotating_demo)
    answer = api_answer(page)
    assert answer.startswith("200")
    assert '"user": "demo"' in answer
    assert f'"sid": "{sid}"' in answer
    assert page.inner_text("#who") == "demo"


def test_the_page_rotates_its_token_before_expiry_without_a_reload(
    rotating_demo: Demo, new_page: Callable[[], Page]
) -> None:
    page = new_page()
    sid = sign_in(page, rotating_demo)
    page.evaluate(f"{MARK} = 'first load'")
    first_token = page.inner_text("#token-id")
    first_expiry = expiry(page)
    generation = rotating_demo.session(sid).generation

    # The page refreshes by itself; then wait until the first token has expired, as the
    # page's clock sees it.
    expect(page.locator("#refresh-count")).not_to_have_text("0", timeout=WAIT_MS)
    page.wait_for_function(
        "(expiry) => Date.now() > expiry + 500",
        arg=first_expiry.timestamp() * 1000,
        polling=250,
        timeout=WAIT_MS,
    )
    assert int(page.inner_text("#refresh-count")) >= 1
    assert page.inner_text("#token-id") != first_token
    assert expiry(page) > first_expiry
    assert page.evaluate(MARK) == "first load"  # the same document: no reload
    assert api_answer(page).startswith("200")
    assert rotating_demo.session(sid).generation > generation


def test_a_session_ended_from_another_browser_sends_the_page_back_to_sign_in(
    rotating_demo: Demo, new_page: Callable[[], Page]
) -> None:
    first = new_page()
    first_sid = sign_in(first, rotating_demo)
    first.evaluate(f"{MARK} = 'first load'")

    second = new_page()
    second_sid = sign_in(second, rotating_demo)
    assert second_sid != first_sid
    second.click("#list-sessions")
    row = second.locator(f'#sessions tr[data-sid="{first_sid}"]')
    row.get_by_role("button", name="End session").click()
    row.wait_for(state="detached")

    # At its next refresh (or a 401 on a call) the first page learns its session ended.
    first.wait_for_selector("#login-view:not([hidden])", timeout=WAIT_MS)
    assert "session has ended" in first.inner_text("#login-message")
    assert first.evaluate(MARK) == "first load"
    assert first.evaluate("document.getElementById('app-view').hidden")
    assert rotating_demo.session(first_sid).revoked
    assert not rotating_demo.session(second_sid).revoked
    assert api_answer(second).startswith("200")


RETRY_SCRIPT = """async (spoil) => {
    const { KeyturnClient } = await import("/static/keyturn.js");
    const seen = [];
    let left = spoil;
    // A fetch that records every request and sends the first `spoil` calls to the API
    // without their bearer token, as keyturn refuses an expired one.
    const recording = (input, init) => {
        const path = new URL(input, location.href).pathname;
        seen.push(path);
        if (path === "/demo/api/me" && left > 0) {
            left -= 1;
            return fetch(input, { ...init, headers: {} });
        }
        return fetch(input, init);
    };
    const auth = new KeyturnClient({ clientId: "demo-web", fetch: recording });
    if (!(await auth.restore())) throw new Error("no session to restore");
    seen.length = 0;
    const response = await auth.fetch("/demo/api/me");
    return { status: response.status, seen };
}"""


def test_the_client_refreshes_once_and_retries_a_call_refused_with_401(
    rotating_demo: Demo, new_page: Callable[[], Page]
) -> None:
    page = new_page()
    sign_in(page, rotating_demo)
    result = page.evaluate(RETRY_SCRIPT, 1)
    assert result == {
        "status": 200,
        "seen": ["/demo/api/me", "/auth/refresh", "/demo/api/me"],
    }


def test_the_client_retries_only_once(rotating_demo: Demo, new_page: Callable[[], Page]) -> None:
    page = new_page()
    sign_in(page, rotating_demo)
    result = page.evaluate(RETRY_SCRIPT, 2)
    assert result == {
        "status": 401,
        "seen": ["/demo/api/me", "/auth/refresh", "/demo/api/me"],
    }


def test_the_page_runs_no_inline_script(demo: Demo, new_page: Callable[[], Page]) -> None:
    page = new_page()
    page.goto(f"{demo.base}/")
    page.wait_for_selector("#login-view:not([hidden])")
    with contextlib.suppress(PlaywrightError):  # refused by the policy
        page.add_script_tag(content="window.injected = true")
    assert page.evaluate("window.injected === undefined")

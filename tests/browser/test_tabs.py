"""Many tabs of the demo app in one browser: one refresh request per expiry for all of
them (Web Locks), the new token shared (BroadcastChannel), no session ended by their
refreshes, and a logout in one tab signing out every tab."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from browser_demo import WAIT_MS, Demo, sign_in
from playwright.sync_api import Browser, BrowserContext, Page, Request, expect


@pytest.fixture
def context(browser: Browser) -> Iterator[BrowserContext]:
    """One browser profile: its tabs share the cookie jar and the origin's channels."""
    opened = browser.new_context()
    yield opened
    opened.close()


class Refreshes:
    def __init__(self, context: BrowserContext) -> None:
        self.count = 0
        context.on("request", self._seen)

    def _seen(self, request: Request) -> None:
        if request.url.endswith("/auth/refresh") and request.method == "POST":
            self.count += 1

    def counted_after(self, tabs: list[Page]) -> int:
        """The count once every event the browser sent so far has been handled.

        The sync API runs `_seen` only while it waits on the browser, so a request the
        server has already answered may still be uncounted after a direct database read.
        A round trip to each tab delivers the events sent before it."""
        for tab in tabs:
            tab.evaluate("0")
        return self.count


def open_tabs(
    context: BrowserContext, demo: Demo, how_many: int, refreshes: Refreshes | None = None
) -> tuple[list[Page], str]:
    first = context.new_page()
    sid = sign_in(first, demo)  # its page load tried the cookie once: there was none
    if refreshes is not None:
        refreshes.count = 0
    tabs = [first]
    for _ in range(how_many - 1):
        tab = context.new_page()
        tab.goto(f"{demo.base}/")
        tab.wait_for_selector("#app-view:not([hidden])", timeout=WAIT_MS)
        tabs.append(tab)
    return tabs, sid


def token_of(tab: Page) -> str:
    return tab.inner_text("#token-id")


def wait_for_rotation(tab: Page, before: str) -> str:
    expect(tab.locator("#token-id")).not_to_have_text(before, timeout=WAIT_MS)
    return token_of(tab)


def test_five_tabs_make_one_refresh_per_expiry_and_all_keep_working(
    rotating_demo: Demo, context: BrowserContext
) -> None:
    refreshes = Refreshes(context)
    tabs, sid = open_tabs(context, rotating_demo, 5, refreshes)
    # The new tabs took the signed-in tab's token: no request of their own.
    assert refreshes.count == 0
    assert len({token_of(tab) for tab in tabs}) == 1
    for cycle in range(2):
        before, counted = token_of(tabs[0]), refreshes.count
        after = wait_for_rotation(tabs[0], before)
        for tab in tabs[1:]:
            expect(tab.locator("#token-id")).to_have_text(after, timeout=WAIT_MS)
        assert refreshes.count == counted + 1, f"cycle {cycle}: one request for five tabs"
    for tab in tabs:
        tab.evaluate("document.getElementById('api-result').textContent = ''")
        tab.click("#call-api")
        expect(tab.locator("#api-result")).to_contain_text("200", timeout=WAIT_MS)
    session = rotating_demo.session(sid)
    # Counted after the session was read: a timer may refresh meanwhile.
    counted = refreshes.counted_after(tabs)
    assert session.revoked_at is None
    # Every rotation came from a counted request, and at most one was still under way.
    assert session.generation <= counted <= session.generation + 1


def test_ten_tabs_survive_a_refresh_storm_with_no_session_ended(
    rotating_demo: Demo, context: BrowserContext
) -> None:
    refreshes = Refreshes(context)
    tabs, sid = open_tabs(context, rotating_demo, 10, refreshes)
    for _ in range(3):
        wait_for_rotation(tabs[-1], token_of(tabs[-1]))
    assert refreshes.count <= 4, "about one refresh per expiry, not one per tab"
    assert all(tab.is_visible("#app-view") for tab in tabs)
    assert rotating_demo.session(sid).revoked_at is None
    assert all(s.revoked_at is None for s in rotating_demo.sessions() if s.id == sid)


def test_logging_out_in_one_tab_signs_out_every_tab(
    rotating_demo: Demo, context: BrowserContext
) -> None:
    tabs, sid = open_tabs(context, rotating_demo, 3)
    tabs[1].click("#logout")
    for tab in tabs:
        expect(tab.locator("#login-view")).to_be_visible(timeout=WAIT_MS)
        expect(tab.locator("#app-view")).to_be_hidden()
    assert rotating_demo.session(sid).revoked_at is not None

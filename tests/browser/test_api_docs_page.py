"""/docs in Chromium: Swagger UI, served by keyturn itself under its strict CSP, renders
every operation of the OpenAPI description."""

from __future__ import annotations

from collections.abc import Callable

from browser_demo import WAIT_MS, Demo
from playwright.sync_api import Page, expect


def test_swagger_ui_renders_the_description_under_its_csp(
    demo: Demo, new_page: Callable[[], Page]
) -> None:
    page = new_page()
    problems: list[str] = []
    page.on(
        "console",
        lambda message: problems.append(message.text) if message.type == "error" else None,
    )
    page.goto(f"{demo.base}/docs")
    expect(page.locator(".opblock").first).to_be_visible(timeout=WAIT_MS)
    assert page.locator(".opblock").count() >= 20
    assert page.get_by_text("/oauth/token").first.is_visible()
    assert [p for p in problems if "Content Security Policy" in p] == []

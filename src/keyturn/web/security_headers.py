"""Security headers: a strict policy on every HTML page keyturn serves, and
`X-Content-Type-Options: nosniff` on every response.

A pure ASGI middleware: it looks at the `Content-Type` of each response as it starts
and adds what is missing. A header the handler set itself is kept, so a page that needs
a wider policy says so where it is built: the authorization page, whose form answers
with a redirect to the client, must list the client's origin in its own `form-action`,
since browsers (Chromium among them) apply `form-action` to the redirects that follow
a form submission too.
"""

from __future__ import annotations

from starlette.types import ASGIApp, Message, Receive, Scope, Send

CONTENT_SECURITY_POLICY = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
)

HTML_HEADERS: tuple[tuple[bytes, bytes], ...] = (
    (b"content-security-policy", CONTENT_SECURITY_POLICY.encode()),
    (b"x-frame-options", b"DENY"),
    (b"referrer-policy", b"no-referrer"),
    (b"cross-origin-opener-policy", b"same-origin"),
)
EVERY_RESPONSE: tuple[tuple[bytes, bytes], ...] = ((b"x-content-type-options", b"nosniff"),)


def is_html(headers: list[tuple[bytes, bytes]]) -> bool:
    for name, value in headers:
        if name.lower() == b"content-type":
            return value.split(b";", 1)[0].strip().lower() == b"text/html"
    return False


def with_security_headers(headers: list[tuple[bytes, bytes]]) -> list[tuple[bytes, bytes]]:
    """`headers` plus every security header they lack (compared without case)."""
    present = {name.lower() for name, _ in headers}
    wanted = EVERY_RESPONSE + (HTML_HEADERS if is_html(headers) else ())
    return [*headers, *((name, value) for name, value in wanted if name not in present)]


class SecurityHeaders:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = with_security_headers(list(message.get("headers", [])))
                message = {**message, "headers": headers}
            await send(message)

        await self.app(scope, receive, send_with_headers)

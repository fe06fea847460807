"""The HTML keyturn renders itself: the sign-in page of the authorization endpoint and
the error page a user sees when a request cannot be sent back to its application.

Plain server-rendered HTML that works without JavaScript: labelled fields, the error in
a `role="alert"` region, every interpolated value escaped.
"""

from __future__ import annotations

from collections.abc import Mapping
from html import escape
from string import Template

_LAYOUT = Template("""<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta name="robots" content="noindex">
<title>$title</title>
</head>
<body>
<main>
$content
</main>
</body>
</html>
""")

_LOGIN = Template("""<h1>Sign in</h1>
<p>to continue to <strong>$client</strong>$scope_text</p>
$alert
<form method="post" action="$action" autocomplete="on">
$hidden
<p>
<label for="username">Username</label><br>
<input id="username" name="username" type="text" autocomplete="username"
 autocapitalize="none" spellcheck="false" required maxlength="256" value="$username"$focus_user>
</p>
<p>
<label for="password">Password</label><br>
<input id="password" name="password" type="password" autocomplete="current-password"
 required maxlength="1024"$focus_password>
</p>
<p><button type="submit">Sign in</button></p>
</form>
""")

_ERROR = Template("""<h1>$heading</h1>
<p role="alert">$message</p>
<p>Go back to the application you came from and try again.</p>
""")


def login_page(
    *,
    action: str,
    client: str,
    scope: str,
    fields: Mapping[str, str],
    error: str | None = None,
    username: str = "",
) -> str:
    """The sign-in form; `fields` travel as hidden inputs and are checked again."""
    hidden = "\n".join(
        f'<input type="hidden" name="{escape(name)}" value="{escape(value)}">'
        for name, value in fields.items()
    )
    alert = f'<p role="alert" id="error">{escape(error)}</p>' if error else ""
    content = _LOGIN.substitute(
        client=escape(client),
        scope_text=f" (access: {escape(scope)})" if scope else "",
        alert=alert,
        action=escape(action),
        hidden=hidden,
        username=escape(username),
        focus_user="" if username else " autofocus",
        focus_password=" autofocus" if username else "",
    )
    return _LAYOUT.substitute(title="Sign in", content=content)


def error_page(heading: str, message: str) -> str:
    """A refusal shown to the user only: never a redirect to an unverified address."""
    content = _ERROR.substitute(heading=escape(heading), message=escape(message))
    return _LAYOUT.substitute(title=escape(heading), content=content)

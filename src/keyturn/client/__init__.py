"""keyturn.client: an httpx authentication flow that keeps an OAuth 2 session alive
against any RFC 6749 server, with rotating refresh tokens handled the safe way.

    from keyturn.client import FileStore, RefreshingAuth

    auth = RefreshingAuth("https://auth.example.com/oauth/token", "my-app",
                          store=FileStore("~/.config/my-app/refresh-token"))
    auth.set_tokens(login_response)                     # once, after logging in
    with httpx.Client(auth=auth) as api:
        api.get("https://api.example.com/notes")        # refreshes by itself

One refresh at a time however many threads or tasks need it; the new refresh token is
saved before it is used; a refresh lost on the network is retried with the same token
(the server's grace window answers it again); `LoginRequired` when the session is over.
With `dpop=True`, every token request and every call with a bound access token carries
a DPoP proof (RFC 9449) of a key the store keeps beside the refresh token.
"""

from keyturn.client.auth import RefreshingAuth
from keyturn.client.dpop import DpopKey
from keyturn.client.errors import GrantRefused, LoginRequired, RefreshFailed, RefreshUnavailable
from keyturn.client.stores import (
    CallbackStore,
    DpopKeyStore,
    FileStore,
    MemoryStore,
    RefreshTokenStore,
)

__all__ = [
    "CallbackStore",
    "DpopKey",
    "DpopKeyStore",
    "FileStore",
    "GrantRefused",
    "LoginRequired",
    "MemoryStore",
    "RefreshFailed",
    "RefreshTokenStore",
    "RefreshUnavailable",
    "RefreshingAuth",
]

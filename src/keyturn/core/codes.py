"""What a presentation of an authorization code may do: pure rules over the stored code,
the presenting client and the clock (RFC 6749 §4.1.2-§4.1.3, RFC 9700 §4.5.3).

`docs/decisions/codes-and-registration.md` has the reasoning behind the bound.
"""

from __future__ import annotations

from datetime import datetime

from keyturn.core.ids import ClientId
from keyturn.core.models import AuthorizationCode, User


def replay_ends_session(
    code: AuthorizationCode, client_id: ClientId, verifier_matches: bool, now: datetime
) -> bool:
    """Whether presenting the used `code` again ends the session it opened;
    `verifier_matches` says whether the presentation carried the code's PKCE verifier.

    RFC 6749 §4.1.2: on a second use the server "SHOULD revoke (when possible) all
    tokens previously issued based on that authorization code". That answer is for a
    code intercepted in flight, when the client and a thief race to exchange it: both
    present it as the code's own client and before it expires. A used code presented by
    another client, or after its expiry, is no such race: the client never accepts it
    and no thief can redeem it. Ending the session then would hand a kill switch to
    anyone who saw the code in a log or a browser history, for as long as the code is
    stored. So only the code's own (authenticated) client, before `expires_at`, ends it,
    and only with the verifier: with PKCE (RFC 7636 §1) a thief who redeemed the code
    held the verifier, and so does the real client coming second, while someone who
    only saw the code in passing has nothing to prove the race with.
    """
    return code.used and code.client_id == client_id and verifier_matches and now < code.expires_at


def password_changed_since(code: AuthorizationCode, user: User) -> bool:
    """Whether the user's password changed after they signed in for `code`.

    A password change ends every other session of the user (the rotation rules refuse
    a session authenticated before it: `keyturn.core.rotation`); a code granted before
    the change would otherwise open a new one for whoever held the old password.
    """
    return user.password_changed_at > code.authenticated_at

"""The claims of the two OpenID Connect tokens keyturn signs besides access tokens: the
ID token (OpenID Connect Core 1.0 §2, §3.1.3.6, §12.2) and the logout token
(Back-Channel Logout 1.0 §2.4). What is signed, and under which header, is decided here;
the signature is `compact_jws`'s.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from datetime import datetime, timedelta
from typing import Any

from keyturn.crypto.compact_jws import b64url

ID_TOKEN_TYP = "JWT"
LOGOUT_TOKEN_TYP = "logout+jwt"
"""Explicit typing (Back-Channel Logout §2.4; RFC 8725 §3.11): a logout token can be
taken for no other JWT."""
BACKCHANNEL_LOGOUT_EVENT = "http://schemas.openid.net/event/backchannel-logout"
LOGOUT_TOKEN_LIFETIME = timedelta(minutes=2)
"""Back-Channel Logout §4 asks for at most two minutes, so a captured token is soon
useless."""

_HASHES = {"ES256": "sha256", "RS256": "sha256", "PS256": "sha256", "EdDSA": "sha512"}
"""Core §3.1.3.6: the hash of the ID token's `alg`. EdDSA names no hash of its own; with
Ed25519 (the only curve keyturn signs with) it is SHA-512, the hash Ed25519 uses, as
OpenID Foundation implementations agree."""


def token_hash(value: str, alg: str) -> str:
    """`at_hash` (or `c_hash`) of `value` for an ID token signed with `alg`: base64url of
    the left half of the hash of its ASCII octets (Core §3.1.3.6, §3.3.2.11)."""
    name = _HASHES.get(alg)
    if name is None:
        raise ValueError(f"no ID token hash for alg {alg!r}")
    digest = hashlib.new(name, value.encode("ascii")).digest()
    return b64url(digest[: len(digest) // 2]).decode("ascii")


def id_token_claims(
    *,
    issuer: str,
    subject: str,
    client_id: str,
    alg: str,
    issued_at: datetime,
    expires_at: datetime,
    auth_time: datetime,
    session_id: str,
    nonce: str | None = None,
    access_token: str | None = None,
    audience: Sequence[str] = (),
    extra: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """An ID token's claims. `audience` names audiences beside the client (then `azp`
    names the client, Core §2); `nonce` is the authorization request's, echoed (Core
    §3.1.2.1), and absent from the ID token of a refresh (§12.2); `access_token` is the
    one issued with it, for `at_hash`; `auth_time` is the original authentication's,
    on a refresh too (§12.2); `extra` adds standard claims (`preferred_username`,
    `email`, ...) and never replaces one of these."""
    audiences = [client_id, *(a for a in audience if a != client_id)]
    claims: dict[str, Any] = dict(extra or {})
    claims.update(
        {
            "iss": issuer,
            "sub": subject,
            "aud": client_id if len(audiences) == 1 else audiences,
            "exp": int(expires_at.timestamp()),
            "iat": int(issued_at.timestamp()),
            "auth_time": int(auth_time.timestamp()),
            "sid": session_id,
        }
    )
    if len(audiences) > 1:
        claims["azp"] = client_id
    if nonce is not None:
        claims["nonce"] = nonce
    else:
        claims.pop("nonce", None)
    if access_token is not None:
        claims["at_hash"] = token_hash(access_token, alg)
    return claims


def logout_token_claims(
    *,
    issuer: str,
    client_id: str,
    subject: str,
    session_id: str,
    issued_at: datetime,
    jti: str,
) -> dict[str, Any]:
    """A logout token's claims (Back-Channel Logout §2.4): the session (`sid`) and its
    user (`sub`) both named, the logout event, a `jti` the receiver can use against
    replays, a two-minute life, and never a `nonce` (§2.4: so it cannot pass for an ID
    token)."""
    return {
        "iss": issuer,
        "sub": subject,
        "aud": client_id,
        "iat": int(issued_at.timestamp()),
        "exp": int((issued_at + LOGOUT_TOKEN_LIFETIME).timestamp()),
        "jti": jti,
        "sid": session_id,
        "events": {BACKCHANNEL_LOGOUT_EVENT: {}},
    }

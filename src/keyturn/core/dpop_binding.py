"""Which DPoP key (RFC 9449) a token request's tokens are bound to, by the client's
registered DPoP mode.

The proof itself is checked at the edge, before any state is read or written
(`keyturn.crypto.dpop.DpopVerifier`); what reaches the use cases is its key's
thumbprint, or None for a request without a proof. These rules decide what that key
does: admitted, refused, or made the session's binding.
"""

from __future__ import annotations

from keyturn.core.dpop_errors import InvalidDpopProof
from keyturn.core.models import Client
from keyturn.core.policy import DpopMode


def admitted_key(client: Client, key_thumbprint: str | None) -> str | None:
    """The key the request's tokens are bound to: `key_thumbprint` itself, when the
    client's mode lets it through. Raises `InvalidDpopProof` otherwise. Called before
    anything is consumed, so a refused request leaves a code or a refresh token live.
    """
    mode = client.rotation.dpop_mode
    if mode is DpopMode.REQUIRED and key_thumbprint is None:
        raise InvalidDpopProof(detail="this client's token requests need a DPoP proof")
    if mode is DpopMode.OFF and key_thumbprint is not None:
        # A client that sends a proof expects a bound token. Answering with a bearer
        # token (RFC 9449 §5 lets a server without DPoP do so) would downgrade it
        # silently where the client does not check `token_type`; the operator turned
        # DPoP off for this client, so a proof is a misconfiguration, said at once.
        raise InvalidDpopProof(detail="DPoP is off for this client")
    return key_thumbprint


def session_key(client: Client, key_thumbprint: str | None) -> str | None:
    """The key a new session's refresh tokens are bound to (`Session.dpop_jkt`).

    RFC 9449 §5: a refresh token issued to a public client that presented a valid
    proof "MUST be bound" to its key. A confidential client's refresh tokens are
    already sender-constrained by its authentication and stay unbound, as §5 says;
    binding them would end the session of a client whose processes each hold their
    own key. Its access tokens are bound all the same (`cnf.jkt`, §6.1).
    """
    return None if client.is_confidential else key_thumbprint

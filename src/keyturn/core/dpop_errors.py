"""The errors of DPoP (RFC 9449), each with its stable code.

They live beside `keyturn.core.errors` rather than in it so that the DPoP work lands
without touching the catalogue other changes edit; `DPOP_ERRORS` lists them for the web
layer's mapping test, as `ALL_ERRORS` does for the rest.

Where they are answered:

- `InvalidDpopProof`: HTTP 400 `{"error": "invalid_dpop_proof"}` at the token endpoint
  (RFC 9449 §5), and 401 with `WWW-Authenticate: DPoP error="invalid_dpop_proof"` at a
  protected resource (§7.1). RFC 9449 §12.2 registers the code.
- `UseDpopNonce`: the same statuses with `use_dpop_nonce` (§8 at the token endpoint,
  §9 at a resource), and the fresh nonce in a `DPoP-Nonce` header.
"""

from __future__ import annotations

from typing import Any

from keyturn.core.errors import KeyturnError


class InvalidDpopProof(KeyturnError):
    """The DPoP proof is missing, malformed, replayed, or fails a check of RFC 9449 §4.3.

    One public message for every reason (`detail` says which check failed, for the log):
    a client that built its proof right never sees it, and a forger learns nothing.
    """

    code = "invalid_dpop_proof"
    default_public = "The DPoP proof is invalid."


class UseDpopNonce(KeyturnError):
    """The proof lacks the server's current nonce, or carries a stale or forged one
    (RFC 9449 §8, §9). `nonce` is the one to send back in the `DPoP-Nonce` header; the
    client retries with a new proof that carries it."""

    code = "use_dpop_nonce"
    default_public = "Authorization server requires nonce in DPoP proof."

    def __init__(self, nonce: str, public: str | None = None, *, detail: str = "") -> None:
        super().__init__(public, detail=detail)
        self.nonce = nonce

    def __reduce__(self) -> tuple[Any, ...]:
        return (type(self), (self.nonce, self.public), {"detail": self.detail})


DPOP_ERRORS: tuple[type[KeyturnError], ...] = (InvalidDpopProof, UseDpopNonce)
"""Every DPoP error class, for the web layer's mapping and its test."""

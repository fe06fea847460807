"""keyturn.verify: check access tokens in a resource server, the way RFC 9068 and RFC
8725 ask, with no call to the token service on the request path.

    from keyturn.verify import Verifier

    verifier = Verifier("https://auth.example.com", audience="https://api.example.com")
    token = verifier.verify(bearer)            # or: await verifier.verify_async(bearer)
    token.require_scopes("read")               # InsufficientScope otherwise

`verify` refuses a DPoP-bound token (RFC 9449): those go through
`keyturn.verify.dpop.DpopTokenVerifier`, with the request's proof.

Keys come from the issuer's metadata (RFC 8414) and JWKS, cached as its
`Cache-Control` allows, fetched again (at most every `refetch_interval` seconds) when a
token names a key not yet seen. For Starlette and FastAPI see `keyturn.verify.starlette`.
"""

from keyturn.verify.dpop import DpopTokenVerifier
from keyturn.verify.keyset import KeySet
from keyturn.verify.verifier import AccessToken, InsufficientScope, TokenRejected, Verifier

__all__ = [
    "AccessToken",
    "DpopTokenVerifier",
    "InsufficientScope",
    "KeySet",
    "TokenRejected",
    "Verifier",
]

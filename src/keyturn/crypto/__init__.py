"""Token formats, keys and hashing: the refresh-token codec, RFC 9068 access tokens,
signing keys and their JWKS, sealing at rest, Argon2id passwords, client secrets."""

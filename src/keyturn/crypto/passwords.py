"""Passwords: Argon2id hashing (argon2-cffi) and the policy for new passwords.

Parameters are OWASP's (Password Storage Cheat Sheet): m = 19 MiB, t = 2, p = 1.
The common-password list holds the 3,000 most frequent passwords of the frequency
list shipped by the `zxcvbn` project (its "passwords" dictionary), one per line.
"""

from __future__ import annotations

from functools import cache
from importlib import resources

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError

from keyturn.core.errors import PasswordRejected

MIN_PASSWORD_LENGTH = 8
MAX_PASSWORD_LENGTH = 1024
"""Longer input is refused before hashing (ASVS 6.2.9 asks for at least 64 allowed)."""


class Passwords:
    def __init__(
        self, *, memory_cost: int = 19_456, time_cost: int = 2, parallelism: int = 1
    ) -> None:
        self._hasher = PasswordHasher(
            memory_cost=memory_cost, time_cost=time_cost, parallelism=parallelism, salt_len=16
        )
        self._dummy = self._hasher.hash("keyturn dummy password for unknown users")

    def hash(self, password: str) -> str:
        return self._hasher.hash(password)

    def verify(self, stored_hash: str, password: str) -> bool:
        """True if `password` matches; never raises for a mismatch or a bad hash."""
        try:
            return self._hasher.verify(stored_hash, password)
        except (VerifyMismatchError, VerificationError, InvalidHashError):
            return False

    def verify_dummy(self, password: str) -> None:
        """Do the work of one verify, for a user who does not exist (equal timing)."""
        self.verify(self._dummy, password)

    def needs_rehash(self, stored_hash: str) -> bool:
        return self._hasher.check_needs_rehash(stored_hash)


@cache
def common_passwords() -> frozenset[str]:
    text = resources.files("keyturn.crypto").joinpath("common_passwords.txt").read_text()
    return frozenset(line.strip().lower() for line in text.splitlines() if line.strip())


def check_new_password(password: str, username: str) -> None:
    """Refuse a new password that is too short, too long, the username, or common."""
    if len(password) < MIN_PASSWORD_LENGTH:
        raise PasswordRejected(f"A password needs at least {MIN_PASSWORD_LENGTH} characters.")
    if len(password) > MAX_PASSWORD_LENGTH:
        raise PasswordRejected(f"A password has at most {MAX_PASSWORD_LENGTH} characters.")
    if password.casefold() == username.casefold():
        raise PasswordRejected("The password cannot be the username.")
    if password.lower() in common_passwords():
        raise PasswordRejected("This password is too common; choose another.")

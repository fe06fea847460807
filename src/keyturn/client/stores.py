"""Where a client keeps its refresh token between runs: it is the one long-lived
secret, so each store writes the new token before the old one can be lost."""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Protocol


class RefreshTokenStore(Protocol):
    def load(self) -> str | None:
        """The saved refresh token, or `None`."""
        ...

    def save(self, token: str | None) -> None:
        """Keep `token` (durably, before returning), or forget it (`None`)."""
        ...


class MemoryStore:
    """For a process that logs in at every start."""

    def __init__(self, token: str | None = None) -> None:
        self._token = token

    def load(self) -> str | None:
        return self._token

    def save(self, token: str | None) -> None:
        self._token = token


class FileStore:
    """One file, mode 0600, replaced atomically: a crash mid-write leaves the previous
    token or the new one, never half of either."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path).expanduser()

    def load(self) -> str | None:
        try:
            text = self.path.read_text(encoding="ascii").strip()
        except FileNotFoundError:
            return None
        return text or None

    def save(self, token: str | None) -> None:
        if token is None:
            self.path.unlink(missing_ok=True)
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        descriptor, temporary = tempfile.mkstemp(prefix=f".{self.path.name}.", dir=self.path.parent)
        try:
            os.fchmod(descriptor, 0o600)
            with os.fdopen(descriptor, "w", encoding="ascii") as file:
                file.write(token)
                file.flush()
                os.fsync(file.fileno())
            os.replace(temporary, self.path)
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(temporary)
            raise
        # The rename itself is durable only once the directory is synced.
        directory = os.open(self.path.parent, os.O_RDONLY)
        try:
            os.fsync(directory)
        finally:
            os.close(directory)


class CallbackStore:
    """The application's own storage (a keychain, a database row)."""

    def __init__(self, load: Callable[[], str | None], save: Callable[[str | None], None]) -> None:
        self._load = load
        self._save = save

    def load(self) -> str | None:
        return self._load()

    def save(self, token: str | None) -> None:
        self._save(token)

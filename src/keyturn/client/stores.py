"""Where a client keeps its refresh token between runs: it is the one long-lived
secret, so each store writes the new token before the old one can be lost. A store
that is also a `DpopKeyStore` keeps the DPoP key the refresh token is bound to."""

from __future__ import annotations

import contextlib
import os
import tempfile
import threading
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


class DpopKeyStore(Protocol):
    """Where a client keeps its DPoP private key (PKCS#8 PEM): with the refresh token
    bound to it, and for as long. Generated once, never replaced."""

    def load_key(self) -> bytes | None:
        """The kept key, or `None`."""
        ...

    def add_key(self, pem: bytes) -> bytes:
        """Keep `pem` unless a key is kept already; return the key kept (`pem`, or the
        one another process kept first)."""
        ...


class MemoryStore:
    """For a process that logs in at every start (the DPoP key, if any, lives as long)."""

    def __init__(self, token: str | None = None) -> None:
        self._token = token
        self._key: bytes | None = None
        self._key_lock = threading.Lock()

    def load(self) -> str | None:
        return self._token

    def save(self, token: str | None) -> None:
        self._token = token

    def load_key(self) -> bytes | None:
        return self._key

    def add_key(self, pem: bytes) -> bytes:
        with self._key_lock:
            if self._key is None:
                self._key = pem
            return self._key


class FileStore:
    """One file, mode 0600, replaced atomically: a crash mid-write leaves the previous
    token or the new one, never half of either. The DPoP key, if the client uses one,
    is a second 0600 file beside it (`key_path`: the token file's name + `.dpop-key`),
    written once and kept when the token is forgotten, so the next login proves with
    the same key."""

    def __init__(
        self, path: str | os.PathLike[str], *, key_path: str | os.PathLike[str] | None = None
    ) -> None:
        self.path = Path(path).expanduser()
        self.key_path = (
            Path(key_path).expanduser()
            if key_path is not None
            else self.path.with_name(self.path.name + ".dpop-key")
        )

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
        _write_private(self.path, token.encode("ascii"), replace=True)

    def load_key(self) -> bytes | None:
        try:
            return self.key_path.read_bytes() or None
        except FileNotFoundError:
            return None

    def add_key(self, pem: bytes) -> bytes:
        if _write_private(self.key_path, pem, replace=False):
            return pem
        # Another process kept its key first: every process of this store proves with
        # one key, or the server would take the others' refreshes for theft.
        kept = self.load_key()
        if kept is None:
            raise FileNotFoundError(self.key_path)
        return kept


def _write_private(path: Path, data: bytes, *, replace: bool) -> bool:
    """Write `data` to `path` as a new 0600 file, fsynced, then put in place
    atomically: renamed over the old file (`replace`), or linked only if there is none
    (False when there was one). The directory is synced so the name is durable too."""
    path.parent.mkdir(parents=True, exist_ok=True)
    descriptor, temporary = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    placed = True
    try:
        os.fchmod(descriptor, 0o600)
        with os.fdopen(descriptor, "wb") as file:
            file.write(data)
            file.flush()
            os.fsync(file.fileno())
        if replace:
            os.replace(temporary, path)
        else:
            try:
                os.link(temporary, path)
            except FileExistsError:
                placed = False
            os.unlink(temporary)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(temporary)
        raise
    directory = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(directory)
    finally:
        os.close(directory)
    return placed


class CallbackStore:
    """The application's own storage (a keychain, a database row). It keeps no DPoP
    key: give `RefreshingAuth` one (`dpop_key=DpopKey.from_pem(...)`) from storage of
    your own."""

    def __init__(self, load: Callable[[], str | None], save: Callable[[str | None], None]) -> None:
        self._load = load
        self._save = save

    def load(self) -> str | None:
        return self._load()

    def save(self, token: str | None) -> None:
        self._save(token)

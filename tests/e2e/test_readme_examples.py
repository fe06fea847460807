"""The README's kit examples run as written, against a started server: the FastAPI API
protected by keyturn.verify (served by uvicorn), called by the keyturn.client example.
Only the addresses, names and secrets are swapped for the test server's."""

from __future__ import annotations

import contextlib
import io
import re
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn

from conftest import Server
from support.engine import PASSWORD
from support.server import free_port

README = Path(__file__).resolve().parents[2] / "README.md"
AUTH, NOTES = "https://auth.example.com", "https://notes.example.com"


def kit_examples() -> list[str]:
    section = README.read_text().split("## Kits for your apps and APIs", 1)[1].split("\n## ")[0]
    return re.findall(r"```python\n(.*?)```", section, re.DOTALL)


@contextlib.contextmanager
def serving(app: Any) -> Iterator[str]:
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="error"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 20
    while not server.started:
        assert time.monotonic() < deadline, "the example API did not start"
        time.sleep(0.05)
    try:
        yield base
    finally:
        server.should_exit = True
        thread.join(10)


def test_the_readme_kit_examples_work_together(server: Server, tmp_path: Path) -> None:
    protect, call = kit_examples()
    api: dict[str, Any] = {"API_SECRET": server.secrets["rs"]}
    exec(  # noqa: S102 - the README's own example, run as written
        protect.replace(AUTH, server.base).replace(NOTES, server.base).replace("notes-api", "rs"),
        api,
    )
    try:
        with serving(api["app"]) as notes:
            anonymous = httpx.get(f"{notes}/notes")
            assert anonymous.status_code == 401
            client: dict[str, Any] = {
                "credentials": {"username": "alice", "password": PASSWORD, "client_id": "native"}
            }
            code = (
                call.replace(AUTH, server.base)
                .replace(NOTES, notes)
                .replace("notes-cli", "native")
                .replace("~/.config/notes/refresh-token", str(tmp_path / "rt"))
            )
            printed = io.StringIO()
            with contextlib.redirect_stdout(printed):
                exec(code, client)  # noqa: S102 - the README's own example
            assert printed.getvalue().startswith("['notes of "), printed.getvalue()
            assert (tmp_path / "rt").read_text().startswith("kt_rt_")
    finally:
        api["feed"].stop()


def test_the_examples_are_there() -> None:
    assert len(kit_examples()) == 2
    with pytest.raises(IndexError):
        kit_examples()[2]

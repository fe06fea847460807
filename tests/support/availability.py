"""What a test does when something it needs is not on this machine: skip with a message
saying how to get it, except in CI (`CI` set and not "0"/"false"/"no"), where it fails:
CI must prove every behaviour on the real thing."""

from __future__ import annotations

import os
from typing import NoReturn

import pytest


def in_ci() -> bool:
    return os.environ.get("CI", "").lower() not in {"", "0", "false", "no"}


def missing(service: str, where: str, how: str) -> NoReturn:
    message = f"{service} is not reachable at {where}: {how}"
    if in_ci():
        pytest.fail(message + " (CI runs every test; it may not skip)")
    pytest.skip(message)

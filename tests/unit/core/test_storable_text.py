"""Text a store can hold (core.storable): no NUL, no lone surrogate."""

from __future__ import annotations

import pytest

from keyturn.core.storable import scrubbed, storable


@pytest.mark.parametrize("text", ["plain", "é and 日本", ""])
def test_text_without_nul_or_lone_surrogate_is_storable(text: str) -> None:
    assert storable(text, 7, None, b"\x00")  # what is not text passes


@pytest.mark.parametrize("text", ["a\x00b", "\ud800", "x\udfffy"])
def test_a_nul_or_a_lone_surrogate_is_not_storable(text: str) -> None:
    assert not storable("fine", text)


def test_scrubbing_replaces_each_nul_and_lone_surrogate_and_keeps_the_rest() -> None:
    assert scrubbed("a\x00b\ud800c日") == "a\ufffdb\ufffdc日"


def test_scrubbing_leaves_storable_text_and_none_as_they_are() -> None:
    text = "already fine"
    assert scrubbed(text) is text
    assert scrubbed(None) is None

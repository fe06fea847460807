"""JSON read strictly (`keyturn.core.json_object`): a repeated member is refused at any
depth, so no two readers of one document can see two values."""

from __future__ import annotations

import pytest

from keyturn.core.json_object import loads


def test_a_document_without_repeats_reads_as_json_does() -> None:
    assert loads('{"a": 1, "b": {"c": [1, {"d": null}]}}') == {"a": 1, "b": {"c": [1, {"d": None}]}}
    assert loads("[1, 2]") == [1, 2]


@pytest.mark.parametrize(
    "text",
    ['{"client_id": "a", "client_id": "b"}', '{"outer": {"x": 1, "x": 1}}', '[{"k": 1, "k": 2}]'],
)
def test_a_repeated_member_is_refused_at_any_depth(text: str) -> None:
    with pytest.raises(ValueError, match="repeated"):
        loads(text)

"""Printing results: aligned tables for people, one JSON document with `--json`."""

from __future__ import annotations

import dataclasses
import enum
import json
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

import click


def plain(value: Any) -> Any:
    """A JSON-ready form of a value: ISO-8601 UTC times, enum values, lists."""
    if isinstance(value, datetime):
        return value.astimezone(UTC).isoformat().replace("+00:00", "Z")
    if isinstance(value, enum.Enum):
        return value.value
    if isinstance(value, frozenset | set):
        return sorted(plain(v) for v in value)
    if isinstance(value, tuple | list):
        return [plain(v) for v in value]
    if isinstance(value, Mapping):
        return {k: plain(v) for k, v in value.items()}
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: plain(getattr(value, f.name)) for f in dataclasses.fields(value)}
    return value


def emit(data: Any, *, as_json: bool, columns: Sequence[str] | None = None) -> None:
    """Print `data` (a mapping or a list of mappings) as JSON or as a table."""
    ready = plain(data)
    if as_json:
        click.echo(json.dumps(ready, indent=2, sort_keys=False))
        return
    if isinstance(ready, list):
        table(ready, columns)
    else:
        width = max((len(k) for k in ready), default=0)
        for key, value in ready.items():
            click.echo(f"{key.ljust(width)}  {_cell(value)}")


def _cell(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, list):
        return " ".join(str(v) for v in value) or "-"
    return str(value)


def table(items: Sequence[Mapping[str, Any]], columns: Sequence[str] | None) -> None:
    if not items:
        click.echo("(none)")
        return
    names = list(columns or items[0].keys())
    cells = [[_cell(item.get(name)) for name in names] for item in items]
    widths = [max(len(name), *(len(row[i]) for row in cells)) for i, name in enumerate(names)]
    click.echo("  ".join(n.upper().ljust(w) for n, w in zip(names, widths, strict=True)))
    for row in cells:
        click.echo("  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip())

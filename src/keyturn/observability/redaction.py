"""Secrets out of the log: a filter that rewrites every record before it is written.

What it replaces with `[redacted]`, wherever it appears (the message, its arguments,
extra fields, a traceback):

- keyturn refresh tokens `kt_rt_…` and client secrets `kt_cs_…`;
- JWTs and JWEs: base64url segments joined by dots, the first starting `eyJ`;
- the credentials of `Basic …` (20 characters or more) and `Bearer …` (16 or more);
- the value after a key that names a secret, `password=…`, `"password": "…"`,
  `'client_secret': '…'`: keys ending in `password`, `passwd` or `secret`, and
  `token`, `refresh_token`, `access_token`, `id_token`. An unquoted value ends at
  whitespace, a quote or `&` (so a quoted key inside it is still found).

An extra field whose own name is such a key is replaced whole.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping
from typing import Any

REDACTED = "[redacted]"

_TOKENS = re.compile(
    r"kt_(?:rt|cs)_[A-Za-z0-9_-]*"
    r"|eyJ[A-Za-z0-9_-]*(?:\.[A-Za-z0-9_-]*){2,}"
    r"|(?i:(?<![A-Za-z0-9])(?:basic\s+[A-Za-z0-9+/=_-]{20,}|bearer\s+[A-Za-z0-9._~+/=-]{16,}))"
)

_SECRET_KEY = r"[\w-]*pass(?:word|wd)|[\w-]*secret|(?:refresh_|access_|id_)?token"

_FIELDS = re.compile(
    rf"""(?ix)
    (?<![\w-]) (?P<key>{_SECRET_KEY})
    (?P<sep> \\?["']? \s* [:=] \s* )
    (?P<value>
        \\"(?:[^\\]|\\[^"])*(?:\\")?  # \"escaped quotes\", a JSON string inside JSON
      | "(?:[^"\\]|\\.)*"?          # "double quoted"
      | '(?:[^'\\]|\\.)*'?          # 'single quoted' (a Python repr)
      | [^\s&"']+                   # form-encoded or bare, to whitespace, & or a quote
    )
    """
)

_SECRET_FIELD_NAME = re.compile(rf"(?i)^(?:{_SECRET_KEY})$")

_RECORD_ATTRIBUTES = frozenset(
    vars(logging.LogRecord("", 0, "", 0, "", None, None)).keys()
    | {"message", "asctime", "taskName"}
)


def _hide_value(match: re.Match[str]) -> str:
    value = match["value"]
    quote = value[:2] if value.startswith('\\"') else value[:1]
    if quote not in {'"', "'", '\\"'}:
        quote = ""
    return f"{match['key']}{match['sep']}{quote}{REDACTED}{quote}"


def redact(text: str) -> str:
    """`text` with every token, secret and password value replaced by `[redacted]`."""
    # Fields first: a token just before a key (`kt_rt_…password=x`) would otherwise
    # take the key with it and leave the value.
    return _TOKENS.sub(REDACTED, _FIELDS.sub(_hide_value, text))


def redact_value(value: Any) -> Any:
    """Strings redacted inside `value`, through mappings, lists and tuples."""
    if isinstance(value, str):
        return redact(value)
    if isinstance(value, Mapping):
        return {
            key: REDACTED
            if isinstance(key, str) and _SECRET_FIELD_NAME.match(key)
            else redact_value(item)
            for key, item in value.items()
        }
    if isinstance(value, list | tuple):
        return [redact_value(item) for item in value]
    return value


ACCESS_LOGGER = "keyturn.access"


class Redaction(logging.Filter):
    """Rewrites each record in place, so every handler and formatter after it sees
    only the redacted text. Install it on the handler: a logger's filter does not see
    records propagated from its children.

    Records of `keyturn.access` pass as they are: `ObservedRequests` builds each of them
    from a route template, closed-set labels, numbers and the peer's address only (never
    a raw path, query or header), and rewriting one per request would cost more than
    writing it."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.name == ACCESS_LOGGER:
            return True
        if isinstance(record.msg, Mapping):
            record.msg = redact_value(record.msg)
        else:
            try:
                message = record.getMessage()
            except (TypeError, ValueError):  # arguments that do not fit the format
                message = f"{record.msg} {record.args}"
            record.msg = redact(message)
        record.args = None
        for name, value in list(vars(record).items()):
            if name in _RECORD_ATTRIBUTES:
                continue
            hidden = REDACTED if _SECRET_FIELD_NAME.match(name) else redact_value(value)
            setattr(record, name, hidden)
        if record.exc_info:
            # Formatted once here, so the traceback's text is redacted too.
            record.exc_text = logging.Formatter().formatException(record.exc_info)
            record.exc_info = None
        if record.exc_text:
            record.exc_text = redact(record.exc_text)
        if record.stack_info:
            record.stack_info = redact(record.stack_info)
        return True

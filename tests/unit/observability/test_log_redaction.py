"""The log redaction filter: no refresh token, client secret, JWT or password value
survives it, whatever text surrounds it, in the message, its arguments, extra fields
or a traceback."""

from __future__ import annotations

import base64
import json
import logging
import string
import sys
import uuid

from hypothesis import assume, given
from hypothesis import strategies as st

from keyturn.core.ids import SessionId
from keyturn.crypto import refresh_codec
from keyturn.crypto.client_secrets import generate_secret
from keyturn.observability.redaction import REDACTED, Redaction, redact


def b64url(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii")


class Bytes:
    def __init__(self, raw: bytes) -> None:
        self.raw = raw

    def token_bytes(self, n: int) -> bytes:
        return (self.raw * n)[:n]


refresh_tokens = st.builds(
    lambda sid, generation, salt, key: refresh_codec.encode(
        refresh_codec.RefreshClaims(
            session_id=SessionId(str(uuid.UUID(int=sid, version=4))),
            generation=generation,
            salt=salt,
            mac_key_id=1,
        ),
        key,
    ),
    st.integers(0, 2**128 - 1),
    st.integers(0, refresh_codec.MAX_GENERATION),
    st.binary(min_size=8, max_size=8),
    st.binary(min_size=32, max_size=32),
)
client_secrets = st.binary(min_size=1, max_size=32).map(lambda raw: generate_secret(Bytes(raw)))
jwts = st.builds(
    lambda header, claims, signature: ".".join(
        [
            b64url(json.dumps(header).encode()),
            b64url(json.dumps(claims).encode()),
            b64url(signature),
        ]
    ),
    st.fixed_dictionaries(
        {"alg": st.sampled_from(["ES256", "EdDSA", "RS256"]), "kid": st.text(max_size=20)}
    ),
    st.dictionaries(st.text(max_size=10), st.text(max_size=30) | st.integers(), max_size=5),
    st.binary(min_size=1, max_size=256),
)
secrets = refresh_tokens | client_secrets | jwts

# A password as it appears unquoted (in a form body): no whitespace, quote or `&`.
passwords = st.text(
    alphabet=string.ascii_letters + string.digits + "!#$%()*+,-./:;<=>?@^_|~",
    min_size=8,
    max_size=64,
)
PASSWORD_FIELDS = [
    "password={}",
    "new_password={}&username=alice",
    '{{"password": "{}"}}',
    "{{'current_password': '{}'}}",
    '{{\\"password\\": \\"{}\\"}}',
    "client_secret={}",
]


@given(prefix=st.text(), secret=secrets, suffix=st.text())
def test_a_token_or_secret_never_survives_whatever_surrounds_it(
    prefix: str, secret: str, suffix: str
) -> None:
    assert secret not in redact(prefix + secret + suffix)


@given(secret=secrets)
def test_a_token_between_words_is_replaced_and_the_words_kept(secret: str) -> None:
    assert redact(f"refused {secret}, done") == f"refused {REDACTED}, done"


@given(
    prefix=st.text(),
    password=passwords,
    suffix=st.text(),
    field=st.sampled_from(PASSWORD_FIELDS),
)
def test_a_password_value_never_survives_whatever_surrounds_it(
    prefix: str, password: str, suffix: str, field: str
) -> None:
    # Only the value may vanish: what stays is the text around it and the field name.
    assume(password not in prefix + field.format(REDACTED) + suffix)
    assert password not in redact(prefix + field.format(password) + suffix)


def test_password_fields_keep_their_name_and_quotes() -> None:
    assert redact("password=hunter2-x&user=al") == "password=[redacted]&user=al"
    assert redact('{"password": "a \\"b\\" c", "username": "al"}') == (
        '{"password": "[redacted]", "username": "al"}'
    )
    assert redact("{'new_password': 'x y'}") == "{'new_password': '[redacted]'}"
    assert redact('PASSWORD = "p w"') == 'PASSWORD = "[redacted]"'
    assert "sekrit" not in redact('secret={"password": "sekrit"}')


def test_the_credentials_of_authorization_headers_are_replaced() -> None:
    basic = base64.b64encode(b"conf:kt_cs_" + b"A" * 43).decode()
    assert redact(f"Authorization: Basic {basic}") == f"Authorization: {REDACTED}"
    assert redact("authorization: bearer abcdefghijklmnopqrstuvwx") == (
        f"authorization: {REDACTED}"
    )


def test_ordinary_log_text_is_left_alone() -> None:
    for text in [
        "refused invalid_grant: reuse_detected",
        "refused invalid_token: no bearer token",
        "GET /auth/sessions/{sid} 401 1.2ms",
        "password_changed: 2 sessions ended",
        "the client used basic authentication",
        "token_type=Bearer",
    ]:
        assert redact(text) == text


def record(msg: object, *args: object, **extra: object) -> logging.LogRecord:
    made = logging.LogRecord("keyturn.test", logging.INFO, __file__, 1, msg, args or None, None)
    made.__dict__.update(extra)
    return made


def test_the_filter_redacts_the_message_with_its_arguments() -> None:
    rt = "kt_rt_" + "Q" * 60
    entry = record("refresh with %s for %s", rt, "alice")
    assert Redaction().filter(entry)
    assert entry.getMessage() == f"refresh with {REDACTED} for alice"


def test_the_filter_redacts_extra_fields_and_replaces_secret_named_ones_whole() -> None:
    rt = "kt_rt_" + "Q" * 60
    entry = record(
        "login",
        password="correct horse battery staple",
        form={"refresh_token": rt, "client_id": "native", "nested": [f"x {rt}"]},
        note=f"presented {rt}",
        status=200,
    )
    Redaction().filter(entry)
    assert entry.__dict__["password"] == REDACTED
    assert entry.__dict__["form"] == {
        "refresh_token": REDACTED,
        "client_id": "native",
        "nested": [f"x {REDACTED}"],
    }
    assert entry.__dict__["note"] == f"presented {REDACTED}"
    assert entry.__dict__["status"] == 200


def test_the_filter_redacts_a_mapping_message() -> None:
    entry = record({"event": "login", "password": "hunter2hunter2"})
    Redaction().filter(entry)
    assert entry.msg == {"event": "login", "password": REDACTED}


def test_the_filter_redacts_a_traceback() -> None:
    secret = "kt_cs_" + "Z" * 43
    try:
        raise ValueError(f"bad client secret {secret}")
    except ValueError:
        entry = logging.LogRecord(
            "keyturn.test", logging.ERROR, __file__, 1, "failed", None, sys.exc_info()
        )
    Redaction().filter(entry)
    text = logging.Formatter().format(entry)
    assert "ValueError: bad client secret [redacted]" in text
    assert secret not in text


def test_a_message_whose_arguments_do_not_fit_is_still_logged_redacted() -> None:
    rt = "kt_rt_" + "Q" * 60
    entry = record("two %s %s", rt)
    assert Redaction().filter(entry)
    assert rt not in entry.getMessage()

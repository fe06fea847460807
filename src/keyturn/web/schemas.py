"""The first-party JSON bodies and the RFC 6749 §5.1 token response as types: the
handlers parse with them, and the API description (`web.openapi`) is their schema.

The entry rules stay those of `web.forms`: the body is read and parsed there
(`parse_json_object`: duplicate keys, depth, content type), then a model checks each
member in declaration order, and the first fault is answered as `forms.text_field`
answers it: `InvalidRequest` naming the field, never a 422. Unknown members are
ignored, as before.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Annotated, Any, NotRequired, TypeVar

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    TypeAdapter,
    ValidationError,
    with_config,
)
from pydantic_core import ErrorDetails
from typing_extensions import TypedDict  # pydantic needs it below Python 3.12

from keyturn.core.errors import InvalidRequest
from keyturn.service.client_auth import MAX_CLIENT_ID_LENGTH, MAX_SECRET_LENGTH
from keyturn.service.login import MAX_DEVICE_NAME_LENGTH, MAX_USERNAME_LENGTH

Schema = dict[str, Any]

MAX_TEXT = 4096
"""A member without a bound of its own: a password, a refresh token."""
MAX_SCOPE = 1024


def _no_nul(value: str) -> str:
    # Lone surrogates (JSON "\ud800") already fail pydantic's own check (`string_unicode`).
    if "\x00" in value:
        raise ValueError("NUL")
    return value


# Each member: a string, its bound checked first (as `forms.text_field` does), no NUL.
_CLEAN = AfterValidator(_no_nul)
ClientId = Annotated[str, Field(max_length=MAX_CLIENT_ID_LENGTH), _CLEAN]
ClientSecret = Annotated[str, Field(max_length=MAX_SECRET_LENGTH), _CLEAN]
Username = Annotated[str, Field(max_length=MAX_USERNAME_LENGTH), _CLEAN]
DeviceName = Annotated[str, Field(max_length=MAX_DEVICE_NAME_LENGTH), _CLEAN]
Scope = Annotated[str, Field(max_length=MAX_SCOPE), _CLEAN]
Text = Annotated[str, Field(max_length=MAX_TEXT), _CLEAN]


class Body(BaseModel):
    """A JSON body, checked member by member."""

    model_config = ConfigDict(extra="ignore", frozen=True)


_B = TypeVar("_B", bound=Body)
_MESSAGES = {
    "missing": "is required",
    "string_type": "must be a string",
    "string_too_long": "is too long",
    "string_unicode": "contains a forbidden character",
    "value_error": "contains a forbidden character",
}


def parse(model: type[_B], data: Mapping[str, Any]) -> _B:
    """`data` as `model`, or `InvalidRequest` for its first faulty member."""
    try:
        return model.model_validate(data)
    except ValidationError as invalid:
        raise InvalidRequest(_message(invalid.errors(include_url=False)[0])) from None


def _message(fault: ErrorDetails) -> str:
    name = fault["loc"][0]
    # A member sent as null is absent, as `forms.text_field` reads it.
    kind = "missing" if fault["type"] == "string_type" and fault["input"] is None else fault["type"]
    return f"The field {name} {_MESSAGES.get(kind, 'is invalid')}."


class ClientFields(Body):
    """How a first-party client authenticates: its id, and its secret if confidential."""

    client_id: ClientId
    client_secret: ClientSecret | None = None


# Each endpoint's own members, checked once its client has authenticated (as they
# always were): a body is `ClientFields` and these, validated in two steps.


class LoginFields(Body):
    username: Username
    password: Text
    device_name: DeviceName | None = None
    scope: Scope | None = None
    previous_refresh_token: Text | None = None


class RefreshFields(Body):
    refresh_token: Text | None = None
    scope: Scope | None = None


class LogoutFields(Body):
    refresh_token: Text | None = None


class PasswordChange(Body):
    current_password: Text
    new_password: Text


@with_config(ConfigDict(extra="forbid"))
class TokenResponse(TypedDict):
    # RFC 6749 §5.1, as `web.responses.token_response` writes it.
    access_token: Annotated[str, Field(description="An RFC 9068 JWT.")]
    token_type: Annotated[str, Field(json_schema_extra={"enum": ["Bearer", "DPoP"]})]
    expires_in: Annotated[int, Field(ge=0)]
    scope: str
    refresh_token: NotRequired[
        Annotated[
            str,
            Field(
                pattern="^kt_rt_",
                description="Absent for client credentials and for cookie-delivery clients.",
            ),
        ]
    ]


class PasswordChanged(TypedDict):
    sessions_ended: Annotated[int, Field(ge=0)]


def schema_of(*kinds: Any) -> Schema:
    """The JSON schema of a body (the members of `kinds`, in order) or a typed dict as
    the description shows it: no titles, an optional member as its own type (absent,
    never null)."""
    if not all(isinstance(kind, type) and issubclass(kind, Body) for kind in kinds):
        (kind,) = kinds
        plain: Schema = _plain(TypeAdapter(kind).json_schema())
        return plain
    parts = [_plain(kind.model_json_schema()) for kind in kinds]
    return {
        "properties": {k: v for part in parts for k, v in part["properties"].items()},
        "required": [name for part in parts for name in part.get("required", [])],
        "type": "object",
    }


def _plain(value: Any) -> Any:
    if isinstance(value, list):
        return [_plain(item) for item in value]
    if not isinstance(value, dict):
        return value
    options = value.get("anyOf")
    if options and {"type": "null"} in options:
        rest = {k: v for k, v in value.items() if k not in ("anyOf", "default")}
        return _plain({**next(o for o in options if o != {"type": "null"}), **rest})
    return {k: _plain(v) for k, v in value.items() if k != "title"}


TOKEN_RESPONSE = schema_of(TokenResponse)

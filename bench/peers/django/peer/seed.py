"""Seed N refresh tokens through each peer's own models; write them to a file.

    DJANGO_SETTINGS_MODULE=peer.settings python -m peer.seed {dot,simplejwt} N FILE

dot: one public application `bench` (authorization code + refresh), users with four
tokens each, and for every token an access token and a refresh token of its own
family, as django-oauth-toolkit's validator writes them (`set_token_value`, a fresh
`token_family`). simplejwt: `RefreshToken.for_user`, which also records each token
as outstanding for the blacklist.
"""

from __future__ import annotations

import sys
import uuid
from datetime import timedelta
from pathlib import Path

import django

TOKENS_PER_USER = 4


def _users(count: int) -> list:  # type: ignore[type-arg]
    from django.contrib.auth import get_user_model
    from django.contrib.auth.hashers import make_password

    user = get_user_model()
    unusable = make_password(None)
    made = [user(username=f"bench-{j}", password=unusable) for j in range(count)]
    return user.objects.bulk_create(made, batch_size=1000)


def seed_dot(n: int) -> list[str]:
    from django.utils import timezone
    from oauth2_provider.models import (
        get_access_token_model,
        get_application_model,
        get_refresh_token_model,
        set_token_value,
    )
    from oauthlib.common import generate_token

    application_model = get_application_model()
    access_model = get_access_token_model()
    refresh_model = get_refresh_token_model()
    app = application_model.objects.create(
        name="bench",
        client_id="bench",
        client_type=application_model.CLIENT_PUBLIC,
        authorization_grant_type=application_model.GRANT_AUTHORIZATION_CODE,
        redirect_uris="http://127.0.0.1/cb",
        skip_authorization=True,
    )
    users = _users(max(1, n // TOKENS_PER_USER))
    expires = timezone.now() + timedelta(minutes=15)
    access = []
    for i in range(n):
        token = access_model(
            user=users[i // TOKENS_PER_USER], application=app, expires=expires, scope="read"
        )
        set_token_value(token, generate_token())
        access.append(token)
    access = access_model.objects.bulk_create(access, batch_size=1000)
    values = [generate_token() for _ in range(n)]
    refresh = []
    for i, value in enumerate(values):
        token = refresh_model(
            user=users[i // TOKENS_PER_USER],
            application=app,
            access_token=access[i],
            token_family=uuid.uuid4(),
        )
        set_token_value(token, value)
        refresh.append(token)
    refresh_model.objects.bulk_create(refresh, batch_size=1000)
    return values


def seed_simplejwt(n: int) -> list[str]:
    from rest_framework_simplejwt.tokens import RefreshToken

    users = _users(max(1, n // TOKENS_PER_USER))
    return [str(RefreshToken.for_user(users[i // TOKENS_PER_USER])) for i in range(n)]


def main(argv: list[str]) -> None:
    system, n, out = argv[0], int(argv[1]), Path(argv[2])
    django.setup()
    from django.db import connection, transaction

    with transaction.atomic():
        tokens = seed_dot(n) if system == "dot" else seed_simplejwt(n)
    with connection.cursor() as cursor:
        cursor.execute("ANALYZE")
    out.write_text("\n".join(tokens) + "\n")


if __name__ == "__main__":
    main(sys.argv[1:])

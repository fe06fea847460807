"""Django settings of the two Django peers of the side-by-side benchmark.

One project hosts both: django-oauth-toolkit at `/o/token/` and
djangorestframework-simplejwt at `/api/token/refresh/`; each run drives one of them.
Production-like: DEBUG off, no sessions, no templates. The database comes from the
environment:

- `PEER_DATABASE=sqlite:////path/db.sqlite3`: WAL, `synchronous=NORMAL`, writes
  in `BEGIN IMMEDIATE` transactions, a 5 s busy timeout and one persistent connection
  per worker, as keyturn's SQLite store;
- `PEER_DATABASE=postgresql://user@host:port/db` with `PEER_DB_SCHEMA` as the
  `search_path` (psycopg 3).
"""

from __future__ import annotations

import os
from datetime import timedelta
from urllib.parse import urlsplit

SECRET_KEY = os.environ.get("PEER_SECRET_KEY", "keyturn-bench-peer-" + "x" * 40)
DEBUG = False
ALLOWED_HOSTS = ["127.0.0.1", "localhost"]
ROOT_URLCONF = "peer.urls"
WSGI_APPLICATION = "peer.wsgi.application"
USE_TZ = True
TIME_ZONE = "UTC"
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

INSTALLED_APPS = [
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "oauth2_provider",
    "rest_framework",
    "rest_framework_simplejwt.token_blacklist",
]
MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "django.middleware.common.CommonMiddleware",
]


def _database() -> dict[str, object]:
    url = os.environ.get("PEER_DATABASE", "sqlite:///peer.sqlite3")
    if url.startswith("sqlite:///"):
        return {
            "ENGINE": "django.db.backends.sqlite3",
            "NAME": url.removeprefix("sqlite:///"),
            "CONN_MAX_AGE": None,  # one persistent connection per worker, as keyturn keeps
            "OPTIONS": {
                "timeout": 5,
                "transaction_mode": "IMMEDIATE",
                "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;",
            },
        }
    parts = urlsplit(url)
    schema = os.environ.get("PEER_DB_SCHEMA", "public")
    return {
        "ENGINE": "django.db.backends.postgresql",
        "NAME": parts.path.lstrip("/"),
        "USER": parts.username or "",
        "HOST": parts.hostname or "",
        "PORT": str(parts.port or 5432),
        "CONN_MAX_AGE": None,  # one persistent connection per worker, as a pool would keep
        "OPTIONS": {"options": f"-c search_path={schema}"},
    }


DATABASES = {"default": _database()}

PASSWORD_HASHERS = ["django.contrib.auth.hashers.PBKDF2PasswordHasher"]

OAUTH2_PROVIDER = {
    "ROTATE_REFRESH_TOKEN": True,
    # A rotated-out refresh token presented again revokes every token of its family.
    "REFRESH_TOKEN_REUSE_PROTECTION": True,
    "ACCESS_TOKEN_EXPIRE_SECONDS": 900,
    "SCOPES": {"read": "Reading scope"},
}

REST_FRAMEWORK = {
    "DEFAULT_AUTHENTICATION_CLASSES": [],
    "DEFAULT_PERMISSION_CLASSES": [],
    "UNAUTHENTICATED_USER": None,
}

SIMPLE_JWT = {
    "ACCESS_TOKEN_LIFETIME": timedelta(minutes=15),
    "REFRESH_TOKEN_LIFETIME": timedelta(days=14),
    "ROTATE_REFRESH_TOKENS": True,
    "BLACKLIST_AFTER_ROTATION": True,
}

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "handlers": {"stderr": {"class": "logging.StreamHandler"}},
    "root": {"handlers": ["stderr"], "level": "WARNING"},
}

"""keyturn's one typed settings object.

Read from `KEYTURN_*` environment variables and, optionally, a TOML file named by
`KEYTURN_CONFIG` (environment wins). Validated once at start and injected; never
imported as a global. Durations are in seconds. Each field's description is its
documentation: `docs/configuration.md` is generated from them.
"""

from __future__ import annotations

import enum
import ipaddress
import os
from pathlib import Path
from typing import Annotated, Self

from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)

from keyturn.core.policy import DEFAULT_BUDGET, ReplayBudget
from keyturn.crypto.sealing import master_secret_weakness

DAY = 86_400
DPOP_ALGORITHMS = (
    "ES256", "ES384", "ES512", "EdDSA", "RS256", "RS384", "RS512", "PS256", "PS384", "PS512",
)  # fmt: skip
"""The asymmetric algorithms a DPoP proof may use (`keyturn.crypto.dpop.KEY_TYPES`)."""


class ReuseRevokes(enum.StrEnum):
    SESSION = "session"
    USER = "user"


class SigningAlg(enum.StrEnum):
    ES256 = "ES256"
    EDDSA = "EdDSA"
    RS256 = "RS256"


class LogFormat(enum.StrEnum):
    JSON = "json"
    TEXT = "text"


class LogLevel(enum.StrEnum):
    DEBUG = "DEBUG"
    INFO = "INFO"
    WARNING = "WARNING"
    ERROR = "ERROR"


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="KEYTURN_",
        extra="forbid",
        frozen=True,
        validate_default=True,
    )

    database_url: str = Field(
        "sqlite:///keyturn.db",
        description="Where keyturn keeps its state: `sqlite:///path/to/file.db` (the "
        "embedded default) or `postgresql://user@host:5432/db`.",
    )
    issuer: str = Field(
        "http://localhost:8000",
        description="The `iss` of every access token and the base of the metadata URLs.",
    )
    access_token_ttl: Annotated[int, Field(gt=0, le=DAY)] = Field(
        900, description="Lifetime of an access token (RFC 9068 JWT)."
    )
    session_idle_ttl: Annotated[int, Field(gt=0)] = Field(
        15 * DAY,
        description="A session ends if it is not refreshed for this long; every rotation "
        "pushes this deadline out again, never past `session_max_ttl`.",
    )
    session_max_ttl: Annotated[int, Field(gt=0)] = Field(
        30 * DAY,
        description="Absolute lifetime of a session from login, however often it is used.",
    )
    grace_seconds: Annotated[int, Field(ge=0, le=300)] = Field(
        10,
        description="The retry window of a client registered with no kind and no window "
        "of its own: after a rotation, the presented (parent) token may be presented again "
        "for this long and gets the same successor (parallel tabs, lost responses, "
        "retries). 0 turns replay off: any older token is reuse. Clients set their own "
        "with `clients add --kind` or `--retry-window` (docs/rotation-policies.md).",
    )
    replay_budget: str = Field(
        str(DEFAULT_BUDGET),
        description="The replay budget of a client registered with no kind and no budget "
        "of its own: `N/M`, at most N replayed generations among the last M (M at most "
        "62); past it a replay is treated as reuse (`replay_budget_exceeded`) and the "
        "session ends. `off` turns it off. A thief following a session replays on "
        "nearly every rotation; a device that loses a response now and then, rarely.",
    )
    reuse_revokes: ReuseRevokes = Field(
        ReuseRevokes.SESSION,
        description="What a detected reuse ends: the token's `session`, or every "
        "session of its `user`.",
    )
    secret_key: SecretStr | None = Field(
        None,
        description="The master secret that seals private keys at rest: at least 32 "
        "characters and not predictable (about 112 bits estimated; `openssl rand -base64 "
        "32` makes one; a long passphrase passes, runs and repeats do not). If unset with "
        "SQLite, a random one is created on first run in a file with mode 0600 beside the "
        "database (`keyturn.secret`), or in the working directory; with PostgreSQL it (or "
        "`secret_key_file`) must be set, the same on every host.",
    )
    secret_key_file: Path | None = Field(
        None, description="Read the master secret from this file instead."
    )
    redis_url: str | None = Field(
        None,
        description="Optional Redis, for rate limits shared between processes and fast "
        "revocation fan-out. keyturn works without it.",
    )
    signing_alg: SigningAlg = Field(
        SigningAlg.ES256,
        description="Algorithm of new access-token signing keys: ES256, EdDSA or RS256.",
    )
    default_audience: str | None = Field(
        None,
        description="`aud` of access tokens for clients registered without an audience; "
        "defaults to the issuer. Only a token whose `aud` names the issuer acts at the "
        "account API (`/auth/sessions`, `/auth/password`...): with this set, register "
        "first-party clients with `--audience <issuer>`.",
    )
    db_schema: str | None = Field(
        None,
        pattern=r"^[a-z_][a-z0-9_]{0,62}$",
        description="PostgreSQL schema for keyturn's tables (its `search_path`); "
        "unset uses the database's default.",
    )
    db_timeout: Annotated[float, Field(gt=0, le=60)] = Field(
        5.0,
        description="How long one database operation may take (connect, lock wait, "
        "statement) before the request fails with 503 `temporarily_unavailable`.",
    )
    db_pool_size: Annotated[int, Field(gt=0, le=200)] = Field(
        10, description="Connections per process to PostgreSQL."
    )
    login_failures_per_account: Annotated[int, Field(ge=1)] = Field(
        5,
        description="Failed logins of one account within `login_lockout_seconds` before "
        "it is refused with 429 (even with the right password) until the window ends.",
    )
    login_lockout_seconds: Annotated[int, Field(ge=1)] = Field(
        900, description="The window of `login_failures_per_account`."
    )
    key_refresh_seconds: Annotated[int, Field(ge=1, le=3600)] = Field(
        30,
        description="How often each process re-reads the key table, so a `keyturn keys "
        "rotate` run anywhere is used and published everywhere without a restart.",
    )
    authorization_code_ttl: Annotated[int, Field(ge=1, le=600)] = Field(
        60,
        description="Seconds an authorization code stays exchangeable (RFC 6749 §4.1.2: "
        "at most ten minutes is recommended).",
    )
    login_requests_per_minute: Annotated[int, Field(ge=1)] = Field(
        60,
        description="Login attempts, and password changes at `/auth/password`, per "
        "client IP address per minute.",
    )
    token_requests_per_minute: Annotated[int, Field(ge=1)] = Field(
        1200,
        description="Requests of one confidential client to the token, revocation and "
        "introspection endpoints and the first-party API per minute, counted once it "
        "has authenticated: nobody without its secret can spend them.",
    )
    public_client_requests_per_minute: Annotated[int, Field(ge=1)] = Field(
        1200,
        description="Requests naming one public client (which has no secret: anyone can "
        "name it) per client IP address per minute, at the token, revocation and "
        "introspection endpoints and `/auth/refresh` and `/auth/logout`. One address "
        "spends only its own count, never the client's other users'.",
    )
    client_auth_failures_per_minute: Annotated[int, Field(ge=1)] = Field(
        20,
        description="Failed client authentications (unknown client, wrong or missing "
        "secret) per client id and client IP address per minute; past it that id is "
        "refused from that address with 429 until the minute ends, before any secret "
        "is checked. Other addresses, and the client itself, are not affected.",
    )
    revocation_feed_requests_per_minute: Annotated[int, Field(ge=1)] = Field(
        120,
        description="Polls of `/auth/revocations` per resource server per minute, counted "
        "once it has authenticated, apart from its other requests: neither a caller "
        "without its secret nor its own token traffic can starve its revocation feed.",
    )
    purge_retention: Annotated[int, Field(ge=0)] = Field(
        7 * DAY,
        description="How long ended sessions are kept (for `sessions list`) before "
        "`keyturn purge` deletes them. Authorization codes are deleted a few minutes "
        "after they expire, whatever this says.",
    )
    audit_retention: Annotated[int, Field(ge=0)] = Field(
        90 * DAY,
        description="How long audit rows (`keyturn audit`) are kept before `keyturn "
        "purge` deletes them. Keep it at least `purge_retention` so a purged session's "
        "story stays readable as long as its row did.",
    )
    allowed_origins_cache_seconds: Annotated[int, Field(ge=0, le=3600)] = Field(
        30,
        description="How long each process keeps the CORS allowlist of `/auth/*` (the "
        "union of enabled clients' allowed origins) before reading the clients again: a "
        "client added or disabled is seen within this time. 0 reads them on every request.",
    )
    demo_access_token_ttl: Annotated[int, Field(gt=0, le=3600)] = Field(
        30,
        description="Access-token lifetime of the `demo-web` client that `keyturn serve "
        "--demo` registers: short, so the demo page shows rotation within a minute.",
    )
    log_format: LogFormat = Field(
        LogFormat.JSON,
        description="What `keyturn serve` writes to stderr: `json`, one object per line "
        "(timestamp, level, logger, message, request fields), or `text`. Tokens, secrets "
        "and passwords are redacted from both (docs/observability.md).",
    )
    log_level: LogLevel = Field(
        LogLevel.INFO,
        description="Level of keyturn's own loggers under `keyturn serve` (DEBUG, INFO, "
        "WARNING, ERROR); INFO includes one access-log line per request. Other libraries "
        "log at WARNING or above.",
    )
    metrics_token: Annotated[SecretStr, Field(min_length=16)] | None = Field(
        None,
        description="The bearer token of `GET /metrics`: only requests with "
        "`Authorization: Bearer <this token>` (at least 16 characters) are answered, "
        "anything else gets 401. Unset (and `KEYTURN_METRICS_PUBLIC` false), every scrape "
        "gets 401: the counters move with every login and rotation, so an open endpoint "
        "tells whoever watches it when a session is used.",
    )
    metrics_public: bool = Field(
        False,
        description="Serve `GET /metrics` to anyone, without a token: only where the port "
        "is reachable by the scraper alone (or `/metrics` is blocked at the proxy). Cannot "
        "be combined with `KEYTURN_METRICS_TOKEN`.",
    )
    http_max_header_bytes: Annotated[int, Field(ge=1024, le=1024 * 1024)] = Field(
        16 * 1024,
        description="The most bytes a request's line and headers may take. A request "
        "whose header block grows past it before it is complete is answered `431 Request "
        "Header Fields Too Large` and its connection closed, so unfinished headers cannot "
        "hold memory. keyturn's own requests need a few KiB (a DPoP proof and a JWT are "
        "about one each).",
    )
    http_header_timeout: Annotated[float, Field(gt=0, le=300)] = Field(
        10.0,
        description="Seconds from a request's first byte until its headers and its body "
        "(at most 16 KiB) must be complete; a slower request is answered `408 Request "
        "Timeout` and its connection closed (a connection held open by a trickle of bytes "
        "costs a slot).",
    )
    http_idle_timeout: Annotated[float, Field(gt=0, le=3600)] = Field(
        10.0,
        description="Seconds a new connection may stay open without sending a byte "
        "before it is closed. Between requests on a kept-alive connection uvicorn's own "
        "keep-alive timeout (5 s) applies.",
    )
    http_max_concurrency: Annotated[int, Field(ge=1)] = Field(
        1000,
        description="The most connections and requests in progress in each worker "
        "process; a request beyond it is answered `503` `temporarily_unavailable` with "
        "`Retry-After` and its connection closed.",
    )
    trusted_proxies: str = Field(
        "",
        description="The addresses or networks (`10.0.0.5`, `10.0.0.0/8`, `::1`; "
        "separated by commas or spaces) of the reverse proxies in front of keyturn. A "
        "request from one of them is taken to come from the address its "
        "`X-Forwarded-For` names (the last one not itself a trusted proxy), so the "
        "per-address limits and the audit trail see the real client. Empty (the "
        "default), those headers are ignored: any client could write them. `*` trusts "
        "every peer: only when nothing but the proxy can reach the port.",
    )
    ssl_certfile: Path | None = Field(
        None,
        description="Serve HTTPS directly with this PEM certificate (chain) file; "
        "needs `ssl_keyfile`. Or leave TLS to a proxy in front (docs/deployment.md).",
    )
    ssl_keyfile: Path | None = Field(None, description="The PEM private key of `ssl_certfile`.")

    dpop_algorithms: str = Field(
        "ES256 EdDSA RS256 PS256",
        description="DPoP proof algorithms accepted at the token endpoint and the "
        "first-party API (RFC 9449), space-separated; advertised as "
        "`dpop_signing_alg_values_supported`. Asymmetric only: ES256, ES384, ES512, "
        "EdDSA, RS256, RS384, RS512, PS256, PS384, PS512.",
    )
    dpop_leeway: Annotated[int, Field(ge=1, le=300)] = Field(
        60,
        description="How far, in seconds, a DPoP proof's `iat` may be from the server's "
        "clock, before or after. Each proof's `jti` is remembered this long (plus a "
        "second) to refuse it a second time.",
    )
    dpop_nonces: bool = Field(
        True,
        description="Require a server nonce in every DPoP proof (RFC 9449 §8): a proof "
        "without the current one is answered 400 `use_dpop_nonce` with a `DPoP-Nonce` "
        "header, and the client retries once with it; every token response carries a "
        "fresh nonce. Without nonces a proof could be made in advance for a later time by "
        "whoever can use the key for a moment (script injection into a page whose key is "
        "a non-extractable WebCrypto key), and key continuity would trust it. The nonce "
        "key is derived from the master secret, so every process accepts the same nonces. "
        "Requests without a proof are not affected.",
    )
    dpop_nonce_seconds: Annotated[int, Field(ge=30, le=3600)] = Field(
        300,
        description="How often the DPoP nonce changes; a nonce is accepted in its period "
        "and the next, so for between one and two periods.",
    )
    dpop_replay_cache_size: Annotated[int, Field(ge=1000)] = Field(
        100_000,
        description="Without `KEYTURN_REDIS_URL`, the most DPoP proof `jti`s each process "
        "remembers (when full of live ones, new proofs are refused until some expire). "
        "With Redis every process shares one cache there. Without it, each worker keeps "
        "its own: a proof accepted by one worker could be accepted once more by another "
        "within `dpop_leeway` seconds. Serve with one worker or set Redis when that "
        "matters; a proof still works only for the URI, method and key it names.",
    )

    @field_validator("replay_budget")
    @classmethod
    def _budget_parses(cls, value: str) -> str:
        ReplayBudget.parse(value)  # its ValueError names what is wrong
        return value

    @model_validator(mode="after")
    def _check(self) -> Self:
        if self.session_idle_ttl > self.session_max_ttl:
            raise ValueError("session_idle_ttl cannot exceed session_max_ttl")
        if self.secret_key is not None:
            weakness = master_secret_weakness(self.secret_key.get_secret_value())
            if weakness is not None:
                raise ValueError(f"secret_key is refused: {weakness}")
        if (
            self.database_url.startswith(("postgresql:", "postgres:"))
            and self.secret_key is None
            and self.secret_key_file is None
        ):
            # Every host must open the keys any host sealed: a secret made up here
            # would seal keys no other host can use, and make this one unable to use
            # theirs.
            raise ValueError(
                "with PostgreSQL, set KEYTURN_SECRET_KEY or KEYTURN_SECRET_KEY_FILE, the "
                "same on every host: a secret created on one host cannot open the keys "
                "that another host sealed"
            )
        if not self.database_url.startswith(("sqlite:", "postgresql:", "postgres:", "memory:")):
            raise ValueError("database_url must start with sqlite:, postgresql: or memory:")
        if self.metrics_public and self.metrics_token is not None:
            raise ValueError("metrics_public and metrics_token cannot both be set")
        if (self.ssl_certfile is None) != (self.ssl_keyfile is None):
            raise ValueError("ssl_certfile and ssl_keyfile go together: set both or neither")
        self.trusted_proxy_list  # noqa: B018 - raises on an entry that is not an address
        algorithms = self.dpop_algorithm_list
        unknown = [alg for alg in algorithms if alg not in DPOP_ALGORITHMS]
        if unknown or not algorithms:
            raise ValueError(
                f"dpop_algorithms must name some of {', '.join(DPOP_ALGORITHMS)}; "
                f"not {', '.join(unknown) or 'none at all'}"
            )
        return self

    @property
    def trusted_proxy_list(self) -> list[str]:
        """`trusted_proxies` as uvicorn's `forwarded_allow_ips`: each entry an address
        or a network, or `*`."""
        entries = self.trusted_proxies.replace(",", " ").split()
        if "*" in entries:
            return ["*"]
        trusted: list[str] = []
        for entry in entries:
            try:
                # Normalised: uvicorn reads `10.0.0.5/8`, with host bits, as no network.
                if "/" in entry:
                    trusted.append(str(ipaddress.ip_network(entry, strict=False)))
                else:
                    trusted.append(str(ipaddress.ip_address(entry)))
            except ValueError:
                raise ValueError(
                    f"trusted_proxies: {entry!r} is not an IP address or network"
                ) from None
        return trusted

    @property
    def dpop_algorithm_list(self) -> tuple[str, ...]:
        return tuple(dict.fromkeys(self.dpop_algorithms.split()))

    @property
    def audience(self) -> str:
        return self.default_audience or self.issuer

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,  # noqa: ARG003 - no .env files
        file_secret_settings: PydanticBaseSettingsSource,  # noqa: ARG003 - nor secret dirs
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        sources: list[PydanticBaseSettingsSource] = [init_settings, env_settings]
        config = os.environ.get("KEYTURN_CONFIG")
        if config:
            sources.append(TomlConfigSettingsSource(settings_cls, toml_file=Path(config)))
        return tuple(sources)


def reference_markdown() -> str:
    """The configuration reference, generated from the fields above
    (`docs/configuration.md`; a test keeps the file in step)."""
    lines = [
        "# Configuration",
        "",
        "keyturn reads `KEYTURN_*` environment variables and, if `KEYTURN_CONFIG` names "
        "one, a TOML file with the same keys in lower case (`grace_seconds = 5`); the "
        "environment wins. Durations are in seconds. Invalid values stop keyturn at start "
        "with a message naming the setting.",
        "",
        "This page is generated from `src/keyturn/settings.py`.",
        "",
        "| variable | default | meaning |",
        "| --- | --- | --- |",
    ]
    for name, field in Settings.model_fields.items():
        default = field.default
        if isinstance(default, enum.Enum):
            default = default.value
        shown = "unset" if default is None else f"`{default}`"
        description = (field.description or "").replace("|", "\\|")
        lines.append(f"| `KEYTURN_{name.upper()}` | {shown} | {description} |")
    return "\n".join(lines) + "\n"

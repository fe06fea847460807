"""Builds keyturn's object graph from the settings: the only module that sees every layer."""

from __future__ import annotations

import secrets
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path

from keyturn.core.dpop import ProofReplayCache
from keyturn.core.models import Lifetimes
from keyturn.core.policy import ReplayBudget
from keyturn.core.ports import Clock, RateLimiter, Store
from keyturn.crypto.dpop import DpopVerifier, nonce_key_from
from keyturn.crypto.passwords import Passwords
from keyturn.crypto.sealing import Sealer, load_or_create_master_secret
from keyturn.service.admin import Admin
from keyturn.service.authorization import Authorization
from keyturn.service.client_auth import ClientAuthenticator
from keyturn.service.client_credentials import ClientCredentialsGrant
from keyturn.service.config import EngineConfig, ReuseScope
from keyturn.service.dpop_proofs import DpopProofs
from keyturn.service.ending import SessionEnding
from keyturn.service.engine import Engine
from keyturn.service.guarded_store import GuardedStore
from keyturn.service.inspection import Inspection
from keyturn.service.lockout import AccountLockout
from keyturn.service.login import Login
from keyturn.service.observed_store import ObservedStore, StoreObserver
from keyturn.service.refresh import Refresher, RefreshObserver
from keyturn.service.revocation_feed import RevocationPages
from keyturn.service.sessions import Sessions
from keyturn.service.timeline import SessionTimelines
from keyturn.service.tokens import Tokens
from keyturn.settings import Settings
from keyturn.storage import open_store, upgrade
from keyturn.storage.clocks import deployment_clock
from keyturn.storage.dpop_replay import MemoryProofReplayCache, RedisProofReplayCache
from keyturn.storage.limits import MemoryLimiter, RedisLimiter
from keyturn.storage.revocation_channel import RedisRevocationChannel

SECRET_FILE_NAME = "keyturn.secret"


class SystemClock:
    def now(self) -> datetime:
        return datetime.now(UTC)


class SystemRandomness:
    def token_bytes(self, n: int) -> bytes:
        return secrets.token_bytes(n)


def engine_config(settings: Settings) -> EngineConfig:
    return EngineConfig(
        issuer=settings.issuer,
        default_audience=settings.audience,
        lifetimes=Lifetimes(
            access_token_ttl=settings.access_token_ttl,
            session_idle_ttl=settings.session_idle_ttl,
            session_max_ttl=settings.session_max_ttl,
        ),
        grace_seconds=settings.grace_seconds,
        reuse_revokes=ReuseScope(settings.reuse_revokes.value),
        replay_budget=ReplayBudget.parse(settings.replay_budget),
        login_failures_per_account=settings.login_failures_per_account,
        login_lockout_seconds=settings.login_lockout_seconds,
        authorization_code_ttl=settings.authorization_code_ttl,
        key_refresh_seconds=settings.key_refresh_seconds,
    )


def sqlite_path(database_url: str) -> Path | None:
    """The file of a `sqlite:///path` URL; `None` for other databases."""
    if not database_url.startswith("sqlite:///"):
        return None
    return Path(database_url.removeprefix("sqlite:///"))


def master_secret(settings: Settings) -> bytes:
    """The master secret: from the settings, from the named file, or from a 0600 file
    created on first run beside the SQLite database (else in the working directory)."""
    if settings.secret_key is not None:
        return settings.secret_key.get_secret_value().encode()
    if settings.secret_key_file is not None:
        return load_or_create_master_secret(settings.secret_key_file)
    db = sqlite_path(settings.database_url)
    folder = db.parent if db is not None else Path.cwd()
    return load_or_create_master_secret(folder / SECRET_FILE_NAME)


def proof_replay_cache(settings: Settings, clock: Clock) -> ProofReplayCache:
    """Where DPoP proof `jti`s are remembered: Redis when configured, shared by every
    process; else this process's memory (each worker its own, see
    `dpop_replay_cache_size`)."""
    if settings.redis_url:
        return RedisProofReplayCache(settings.redis_url)
    return MemoryProofReplayCache(settings.dpop_replay_cache_size, clock=clock.now)


def migrate(settings: Settings, schema: str | None = None) -> None:
    """Create or upgrade the schema (blocking; call before the event loop serves)."""
    db = sqlite_path(settings.database_url)
    if db is not None and db.parent != Path():
        db.parent.mkdir(parents=True, exist_ok=True)
    upgrade(settings.database_url, schema=schema or settings.db_schema)


def schema_problem(settings: Settings) -> str | None:
    """What is wrong with the schema of a database that answers, for an operator whose
    command found the store unavailable: none at all, or another revision than this
    keyturn's. `None` when the schema is right or the database does not answer either.
    Blocking; creates nothing."""
    db = sqlite_path(settings.database_url)
    if db is not None and not db.exists():
        return "the database has no keyturn schema"
    if settings.database_url.startswith("memory:"):
        return None
    # Imported here: the migration tooling is heavy and this runs only after a failure.
    from keyturn.storage.migrate import current_revision, head_revision

    try:
        found = current_revision(settings.database_url, settings.db_schema)
    except Exception:  # unreachable, refused, unreadable: not a schema problem
        return None
    if found is None:
        return "the database has no keyturn schema"
    if found != head_revision():
        return f"the database schema is at revision {found}, not {head_revision()}"
    return None


async def open_engine(
    settings: Settings,
    *,
    schema: str | None = None,
    clock: Clock | None = None,
    passwords: Passwords | None = None,
    observers: Sequence[StoreObserver] = (),
) -> Engine:
    """Open the store and build the use cases. The schema must exist (`migrate`);
    missing keys are created."""
    config = engine_config(settings)
    randomness = SystemRandomness()
    stored = await open_store(
        settings.database_url,
        timeout=settings.db_timeout,
        pool_size=settings.db_pool_size,
        schema=schema or settings.db_schema,
    )
    # One clock for every rule (H-18, H-19): the database's on PostgreSQL, whatever
    # each host's own says; the host's, held steady across a step, on one host.
    the_clock = clock or deployment_clock(stored)
    channel = RedisRevocationChannel(settings.redis_url) if settings.redis_url else None
    # Text no store can hold is answered once, for every store, below the observers.
    guarded = GuardedStore(stored)
    store: Store = ObservedStore(guarded, [*observers, *([channel] if channel else [])])
    the_passwords = passwords or Passwords()
    secret = master_secret(settings)
    replay_cache = proof_replay_cache(settings, the_clock)
    proofs = DpopProofs(
        DpopVerifier(
            replay_cache,
            algorithms=settings.dpop_algorithm_list,
            leeway=settings.dpop_leeway,
            nonce_key=nonce_key_from(secret) if settings.dpop_nonces else None,
            nonce_bucket_seconds=settings.dpop_nonce_seconds,
        ),
        the_clock,
        config.issuer,
    )
    limiter: RateLimiter = (
        RedisLimiter(settings.redis_url) if settings.redis_url else MemoryLimiter()
    )
    tokens = Tokens(
        store,
        Sealer(secret),
        the_clock,
        randomness,
        config,
        settings.signing_alg.value,
    )
    await tokens.ensure_keys()
    ending = SessionEnding(store, the_clock, config)
    sessions = Sessions(
        store, tokens, the_passwords, the_clock, ending, AccountLockout(limiter, config)
    )
    login = Login(store, tokens, the_passwords, the_clock, randomness, config, limiter, ending)
    clients = ClientAuthenticator(store, store, the_clock, limiter)
    outcomes = [o for o in observers if isinstance(o, RefreshObserver)]
    closers = [
        resource.close
        for resource in (replay_cache, limiter, channel)
        if isinstance(resource, RedisProofReplayCache | RedisLimiter | RedisRevocationChannel)
    ]
    return Engine(
        settings=settings,
        config=config,
        clock=the_clock,
        store=store,
        tokens=tokens,
        login=login,
        authorization=Authorization(store, tokens, login, the_clock, randomness, config, ending),
        limiter=limiter,
        refresher=Refresher(store, tokens, the_clock, config, clients, ending, outcomes),
        sessions=sessions,
        clients=clients,
        client_credentials=ClientCredentialsGrant(tokens, the_clock, config),
        inspection=Inspection(store, tokens, the_clock, config, ending, proofs),
        revocation_feed=RevocationPages(store, the_clock, config),
        timelines=SessionTimelines(store, the_clock),
        dpop=proofs,
        admin=Admin(
            store,
            tokens,
            the_passwords,
            sessions,
            the_clock,
            randomness,
            settings.purge_retention,
            settings.audit_retention,
            config.lifetimes,
        ),
        closers=tuple(closers),
    )

"""A client's rotation policy as the rules receive it: its registration over its kind's
preset over the server's defaults, resolved once per client value."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime

import pytest

from keyturn.core.errors import InvalidClient
from keyturn.core.ids import ClientId
from keyturn.core.models import Client, ClientType, Delivery, LifetimeOverrides, Lifetimes
from keyturn.core.policy import (
    DEFAULT_BUDGET,
    NO_LIMIT,
    ClientKind,
    ReplayBudget,
    RotationSettings,
)
from keyturn.observability.metrics import Metrics
from keyturn.observability.store_metrics import StoreMetrics
from keyturn.service.client_auth import AuthMethod, ClientCredentials
from keyturn.service.config import EngineConfig
from support.engine import engine_with

CONFIG = EngineConfig(
    issuer="https://as.test",
    default_audience="https://as.test",
    lifetimes=Lifetimes(900, 3600, 86400),
    grace_seconds=10,
    replay_budget=DEFAULT_BUDGET,
)


def client(rotation: RotationSettings | None = None) -> Client:
    return Client(
        id=ClientId("app"),
        type=ClientType.PUBLIC,
        secret_hash=None,
        redirect_uris=(),
        grant_types=frozenset(),
        scope=frozenset(),
        delivery=Delivery.BODY,
        audience=(),
        lifetimes=LifetimeOverrides(session_idle_ttl=600),
        enabled=True,
        created_at=datetime(2026, 1, 1, tzinfo=UTC),
        rotation=rotation or RotationSettings(),
    )


def test_a_client_of_no_kind_takes_the_servers_defaults() -> None:
    policy = CONFIG.rotation_policy(client())
    assert (policy.retry_window, policy.replay_budget, policy.rotate) == (10, DEFAULT_BUDGET, True)
    assert policy.session_idle_ttl == 600  # the client's own lifetime


def test_a_kind_gives_its_preset_and_the_clients_values_win() -> None:
    native = CONFIG.rotation_policy(client(RotationSettings(kind=ClientKind.NATIVE)))
    assert native.retry_window is NO_LIMIT
    tuned = RotationSettings(kind=ClientKind.NATIVE, retry_window=60, replay_budget=NO_LIMIT)
    policy = CONFIG.rotation_policy(client(tuned))
    assert (policy.retry_window, policy.replay_budget) == (60, NO_LIMIT)
    assert not CONFIG.rotation_policy(client(RotationSettings(kind=ClientKind.SERVICE))).rotate


def test_the_policy_is_resolved_once_per_client_value_and_anew_for_a_changed_one() -> None:
    first = client()
    assert CONFIG.rotation_policy(first) is CONFIG.rotation_policy(first)
    changed = replace(first, rotation=RotationSettings(replay_budget=ReplayBudget(2, 8)))
    assert CONFIG.rotation_policy(changed).replay_budget == ReplayBudget(2, 8)
    assert CONFIG.rotation_policy(first).replay_budget == DEFAULT_BUDGET


async def test_an_unknown_or_unauthenticated_client_adds_no_metric_series() -> None:
    """Outcomes are counted under a registered, authenticated client's id only: a caller
    naming client ids of its own invention cannot grow `/metrics` a series each."""
    metrics = Metrics()
    engine = await engine_with(observers=[StoreMetrics(metrics)])
    try:
        for name in ("ghost-1", "ghost-2", "conf"):
            with pytest.raises(InvalidClient):
                await engine.refresher.refresh_for(
                    ClientCredentials(name, "wrong secret", AuthMethod.POST)
                    if name == "conf"
                    else ClientCredentials(name, None, AuthMethod.NONE),
                    "kt_rt_garbage",
                )
    finally:
        await engine.close()
    text = metrics.render().decode()
    assert "ghost" not in text
    assert 'client_id="conf"' not in text

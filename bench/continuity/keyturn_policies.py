"""keyturn's presets: how a named preset becomes an engine configuration and clients.

This module is the only place the benchmark names a keyturn preset; the engine adapter
(`keyturn_server`) applies whatever a `KeyturnPreset` says without knowing any name.
A preset maps onto keyturn in three places:

- `settings`: server-wide values, passed as keyword arguments to
  `keyturn.settings.Settings` (the same fields as the `KEYTURN_*` environment
  variables): `grace_seconds`, the retry window of clients registered with no kind
  (0 to 300; 0 is strict mode, where any older token is reuse) and `reuse_revokes`
  (`session` or `user`: what a detected reuse ends).
- `clients`: for each population of devices, the client its devices sign in through:
  a client id and extra keyword arguments for `keyturn.service.admin.Admin.add_client`.
  Every client is registered public, with the `password` and `refresh_token` grants and
  body delivery; `options` are added to those arguments unchanged. The per-client
  rotation policy is `rotation=RotationSettings(kind=..., retry_window=...,
  replay_budget=...)` (`keyturn.core.policy`), as `keyturn clients add --kind` stores it.
- `dpop`: whether the preset's devices prove possession of their own key at login and
  on every refresh (every process of a device proves the same key). The engine is
  driven at the service layer with the proof's key thumbprint, as the web layer hands
  it on after verifying the proof. A thief holding the victim's key proves it too; one
  without it sends no proof. Presets without DPoP mark the with-key column "not
  modelled yet".

A new preset is one more entry in `PRESETS`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

from bench.continuity.population import Kind
from keyturn.core.policy import NO_LIMIT, ClientKind, RotationSettings


@dataclass(frozen=True, slots=True)
class ClientRegistration:
    client_id: str
    options: Mapping[str, Any] = field(default_factory=lambda: MappingProxyType({}))
    """Extra keyword arguments for `Admin.add_client`."""


# The client each population signs in through: browsers, native apps, and tools that
# run unattended (agents, command-line tools) are separate registrations, so presets
# can give each its own rotation policy.
BROWSER = ClientRegistration("browser-app")
NATIVE = ClientRegistration("native-app")
TOOL = ClientRegistration("agent-tool")
SAME_CLIENTS: Mapping[Kind, ClientRegistration] = MappingProxyType(
    {
        Kind.BROWSER_KIT: BROWSER,
        Kind.BROWSER_TABS: BROWSER,
        Kind.MOBILE: NATIVE,
        Kind.AGENT: TOOL,
        Kind.CLI: TOOL,
    }
)


@dataclass(frozen=True, slots=True)
class KeyturnPreset:
    name: str
    summary: str
    settings: Mapping[str, Any]
    clients: Mapping[Kind, ClientRegistration] = field(default_factory=lambda: SAME_CLIENTS)
    dpop: bool = False


def _kinds(
    phone: ClientKind = ClientKind.NATIVE, **rotation: Any
) -> Mapping[Kind, ClientRegistration]:
    """Each population signs in through a client registered with its own kind's preset
    (`keyturn clients add --kind ...`), with `rotation`'s values over the preset's."""

    def client(name: str, kind: ClientKind) -> ClientRegistration:
        settings = RotationSettings(kind=kind, **rotation)
        return ClientRegistration(name, MappingProxyType({"rotation": settings}))

    browser = client("browser-app", ClientKind.BROWSER)
    native = client(f"{phone}-app", phone)
    tool = client("agent-tool", ClientKind.AGENT)
    return MappingProxyType(
        {
            Kind.BROWSER_KIT: browser,
            Kind.BROWSER_TABS: browser,
            Kind.MOBILE: native,
            Kind.AGENT: tool,
            Kind.CLI: tool,
        }
    )


PRESETS: tuple[KeyturnPreset, ...] = (
    KeyturnPreset(
        "kinds",
        "the presets: browser 10 s, native and agent unbounded, each with a budget of 8/16",
        {"reuse_revokes": "session"},
        _kinds(),
    ),
    KeyturnPreset(
        "kinds-phones-as-agents",
        "the presets, phones registered with the agent kind: the agent preset under lost answers",
        {"reuse_revokes": "session"},
        _kinds(phone=ClientKind.AGENT),
    ),
    KeyturnPreset(
        "kinds-dpop",
        "the presets, every device proving its own DPoP key (key continuity)",
        {"reuse_revokes": "session"},
        _kinds(),
        dpop=True,
    ),
    KeyturnPreset(
        "kinds-no-budget",
        "the presets with the replay budget off: what the budget buys",
        {"reuse_revokes": "session"},
        _kinds(replay_budget=NO_LIMIT),
    ),
    KeyturnPreset(
        "kinds-10m",
        "the presets, native and agent windows cut to 10 min",
        {"reuse_revokes": "session"},
        _kinds(retry_window=600),
    ),
    KeyturnPreset(
        "strict",
        "grace 0 s: any rotated-out token is reuse and ends the session",
        {"grace_seconds": 0, "reuse_revokes": "session"},
    ),
    KeyturnPreset(
        "grace-10s",
        "no kind: the server's 10 s window, budget 8/16 (KEYTURN_GRACE_SECONDS)",
        {"grace_seconds": 10, "reuse_revokes": "session"},
    ),
    KeyturnPreset(
        "grace-300s",
        "the longest global window: the parent gets the same successor for 5 min",
        {"grace_seconds": 300, "reuse_revokes": "session"},
    ),
)


def preset(name: str) -> KeyturnPreset:
    """The preset called `name`; `KeyError` names the known ones."""
    for candidate in PRESETS:
        if candidate.name == name:
            return candidate
    known = ", ".join(p.name for p in PRESETS)
    raise KeyError(f"no keyturn preset {name!r} (known: {known})")

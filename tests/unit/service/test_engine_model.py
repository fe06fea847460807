"""A stateful property test: random sequences of login, presenting any token ever
issued, logout and moving the clock, checked against a simple model of the rules, with
invariants I1–I5 asserted after every step (DESIGN.md)."""

from __future__ import annotations

import asyncio
import base64
import json
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    Bundle,
    RuleBasedStateMachine,
    invariant,
    precondition,
    rule,
)

from keyturn.core.errors import InvalidGrant
from keyturn.core.ids import SessionId
from keyturn.core.models import Client
from keyturn.service.engine import Engine
from keyturn.service.results import IssuedTokens
from support.engine import PASSWORD, FakeClock, engine_with, seed

GRACE = 10
IDLE = 600
MAX = 3000
ACCESS_TTL = 300


@dataclass
class ModelSession:
    live: int = 0
    rotated_at: datetime | None = None
    idle_deadline: datetime | None = None
    absolute_deadline: datetime | None = None
    revoked: bool = False
    tokens: dict[int, str] = field(default_factory=dict)
    """The one token ever issued for each generation (I1, I4)."""


@dataclass(frozen=True)
class Held:
    session_id: SessionId
    generation: int
    token: str


def claims(access_token: str) -> dict[str, Any]:
    payload = access_token.split(".")[1]
    decoded: dict[str, Any] = json.loads(
        base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4))
    )
    return decoded


class EngineModel(RuleBasedStateMachine):
    held = Bundle("held")

    def __init__(self) -> None:
        super().__init__()
        self.loop = asyncio.new_event_loop()
        self.clock = FakeClock()
        self.engine: Engine = self.run(
            engine_with(
                clock=self.clock,
                grace_seconds=GRACE,
                session_idle_ttl=IDLE,
                session_max_ttl=MAX,
                access_token_ttl=ACCESS_TTL,
            )
        )
        _, native, _ = self.run(seed(self.engine))
        self.client: Client = native.client
        self.sessions: dict[SessionId, ModelSession] = {}

    def run(self, coroutine: Any) -> Any:
        return self.loop.run_until_complete(coroutine)

    def teardown(self) -> None:
        self.run(self.engine.close())
        self.loop.close()

    def accept(self, issued: IssuedTokens, generation: int) -> Held:
        assert issued.session_id is not None
        assert issued.refresh_token is not None
        model = self.sessions[issued.session_id]
        # I1/I4: one token per generation, whoever asked and however often.
        known = model.tokens.setdefault(generation, issued.refresh_token)
        assert known == issued.refresh_token
        # I5: the access token never outlives the session.
        assert model.absolute_deadline is not None
        assert claims(issued.access_token)["exp"] <= model.absolute_deadline.timestamp()
        return Held(issued.session_id, generation, issued.refresh_token)

    @rule(target=held)
    def login(self) -> Held:
        issued = self.run(self.engine.login.login("alice", PASSWORD, self.client))
        now = self.clock.now()
        self.sessions[issued.session_id] = ModelSession(
            idle_deadline=now + timedelta(seconds=IDLE),
            absolute_deadline=now + timedelta(seconds=MAX),
        )
        return self.accept(issued, 0)

    @rule(target=held, token=held)
    def present(self, token: Held) -> Held | Any:
        model = self.sessions[token.session_id]
        now = self.clock.now()
        assert model.idle_deadline is not None
        assert model.absolute_deadline is not None
        expired = now >= model.idle_deadline or now >= model.absolute_deadline
        in_grace = (
            token.generation == model.live - 1
            and model.rotated_at is not None
            and now - model.rotated_at <= timedelta(seconds=GRACE)
        )
        try:
            issued = self.run(self.engine.refresher.refresh(token.token, self.client))
        except InvalidGrant:
            if not model.revoked:
                # Refused a live session only for expiry or reuse, and then it is dead.
                assert expired or not (token.generation == model.live or in_grace)
            if not (token.generation > model.live):
                model.revoked = True
            return token
        assert not model.revoked
        assert not expired
        if token.generation == model.live:
            model.live += 1
            model.rotated_at = now
            model.idle_deadline = min(now + timedelta(seconds=IDLE), model.absolute_deadline)
            return self.accept(issued, model.live)
        assert in_grace, "only the live token or its parent in grace may succeed"
        held = self.accept(issued, model.live)
        assert held.token == model.tokens[model.live]
        return held

    @precondition(lambda self: bool(self.sessions))
    @rule(token=held)
    def logout(self, token: Held) -> None:
        self.run(self.engine.sessions.logout(token.token, self.client))
        self.sessions[token.session_id].revoked = True

    @rule(seconds=st.sampled_from([0.5, 3, 9, 10, 11, 30, 400, 700]))
    def wait(self, seconds: float) -> None:
        self.clock.advance(seconds)

    @invariant()
    def store_matches_the_model(self) -> None:
        for session_id, model in self.sessions.items():
            stored = self.run(self.engine.store.get_session(session_id))
            assert stored is not None
            # I1 + I2: the store is at exactly the generation of the newest token
            # issued: nothing was issued ahead of a commit, nothing forked.
            assert stored.generation == model.live
            assert stored.generation == max(model.tokens)
            # I3: a session the model saw die stays dead in the store.
            if model.revoked:
                assert stored.revoked


TestEngineModel = EngineModel.TestCase
TestEngineModel.settings = settings(
    max_examples=60,
    stateful_step_count=30,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)

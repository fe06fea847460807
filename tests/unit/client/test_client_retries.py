"""The Python client kit's refresh retries, against a scripted token endpoint
(`httpx.MockTransport`): what it sends again, how long it waits, what it keeps."""

from __future__ import annotations

from collections.abc import Callable

import httpx
import pytest

from keyturn.client import (
    LoginRequired,
    MemoryStore,
    RefreshFailed,
    RefreshingAuth,
    RefreshUnavailable,
)
from keyturn.client import auth as auth_module

TOKEN_URL = "https://auth.test/oauth/token"
SUCCESSOR = {"access_token": "at-2", "refresh_token": "rt-2", "expires_in": 60}


def scripted(
    answers: list[httpx.Response | Exception], sent: list[str]
) -> Callable[[httpx.Request], httpx.Response]:
    def answer(request: httpx.Request) -> httpx.Response:
        sent.append(request.content.decode())
        next_answer = answers.pop(0)
        if isinstance(next_answer, Exception):
            raise next_answer
        return next_answer

    return answer


def kit(
    answers: list[httpx.Response | Exception], sent: list[str], **options: object
) -> tuple[RefreshingAuth, MemoryStore]:
    store = MemoryStore("rt-1")
    http = httpx.Client(transport=httpx.MockTransport(scripted(answers, sent)))
    return RefreshingAuth(TOKEN_URL, "app", store=store, http=http, **options), store  # type: ignore[arg-type]


@pytest.fixture
def waits(monkeypatch: pytest.MonkeyPatch) -> list[float]:
    slept: list[float] = []
    monkeypatch.setattr(auth_module.time, "sleep", slept.append)
    return slept


def test_lost_answers_are_sent_again_with_the_same_token_until_one_arrives(
    waits: list[float],
) -> None:
    sent: list[str] = []
    answers: list[httpx.Response | Exception] = [
        httpx.ReadError("connection reset"),
        httpx.ReadTimeout("no answer"),
        httpx.Response(503),
        httpx.Response(200, json=SUCCESSOR),
    ]
    auth, store = kit(answers, sent)
    auth.refresh()
    assert len(sent) == 4
    assert all("refresh_token=rt-1" in body for body in sent)
    assert store.load() == "rt-2"
    assert auth.access_token == "at-2"
    assert len(waits) == 3
    assert all(0.25 * 2**i <= wait <= 0.375 * 2**i for i, wait in enumerate(waits))


def test_the_backoff_is_capped_and_a_retry_after_is_honoured_within_the_cap(
    waits: list[float],
) -> None:
    sent: list[str] = []
    answers: list[httpx.Response | Exception] = [
        httpx.Response(429, headers={"Retry-After": "3"}),
        httpx.Response(503, headers={"Retry-After": "3600"}),
        httpx.ConnectError("refused"),
        httpx.ConnectError("refused"),
        httpx.ConnectError("refused"),
        httpx.Response(200, json=SUCCESSOR),
    ]
    auth, _ = kit(answers, sent, attempts=6, max_backoff=4.0)
    auth.refresh()
    assert waits[0] == 3.0
    assert waits[1] == 4.0, "an hour asked for, the cap waited"
    assert max(waits) <= 4.0
    assert len(sent) == 6


def test_every_try_lost_keeps_both_tokens_for_the_next_request(waits: list[float]) -> None:
    sent: list[str] = []
    answers: list[httpx.Response | Exception] = [httpx.Response(502)] * 4
    auth, store = kit(answers, sent)
    auth.set_tokens({"access_token": "at-1", "refresh_token": "rt-1", "expires_in": 60})
    with pytest.raises(RefreshUnavailable):
        auth.refresh(stale="at-1")
    assert store.load() == "rt-1"
    assert auth.access_token == "at-1"


def test_invalid_grant_ends_the_session_at_once(waits: list[float]) -> None:
    sent: list[str] = []
    refused = httpx.Response(400, json={"error": "invalid_grant"})
    auth, store = kit([refused], sent)
    with pytest.raises(LoginRequired):
        auth.refresh()
    assert (len(sent), store.load(), auth.access_token, waits) == (1, None, None, [])


def test_a_rotated_token_is_saved_even_when_its_answer_is_unusable(waits: list[float]) -> None:
    sent: list[str] = []
    odd = httpx.Response(200, json={"refresh_token": "rt-2", "token_type": "Bearer"})
    auth, store = kit([odd], sent)
    with pytest.raises(RefreshFailed):
        auth.refresh()
    assert store.load() == "rt-2", "keyturn rotated: the successor is the token to keep"

"""A client's rotation settings as values (core.policy): what parses, what is refused,
how they print, and how a client's own values sit over its kind's preset."""

from __future__ import annotations

import pytest

from keyturn.core.policy import (
    DEFAULT_BUDGET,
    NO_LIMIT,
    PRESETS,
    REPLAY_LOG_WIDTH,
    ClientKind,
    DpopMode,
    Preset,
    ReplayBudget,
    ReplayLog,
    RotationSettings,
    format_budget,
    format_window,
    parse_window,
    resolve,
)


@pytest.mark.parametrize(("replays", "of"), [(-1, 4), (4, 4), (5, 4), (0, REPLAY_LOG_WIDTH + 1)])
def test_a_replay_budget_is_n_of_m_with_n_below_m_within_the_log(replays: int, of: int) -> None:
    with pytest.raises(ValueError, match="N/M"):
        ReplayBudget(replays, of)


@pytest.mark.parametrize(
    ("text", "parsed"),
    [("8/16", ReplayBudget(8, 16)), (" 0 / 1 ", ReplayBudget(0, 1)), ("off", NO_LIMIT)],
)
def test_a_replay_budget_parses_from_n_slash_m_or_off(
    text: str, parsed: ReplayBudget | object
) -> None:
    assert ReplayBudget.parse(text) == parsed


@pytest.mark.parametrize("text", ["8", "8/", "a/b", "1000/2000", ""])
def test_a_replay_budget_that_is_not_n_slash_m_is_refused(text: str) -> None:
    with pytest.raises(ValueError, match="N/M or off"):
        ReplayBudget.parse(text)


def test_a_replay_budget_prints_as_it_is_written() -> None:
    assert str(ReplayBudget(4, 16)) == "4/16"
    assert format_budget(ReplayBudget(4, 16)) == "4/16"
    assert format_budget(NO_LIMIT) == "off"


@pytest.mark.parametrize(
    ("text", "seconds"),
    [(600, 600), ("600", 600), ("10m", 600), ("1h", 3600), ("2d", 172800), (" 5 s ", 5)],
)
def test_a_retry_window_is_seconds_with_an_optional_unit(text: str | int, seconds: int) -> None:
    assert parse_window(text) == seconds


def test_an_unbounded_retry_window_has_no_limit_and_prints_its_name() -> None:
    assert parse_window("Unbounded") is NO_LIMIT
    assert format_window(NO_LIMIT) == "unbounded"
    assert format_window(600) == 600


@pytest.mark.parametrize("text", [-1, "10x", "forever", "-5"])
def test_a_negative_or_unreadable_retry_window_is_refused(text: str | int) -> None:
    with pytest.raises(ValueError, match="retry window"):
        parse_window(text)


def test_a_replay_older_than_the_log_leaves_the_log_as_it_was() -> None:
    log = ReplayLog().with_replay(100)
    assert log.with_replay(100 - REPLAY_LOG_WIDTH) is log
    older = log.with_replay(99)
    assert older == ReplayLog(100, 0b11)
    assert older.count(live=101, last=2) == 2


def test_settings_without_dpop_mean_optional_dpop() -> None:
    assert RotationSettings().dpop_mode is DpopMode.OPTIONAL
    assert RotationSettings(dpop=DpopMode.REQUIRED).dpop_mode is DpopMode.REQUIRED


def test_an_update_changes_only_what_it_sets() -> None:
    before = RotationSettings(kind=ClientKind.NATIVE, retry_window=30, rotate=True)
    after = before.updated(RotationSettings(retry_window=NO_LIMIT, dpop=DpopMode.OFF))
    assert after == RotationSettings(
        kind=ClientKind.NATIVE, retry_window=NO_LIMIT, rotate=True, dpop=DpopMode.OFF
    )


def test_settings_describe_what_is_set_and_nothing_else() -> None:
    assert RotationSettings().describe() == "defaults"
    described = RotationSettings(
        kind=ClientKind.AGENT,
        retry_window=NO_LIMIT,
        replay_budget=ReplayBudget(2, 8),
        rotate=False,
        same_key_generations=3,
        dpop=DpopMode.REQUIRED,
    ).describe()
    assert described == (
        "kind=agent retry_window=unbounded replay_budget=2/8 rotate=False "
        "same_key_generations=3 dpop=required"
    )


def test_settings_refuse_a_negative_window_and_same_key_generations_off_the_log() -> None:
    with pytest.raises(ValueError, match="negative"):
        RotationSettings(retry_window=-1)
    for generations in (-1, REPLAY_LOG_WIDTH + 1):
        with pytest.raises(ValueError, match="same-key generations"):
            RotationSettings(same_key_generations=generations)


def test_a_client_of_no_kind_gets_the_servers_defaults_with_its_own_values_over_them() -> None:
    assert resolve(RotationSettings(), 10, DEFAULT_BUDGET) == Preset(
        10, DEFAULT_BUDGET, rotate=True, same_key_generations=1
    )
    assert resolve(RotationSettings(rotate=False), NO_LIMIT, NO_LIMIT) == Preset(
        NO_LIMIT, NO_LIMIT, rotate=False, same_key_generations=1
    )


def test_a_client_of_a_kind_gets_its_preset_with_its_own_values_over_it() -> None:
    native = RotationSettings(kind=ClientKind.NATIVE, replay_budget=ReplayBudget(1, 4))
    assert resolve(native, 10, DEFAULT_BUDGET) == Preset(
        NO_LIMIT, ReplayBudget(1, 4), rotate=True, same_key_generations=8
    )
    assert (
        resolve(RotationSettings(kind=ClientKind.SERVICE), 10, DEFAULT_BUDGET)
        == (PRESETS[ClientKind.SERVICE])
    )

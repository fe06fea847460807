"""The settings object: defaults, validation, and its generated reference."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from keyturn.settings import Settings, reference_markdown

ROOT = Path(__file__).resolve().parents[2]


def test_defaults_are_the_documented_ones(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in list(__import__("os").environ):
        if name.startswith("KEYTURN_"):
            monkeypatch.delenv(name)
    settings = Settings()
    assert settings.database_url == "sqlite:///keyturn.db"
    assert settings.issuer == "http://localhost:8000"
    assert settings.access_token_ttl == 900
    assert settings.session_idle_ttl == 15 * 86400
    assert settings.session_max_ttl == 30 * 86400
    assert settings.grace_seconds == 10
    assert settings.reuse_revokes.value == "session"
    assert settings.secret_key is None
    assert settings.redis_url is None
    # /metrics is closed unless an operator gives it a token or opens it on purpose.
    assert settings.metrics_token is None
    assert settings.metrics_public is False


def test_environment_variables_are_read(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KEYTURN_GRACE_SECONDS", "0")
    monkeypatch.setenv("KEYTURN_REUSE_REVOKES", "user")
    settings = Settings()
    assert settings.grace_seconds == 0
    assert settings.reuse_revokes.value == "user"


def test_toml_file_is_read_and_environment_wins(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    config = tmp_path / "keyturn.toml"
    config.write_text('grace_seconds = 3\nissuer = "https://as.test"\n')
    monkeypatch.setenv("KEYTURN_CONFIG", str(config))
    monkeypatch.setenv("KEYTURN_GRACE_SECONDS", "4")
    settings = Settings()
    assert settings.issuer == "https://as.test"
    assert settings.grace_seconds == 4


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("grace_seconds", -1, "grace_seconds"),
        ("access_token_ttl", 0, "access_token_ttl"),
        ("session_idle_ttl", 10 * 86400 * 10, "session_idle_ttl cannot exceed"),
        ("secret_key", "short", "at least 32"),
        ("database_url", "mysql://x", "database_url"),
        ("reuse_revokes", "everything", "reuse_revokes"),
        ("metrics_token", "short", "metrics_token"),
        ("replay_budget", "9/4", "replay_budget"),
        ("replay_budget", "8/99", "replay_budget"),
        ("replay_budget", "lots", "replay_budget"),
        ("replay_budget", "8/16; DROP TABLE", "replay_budget"),
    ],
)
def test_invalid_values_are_refused_with_the_setting_named(
    field: str, value: object, message: str
) -> None:
    with pytest.raises(ValidationError, match=message):
        Settings(**{field: value})  # type: ignore[arg-type]


def test_metrics_public_with_a_metrics_token_is_refused() -> None:
    with pytest.raises(ValidationError, match="metrics_public and metrics_token"):
        Settings(metrics_public=True, metrics_token="m" * 16)


def test_metrics_public_is_read_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KEYTURN_METRICS_PUBLIC", "true")
    assert Settings().metrics_public is True


def test_secret_key_is_masked_in_repr() -> None:
    secret = "settings-master-secret-Ii-NQBaxytM0AYnbz2QQqVVQgGqDyx6g"
    settings = Settings(secret_key=secret)
    assert secret not in repr(settings)
    assert "Ii-NQBaxytM0AYnbz2QQqVVQgGqDyx6g" not in repr(settings)


def test_configuration_reference_is_up_to_date() -> None:
    assert (ROOT / "docs" / "configuration.md").read_text() == reference_markdown(), (
        "regenerate docs/configuration.md from keyturn.settings.reference_markdown()"
    )


def test_the_replay_budget_is_8_of_16_by_default_and_can_be_off() -> None:
    assert Settings().replay_budget == "8/16"
    assert Settings(replay_budget="off").replay_budget == "off"

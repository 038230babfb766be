"""Settings: defaults, the example file, and one clear message for a bad value."""

from __future__ import annotations

from pathlib import Path

import pytest

from bot.config import ConfigError, Settings, load_settings

ROOT = Path(__file__).resolve().parent.parent


def test_defaults_run_on_the_console_with_sqlite() -> None:
    settings = load_settings()
    assert settings.console_mode
    assert settings.database_url == "sqlite+aiosqlite:///./data/forum.db"
    assert (settings.timezone, settings.language) == ("Europe/Paris", "fr")


def test_the_example_file_is_valid() -> None:
    settings = load_settings(ROOT / "forum-habitant.example.toml")
    assert [c.neighbourhood for c in settings.channels] == ["Ouest", "Ouest"]
    assert settings.bridges[0].a == "telegram:-1001234567890"
    assert settings.bridges[0].b == "discord:987654321098765432"
    assert "telegram:11111111" in settings.roles.moderators


def test_environment_wins_over_the_file(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TIMEZONE", "America/Martinique")
    monkeypatch.setenv("DISCORD_GUILD_IDS", "1, 2")
    settings = load_settings(ROOT / "forum-habitant.example.toml")
    assert settings.timezone == "America/Martinique"
    assert settings.discord_guild_ids == ["1", "2"]


@pytest.mark.parametrize(
    ("name", "value", "expected"),
    [
        ("TIMEZONE", "Europe/Loos", "TIMEZONE: unknown time zone 'Europe/Loos'"),
        ("LANGUAGE", "de", "LANGUAGE: Input should be 'fr' or 'en'"),
        ("DATABASE_URL", "mysql://x", "DATABASE_URL: expected sqlite:///path/to/file.db"),
        ("TELEGRAM_WEBHOOK_PORT", "99999", "TELEGRAM_WEBHOOK_PORT: Input should be less than"),
        ("RETENTION_DAYS", "soon", "RETENTION_DAYS: Input should be a valid integer"),
    ],
)
def test_a_bad_value_names_the_setting(
    monkeypatch: pytest.MonkeyPatch, name: str, value: str, expected: str
) -> None:
    monkeypatch.setenv(name, value)
    with pytest.raises(ConfigError) as error:
        load_settings()
    assert expected in str(error.value)


def test_secrets_in_the_file_are_refused(tmp_path: Path) -> None:
    path = tmp_path / "forum.toml"
    path.write_text('telegram_token = "123:abc"\n', encoding="utf-8")
    with pytest.raises(ConfigError, match="TELEGRAM_TOKEN: secrets are read from the environment"):
        load_settings(path)


def test_unknown_keys_and_broken_toml_are_named(tmp_path: Path) -> None:
    path = tmp_path / "forum.toml"
    path.write_text('tmezone = "Europe/Paris"\n', encoding="utf-8")
    with pytest.raises(ConfigError, match="tmezone: unknown setting"):
        load_settings(path)
    path.write_text("town = \n", encoding="utf-8")
    with pytest.raises(ConfigError, match="is not valid TOML"):
        load_settings(path)
    with pytest.raises(ConfigError, match="file not found"):
        load_settings(tmp_path / "missing.toml")


def test_a_bad_channel_is_named(tmp_path: Path) -> None:
    path = tmp_path / "forum.toml"
    path.write_text('[[channels]]\nplatform = "whatsapp"\nid = 1\n', encoding="utf-8")
    with pytest.raises(ConfigError, match=r"channels\.0\.platform: Input should be"):
        load_settings(path)


def test_tokens_make_it_leave_console_mode(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TELEGRAM_TOKEN", "123456:" + "A" * 35)
    settings = load_settings()
    assert not settings.console_mode
    assert "AAAA" not in repr(settings)


def test_postgres_urls_get_the_async_driver() -> None:
    settings = Settings(database_url="postgres://forum@localhost/forum")
    assert settings.database_url == "postgresql+asyncpg://forum@localhost/forum"

"""Typed settings, read from the environment and an optional TOML file.

pydantic-settings does the parsing and validation (a well-kept library rather than hand-rolled
``os.environ`` code); secrets are read from the environment only, never from the file.
"""

from __future__ import annotations

import os
import tomllib
from pathlib import Path
from typing import Annotated, Any, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_settings import (
    BaseSettings,
    NoDecode,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    SettingsError,
)

SUPPORTED_LANGUAGES = ("fr", "en")
WHOLE_TOWN = "Toute la commune"
SECRET_FIELDS = frozenset({"telegram_token", "discord_token", "telegram_webhook_secret"})


class ConfigError(Exception):
    """A setting is missing or wrong; the message names it and says what is expected."""


class ChannelConfig(BaseModel):
    """A chat the bot serves, where it belongs and what it is for."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    platform: Literal["telegram", "discord", "console"]
    id: str
    thread: str | None = None
    name: str = ""
    neighbourhood: str | None = None
    purpose: Literal["general", "neighbourhood", "proposals", "announcements", "moderation"] = (
        "general"
    )
    language: Literal["fr", "en"] | None = None

    @field_validator("id", "thread", mode="before")
    @classmethod
    def _as_text(cls, value: Any) -> Any:
        # TOML readers write Telegram chat ids as integers; the core handles ids as text.
        return str(value) if isinstance(value, int) else value


class BridgeConfig(BaseModel):
    """Two chats that form one conversation.

    Written either with ``telegram`` and ``discord`` ids (``"-100123"``, ``"-100123/7"`` for a
    forum topic, ``"987"`` or ``"987/654"`` for a thread), or with two chat keys ``a`` and ``b``
    (``"console:tg:ouest"``) to link any two chats, e.g. on the console.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    a: str
    b: str
    direction: Literal["both", "a_to_b", "b_to_a"] = "both"

    @model_validator(mode="before")
    @classmethod
    def _platform_form(cls, value: Any) -> Any:
        if isinstance(value, dict) and "telegram" in value and "discord" in value:
            value = dict(value)
            direction = {"to_discord": "a_to_b", "to_telegram": "b_to_a"}.get(
                value.get("direction", "both"), value.get("direction", "both")
            )
            return {
                "a": f"telegram:{value.pop('telegram')}",
                "b": f"discord:{value.pop('discord')}",
                "direction": direction,
                **{k: v for k, v in value.items() if k != "direction"},
            }
        return value

    @field_validator("a", "b")
    @classmethod
    def _chat_key(cls, value: str) -> str:
        platform, _, rest = value.partition(":")
        if platform not in ("telegram", "discord", "console") or not rest:
            raise ValueError("expected telegram:<chat id>, discord:<channel id> or console:<chat>")
        return value


class RolesConfig(BaseModel):
    """Who moderates and who answers for the council, per platform account id or role id."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    moderators: list[str] = Field(default_factory=list)
    council: list[str] = Field(default_factory=list)
    # Accounts that hold every role (the forum's maintainers).
    admins: list[str] = Field(default_factory=list)
    discord_moderator_roles: list[str] = Field(default_factory=list)
    discord_council_roles: list[str] = Field(default_factory=list)

    @field_validator("*", mode="before")
    @classmethod
    def _as_text(cls, value: Any) -> Any:
        if isinstance(value, list):
            return [str(v) for v in value]
        return value


class ProposalsConfig(BaseModel):
    """The fifty-fifty initiatives: the town's lists and the proposals' rules."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    # Empty: the neighbourhoods named on the channels, and "Toute la commune".
    neighbourhoods: list[str] = Field(default_factory=list)
    themes: list[str] = Field(
        default_factory=lambda: [
            "Cadre de vie",
            "Environnement et nature",
            "Mobilité",
            "Solidarité",
            "Jeunesse",
            "Culture et patrimoine",
            "Sport et loisirs",
            "Énergie",
        ]
    )
    # Supports a published proposal needs to go to the council.
    support_threshold: int = Field(default=20, ge=1, le=100_000)
    # An author may write to supporters and followers at most once in this many days.
    author_update_days: int = Field(default=3, ge=0, le=365)
    # The council's reusable answers, by short name (``/repondre 12 refusee budget``).
    answer_templates: dict[str, str] = Field(
        default_factory=lambda: {
            "budget": (
                "Le budget de la commune ne permet pas de financer ce projet cette année. "
                "Nous vous proposons d'en reparler lors de la préparation du prochain budget."
            ),
            "competence": (
                "Ce projet ne relève pas des compétences de la commune. Nous transmettons "
                "votre demande à l'intercommunalité."
            ),
            "existant": "Un projet semblable est déjà en cours ; nous vous invitons à le rejoindre.",
        }
    )


class Settings(BaseSettings):
    """Everything the bot needs to start; see forum-habitant.example.toml."""

    model_config = SettingsConfigDict(extra="forbid", env_prefix="", case_sensitive=False)

    database_url: str = "sqlite+aiosqlite:///./data/forum.db"
    timezone: str = "Europe/Paris"
    language: Literal["fr", "en"] = "fr"
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    log_format: Literal["text", "json"] = "text"
    town: str = "Loos-en-Gohelle"
    retention_days: int = Field(default=400, ge=1)
    # A form answered step by step (Telegram, console) is forgotten after this much silence.
    form_minutes: int = Field(default=30, ge=1, le=7 * 24 * 60)
    # How long a person's roles asked of a platform are trusted for buttons and forms
    # (commands limited to staff always ask afresh).
    role_cache_seconds: float = Field(default=60.0, ge=0)
    # Multiplies the platforms' rate-limit windows; only for benchmarks against emulators
    # whose limits are scaled the same way.
    rate_limit_scale: float = Field(default=1.0, gt=0, le=1.0)

    telegram_token: SecretStr | None = None
    telegram_api_url: str = "https://api.telegram.org"
    telegram_mode: Literal["polling", "webhook"] = "polling"
    telegram_webhook_url: str | None = None
    telegram_webhook_listen: str = "127.0.0.1"
    telegram_webhook_port: int = Field(default=8443, ge=1, le=65535)
    telegram_webhook_secret: SecretStr | None = None

    discord_token: SecretStr | None = None
    discord_api_url: str = "https://discord.com/api/v10"
    discord_guild_ids: Annotated[list[str], NoDecode] = Field(default_factory=list)

    channels: list[ChannelConfig] = Field(default_factory=list)
    bridges: list[BridgeConfig] = Field(default_factory=list)
    roles: RolesConfig = Field(default_factory=RolesConfig)
    proposals: ProposalsConfig = Field(default_factory=ProposalsConfig)
    # Whether residents may open polls (/sondage); by default moderators and staff do.
    polls_by_residents: bool = False

    @field_validator("timezone")
    @classmethod
    def _known_zone(cls, value: str) -> str:
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError) as exc:
            raise ValueError(f"unknown time zone {value!r} (e.g. Europe/Paris)") from exc
        return value

    @field_validator("database_url")
    @classmethod
    def _known_database(cls, value: str) -> str:
        if value.startswith("postgres://"):
            value = "postgresql://" + value.removeprefix("postgres://")
        if value.startswith("postgresql://"):
            value = "postgresql+asyncpg://" + value.removeprefix("postgresql://")
        if value.startswith("sqlite:///"):
            value = "sqlite+aiosqlite:///" + value.removeprefix("sqlite:///")
        if not value.startswith(("sqlite+aiosqlite://", "postgresql+asyncpg://")):
            raise ValueError("expected sqlite:///path/to/file.db or postgresql://user@host/db")
        return value

    @field_validator("discord_guild_ids", mode="before")
    @classmethod
    def _id_list(cls, value: Any) -> Any:
        if isinstance(value, str):
            return [part.strip() for part in value.split(",") if part.strip()]
        if isinstance(value, list):
            return [str(v) for v in value]
        return value

    @field_validator("telegram_webhook_url")
    @classmethod
    def _https_webhook(cls, value: str | None) -> str | None:
        if value is not None and not value.startswith(("https://", "http://127.0.0.1")):
            raise ValueError("Telegram only calls https:// webhook addresses")
        return value

    def channel(
        self, platform: str, chat_id: str, thread_id: str | None = None
    ) -> ChannelConfig | None:
        """The one answer to "which configured channel is this chat": a thread inherits its
        channel's settings unless it is configured itself."""
        fallback = None
        for channel in self.channels:
            if channel.platform != platform or channel.id != chat_id:
                continue
            if channel.thread == thread_id:
                return channel
            if channel.thread is None:
                fallback = channel
        return fallback

    def served_chat_ids(self, platform: str) -> set[str]:
        """The chat ids of ``platform`` named in the channels or the bridges."""
        ids = {c.id for c in self.channels if c.platform == platform}
        for bridge in self.bridges:
            for key in (bridge.a, bridge.b):
                side, _, rest = key.partition(":")
                if side == platform:
                    ids.add(rest.partition("/")[0])
        return ids

    def neighbourhoods(self) -> list[str]:
        """The neighbourhoods a proposal may be for."""
        if self.proposals.neighbourhoods:
            return list(self.proposals.neighbourhoods)
        named = dict.fromkeys(c.neighbourhood for c in self.channels if c.neighbourhood)
        return [*(name for name in named if name), WHOLE_TOWN]

    @property
    def tz(self) -> ZoneInfo:
        return ZoneInfo(self.timezone)

    @property
    def console_mode(self) -> bool:
        return self.telegram_token is None and self.discord_token is None

    @property
    def is_sqlite(self) -> bool:
        return self.database_url.startswith("sqlite")

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        # The environment wins over the TOML file (passed as init values by load_settings), so
        # that a deployment can override one value without editing the file.
        return (env_settings, init_settings)


def _format_error(exc: ValidationError, source: str) -> str:
    lines = [f"Invalid configuration ({source}):"]
    for error in exc.errors():
        name = ".".join(str(part) for part in error["loc"]) or "(root)"
        if error["type"] == "extra_forbidden":
            lines.append(f"  - {name}: unknown setting")
            continue
        message = error["msg"].removeprefix("Value error, ")
        lines.append(f"  - {name.upper() if '.' not in name else name}: {message}")
    return "\n".join(lines)


def load_settings(path: Path | str | None = None) -> Settings:
    """Read settings from the TOML file ``path`` (or ``FORUM_CONFIG``) and the environment.

    The environment wins over the file. Raises ConfigError with one readable message naming
    every wrong setting.
    """
    path = path or os.environ.get("FORUM_CONFIG")
    file_values: dict[str, Any] = {}
    source = "environment"
    if path:
        config_path = Path(path)
        source = f"{config_path} and environment"
        try:
            file_values = tomllib.loads(config_path.read_text(encoding="utf-8"))
        except FileNotFoundError as exc:
            raise ConfigError(f"FORUM_CONFIG: file not found: {config_path}") from exc
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"FORUM_CONFIG: {config_path} is not valid TOML: {exc}") from exc
        leaked = SECRET_FIELDS & {key.lower() for key in file_values}
        if leaked:
            names = ", ".join(sorted(name.upper() for name in leaked))
            raise ConfigError(f"{names}: secrets are read from the environment only, not {path}")
    try:
        return Settings(**file_values)
    except ValidationError as exc:
        raise ConfigError(_format_error(exc, source)) from None
    except SettingsError as exc:
        raise ConfigError(f"Invalid configuration ({source}): {exc}") from None

"""A fake Discord (REST API v10 + gateway websocket) on 127.0.0.1, for driving the real discord.py.

One guild, one bot application. Tests arrange the guild (``add_channel``, ``add_member``,
``add_role``, ``add_message``), act as residents (``inject_*``: the object is created in the fake's
state and the gateway event is dispatched) and inspect what the bot did (``requests``,
``channel_messages``, ``interaction_responses``, ``application_commands``, ``gateway_log``).

Point discord.py at it with::

    discord.http.Route.BASE = fake.api_url
    discord.gateway.DiscordWebSocket.DEFAULT_GATEWAY = yarl.URL(fake.gateway_url)

and restore both afterwards (they are class attributes, shared by every client in the process).

Behaviour copied from Discord because the bot depends on it:

* every JSON answer carries ``Content-Type: application/json`` verbatim: discord.py parses a body
  as JSON only on that exact value; 204 answers carry no body and no content type;
* rate limits (``DiscordLimits``, on by default, ``window_scale`` to speed them up): per-route
  buckets keyed by the top-level resource (channel, guild, webhook id + token), announced by
  ``X-RateLimit-Limit/-Remaining/-Reset/-Reset-After/-Bucket`` on every routed answer; channel
  sends 5 per 5 s per channel, webhook executes 5 per 2 s per webhook and 30 per minute per
  channel (scope ``shared``), deletes and reactions tighter, other routes 50 per second; the
  global 50 requests a second per bot token (interaction endpoints excluded); and after
  10,000 invalid requests (401, 403, 429 except ``shared``) in 10 minutes, a Cloudflare ban
  during which every request gets a bare 429 (``error code: 1015``, no ``Via``);
* 429 answers carry ``Via`` (discord.py treats a 429 without it as a Cloudflare ban and gives up),
  the JSON body ``{"message", "retry_after", "global", "code"}``, ``Retry-After`` (whole
  seconds) and ``X-RateLimit-Scope`` (plus ``X-RateLimit-Global`` for the global limit);
* ``fail_next`` returns the armed fault, whose ``fired`` counts the requests it answered;
* messages the bot or a webhook creates over REST are dispatched as MESSAGE_CREATE too;
* without the MESSAGE_CONTENT intent, message events carry empty content (except the bot's own
  messages and those mentioning it);
* GUILD_CREATE lists only the bot's member unless the session asked for GUILD_PRESENCES, so
  discord.py requests the member list (op 8) exactly as it does against Discord;
* an interaction must be answered within ``interaction_deadline`` seconds, and only once;
* direct messages: ``POST /users/@me/channels`` opens (or returns) the one DM channel (type 1)
  between the bot and a recipient; no CHANNEL_CREATE is dispatched for it; its message events
  carry no ``guild_id`` and need the DIRECT_MESSAGES intent (not GUILD_MESSAGES), and keep their
  content without MESSAGE_CONTENT; a post in it answers 403 with code 50007 ("Cannot send
  messages to this user") when the recipient refuses DMs (``refuse_direct_messages``), is a bot,
  or shares no server with the bot; webhooks cannot be used there (50024);
* threads started from a message (``POST /channels/{id}/messages/{id}/threads``): the thread
  (type 11 under a text channel, 10 under an announcement channel) takes the message's id, so
  a message has one thread at most and a second start answers 400 with code 160004 ("A thread
  has already been created for this message"); a name of 1 to 100 characters; not from a
  message in a thread, a forum or a DM (50024). THREAD_CREATE and a MESSAGE_UPDATE of the
  starter message (now carrying ``thread``) are dispatched; messages posted in the thread,
  by residents (``inject_message(thread_id, ...)``), the bot or a webhook (``thread_id``),
  are MESSAGE_CREATE events with the thread's id as ``channel_id``.

Gateway frames are plain JSON text. discord.py asks for ``compress=zlib-stream`` (or ``zstd-stream``
when a zstd module is importable) in the URL but also accepts uncompressed text frames, which is
what the fake sends unless ``gateway_compression=True`` (then it honours ``zlib-stream``).

Not implemented (404): threads without a starter message, reactions by others, invites, emojis, stickers,
audit logs, scheduled events, voice. Permissions are not enforced.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import copy
import hashlib
import json
import logging
import math
import mimetypes
import re
import secrets
import time
import zlib
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any
from urllib.parse import quote, unquote

from aiohttp import BodyPartReader, WSMsgType, web

logger = logging.getLogger(__name__)

API_PREFIX = "/api/v10"
DISCORD_EPOCH_MS = 1_420_070_400_000
MAX_CONTENT_LENGTH = 2000
ATTACHMENT_SIZE_LIMIT = 10 * 1024 * 1024


class GatewayIntent:
    """Gateway intent bits the fake filters events by."""

    GUILDS = 1 << 0
    GUILD_MEMBERS = 1 << 1
    GUILD_MODERATION = 1 << 2
    GUILD_WEBHOOKS = 1 << 5
    GUILD_PRESENCES = 1 << 8
    GUILD_MESSAGES = 1 << 9
    GUILD_MESSAGE_REACTIONS = 1 << 10
    GUILD_MESSAGE_TYPING = 1 << 11
    DIRECT_MESSAGES = 1 << 12
    DIRECT_MESSAGE_REACTIONS = 1 << 13
    DIRECT_MESSAGE_TYPING = 1 << 14
    MESSAGE_CONTENT = 1 << 15
    PRIVILEGED = GUILD_MEMBERS | GUILD_PRESENCES | MESSAGE_CONTENT


class Permission:
    """Permission bits used for the fake's default roles."""

    CREATE_INSTANT_INVITE = 1 << 0
    ADMINISTRATOR = 1 << 3
    ADD_REACTIONS = 1 << 6
    VIEW_CHANNEL = 1 << 10
    SEND_MESSAGES = 1 << 11
    EMBED_LINKS = 1 << 14
    ATTACH_FILES = 1 << 15
    READ_MESSAGE_HISTORY = 1 << 16
    USE_EXTERNAL_EMOJIS = 1 << 18
    CONNECT = 1 << 20
    SPEAK = 1 << 21
    CHANGE_NICKNAME = 1 << 26
    USE_APPLICATION_COMMANDS = 1 << 31
    CREATE_PUBLIC_THREADS = 1 << 35
    SEND_MESSAGES_IN_THREADS = 1 << 38
    EVERYONE_DEFAULT = (
        CREATE_INSTANT_INVITE
        | ADD_REACTIONS
        | VIEW_CHANNEL
        | SEND_MESSAGES
        | EMBED_LINKS
        | ATTACH_FILES
        | READ_MESSAGE_HISTORY
        | USE_EXTERNAL_EMOJIS
        | CONNECT
        | SPEAK
        | CHANGE_NICKNAME
        | USE_APPLICATION_COMMANDS
        | CREATE_PUBLIC_THREADS
        | SEND_MESSAGES_IN_THREADS
    )


# Which intent an event needs; events not listed (READY, RESUMED, INTERACTION_CREATE, ...) need none.
_EVENT_INTENTS: dict[str, int] = {
    "CHANNEL_CREATE": GatewayIntent.GUILDS,
    "CHANNEL_UPDATE": GatewayIntent.GUILDS,
    "CHANNEL_DELETE": GatewayIntent.GUILDS,
    "CHANNEL_PINS_UPDATE": GatewayIntent.GUILDS,
    "THREAD_CREATE": GatewayIntent.GUILDS,
    "GUILD_ROLE_CREATE": GatewayIntent.GUILDS,
    "GUILD_MEMBER_ADD": GatewayIntent.GUILD_MEMBERS,
    "GUILD_MEMBER_UPDATE": GatewayIntent.GUILD_MEMBERS,
    "GUILD_MEMBER_REMOVE": GatewayIntent.GUILD_MEMBERS,
    "GUILD_BAN_ADD": GatewayIntent.GUILD_MODERATION,
    "GUILD_BAN_REMOVE": GatewayIntent.GUILD_MODERATION,
    "WEBHOOKS_UPDATE": GatewayIntent.GUILD_WEBHOOKS,
    "MESSAGE_CREATE": GatewayIntent.GUILD_MESSAGES,
    "MESSAGE_UPDATE": GatewayIntent.GUILD_MESSAGES,
    "MESSAGE_DELETE": GatewayIntent.GUILD_MESSAGES,
    "MESSAGE_DELETE_BULK": GatewayIntent.GUILD_MESSAGES,
    "MESSAGE_REACTION_ADD": GatewayIntent.GUILD_MESSAGE_REACTIONS,
    "MESSAGE_REACTION_REMOVE": GatewayIntent.GUILD_MESSAGE_REACTIONS,
    "TYPING_START": GatewayIntent.GUILD_MESSAGE_TYPING,
}

# The same events in a DM (no guild_id in the payload) need the direct-message intents instead.
_DM_EVENT_INTENTS: dict[str, int] = {
    "MESSAGE_CREATE": GatewayIntent.DIRECT_MESSAGES,
    "MESSAGE_UPDATE": GatewayIntent.DIRECT_MESSAGES,
    "MESSAGE_DELETE": GatewayIntent.DIRECT_MESSAGES,
    "CHANNEL_PINS_UPDATE": GatewayIntent.DIRECT_MESSAGES,
    "MESSAGE_REACTION_ADD": GatewayIntent.DIRECT_MESSAGE_REACTIONS,
    "MESSAGE_REACTION_REMOVE": GatewayIntent.DIRECT_MESSAGE_REACTIONS,
    "TYPING_START": GatewayIntent.DIRECT_MESSAGE_TYPING,
}

# Close codes after which Discord will not resume the session.
_NON_RESUMABLE_CLOSE_CODES = frozenset({4004, 4007, 4009, 4010, 4011, 4012, 4013, 4014})
_THREAD_TYPES = frozenset({10, 11, 12})
_DM_TYPE = 1
_SELECT_TYPES = frozenset({3, 5, 6, 7, 8})
_USER_MENTION = re.compile(r"<@!?(\d+)>")
_ROLE_MENTION = re.compile(r"<@&(\d+)>")
_EVERYONE_MENTION = re.compile(r"@(?:everyone|here)\b")
_COMMAND_NAME = re.compile(r"[-_\w]{1,32}")
_HTML_ERROR = (
    "<html><head><title>{status} Bad Gateway</title></head><body>"
    "<center><h1>{status} Bad Gateway</h1></center><hr><center>cloudflare</center></body></html>"
)


def _iso(moment: datetime) -> str:
    return moment.isoformat(timespec="microseconds")


def _now() -> datetime:
    return datetime.now(UTC)


def snowflake_time(snowflake: int) -> datetime:
    """When a snowflake was made (Discord's epoch is 2015-01-01)."""
    return datetime.fromtimestamp(((snowflake >> 22) + DISCORD_EPOCH_MS) / 1000, UTC)


def _truthy(value: str | None) -> bool:
    return value is not None and value.lower() in {"1", "true", "yes"}


def _form_error(where: str, code: str, message: str) -> _ApiError:
    return _ApiError(
        400, 50035, "Invalid Form Body", {where: {"_errors": [{"code": code, "message": message}]}}
    )


def _walk_components(components: Any) -> Iterator[dict[str, Any]]:
    """Every component dict nested in action rows, sections, containers or labels."""
    if isinstance(components, list):
        for item in components:
            yield from _walk_components(item)
    elif isinstance(components, dict):
        yield components
        for key in ("components", "accessory", "component"):
            if key in components:
                yield from _walk_components(components[key])


@dataclass
class RecordedFile:
    """A file part of a multipart request (``files[n]``)."""

    field: str
    filename: str | None
    content_type: str | None
    data: bytes


@dataclass
class RecordedRequest:
    """One REST request the fake received, with the status it answered."""

    method: str
    path: str  # below the API base, e.g. "/channels/1100/messages"
    query: dict[str, str]
    json: Any  # the JSON body, or a multipart request's payload_json decoded
    files: list[RecordedFile]
    headers: dict[str, str]  # Authorization, Content-Type, User-Agent, X-Audit-Log-Reason
    time: float  # time.monotonic() when it arrived
    status: int = 0

    @property
    def reason(self) -> str | None:
        """The audit log reason, decoded (discord.py percent-encodes it)."""
        raw = self.headers.get("X-Audit-Log-Reason")
        return None if raw is None else unquote(raw)


@dataclass
class GatewayEvent:
    """Something that happened on the gateway, in order: connect, refused, identify, resume,
    invalid_session, dispatch, reconnect, server_close, disconnect, request_members, presence."""

    kind: str
    session_id: str | None
    path: str
    detail: dict[str, Any]
    time: float


@dataclass
class InjectedFault:
    """A fault ``fail_next`` armed; ``fired`` counts the requests it answered, so a test can
    assert that its fault really hit something (a pattern that matches nothing is silent)."""

    method: str | None
    pattern: re.Pattern[str] | None
    status: int
    retry_after: float
    global_: bool
    remaining: int
    code: int | None
    message: str | None
    # The request takes effect before the fault replaces its answer (a lost answer).
    after_route: bool = False
    fired: int = 0

    def matches(self, method: str, path: str) -> bool:
        if self.method is not None and self.method.upper() != method:
            return False
        return self.pattern is None or self.pattern.fullmatch(path) is not None


@dataclass
class DirectMessageRefusal:
    """A user who does not accept direct messages from the bot (``refuse_direct_messages``);
    ``fired`` counts the posts refused with 403 / 50007, so a test can assert the refusal was
    really met."""

    user_id: int
    fired: int = 0


@dataclass
class DiscordLimits:
    """Discord's REST rate limits as the fake enforces them (ON by default).

    The numbers are the commonly observed ones (Discord documents the mechanism, not the
    values): ``(count, seconds)`` per fixed window, which starts at the first request of the
    bucket and resets ``seconds`` later, as ``X-RateLimit-Reset-After`` tells the client.
    ``window_scale`` multiplies every window and the ban (0.01: a hundred times faster) so tests
    and the benchmark can hit the limits quickly; ``enforce=False`` turns all of them off (the
    headers are still sent, with a bucket that never runs out).
    """

    enforce: bool = True
    window_scale: float = 1.0
    # Per bot token (requests without a token: per client), interaction endpoints excluded.
    global_per_second: int = 50
    # POST /channels/{id}/messages, per channel.
    channel_messages: tuple[int, float] = (5, 5.0)
    # DELETE /channels/{id}/messages/{id}, per channel: tighter than sends.
    message_deletes: tuple[int, float] = (5, 1.0)
    # PUT/DELETE reactions, per channel: one every quarter second.
    reactions: tuple[int, float] = (1, 0.25)
    # POST /webhooks/{id}/{token}, per webhook.
    webhook_executes: tuple[int, float] = (5, 2.0)
    # Webhook executes into one channel, all its webhooks together. Not announced in the
    # headers (they describe the webhook's own bucket); its 429 has scope "shared", the
    # per-resource scope, which does not count as an invalid request.
    webhook_channel: tuple[int, float] = (30, 60.0)
    # Every other route, per route and top-level resource.
    default_route: tuple[int, float] = (50, 1.0)
    # 401, 403 and 429 (except scope "shared") answers per window before the Cloudflare ban.
    invalid_requests: int = 10_000
    invalid_window: float = 600.0
    ban_seconds: float = 3600.0


@dataclass
class _Window:
    """A fixed rate-limit window: ``count`` requests since ``start``."""

    start: float
    count: int = 0


@dataclass(frozen=True)
class _Limit:
    """One limit a request is subject to, and the window key it counts in."""

    bucket: str  # the X-RateLimit-Bucket value: the same for every resource of a shared limit
    key: tuple[str, ...]  # bucket + top-level resource
    limit: int
    period: float  # seconds, already scaled
    scope: str  # "user" or "shared", for the 429
    announced: bool = True  # its state is what the headers describe


def _bucket_hash(name: str) -> str:
    return hashlib.sha1(name.encode()).hexdigest()[:32]


@dataclass
class _Close:
    code: int
    reason: str


@dataclass(eq=False)
class _Session:
    session_id: str
    intents: int
    large_threshold: int
    shard: list[int] | None
    seq: int = 0
    buffer: list[tuple[int, str]] = field(default_factory=list)
    conn: _Connection | None = None
    resumable: bool = True


@dataclass(eq=False)
class _Connection:
    ws: web.WebSocketResponse
    path: str
    compressor: Any | None  # zlib compressobj when the client gets zlib-stream frames
    queue: asyncio.Queue[str | _Close | None] = field(default_factory=asyncio.Queue)
    writer: asyncio.Task[None] | None = None
    session: _Session | None = None
    closing: bool = False
    server_close_code: int | None = None
    heartbeats: int = 0


@dataclass
class _Interaction:
    id: int
    token: str
    type: int
    channel_id: int
    user_id: int
    created: float
    data: dict[str, Any]
    message_id: int | None = None  # the message carrying the component, for type 3
    acknowledged: int | None = None  # the callback type once answered
    original_message_id: int | None = None
    followups: list[int] = field(default_factory=list)


class _ApiError(Exception):
    def __init__(
        self, status: int, code: int, message: str, errors: dict[str, Any] | None = None
    ) -> None:
        super().__init__(f"{status} {code} {message}")
        self.status = status
        self.code = code
        self.message = message
        self.errors = errors

    def body(self) -> dict[str, Any]:
        body: dict[str, Any] = {"message": self.message, "code": self.code}
        if self.errors is not None:
            body["errors"] = self.errors
        return body


_Reply = tuple[int, Any]  # status, JSON body (None for 204)
_Handler = Callable[..., _Reply]


@dataclass(frozen=True)
class _Route:
    method: str
    template: str
    regex: re.Pattern[str]
    handler: _Handler
    auth: bool
    bucket: str


def _compile_route(method: str, template: str, handler: _Handler, auth: bool) -> _Route:
    pattern = re.sub(r"\\\{(\w+)\\\}", r"(?P<\1>[^/]+)", re.escape(template))
    bucket = hashlib.sha1(f"{method} {template}".encode()).hexdigest()[:32]
    return _Route(method, template, re.compile(pattern), handler, auth, bucket)


class FakeDiscord:
    """A fake Discord server for one guild and one bot, on 127.0.0.1."""

    def __init__(
        self,
        *,
        bot_token: str = "TEST.discord.token",
        guild_id: int = 1000,
        application_id: int = 2000,
        bot_user_id: int = 3000,
        bot_username: str = "forum-habitant",
        guild_name: str = "Forum du village",
        owner_id: int = 1,
        locale: str = "fr",
        heartbeat_interval_ms: int = 41250,
        gateway_compression: bool = False,
        privileged_intents: int = GatewayIntent.PRIVILEGED,
        interaction_deadline: float = 3.0,
        bot_permissions: int = Permission.ADMINISTRATOR,
        limits: DiscordLimits | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.bot_token = bot_token
        self.guild_id = guild_id
        self.application_id = application_id
        self.bot_user_id = bot_user_id
        self.guild_name = guild_name
        self.owner_id = owner_id
        self.locale = locale
        # Read at every HELLO, so a test may lower it before the client connects.
        self.heartbeat_interval_ms = heartbeat_interval_ms
        self.gateway_compression = gateway_compression
        # The privileged intents switched on in the developer portal: asking for others closes
        # the gateway with 4014, and without MESSAGE_CONTENT REST reads come back without content.
        self.privileged_intents = privileged_intents
        self.interaction_deadline = interaction_deadline
        self.limits = limits if limits is not None else DiscordLimits()
        # ``clock`` drives the rate-limit windows and the ban only; a test can pass a manual
        # clock to move past a window without sleeping.
        self.clock = clock
        # When the Cloudflare ban ends (clock time); 0 when not banned.
        self.banned_until = 0.0
        self._windows: dict[tuple[str, ...], _Window] = {}
        self._global_times: dict[str, collections.deque[float]] = {}
        self._invalid_times: collections.deque[float] = collections.deque()

        self.requests: list[RecordedRequest] = []
        self.gateway_log: list[GatewayEvent] = []
        self.interaction_responses: list[dict[str, Any]] = []
        self.heartbeats = 0  # op 1 frames received (each answered with op 11)
        # Webhook avatar overrides, by the avatar hash the fake put in the message author.
        self.avatar_urls: dict[str, str] = {}

        self._users: dict[int, dict[str, Any]] = {}
        self._members: dict[int, dict[str, Any]] = {}
        self._roles: dict[int, dict[str, Any]] = {}
        self._channels: dict[int, dict[str, Any]] = {}
        self._messages: dict[int, dict[int, dict[str, Any]]] = {}
        self._message_channel: dict[int, int] = {}
        self._ephemeral: dict[int, dict[str, Any]] = {}
        self._attachments: dict[int, tuple[str, bytes, str]] = {}
        self._webhooks: dict[int, dict[str, Any]] = {}
        # DM channels (kept in _channels too, type 1) by recipient, and who refuses DMs.
        self._dm_channels: dict[int, int] = {}
        self._dm_refusals: dict[int, DirectMessageRefusal] = {}
        self._bans: dict[int, dict[str, Any]] = {}
        self._pinned_at: dict[int, str] = {}
        self._global_commands: list[dict[str, Any]] = []
        self._guild_commands: dict[int, list[dict[str, Any]]] = {}
        self._interactions: dict[str, _Interaction] = {}
        self._nonces: dict[tuple[int, str], int] = {}
        self._faults: list[InjectedFault] = []
        self._sessions: dict[str, _Session] = {}
        self._connections: set[_Connection] = set()
        self._refusing = False
        self._waiters: set[asyncio.Future[None]] = set()
        self._last_id = 0
        self._used_ids: set[int] = set()
        self._joined_at = _iso(_now())

        self._runner: web.AppRunner | None = None
        self._port = 0
        self._routes = self._build_routes()

        self._users[bot_user_id] = {
            "id": str(bot_user_id),
            "username": bot_username,
            "discriminator": "0",
            "global_name": None,
            "avatar": None,
            "bot": True,
            "public_flags": 0,
            "flags": 0,
        }
        self._roles[guild_id] = self._role_payload(
            guild_id, "@everyone", Permission.EVERYONE_DEFAULT, position=0
        )
        bot_role_id = guild_id + 1
        self._roles[bot_role_id] = self._role_payload(
            bot_role_id, bot_username, bot_permissions, position=1
        )
        self._roles[bot_role_id].update(managed=True, tags={"bot_id": str(bot_user_id)})
        self._members[bot_user_id] = self._new_member([bot_role_id])

    # ------------------------------------------------------------------ lifecycle

    async def start(self) -> None:
        app = web.Application(client_max_size=64 * 1024 * 1024)
        app.router.add_route("*", API_PREFIX + "/{tail:.*}", self._handle_api)
        for path in ("/gateway", "/gateway/", "/resume-gateway", "/resume-gateway/"):
            app.router.add_get(path, self._handle_gateway)
        app.router.add_get(
            "/attachments/{channel_id}/{attachment_id}/{filename}", self._handle_attachment
        )
        # A short shutdown timeout: a websocket handler still open at stop() must not hold the
        # test for aiohttp's default minute.
        self._runner = web.AppRunner(app, access_log=None, shutdown_timeout=1.0)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self._port = int(self._runner.addresses[0][1])
        logger.debug("fake Discord listening on %s", self.base_url)

    async def stop(self) -> None:
        for conn in list(self._connections):
            self._close_connection(conn, 1001, "fake Discord stopping")
        writers = [conn.writer for conn in self._connections if conn.writer is not None]
        if writers:
            await asyncio.wait(writers, timeout=5)
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
        for waiter in self._waiters:
            waiter.cancel()

    async def __aenter__(self) -> FakeDiscord:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self._port}"

    @property
    def api_url(self) -> str:
        return self.base_url + API_PREFIX

    @property
    def gateway_url(self) -> str:
        return f"ws://127.0.0.1:{self._port}/gateway"

    @property
    def resume_gateway_url(self) -> str:
        # A distinct path so tests can tell a resume went where READY said.
        return f"ws://127.0.0.1:{self._port}/resume-gateway"

    # ------------------------------------------------------------------ arranging the guild

    def add_channel(
        self,
        channel_id: int,
        name: str,
        *,
        type: int = 0,
        parent_id: int | None = None,
        topic: str | None = None,
        position: int | None = None,
        auto_archive_duration: int = 1440,
        rate_limit_per_user: int = 0,
    ) -> dict[str, Any]:
        """A channel: text (0), voice (2), category (4), announcement (5), thread (10/11/12),
        forum (15). Threads need ``parent_id``. Dispatched to live sessions as CHANNEL_CREATE or
        THREAD_CREATE."""
        if type in _THREAD_TYPES and parent_id is None:
            raise ValueError("a thread needs a parent_id")
        channel: dict[str, Any] = {
            "id": str(channel_id),
            "type": type,
            "guild_id": str(self.guild_id),
            "name": name,
            "parent_id": None if parent_id is None else str(parent_id),
            "flags": 0,
            "rate_limit_per_user": rate_limit_per_user,
            "last_message_id": None,
        }
        if type in _THREAD_TYPES:
            channel.update(
                owner_id=str(self.bot_user_id),
                message_count=0,
                member_count=1,
                total_message_sent=0,
                thread_metadata={
                    "archived": False,
                    "auto_archive_duration": auto_archive_duration,
                    "archive_timestamp": _iso(_now()),
                    "locked": False,
                    "create_timestamp": _iso(_now()),
                },
            )
        else:
            others = [
                c for c in self._channels.values() if c["type"] not in _THREAD_TYPES | {_DM_TYPE}
            ]
            channel.update(
                position=len(others) if position is None else position,
                permission_overwrites=[],
                nsfw=False,
                topic=topic,
            )
            if type == 2:
                channel.update(bitrate=64000, user_limit=0, rtc_region=None)
            if type == 15:
                channel.update(
                    available_tags=[],
                    default_reaction_emoji=None,
                    default_sort_order=None,
                    default_forum_layout=0,
                    default_thread_rate_limit_per_user=0,
                )
        self._channels[channel_id] = channel
        self._messages.setdefault(channel_id, {})
        event = "THREAD_CREATE" if type in _THREAD_TYPES else "CHANNEL_CREATE"
        if self._sessions:
            self._dispatch(event, dict(copy.deepcopy(channel), newly_created=True))
        self._changed()
        return copy.deepcopy(channel)

    def add_user(
        self,
        user_id: int,
        username: str,
        *,
        global_name: str | None = None,
        bot: bool = False,
    ) -> dict[str, Any]:
        """A Discord user who is not (yet) a member of the guild."""
        user = {
            "id": str(user_id),
            "username": username,
            "discriminator": "0",
            "global_name": global_name,
            "avatar": None,
            "bot": bot,
            "public_flags": 0,
        }
        self._users[user_id] = user
        self._changed()
        return copy.deepcopy(user)

    def add_member(
        self,
        user_id: int,
        username: str,
        *,
        global_name: str | None = None,
        roles: Iterable[int] = (),
        bot: bool = False,
        nick: str | None = None,
    ) -> dict[str, Any]:
        """A user who is already a member (no event: use ``inject_member_join`` for arrivals)."""
        self.add_user(user_id, username, global_name=global_name, bot=bot)
        role_ids = list(roles)
        for role_id in role_ids:
            if role_id not in self._roles:
                raise KeyError(f"unknown role {role_id}: add_role() it first")
        self._members[user_id] = self._new_member(role_ids, nick=nick)
        self._changed()
        return self._member_payload(user_id)

    def add_role(
        self, role_id: int, name: str, *, permissions: int = 0, mentionable: bool = False
    ) -> dict[str, Any]:
        role = self._role_payload(role_id, name, permissions, position=len(self._roles))
        role["mentionable"] = mentionable
        self._roles[role_id] = role
        if self._sessions:
            self._dispatch(
                "GUILD_ROLE_CREATE", {"guild_id": str(self.guild_id), "role": copy.deepcopy(role)}
            )
        self._changed()
        return copy.deepcopy(role)

    def add_message(
        self,
        channel_id: int,
        user_id: int,
        content: str,
        *,
        reply_to: int | None = None,
        attachments: list[tuple[str, bytes, str]] | None = None,
        webhook_id: int | None = None,
        username: str | None = None,
        mentions: Iterable[int] = (),
        mention_roles: Iterable[int] = (),
        embeds: list[dict[str, Any]] | None = None,
        components: list[dict[str, Any]] | None = None,
        at: datetime | None = None,
    ) -> dict[str, Any]:
        """A message in the channel's history without any gateway event (e.g. posted while the
        bot was away). ``at`` backdates it (its snowflake follows the date)."""
        message = self._resident_message(
            channel_id,
            user_id,
            content,
            reply_to=reply_to,
            attachments=attachments,
            webhook_id=webhook_id,
            username=username,
            mentions=mentions,
            mention_roles=mention_roles,
            embeds=embeds,
            components=components,
            at=at,
        )
        self._changed()
        return self._render(message)

    # ------------------------------------------------------------------ residents acting

    def inject_message(
        self,
        channel_id: int,
        user_id: int,
        content: str,
        *,
        reply_to: int | None = None,
        attachments: list[tuple[str, bytes, str]] | None = None,
        webhook_id: int | None = None,
        username: str | None = None,
        mentions: Iterable[int] = (),
        mention_roles: Iterable[int] = (),
        embeds: list[dict[str, Any]] | None = None,
        components: list[dict[str, Any]] | None = None,
    ) -> dict[str, Any]:
        """A resident posts: MESSAGE_CREATE. Mentions are parsed from the content (``<@id>``,
        ``<@&id>``, ``@everyone``) and added to ``mentions``/``mention_roles``. With
        ``webhook_id`` the author is that webhook (shown as ``username`` or its name)."""
        message = self._resident_message(
            channel_id,
            user_id,
            content,
            reply_to=reply_to,
            attachments=attachments,
            webhook_id=webhook_id,
            username=username,
            mentions=mentions,
            mention_roles=mention_roles,
            embeds=embeds,
            components=components,
            at=None,
        )
        self._dispatch("MESSAGE_CREATE", self._message_event(message))
        self._changed()
        return self._render(message)

    def inject_edit(self, channel_id: int, message_id: int, content: str) -> dict[str, Any]:
        """A resident edits their message: MESSAGE_UPDATE with the whole new message."""
        message = self._get_message(channel_id, message_id)
        message["content"] = content
        message["edited_timestamp"] = _iso(_now())
        users, roles, everyone = self._mentions_in(content, None, None)
        message.update(mentions=users, mention_roles=roles, mention_everyone=everyone)
        self._dispatch("MESSAGE_UPDATE", self._message_event(message))
        self._changed()
        return self._render(message)

    def inject_delete(self, channel_id: int, message_id: int) -> None:
        """A resident (or a moderator) deletes a message: MESSAGE_DELETE."""
        self._get_message(channel_id, message_id)
        self._delete_message(channel_id, message_id)
        self._changed()

    def inject_slash_command(
        self,
        channel_id: int,
        user_id: int,
        name: str,
        options: dict[str, Any] | None = None,
    ) -> dict[str, Any]:
        """A member runs a synced slash command: INTERACTION_CREATE type 2.

        ``options`` maps option names to Python values, typed by the synced command's options:
        str/int/bool/float as is, users/roles/channels as their ids (resolved data is built from
        the fake's state), attachments as ``(filename, bytes, content_type)``, subcommands and
        groups as nested dicts. Returns the interaction payload (``id``, ``token``...)."""
        command = self._find_command(name)
        data: dict[str, Any] = {"id": command["id"], "name": command["name"], "type": 1}
        if "guild_id" in command:
            data["guild_id"] = command["guild_id"]
        resolved: dict[str, dict[str, Any]] = {}
        data["options"] = self._build_options(
            command.get("options") or [], options or {}, resolved, channel_id
        )
        if resolved:
            data["resolved"] = resolved
        return self._new_interaction(2, channel_id, user_id, data)

    def inject_component(
        self,
        channel_id: int,
        user_id: int,
        message_id: int,
        custom_id: str,
        *,
        values: list[str] | None = None,
    ) -> dict[str, Any]:
        """A member clicks a button or picks in a select menu of a message: INTERACTION_CREATE
        type 3. The message must carry a component with that ``custom_id``."""
        message = self._ephemeral.get(message_id) or self._get_message(channel_id, message_id)
        component = next(
            (c for c in _walk_components(message["components"]) if c.get("custom_id") == custom_id),
            None,
        )
        if component is None:
            raise ValueError(f"message {message_id} has no component with custom_id {custom_id!r}")
        data: dict[str, Any] = {"custom_id": custom_id, "component_type": component["type"]}
        if component["type"] in _SELECT_TYPES:
            data["values"] = list(values or [])
        elif values:
            raise ValueError(f"component {custom_id!r} is a button: it takes no values")
        return self._new_interaction(3, channel_id, user_id, data, message=message)

    def inject_modal_submit(
        self, channel_id: int, user_id: int, custom_id: str, fields: dict[str, str]
    ) -> dict[str, Any]:
        """A member submits a modal the bot showed (callback type 9): INTERACTION_CREATE type 5.
        The submitted components mirror the modal's layout (action rows or labels)."""
        modal = next(
            (
                r["data"]
                for r in reversed(self.interaction_responses)
                if r["kind"] == "callback"
                and r["type"] == 9
                and r["data"].get("custom_id") == custom_id
            ),
            None,
        )
        if modal is None:
            raise ValueError(f"the bot never showed a modal with custom_id {custom_id!r}")
        remaining = dict(fields)
        components: list[dict[str, Any]] = []
        for top in modal.get("components") or []:
            if top.get("type") == 1:
                row = [self._submitted(c, remaining) for c in top.get("components") or []]
                components.append({"type": 1, "components": [c for c in row if c is not None]})
            elif top.get("type") == 18 and isinstance(top.get("component"), dict):
                inner = self._submitted(top["component"], remaining)
                if inner is not None:
                    components.append({"type": 18, "id": top.get("id", 0), "component": inner})
        if remaining:
            raise ValueError(f"the modal {custom_id!r} has no text inputs {sorted(remaining)}")
        data = {"custom_id": custom_id, "components": components}
        return self._new_interaction(5, channel_id, user_id, data)

    def inject_member_join(
        self,
        user_id: int,
        *,
        username: str | None = None,
        global_name: str | None = None,
        bot: bool = False,
    ) -> None:
        """A user joins the guild: GUILD_MEMBER_ADD (a new user is created if unknown)."""
        if user_id in self._members:
            raise ValueError(f"user {user_id} is already a member")
        if user_id not in self._users:
            self.add_user(user_id, username or f"user{user_id}", global_name=global_name, bot=bot)
        self._members[user_id] = self._new_member([])
        self._dispatch(
            "GUILD_MEMBER_ADD", dict(self._member_payload(user_id), guild_id=str(self.guild_id))
        )
        self._changed()

    def inject_member_remove(self, user_id: int) -> None:
        """A member leaves (or is kicked by someone else): GUILD_MEMBER_REMOVE."""
        if user_id not in self._members:
            raise KeyError(f"user {user_id} is not a member")
        self._remove_member(user_id)
        self._changed()

    def inject_ban(self, user_id: int, *, reason: str | None = None) -> None:
        """A moderator bans a user from Discord's own interface: GUILD_BAN_ADD, then
        GUILD_MEMBER_REMOVE if they were a member."""
        self._ban(user_id, reason)
        self._changed()

    # ------------------------------------------------------------------ direct messages

    def refuse_direct_messages(self, user_id: int) -> DirectMessageRefusal:
        """From now on the user does not accept DMs from the bot (their privacy settings, or
        they blocked it): the DM channel still opens, as on Discord, but every post in it
        answers 403 ``{"message": "Cannot send messages to this user", "code": 50007}``."""
        self._user(user_id)
        refusal = self._dm_refusals.setdefault(user_id, DirectMessageRefusal(user_id))
        self._changed()
        return refusal

    def dm_channel_id(self, user_id: int) -> int | None:
        """The id of the bot's DM channel with the user, once it was opened."""
        return self._dm_channels.get(user_id)

    def direct_messages(self, user_id: int) -> list[dict[str, Any]]:
        """The messages of the bot's DM channel with the user, oldest first (none before the
        channel is opened)."""
        channel_id = self._dm_channels.get(user_id)
        return [] if channel_id is None else self.channel_messages(channel_id)

    # ------------------------------------------------------------------ inspecting

    def calls(self, method: str, path_pattern: str) -> list[RecordedRequest]:
        """Recorded requests whose method matches (``"*"`` for any) and whose path below the API
        base fully matches the regex, e.g. ``calls("POST", r"/channels/\\d+/messages")``."""
        pattern = re.compile(path_pattern)
        return [
            r
            for r in self.requests
            if (method == "*" or r.method == method.upper()) and pattern.fullmatch(r.path)
        ]

    def channel_messages(self, channel_id: int) -> list[dict[str, Any]]:
        """The channel's current messages, oldest first: webhook posts included, edits applied,
        deletions removed (ephemeral interaction messages are never in a channel)."""
        return [self._render(m) for m in self._messages.get(channel_id, {}).values()]

    def thread_of(self, message_id: int) -> dict[str, Any] | None:
        """The thread started from a message, if any (it has the message's id)."""
        thread = self._channels.get(message_id)
        if thread is None or thread["type"] not in _THREAD_TYPES:
            return None
        return copy.deepcopy(thread)

    def message(self, message_id: int) -> dict[str, Any] | None:
        """A message by id (ephemeral ones included), or None once deleted."""
        if message_id in self._ephemeral:
            return self._render(self._ephemeral[message_id])
        channel_id = self._message_channel.get(message_id)
        if channel_id is None:
            return None
        return self._render(self._messages[channel_id][message_id])

    def attachment_data(self, url: str) -> bytes:
        """The bytes behind an attachment URL the fake handed out."""
        attachment_id = int(url.split("/attachments/", 1)[1].split("/")[1])
        return self._attachments[attachment_id][1]

    def member(self, user_id: int) -> dict[str, Any] | None:
        return self._member_payload(user_id) if user_id in self._members else None

    @property
    def bans(self) -> dict[int, str | None]:
        """Banned user ids and the reason given."""
        return {user_id: ban["reason"] for user_id, ban in self._bans.items()}

    @property
    def webhooks(self) -> list[dict[str, Any]]:
        return copy.deepcopy(list(self._webhooks.values()))

    @property
    def application_commands(self) -> list[dict[str, Any]]:
        """The commands as last synced: global ones, then guild ones (with ``guild_id``)."""
        commands = list(self._global_commands)
        for guild_commands in self._guild_commands.values():
            commands.extend(guild_commands)
        return copy.deepcopy(commands)

    def gateway_events(self, kind: str) -> list[GatewayEvent]:
        return [e for e in self.gateway_log if e.kind == kind]

    def dispatched(self, event: str) -> list[dict[str, Any]]:
        """Payloads of a dispatch event type, once per session that got it (live or buffered)."""
        return [
            e.detail["d"]
            for e in self.gateway_log
            if e.kind == "dispatch" and e.detail["t"] == event
        ]

    @property
    def connected_sessions(self) -> int:
        return sum(1 for s in self._sessions.values() if self._live(s))

    async def wait_for(
        self,
        predicate: Callable[[], bool],
        timeout: float = 10.0,  # noqa: ASYNC109 - part of the fake's public contract
    ) -> None:
        """Wait until ``predicate()`` holds. It is re-checked after every request, state change
        and gateway frame sent, never on a timer: for state only the client knows (a handler
        ran), either call ``notify()`` from the handler or wait on the client's own events."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while not predicate():
            remaining = deadline - loop.time()
            if remaining <= 0:
                raise TimeoutError(f"condition not met within {timeout}s")
            waiter: asyncio.Future[None] = loop.create_future()
            self._waiters.add(waiter)
            try:
                async with asyncio.timeout(remaining):
                    await waiter
            except TimeoutError:
                if not predicate():
                    raise TimeoutError(f"condition not met within {timeout}s") from None
                return
            finally:
                self._waiters.discard(waiter)

    def notify(self) -> None:
        """Make pending ``wait_for`` calls re-check their predicate."""
        self._changed()

    # ------------------------------------------------------------------ faults

    def fail_next(
        self,
        method: str | None,
        path_pattern: str | None,
        *,
        status: int = 429,
        retry_after: float = 0.05,
        global_: bool = False,
        count: int = 1,
        code: int | None = None,
        message: str | None = None,
        after_route: bool = False,
    ) -> InjectedFault:
        """The next ``count`` requests matching (None matches anything; the pattern must fully
        match the path below the API base) fail before reaching their route: 429 with Discord's
        body and headers, 5xx with an HTML page (502/503/504/52x, as Cloudflare) or JSON, any
        other status with ``{"message", "code"}``. With ``after_route`` the request reaches its
        route and takes effect (a message is posted), then its answer is replaced by the fault:
        a gateway error or timeout after Discord acted. Returns the fault: its ``fired`` counts
        the requests it answered. Injected faults bypass the rate limits (they stand for what
        Discord or Cloudflare answered), but an injected 401/403/429 counts as an invalid
        request like a real one."""
        pattern = None if path_pattern is None else re.compile(path_pattern)
        fault = InjectedFault(
            method, pattern, status, retry_after, global_, count, code, message, after_route
        )
        self._faults.append(fault)
        return fault

    def close_gateway(self, code: int = 1001) -> None:
        """Close every live websocket with ``code``. With a resumable code the client should
        RESUME; events dispatched until it does are replayed then."""
        for conn in list(self._connections):
            self._close_connection(conn, code, "closed by the test")

    def refuse_connections(self, refuse: bool) -> None:
        """While True, the gateway endpoints answer 503 instead of upgrading (an outage). Live
        connections are untouched; events dispatched while refusing reach only live sessions,
        never the replay buffers: a bot that was cut off must read the history."""
        self._refusing = refuse
        self._changed()

    def invalidate_sessions(self, *, now: bool = False) -> None:
        """Sessions can no longer be resumed: the next RESUME gets op 9 INVALID_SESSION with
        d=false, which forces a fresh IDENTIFY. With ``now``, live connections get op 9 at once."""
        for session in self._sessions.values():
            session.resumable = False
            if now and session.conn is not None and not session.conn.closing:
                self._send_op(session.conn, 9, False)
                self._log("invalid_session", session.session_id, session.conn.path, {})
        self._changed()

    def send_reconnect(self) -> None:
        """Op 7 RECONNECT on every live connection: the client closes and resumes."""
        for conn in list(self._connections):
            if not conn.closing:
                self._send_op(conn, 7, None)
                self._log("reconnect", conn.session and conn.session.session_id, conn.path, {})

    # ------------------------------------------------------------------ internals: state

    def _changed(self) -> None:
        for waiter in self._waiters:
            if not waiter.done():
                waiter.set_result(None)

    def _log(self, kind: str, session_id: str | None, path: str, detail: dict[str, Any]) -> None:
        self.gateway_log.append(GatewayEvent(kind, session_id, path, detail, time.monotonic()))
        self._changed()

    def _next_id(self, at: datetime | None = None) -> int:
        if at is not None:
            # Backdated ids keep the date in their top bits; the low bits only make them unique.
            candidate = (int(at.timestamp() * 1000) - DISCORD_EPOCH_MS) << 22
            while candidate in self._used_ids:
                candidate += 1
            self._used_ids.add(candidate)
            return candidate
        candidate = (int(time.time() * 1000) - DISCORD_EPOCH_MS) << 22
        candidate = max(candidate, self._last_id + 1)
        while candidate in self._used_ids:
            candidate += 1
        self._last_id = candidate
        self._used_ids.add(candidate)
        return candidate

    @staticmethod
    def _role_payload(
        role_id: int, name: str, permissions: int, *, position: int
    ) -> dict[str, Any]:
        return {
            "id": str(role_id),
            "name": name,
            "color": 0,
            "colors": {"primary_color": 0, "secondary_color": None, "tertiary_color": None},
            "hoist": False,
            "icon": None,
            "unicode_emoji": None,
            "position": position,
            "permissions": str(permissions),
            "managed": False,
            "mentionable": False,
            "flags": 0,
        }

    def _new_member(self, roles: list[int], *, nick: str | None = None) -> dict[str, Any]:
        return {
            "roles": roles,
            "nick": nick,
            "joined_at": _iso(_now()),
            "communication_disabled_until": None,
            "mute": False,
            "deaf": False,
        }

    def _member_payload(self, user_id: int, *, with_user: bool = True) -> dict[str, Any]:
        member = self._members[user_id]
        payload: dict[str, Any] = {
            "roles": [str(r) for r in member["roles"]],
            "nick": member["nick"],
            "avatar": None,
            "banner": None,
            "joined_at": member["joined_at"],
            "premium_since": None,
            "deaf": member["deaf"],
            "mute": member["mute"],
            "flags": 0,
            "pending": False,
            "communication_disabled_until": member["communication_disabled_until"],
        }
        if with_user:
            payload["user"] = copy.deepcopy(self._users[user_id])
        return payload

    def _permissions_of(self, user_id: int) -> int:
        permissions = int(self._roles[self.guild_id]["permissions"])
        for role_id in self._members.get(user_id, {}).get("roles", []):
            permissions |= int(self._roles[role_id]["permissions"])
        if user_id == self.owner_id or permissions & Permission.ADMINISTRATOR:
            return (1 << 53) - 1
        return permissions

    def _guild_payload(self) -> dict[str, Any]:
        return {
            "id": str(self.guild_id),
            "name": self.guild_name,
            "icon": None,
            "splash": None,
            "discovery_splash": None,
            "banner": None,
            "description": None,
            "owner_id": str(self.owner_id),
            "afk_channel_id": None,
            "afk_timeout": 300,
            "verification_level": 1,
            "default_message_notifications": 1,
            "explicit_content_filter": 2,
            "roles": copy.deepcopy(list(self._roles.values())),
            "emojis": [],
            "stickers": [],
            "features": [],
            "mfa_level": 0,
            "application_id": None,
            "system_channel_id": None,
            "system_channel_flags": 0,
            "rules_channel_id": None,
            "public_updates_channel_id": None,
            "safety_alerts_channel_id": None,
            "vanity_url_code": None,
            "premium_tier": 0,
            "premium_subscription_count": 0,
            "premium_progress_bar_enabled": False,
            "preferred_locale": self.locale,
            "nsfw_level": 0,
            "max_members": 500000,
            "max_video_channel_users": 25,
            "incidents_data": None,
        }

    def _guild_create_payload(self, session: _Session) -> dict[str, Any]:
        payload = self._guild_payload()
        # Discord only lists every member here for sessions with presences; others get their own
        # member and must ask for the rest (op 8), which discord.py does when chunking.
        if session.intents & GatewayIntent.GUILD_PRESENCES:
            member_ids = list(self._members)
        else:
            member_ids = [self.bot_user_id]
        payload.update(
            joined_at=self._joined_at,
            large=len(self._members) > session.large_threshold,
            unavailable=False,
            member_count=len(self._members),
            lazy=True,
            voice_states=[],
            members=[self._member_payload(uid) for uid in member_ids],
            channels=[
                copy.deepcopy(c)
                for c in self._channels.values()
                if c["type"] not in _THREAD_TYPES | {_DM_TYPE}
            ],
            threads=[
                copy.deepcopy(c)
                for c in self._channels.values()
                if c["type"] in _THREAD_TYPES and not c["thread_metadata"]["archived"]
            ],
            presences=[],
            stage_instances=[],
            guild_scheduled_events=[],
            soundboard_sounds=[],
            embedded_activities=[],
        )
        return payload

    def _bot_user(self) -> dict[str, Any]:
        return copy.deepcopy(self._users[self.bot_user_id])

    def _application_payload(self) -> dict[str, Any]:
        # GATEWAY_*_LIMITED flags for the privileged intents switched on in the portal.
        flags = 0
        if self.privileged_intents & GatewayIntent.GUILD_PRESENCES:
            flags |= 1 << 13
        if self.privileged_intents & GatewayIntent.GUILD_MEMBERS:
            flags |= 1 << 15
        if self.privileged_intents & GatewayIntent.MESSAGE_CONTENT:
            flags |= 1 << 19
        return {
            "id": str(self.application_id),
            "name": self._users[self.bot_user_id]["username"],
            "icon": None,
            "description": "",
            "summary": "",
            "type": None,
            "bot_public": False,
            "bot_require_code_grant": False,
            "verify_key": "0" * 64,
            "flags": flags,
            "owner": {
                "id": str(self.owner_id),
                "username": "proprietaire",
                "discriminator": "0",
                "global_name": None,
                "avatar": None,
                "public_flags": 0,
            },
            "team": None,
            "bot": self._bot_user(),
            "redirect_uris": [],
            "interactions_endpoint_url": None,
            "integration_types_config": {"0": {}},
            "approximate_guild_count": 1,
        }

    def _channel(self, channel_id: int) -> dict[str, Any]:
        try:
            return self._channels[channel_id]
        except KeyError:
            raise _ApiError(404, 10003, "Unknown Channel") from None

    def _is_dm(self, channel_id: int) -> bool:
        channel = self._channels.get(channel_id)
        return channel is not None and channel["type"] == _DM_TYPE

    def _guild_field(self, channel_id: int) -> dict[str, str]:
        """``{"guild_id": ...}`` for a guild channel; nothing for a DM, which has no guild."""
        return {} if self._is_dm(channel_id) else {"guild_id": str(self.guild_id)}

    def _dm_refused(self, channel_id: int) -> bool:
        """Whether Discord refuses the bot's posts in this DM channel (50007): the recipient
        refuses DMs, is a bot, or no longer shares the server with the bot."""
        channel = self._channels[channel_id]
        recipient = int(channel["recipients"][0]["id"])
        refusal = self._dm_refusals.get(recipient)
        if refusal is not None:
            refusal.fired += 1
            return True
        return bool(self._users[recipient].get("bot")) or recipient not in self._members

    def _check_guild(self, guild_id: str) -> None:
        if guild_id != str(self.guild_id):
            raise _ApiError(404, 10004, "Unknown Guild")

    def _get_message(self, channel_id: int, message_id: int) -> dict[str, Any]:
        try:
            return self._messages[channel_id][message_id]
        except KeyError:
            raise KeyError(f"no message {message_id} in channel {channel_id}") from None

    def _api_message(self, channel_id: int, message_id: int) -> dict[str, Any]:
        self._channel(channel_id)
        message = self._messages[channel_id].get(message_id)
        if message is None:
            raise _ApiError(404, 10008, "Unknown Message")
        return message

    def _user(self, user_id: int) -> dict[str, Any]:
        try:
            return self._users[user_id]
        except KeyError:
            raise _ApiError(404, 10013, "Unknown User") from None

    def _mentions_in(
        self,
        content: str,
        allowed: dict[str, Any] | None,
        replied_author: int | None,
    ) -> tuple[list[dict[str, Any]], list[str], bool]:
        """Who a message really mentions: parsed from the content, then filtered as Discord does
        with allowed_mentions (absent means everything, and a reply pings its author)."""
        if allowed is None:
            parse = {"users", "roles", "everyone"}
            users: set[str] = set()
            roles: set[str] = set()
            replied_user = True
        else:
            parse = set(allowed.get("parse") or [])
            users = {str(u) for u in allowed.get("users") or []}
            roles = {str(r) for r in allowed.get("roles") or []}
            replied_user = bool(allowed.get("replied_user", False))
        mentioned: list[int] = []
        for raw in _USER_MENTION.findall(content):
            if ("users" in parse or raw in users) and int(raw) in self._users:
                mentioned.append(int(raw))
        # A reply to a webhook post mentions nobody: a webhook is not a user.
        if replied_author is not None and replied_user and replied_author in self._users:
            mentioned.append(replied_author)
        role_ids = [
            raw
            for raw in _ROLE_MENTION.findall(content)
            if ("roles" in parse or raw in roles) and int(raw) in self._roles
        ]
        everyone = "everyone" in parse and _EVERYONE_MENTION.search(content) is not None
        unique_users = list(dict.fromkeys(mentioned))
        return (
            [copy.deepcopy(self._users[u]) for u in unique_users],
            list(dict.fromkeys(role_ids)),
            everyone,
        )

    def _store_attachment(
        self, channel_id: int, filename: str, data: bytes, content_type: str | None, **extra: Any
    ) -> dict[str, Any]:
        attachment_id = self._next_id()
        ctype = content_type or mimetypes.guess_type(filename)[0] or "application/octet-stream"
        self._attachments[attachment_id] = (filename, data, ctype)
        url = f"{self.base_url}/attachments/{channel_id}/{attachment_id}/{quote(filename)}"
        attachment = {
            "id": str(attachment_id),
            "filename": filename,
            "size": len(data),
            "url": url,
            "proxy_url": url,
            "content_type": ctype,
            "width": None,
            "height": None,
            "flags": 0,
        }
        attachment.update({k: v for k, v in extra.items() if v is not None})
        return attachment

    def _uploaded_attachments(
        self,
        channel_id: int,
        declared: list[dict[str, Any]] | None,
        files: list[RecordedFile],
        existing: list[dict[str, Any]],
    ) -> list[dict[str, Any]]:
        """Attachments of a send or edit: ``files[n]`` uploads, described by the payload's
        ``attachments`` entry with id n, plus existing attachments an edit keeps by id."""
        by_index: dict[str, RecordedFile] = {}
        for position, upload in enumerate(files):
            match = re.fullmatch(r"files\[(\d+)\]", upload.field)
            by_index[match.group(1) if match else str(position)] = upload
        result: list[dict[str, Any]] = []
        used: set[str] = set()
        for entry in declared or []:
            key = str(entry.get("id"))
            if key in by_index and key not in used:
                upload = by_index[key]
                used.add(key)
                result.append(
                    self._store_attachment(
                        channel_id,
                        entry.get("filename") or upload.filename or "file",
                        upload.data,
                        upload.content_type,
                        description=entry.get("description"),
                    )
                )
            else:
                kept = next((a for a in existing if a["id"] == key), None)
                if kept is None:
                    raise _form_error(
                        "attachments", "ATTACHMENT_NOT_FOUND", f"Unknown attachment {key}"
                    )
                result.append(kept)
        for key, upload in by_index.items():
            if key not in used:
                result.append(
                    self._store_attachment(
                        channel_id, upload.filename or "file", upload.data, upload.content_type
                    )
                )
        if sum(a["size"] for a in result) > ATTACHMENT_SIZE_LIMIT:
            raise _ApiError(413, 40005, "Request entity too large")
        return result

    def _store_message(self, channel_id: int, message: dict[str, Any]) -> None:
        message_id = int(message["id"])
        history = self._messages.setdefault(channel_id, {})
        backdated = bool(history) and message_id < next(reversed(history))
        history[message_id] = message
        if backdated:
            # Keep history in snowflake order so "oldest first" and pagination stay true.
            self._messages[channel_id] = dict(sorted(history.items()))
        self._message_channel[message_id] = channel_id
        channel = self._channels.get(channel_id)
        if channel is not None:
            newest = next(reversed(self._messages[channel_id]))
            channel["last_message_id"] = str(newest)
            if channel["type"] in _THREAD_TYPES:
                channel["message_count"] += 1
                channel["total_message_sent"] += 1

    def _build_message(
        self,
        channel_id: int,
        author: dict[str, Any],
        content: str,
        *,
        message_type: int = 0,
        embeds: list[dict[str, Any]] | None = None,
        components: list[dict[str, Any]] | None = None,
        attachments: list[dict[str, Any]] | None = None,
        mentions: list[dict[str, Any]] | None = None,
        mention_roles: list[str] | None = None,
        mention_everyone: bool = False,
        reference: dict[str, Any] | None = None,
        webhook_id: int | None = None,
        application_id: int | None = None,
        nonce: str | int | None = None,
        flags: int = 0,
        tts: bool = False,
        message_id: int | None = None,
        extra: dict[str, Any] | None = None,
    ) -> dict[str, Any]:
        mid = message_id if message_id is not None else self._next_id()
        message: dict[str, Any] = {
            "id": str(mid),
            "type": message_type,
            "channel_id": str(channel_id),
            "author": author,
            "content": content,
            "timestamp": _iso(snowflake_time(mid)),
            "edited_timestamp": None,
            "tts": tts,
            "mention_everyone": mention_everyone,
            "mentions": mentions or [],
            "mention_roles": mention_roles or [],
            "attachments": attachments or [],
            "embeds": [dict({"type": "rich"}, **e) for e in embeds or []],
            "components": components or [],
            "reactions": [],
            "pinned": False,
            "flags": flags,
        }
        if nonce is not None:
            message["nonce"] = nonce
        if webhook_id is not None:
            message["webhook_id"] = str(webhook_id)
        if application_id is not None:
            message["application_id"] = str(application_id)
        if reference is not None:
            message["message_reference"] = reference
            if message_type == 0:
                message["type"] = 19
        if extra:
            message.update(extra)
        return message

    def _reference_to(self, channel_id: int, message_id: int) -> dict[str, Any]:
        return {
            "type": 0,
            "message_id": str(message_id),
            "channel_id": str(channel_id),
            **self._guild_field(channel_id),
        }

    def _resident_message(
        self,
        channel_id: int,
        user_id: int,
        content: str,
        *,
        reply_to: int | None,
        attachments: list[tuple[str, bytes, str]] | None,
        webhook_id: int | None,
        username: str | None,
        mentions: Iterable[int],
        mention_roles: Iterable[int],
        embeds: list[dict[str, Any]] | None,
        components: list[dict[str, Any]] | None,
        at: datetime | None,
    ) -> dict[str, Any]:
        if channel_id not in self._channels:
            raise KeyError(f"unknown channel {channel_id}: add_channel() it first")
        if webhook_id is not None:
            hook = self._webhooks.get(webhook_id)
            name = username or (hook["name"] if hook else "Webhook")
            author = self._webhook_author(webhook_id, name, None)
        else:
            if user_id not in self._users:
                raise KeyError(f"unknown user {user_id}: add_member() it first")
            author = copy.deepcopy(self._users[user_id])
        replied_author: int | None = None
        reference = None
        if reply_to is not None:
            replied = self._get_message(channel_id, reply_to)
            replied_author = int(replied["author"]["id"])
            reference = self._reference_to(channel_id, reply_to)
        users, roles, everyone = self._mentions_in(content, None, replied_author)
        known = {u["id"] for u in users}
        for extra_user in mentions:
            if str(extra_user) not in known:
                users.append(copy.deepcopy(self._users[extra_user]))
        roles.extend(str(r) for r in mention_roles if str(r) not in roles)
        message_id = self._next_id(at)
        stored = [
            self._store_attachment(channel_id, name, data, ctype)
            for name, data, ctype in attachments or []
        ]
        message = self._build_message(
            channel_id,
            author,
            content,
            embeds=embeds,
            components=components,
            attachments=stored,
            mentions=users,
            mention_roles=roles,
            mention_everyone=everyone,
            reference=reference,
            webhook_id=webhook_id,
            message_id=message_id,
        )
        self._store_message(channel_id, message)
        return message

    @staticmethod
    def _webhook_author(webhook_id: int, name: str, avatar: str | None) -> dict[str, Any]:
        return {
            "id": str(webhook_id),
            "username": name,
            "avatar": avatar,
            "discriminator": "0000",
            "global_name": None,
            "bot": True,
            "public_flags": 0,
            "flags": 0,
        }

    def _render(self, message: dict[str, Any], *, nested: bool = True) -> dict[str, Any]:
        """A message as Discord shows it: the replied-to message resolved at read time (null
        once deleted), one level deep."""
        rendered = copy.deepcopy(message)
        reference = message.get("message_reference")
        if nested and reference is not None and reference.get("type", 0) == 0:
            target_channel = int(reference["channel_id"])
            target = self._messages.get(target_channel, {}).get(int(reference["message_id"]))
            rendered["referenced_message"] = (
                None if target is None else self._render(target, nested=False)
            )
        return rendered

    def _message_event(self, message: dict[str, Any]) -> dict[str, Any]:
        """A message as the gateway shows it: with guild_id and the author's member (neither
        in a DM)."""
        event = self._render(message)
        if self._is_dm(int(message["channel_id"])):
            return event
        event["guild_id"] = str(self.guild_id)
        author_id = int(message["author"]["id"])
        if "webhook_id" not in message and author_id in self._members:
            event["member"] = self._member_payload(author_id, with_user=False)
        for mention in event["mentions"]:
            if int(mention["id"]) in self._members:
                mention["member"] = self._member_payload(int(mention["id"]), with_user=False)
        return event

    def _strip_content(self, message: dict[str, Any]) -> dict[str, Any]:
        """What an application without MESSAGE_CONTENT sees of a message."""
        if message["author"]["id"] == str(self.bot_user_id) or any(
            m["id"] == str(self.bot_user_id) for m in message.get("mentions", [])
        ):
            return message
        stripped = dict(message, content="", embeds=[], attachments=[], components=[])
        stripped.pop("poll", None)
        return stripped

    def _delete_message(self, channel_id: int, message_id: int) -> None:
        del self._messages[channel_id][message_id]
        self._message_channel.pop(message_id, None)
        self._dispatch(
            "MESSAGE_DELETE",
            {"id": str(message_id), "channel_id": str(channel_id), **self._guild_field(channel_id)},
        )

    def _remove_member(self, user_id: int) -> None:
        del self._members[user_id]
        self._dispatch(
            "GUILD_MEMBER_REMOVE",
            {"guild_id": str(self.guild_id), "user": copy.deepcopy(self._users[user_id])},
        )

    def _ban(self, user_id: int, reason: str | None, delete_message_seconds: int = 0) -> None:
        user = self._users.get(user_id)
        if user is None:
            raise KeyError(f"unknown user {user_id}")
        self._bans[user_id] = {"reason": reason, "user": copy.deepcopy(user)}
        self._dispatch(
            "GUILD_BAN_ADD", {"guild_id": str(self.guild_id), "user": copy.deepcopy(user)}
        )
        if user_id in self._members:
            self._remove_member(user_id)
        if delete_message_seconds > 0:
            since = time.time() - delete_message_seconds
            for channel_id, history in self._messages.items():
                doomed = [
                    mid
                    for mid, m in history.items()
                    if m["author"]["id"] == str(user_id)
                    and snowflake_time(mid).timestamp() >= since
                ]
                for mid in doomed:
                    del history[mid]
                    self._message_channel.pop(mid, None)
                if doomed:
                    self._dispatch(
                        "MESSAGE_DELETE_BULK",
                        {
                            "ids": [str(m) for m in doomed],
                            "channel_id": str(channel_id),
                            "guild_id": str(self.guild_id),
                        },
                    )

    def _member_update_event(self, user_id: int) -> None:
        self._dispatch(
            "GUILD_MEMBER_UPDATE", dict(self._member_payload(user_id), guild_id=str(self.guild_id))
        )

    # ------------------------------------------------------------------ internals: interactions

    def _find_command(self, name: str) -> dict[str, Any]:
        for command in [*self._guild_commands.get(self.guild_id, []), *self._global_commands]:
            if command["name"] == name and command.get("type", 1) == 1:
                return command
        synced = [c["name"] for c in self.application_commands]
        raise LookupError(f"no synced slash command {name!r} (synced: {synced})")

    def _build_options(
        self,
        definitions: list[dict[str, Any]],
        values: dict[str, Any],
        resolved: dict[str, dict[str, Any]],
        channel_id: int,
    ) -> list[dict[str, Any]]:
        by_name = {d["name"]: d for d in definitions}
        for definition in definitions:
            if definition.get("required") and definition["name"] not in values:
                raise ValueError(f"required option {definition['name']!r} is missing")
        options: list[dict[str, Any]] = []
        for name, value in values.items():
            definition = by_name.get(name)
            if definition is None:
                raise ValueError(f"the command has no option {name!r} (has {sorted(by_name)})")
            kind = definition["type"]
            if kind in (1, 2):
                nested = self._build_options(
                    definition.get("options") or [], value or {}, resolved, channel_id
                )
                options.append({"type": kind, "name": name, "options": nested})
                continue
            option: dict[str, Any] = {"type": kind, "name": name}
            if kind == 3:
                option["value"] = str(value)
            elif kind == 4:
                option["value"] = int(value)
            elif kind == 5:
                option["value"] = bool(value)
            elif kind == 10:
                option["value"] = float(value)
            elif kind in (6, 7, 8, 9):
                option["value"] = str(int(value))
                self._resolve(kind, int(value), resolved)
            elif kind == 11:
                filename, data, ctype = value
                attachment = self._store_attachment(
                    channel_id, filename, data, ctype, ephemeral=True
                )
                resolved.setdefault("attachments", {})[attachment["id"]] = attachment
                option["value"] = attachment["id"]
            else:
                raise ValueError(f"unsupported option type {kind}")
            options.append(option)
        return options

    def _resolve(self, kind: int, snowflake: int, resolved: dict[str, dict[str, Any]]) -> None:
        key = str(snowflake)
        if kind in (6, 9) and snowflake in self._users:
            resolved.setdefault("users", {})[key] = copy.deepcopy(self._users[snowflake])
            if snowflake in self._members:
                member = self._member_payload(snowflake, with_user=False)
                member["permissions"] = str(self._permissions_of(snowflake))
                resolved.setdefault("members", {})[key] = member
        elif kind in (8, 9) and snowflake in self._roles:
            resolved.setdefault("roles", {})[key] = copy.deepcopy(self._roles[snowflake])
        elif kind == 7 and snowflake in self._channels:
            channel = copy.deepcopy(self._channels[snowflake])
            channel["permissions"] = str(self._permissions_of(self.bot_user_id))
            resolved.setdefault("channels", {})[key] = channel
        else:
            raise ValueError(
                f"option value {snowflake} matches no user, role or channel of its type"
            )

    @staticmethod
    def _submitted(component: dict[str, Any], remaining: dict[str, str]) -> dict[str, Any] | None:
        custom_id = component.get("custom_id")
        if component.get("type") != 4 or custom_id is None:
            return None
        return {"type": 4, "custom_id": custom_id, "value": remaining.pop(custom_id, "")}

    def _new_interaction(
        self,
        interaction_type: int,
        channel_id: int,
        user_id: int,
        data: dict[str, Any],
        *,
        message: dict[str, Any] | None = None,
    ) -> dict[str, Any]:
        if channel_id not in self._channels:
            raise KeyError(f"unknown channel {channel_id}")
        direct = self._is_dm(channel_id)
        if direct:
            recipient = int(self._channels[channel_id]["recipients"][0]["id"])
            if user_id != recipient:
                raise KeyError(f"user {user_id} is not in DM channel {channel_id}")
        elif user_id not in self._members:
            raise KeyError(f"user {user_id} is not a member: add_member() it first")
        interaction_id = self._next_id()
        token = "fake-interaction-" + secrets.token_urlsafe(48)
        payload: dict[str, Any] = {
            "id": str(interaction_id),
            "application_id": str(self.application_id),
            "type": interaction_type,
            "data": data,
            "channel_id": str(channel_id),
            "token": token,
            "version": 1,
            "app_permissions": str(self._permissions_of(self.bot_user_id)),
            "locale": self.locale,
            "entitlements": [],
            "entitlement_sku_ids": [],
            "attachment_size_limit": ATTACHMENT_SIZE_LIMIT,
        }
        if direct:
            # In the bot's DM: the user instead of a member, no guild, context BOT_DM (1), and
            # "0" as the guild install's owner. The channel is partial: Discord leaves out its
            # recipients there.
            channel = self._channels[channel_id]
            payload.update(
                user=copy.deepcopy(self._users[user_id]),
                channel={k: copy.deepcopy(v) for k, v in channel.items() if k != "recipients"},
                authorizing_integration_owners={"0": "0"},
                context=1,
            )
        else:
            member = self._member_payload(user_id)
            member["permissions"] = str(self._permissions_of(user_id))
            guild_channel = copy.deepcopy(self._channels[channel_id])
            guild_channel["permissions"] = str(self._permissions_of(self.bot_user_id))
            payload.update(
                guild_id=str(self.guild_id),
                guild={"id": str(self.guild_id), "locale": self.locale, "features": []},
                channel=guild_channel,
                member=member,
                guild_locale=self.locale,
                authorizing_integration_owners={"0": str(self.guild_id)},
                context=0,
            )
        if message is not None:
            payload["message"] = self._render(message)
        self._interactions[token] = _Interaction(
            id=interaction_id,
            token=token,
            type=interaction_type,
            channel_id=channel_id,
            user_id=user_id,
            created=time.monotonic(),
            data=data,
            message_id=None if message is None else int(message["id"]),
        )
        self._dispatch("INTERACTION_CREATE", payload)
        self._changed()
        return copy.deepcopy(payload)

    def _interaction_message(
        self,
        interaction: _Interaction,
        payload: dict[str, Any],
        files: list[RecordedFile],
        *,
        message_type: int,
        loading: bool = False,
    ) -> dict[str, Any]:
        """A message created by an interaction response or follow-up: authored by the bot,
        sent through the application's webhook, in the channel unless ephemeral."""
        channel_id = interaction.channel_id
        flags = int(payload.get("flags") or 0) & (64 | 4 | 4096)
        if loading:
            flags |= 128
        user = copy.deepcopy(self._users[interaction.user_id])
        owner = "0" if self._is_dm(channel_id) else str(self.guild_id)
        metadata = {
            "id": str(interaction.id),
            "type": interaction.type,
            "user": user,
            "authorizing_integration_owners": {"0": owner},
        }
        if interaction.original_message_id is not None:
            metadata["original_response_message_id"] = str(interaction.original_message_id)
        if loading:
            content, embeds, components, attachments = "", [], [], []
            users: list[dict[str, Any]] = []
            roles: list[str] = []
            everyone = False
        else:
            content, embeds, components, attachments = self._checked_body(
                payload, files, channel_id
            )
            users, roles, everyone = self._mentions_in(
                content, payload.get("allowed_mentions"), None
            )
        message = self._build_message(
            channel_id,
            self._bot_user(),
            content,
            message_type=message_type,
            embeds=embeds,
            components=components,
            attachments=attachments,
            mentions=users,
            mention_roles=roles,
            mention_everyone=everyone,
            webhook_id=self.application_id,
            application_id=self.application_id,
            flags=flags,
            tts=bool(payload.get("tts")),
            extra={
                "interaction_metadata": metadata,
                "interaction": {
                    "id": str(interaction.id),
                    "type": interaction.type,
                    "name": interaction.data.get("name", ""),
                    "user": user,
                },
            },
        )
        if flags & 64:
            self._ephemeral[int(message["id"])] = message
        else:
            self._store_message(channel_id, message)
            self._dispatch("MESSAGE_CREATE", self._message_event(message))
        return message

    def _record_interaction(
        self,
        kind: str,
        interaction: _Interaction,
        *,
        response_type: int | None,
        data: dict[str, Any] | None,
        message: dict[str, Any] | None,
    ) -> None:
        self.interaction_responses.append(
            {
                "kind": kind,
                "interaction_id": str(interaction.id),
                "token": interaction.token,
                "type": response_type,
                "data": copy.deepcopy(data) if data is not None else {},
                "message": None if message is None else self._render(message),
                "time": time.monotonic(),
            }
        )

    # ------------------------------------------------------------------ internals: gateway

    def _live(self, session: _Session) -> bool:
        return session.conn is not None and not session.conn.closing

    def _send_text(self, conn: _Connection, text: str) -> None:
        conn.queue.put_nowait(text)

    def _send_op(self, conn: _Connection, op: int, data: Any) -> None:
        self._send_text(conn, json.dumps({"op": op, "d": data, "s": None, "t": None}))

    def _dispatch(self, event: str, data: dict[str, Any]) -> None:
        # A message event without a guild is a DM's: another intent, and its content is
        # delivered even without MESSAGE_CONTENT (Discord exempts DMs with the app).
        direct = event in _DM_EVENT_INTENTS and "guild_id" not in data
        intent = _DM_EVENT_INTENTS[event] if direct else _EVENT_INTENTS.get(event)
        for session in list(self._sessions.values()):
            live = self._live(session)
            if not live and (not session.resumable or self._refusing):
                # A dead session gets nothing; during an outage, nothing is kept for replay.
                continue
            if intent is not None and not session.intents & intent:
                continue
            payload = data
            if (
                event in ("MESSAGE_CREATE", "MESSAGE_UPDATE")
                and not direct
                and not session.intents & GatewayIntent.MESSAGE_CONTENT
            ):
                payload = self._strip_content(data)
            self._dispatch_to(session, event, payload)

    def _dispatch_to(self, session: _Session, event: str, data: dict[str, Any]) -> None:
        session.seq += 1
        text = json.dumps({"op": 0, "t": event, "s": session.seq, "d": data}, ensure_ascii=False)
        session.buffer.append((session.seq, text))
        del session.buffer[:-1000]
        if self._live(session):
            assert session.conn is not None
            self._send_text(session.conn, text)
        path = session.conn.path if session.conn is not None else ""
        self._log("dispatch", session.session_id, path, {"t": event, "s": session.seq, "d": data})

    def _close_connection(self, conn: _Connection, code: int, reason: str) -> None:
        if conn.closing:
            return
        conn.closing = True
        conn.server_close_code = code
        session = conn.session
        if session is not None:
            if session.conn is conn:
                session.conn = None
            if code in _NON_RESUMABLE_CLOSE_CODES:
                session.resumable = False
        conn.queue.put_nowait(_Close(code, reason))
        self._log("server_close", session and session.session_id, conn.path, {"code": code})

    async def _writer(self, conn: _Connection) -> None:
        """Sends a connection's frames in order, so synchronous callers can queue them."""
        while True:
            item = await conn.queue.get()
            if item is None:
                return
            try:
                if isinstance(item, _Close):
                    await conn.ws.close(code=item.code, message=item.reason.encode())
                    return
                if conn.ws.closed:
                    continue
                if conn.compressor is not None:
                    data = conn.compressor.compress(item.encode()) + conn.compressor.flush(
                        zlib.Z_SYNC_FLUSH
                    )
                    await conn.ws.send_bytes(data)
                else:
                    await conn.ws.send_str(item)
            except (ConnectionError, RuntimeError) as exc:
                logger.debug("gateway send failed: %r", exc)
                return
            self._changed()

    async def _handle_gateway(self, request: web.Request) -> web.StreamResponse:
        path = request.path
        if self._refusing:
            self._log("refused", None, path, {"query": dict(request.query)})
            return web.Response(
                status=503, text="upstream connect error or disconnect/reset before headers"
            )
        ws = web.WebSocketResponse(compress=False, max_msg_size=16 * 1024 * 1024)
        await ws.prepare(request)
        compressor = None
        if self.gateway_compression and request.query.get("compress") == "zlib-stream":
            compressor = zlib.compressobj()
        conn = _Connection(ws=ws, path=path, compressor=compressor)
        conn.writer = asyncio.create_task(self._writer(conn))
        self._connections.add(conn)
        self._log("connect", None, path, {"query": dict(request.query)})
        self._send_op(
            conn,
            10,
            {"heartbeat_interval": self.heartbeat_interval_ms, "_trace": ["fake-discord-gateway"]},
        )
        try:
            async for frame in ws:
                if frame.type is WSMsgType.TEXT:
                    self._on_frame(conn, frame.data)
                elif frame.type is WSMsgType.BINARY:
                    self._close_connection(conn, 4002, "Error while decoding payload.")
                elif frame.type is WSMsgType.ERROR:
                    break
        finally:
            self._on_disconnect(conn)
            conn.queue.put_nowait(None)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(asyncio.shield(conn.writer), timeout=15)
            self._connections.discard(conn)
        return ws

    def _on_disconnect(self, conn: _Connection) -> None:
        client_code = None if conn.server_close_code is not None else conn.ws.close_code
        session = conn.session
        conn.closing = True
        if session is not None:
            if session.conn is conn:
                session.conn = None
            # A client that closes with 1000/1001 ends its session, as on Discord.
            if client_code in (1000, 1001):
                session.resumable = False
        self._log(
            "disconnect",
            session and session.session_id,
            conn.path,
            {"client_code": client_code, "server_code": conn.server_close_code},
        )
        self._sessions = {
            sid: s for sid, s in self._sessions.items() if s.resumable or self._live(s)
        }

    def _on_frame(self, conn: _Connection, text: str) -> None:
        if conn.closing:
            return
        try:
            frame = json.loads(text)
            op = frame["op"]
            data = frame.get("d")
        except (ValueError, KeyError, TypeError):
            self._close_connection(conn, 4002, "Error while decoding payload.")
            return
        if op == 1:
            conn.heartbeats += 1
            self.heartbeats += 1
            self._send_op(conn, 11, None)
            self._changed()
        elif op == 2:
            self._identify(conn, data or {})
        elif op == 6:
            self._resume(conn, data or {})
        elif conn.session is None:
            self._close_connection(conn, 4003, "Not authenticated.")
        elif op == 8:
            self._request_members(conn, data or {})
        elif op in (3, 4):
            self._log(
                "presence" if op == 3 else "voice_state",
                conn.session.session_id,
                conn.path,
                {"d": data},
            )
        else:
            self._close_connection(conn, 4001, "Unknown opcode.")

    def _identify(self, conn: _Connection, data: dict[str, Any]) -> None:
        if conn.session is not None:
            self._close_connection(conn, 4005, "Already authenticated.")
            return
        if data.get("token") != self.bot_token:
            self._close_connection(conn, 4004, "Authentication failed.")
            return
        intents = data.get("intents")
        if not isinstance(intents, int):
            self._close_connection(conn, 4013, "Invalid intent(s).")
            return
        if intents & GatewayIntent.PRIVILEGED & ~self.privileged_intents:
            self._close_connection(conn, 4014, "Disallowed intent(s).")
            return
        session = _Session(
            session_id=secrets.token_hex(16),
            intents=intents,
            large_threshold=int(data.get("large_threshold") or 50),
            shard=data.get("shard"),
        )
        self._sessions[session.session_id] = session
        session.conn = conn
        conn.session = session
        self._log("identify", session.session_id, conn.path, {"intents": intents})
        ready: dict[str, Any] = {
            "v": 10,
            "user": dict(self._bot_user(), verified=True, mfa_enabled=False, email=None),
            "guilds": [{"id": str(self.guild_id), "unavailable": True}],
            "session_id": session.session_id,
            "session_type": "normal",
            "resume_gateway_url": self.resume_gateway_url,
            "application": {
                "id": str(self.application_id),
                "flags": self._application_payload()["flags"],
            },
            "private_channels": [],
            "relationships": [],
            "presences": [],
            "guild_join_requests": [],
            "geo_ordered_rtc_regions": [],
            "user_settings": {},
            "auth": {},
            "_trace": ["fake-discord-gateway"],
        }
        if session.shard is not None:
            ready["shard"] = session.shard
        self._dispatch_to(session, "READY", ready)
        self._dispatch_to(session, "GUILD_CREATE", self._guild_create_payload(session))

    def _resume(self, conn: _Connection, data: dict[str, Any]) -> None:
        if conn.session is not None:
            self._close_connection(conn, 4005, "Already authenticated.")
            return
        if data.get("token") != self.bot_token:
            self._close_connection(conn, 4004, "Authentication failed.")
            return
        session = self._sessions.get(str(data.get("session_id")))
        seq = data.get("seq")
        if session is None or not session.resumable or (seq or 0) > session.seq:
            if session is not None:
                session.resumable = False
            self._send_op(conn, 9, False)
            self._log("invalid_session", data.get("session_id"), conn.path, {"seq": seq})
            return
        if session.conn is not None and session.conn is not conn:
            self._close_connection(session.conn, 4000, "Session resumed elsewhere.")
        session.conn = conn
        conn.session = session
        replay = [text for s, text in session.buffer if seq is None or s > seq]
        for text in replay:
            self._send_text(conn, text)
        self._log("resume", session.session_id, conn.path, {"seq": seq, "replayed": len(replay)})
        self._dispatch_to(session, "RESUMED", {"_trace": ["fake-discord-gateway"]})

    def _request_members(self, conn: _Connection, data: dict[str, Any]) -> None:
        assert conn.session is not None
        query = str(data.get("query") or "").lower()
        limit = int(data.get("limit") or 0)
        wanted = data.get("user_ids")
        if wanted is not None:
            ids = [int(u) for u in (wanted if isinstance(wanted, list) else [wanted])]
            found = [u for u in ids if u in self._members]
            not_found = [str(u) for u in ids if u not in self._members]
        else:
            found = [
                uid
                for uid in self._members
                if self._users[uid]["username"].lower().startswith(query)
                or (self._members[uid]["nick"] or "").lower().startswith(query)
            ]
            not_found = []
        if limit:
            found = found[:limit]
        self._log("request_members", conn.session.session_id, conn.path, {"d": data})
        chunk: dict[str, Any] = {
            "guild_id": str(self.guild_id),
            "members": [self._member_payload(uid) for uid in found],
            "chunk_index": 0,
            "chunk_count": 1,
            "not_found": not_found,
        }
        if data.get("nonce") is not None:
            chunk["nonce"] = data["nonce"]
        self._dispatch_to(conn.session, "GUILD_MEMBERS_CHUNK", chunk)

    # ------------------------------------------------------------------ internals: REST plumbing

    def _build_routes(self) -> list[_Route]:
        table: list[tuple[str, str, _Handler, bool]] = [
            ("GET", "/users/@me", self._get_me, True),
            ("POST", "/users/@me/channels", self._create_dm, True),
            ("GET", "/users/{user_id}", self._get_user, True),
            ("GET", "/oauth2/applications/@me", self._get_application, True),
            ("GET", "/applications/@me", self._get_application, True),
            ("GET", "/gateway", self._get_gateway, False),
            ("GET", "/gateway/bot", self._get_gateway_bot, True),
            ("GET", "/guilds/{guild_id}", self._get_guild, True),
            ("GET", "/guilds/{guild_id}/channels", self._get_guild_channels, True),
            ("GET", "/guilds/{guild_id}/threads/active", self._get_active_threads, True),
            ("GET", "/guilds/{guild_id}/roles", self._get_roles, True),
            ("GET", "/guilds/{guild_id}/members", self._list_members, True),
            ("GET", "/guilds/{guild_id}/members/{user_id}", self._get_member, True),
            ("PATCH", "/guilds/{guild_id}/members/{user_id}", self._patch_member, True),
            ("DELETE", "/guilds/{guild_id}/members/{user_id}", self._kick_member, True),
            (
                "PUT",
                "/guilds/{guild_id}/members/{user_id}/roles/{role_id}",
                self._add_member_role,
                True,
            ),
            (
                "DELETE",
                "/guilds/{guild_id}/members/{user_id}/roles/{role_id}",
                self._remove_member_role,
                True,
            ),
            ("GET", "/guilds/{guild_id}/bans", self._list_bans, True),
            ("GET", "/guilds/{guild_id}/bans/{user_id}", self._get_ban, True),
            ("PUT", "/guilds/{guild_id}/bans/{user_id}", self._put_ban, True),
            ("DELETE", "/guilds/{guild_id}/bans/{user_id}", self._delete_ban, True),
            ("GET", "/guilds/{guild_id}/webhooks", self._guild_webhooks, True),
            ("GET", "/channels/{channel_id}", self._get_channel, True),
            ("GET", "/channels/{channel_id}/messages", self._get_messages, True),
            ("POST", "/channels/{channel_id}/messages", self._post_message, True),
            ("POST", "/channels/{channel_id}/messages/bulk-delete", self._bulk_delete, True),
            (
                "POST",
                "/channels/{channel_id}/messages/{message_id}/threads",
                self._start_thread,
                True,
            ),
            ("GET", "/channels/{channel_id}/messages/pins", self._list_pins_v2, True),
            ("PUT", "/channels/{channel_id}/messages/pins/{message_id}", self._pin, True),
            ("DELETE", "/channels/{channel_id}/messages/pins/{message_id}", self._unpin, True),
            ("GET", "/channels/{channel_id}/pins", self._list_pins, True),
            ("PUT", "/channels/{channel_id}/pins/{message_id}", self._pin, True),
            ("DELETE", "/channels/{channel_id}/pins/{message_id}", self._unpin, True),
            ("GET", "/channels/{channel_id}/messages/{message_id}", self._get_message_route, True),
            ("PATCH", "/channels/{channel_id}/messages/{message_id}", self._patch_message, True),
            (
                "DELETE",
                "/channels/{channel_id}/messages/{message_id}",
                self._delete_message_route,
                True,
            ),
            (
                "PUT",
                "/channels/{channel_id}/messages/{message_id}/reactions/{emoji}/@me",
                self._add_reaction,
                True,
            ),
            (
                "DELETE",
                "/channels/{channel_id}/messages/{message_id}/reactions/{emoji}/@me",
                self._remove_reaction,
                True,
            ),
            ("POST", "/channels/{channel_id}/typing", self._typing, True),
            ("GET", "/channels/{channel_id}/webhooks", self._channel_webhooks, True),
            ("POST", "/channels/{channel_id}/webhooks", self._create_webhook, True),
            ("GET", "/webhooks/{webhook_id}", self._get_webhook, True),
            ("PATCH", "/webhooks/{webhook_id}", self._patch_webhook, True),
            ("DELETE", "/webhooks/{webhook_id}", self._delete_webhook, True),
            ("GET", "/webhooks/{webhook_id}/{token}", self._get_webhook_token, False),
            ("PATCH", "/webhooks/{webhook_id}/{token}", self._patch_webhook_token, False),
            ("DELETE", "/webhooks/{webhook_id}/{token}", self._delete_webhook_token, False),
            ("POST", "/webhooks/{webhook_id}/{token}", self._execute_webhook, False),
            (
                "GET",
                "/webhooks/{webhook_id}/{token}/messages/{message_id}",
                self._get_webhook_message,
                False,
            ),
            (
                "PATCH",
                "/webhooks/{webhook_id}/{token}/messages/{message_id}",
                self._patch_webhook_message,
                False,
            ),
            (
                "DELETE",
                "/webhooks/{webhook_id}/{token}/messages/{message_id}",
                self._delete_webhook_message,
                False,
            ),
            (
                "POST",
                "/interactions/{interaction_id}/{token}/callback",
                self._interaction_callback,
                False,
            ),
            ("GET", "/applications/{application_id}/commands", self._get_commands, True),
            ("PUT", "/applications/{application_id}/commands", self._put_commands, True),
            ("POST", "/applications/{application_id}/commands", self._post_command, True),
            (
                "DELETE",
                "/applications/{application_id}/commands/{command_id}",
                self._delete_command,
                True,
            ),
            (
                "GET",
                "/applications/{application_id}/guilds/{guild_id}/commands",
                self._get_commands,
                True,
            ),
            (
                "PUT",
                "/applications/{application_id}/guilds/{guild_id}/commands",
                self._put_commands,
                True,
            ),
            (
                "POST",
                "/applications/{application_id}/guilds/{guild_id}/commands",
                self._post_command,
                True,
            ),
            (
                "DELETE",
                "/applications/{application_id}/guilds/{guild_id}/commands/{command_id}",
                self._delete_command,
                True,
            ),
        ]
        return [_compile_route(m, t, h, a) for m, t, h, a in table]

    # ------------------------------------------------------------------ rate limits

    def _ratelimit_headers(self, bucket: str) -> dict[str, str]:
        # With the limits off: a generous bucket that never runs out.
        return {
            "X-RateLimit-Limit": "50",
            "X-RateLimit-Remaining": "49",
            "X-RateLimit-Reset": f"{time.time() + 1:.3f}",
            "X-RateLimit-Reset-After": "1.000",
            "X-RateLimit-Bucket": bucket,
        }

    @property
    def invalid_request_count(self) -> int:
        """401, 403 and non-shared 429 answers in the current invalid-request window."""
        self._prune_invalid(self.clock())
        return len(self._invalid_times)

    @property
    def banned(self) -> bool:
        """Whether every request is being refused by the (simulated) Cloudflare ban."""
        return self.limits.enforce and self.clock() < self.banned_until

    def _prune_invalid(self, now: float) -> None:
        window = self.limits.invalid_window * self.limits.window_scale
        while self._invalid_times and self._invalid_times[0] <= now - window:
            self._invalid_times.popleft()

    def _count_invalid(self, response: web.Response) -> None:
        if not self.limits.enforce or response.status not in (401, 403, 429):
            return
        if response.headers.get("X-RateLimit-Scope") == "shared":
            return  # Discord does not hold a shared-resource limit against the client
        now = self.clock()
        self._prune_invalid(now)
        self._invalid_times.append(now)
        if len(self._invalid_times) >= self.limits.invalid_requests:
            self.banned_until = now + self.limits.ban_seconds * self.limits.window_scale
            self._invalid_times.clear()
            logger.debug("fake Discord: invalid-request limit reached, banned")

    def _ban_response(self, now: float) -> web.Response:
        # Cloudflare answers, not Discord: no Via, no JSON, no X-RateLimit-* headers.
        # discord.py recognises exactly this and gives up instead of retrying.
        wait = self.banned_until - now
        return web.Response(
            status=429,
            text="error code: 1015",
            content_type="text/plain",
            headers={"Retry-After": str(max(1, math.ceil(wait)))},
        )

    def _global_exempt(self, path: str) -> bool:
        # Interaction callbacks and follow-ups (the application id as webhook id) are not
        # bound to the global limit.
        return path.startswith(("/interactions/", f"/webhooks/{self.application_id}/"))

    def _check_global(self, recorded: RecordedRequest) -> web.Response | None:
        if self._global_exempt(recorded.path):
            return None
        # Per bot token; requests without one (webhooks by URL) are limited per client, and
        # every client of the fake is on loopback.
        who = recorded.headers.get("Authorization") or "ip:127.0.0.1"
        now = self.clock()
        window = 1.0 * self.limits.window_scale
        times = self._global_times.setdefault(who, collections.deque())
        while times and times[0] <= now - window + 1e-9:
            times.popleft()
        if len(times) >= self.limits.global_per_second:
            wait = times[0] + window - now
            return self._rate_limited(wait, scope="global", global_=True, headers={})
        times.append(now)
        return None

    def _limits_for(self, route: _Route, params: dict[str, str]) -> list[_Limit]:
        config = self.limits
        scale = config.window_scale

        def limit(
            name: str,
            bucket: str,
            resource: tuple[str, ...],
            spec: tuple[int, float],
            scope: str = "user",
            announced: bool = True,
        ) -> _Limit:
            return _Limit(bucket, (name, *resource), spec[0], spec[1] * scale, scope, announced)

        method, template = route.method, route.template
        if method == "POST" and template == "/channels/{channel_id}/messages":
            name = "channel-messages"
            return [
                limit(name, _bucket_hash(name), (params["channel_id"],), config.channel_messages)
            ]
        if method == "DELETE" and template == "/channels/{channel_id}/messages/{message_id}":
            name = "message-deletes"
            return [
                limit(name, _bucket_hash(name), (params["channel_id"],), config.message_deletes)
            ]
        if "/reactions/" in template:
            name = "reactions"
            return [limit(name, _bucket_hash(name), (params["channel_id"],), config.reactions)]
        if (
            method == "POST"
            and template == "/webhooks/{webhook_id}/{token}"
            and params["webhook_id"] != str(self.application_id)
        ):
            name = "webhook-executes"
            resource = (params["webhook_id"], params["token"])
            found = [limit(name, _bucket_hash(name), resource, config.webhook_executes)]
            hook = (
                self._webhooks.get(int(params["webhook_id"]))
                if params["webhook_id"].isdigit()
                else None
            )
            if hook is not None and hook["token"] == params["token"]:
                channel = str(hook["channel_id"])
                name = "webhook-channel"
                found.append(
                    limit(
                        name,
                        _bucket_hash(name),
                        (channel,),
                        config.webhook_channel,
                        scope="shared",
                        announced=False,
                    )
                )
            return found
        # Top-level resources, as Discord keys its buckets: channel, guild, webhook id + token
        # (and an interaction's id + token).
        major = tuple(
            params[key]
            for key in ("channel_id", "guild_id", "webhook_id", "interaction_id", "token")
            if key in params
        )
        return [limit(route.bucket, route.bucket, major, config.default_route)]

    def _window(self, lim: _Limit, now: float) -> _Window:
        window = self._windows.get(lim.key)
        # A hair of tolerance: a client that waited exactly Reset-After must not be refused
        # over a floating-point rounding.
        if window is None or now >= window.start + lim.period - 1e-9:
            window = _Window(now)
            self._windows[lim.key] = window
        return window

    def _bucket_headers(self, lim: _Limit, window: _Window, now: float) -> dict[str, str]:
        reset_after = max(0.0, window.start + lim.period - now)
        return {
            "X-RateLimit-Limit": str(lim.limit),
            "X-RateLimit-Remaining": str(max(0, lim.limit - window.count)),
            "X-RateLimit-Reset": f"{time.time() + reset_after:.3f}",
            "X-RateLimit-Reset-After": f"{reset_after:.3f}",
            "X-RateLimit-Bucket": lim.bucket,
        }

    def _check_route(
        self, route: _Route, params: dict[str, str]
    ) -> tuple[dict[str, str], web.Response | None]:
        """The headers of the route's bucket, and a 429 if one of its limits is used up;
        otherwise the request is counted in every limit it is subject to."""
        if not self.limits.enforce:
            return self._ratelimit_headers(route.bucket), None
        now = self.clock()
        pairs = [(lim, self._window(lim, now)) for lim in self._limits_for(route, params)]
        announced = next(pair for pair in pairs if pair[0].announced)
        full = [(lim, w) for lim, w in pairs if w.count >= lim.limit]
        if full:
            lim, window = max(full, key=lambda pair: pair[1].start + pair[0].period)
            headers = self._bucket_headers(*announced, now)
            wait = window.start + lim.period - now
            return headers, self._rate_limited(wait, scope=lim.scope, headers=headers)
        for _lim, window in pairs:
            window.count += 1
        return self._bucket_headers(*announced, now), None

    def _rate_limited(
        self,
        wait: float,
        *,
        scope: str,
        headers: dict[str, str],
        global_: bool = False,
        message: str | None = None,
        code: int | None = None,
    ) -> web.Response:
        wait = max(wait, 0.001)
        all_headers = dict(headers)
        all_headers.update(
            {
                # Whole seconds, rounded up, as Discord sends it; the body has the decimals.
                "Retry-After": str(max(1, math.ceil(wait))),
                "X-RateLimit-Scope": scope,
                # discord.py treats a 429 without Via as a Cloudflare ban and does not retry.
                "Via": "1.1 google",
            }
        )
        if global_:
            all_headers["X-RateLimit-Global"] = "true"
        body = {
            "message": message or "You are being rate limited.",
            "retry_after": round(wait, 3),
            "global": global_,
            "code": 0 if code is None else code,
        }
        return self._json(429, body, all_headers)

    @staticmethod
    def _json(status: int, body: Any, headers: dict[str, str] | None = None) -> web.Response:
        # Exactly "application/json": discord.py compares the header verbatim.
        all_headers = {"Content-Type": "application/json"}
        all_headers.update(headers or {})
        return web.Response(status=status, body=json.dumps(body).encode(), headers=all_headers)

    def _take_fault(self, method: str, path: str) -> InjectedFault | None:
        for fault in self._faults:
            if fault.matches(method, path):
                fault.remaining -= 1
                fault.fired += 1
                if fault.remaining <= 0:
                    self._faults.remove(fault)
                return fault
        return None

    def _fault_response(self, fault: InjectedFault, bucket: str) -> web.Response:
        if fault.status == 429:
            headers = {
                "X-RateLimit-Limit": "50",
                "X-RateLimit-Remaining": "0",
                "X-RateLimit-Reset": f"{time.time() + fault.retry_after:.3f}",
                "X-RateLimit-Reset-After": f"{fault.retry_after:.3f}",
                "X-RateLimit-Bucket": bucket,
            }
            return self._rate_limited(
                fault.retry_after,
                scope="global" if fault.global_ else "user",
                headers={} if fault.global_ else headers,
                global_=fault.global_,
                message=fault.message,
                code=fault.code,
            )
        if fault.status in (502, 503, 504) or 520 <= fault.status <= 524:
            return web.Response(
                status=fault.status,
                text=_HTML_ERROR.format(status=fault.status),
                content_type="text/html",
            )
        if fault.status >= 500:
            return self._json(
                fault.status,
                {"message": fault.message or f"{fault.status}: Internal Server Error", "code": 0},
            )
        return self._json(
            fault.status,
            {
                "message": fault.message or f"{fault.status}: fault injected",
                "code": fault.code or 0,
            },
            self._ratelimit_headers(bucket),
        )

    @staticmethod
    async def _read_body(request: web.Request) -> tuple[Any, list[RecordedFile]]:
        if request.content_type.startswith("multipart/"):
            reader = await request.multipart()
            payload: Any = None
            files: list[RecordedFile] = []
            while True:
                part = await reader.next()
                if part is None:
                    break
                if not isinstance(part, BodyPartReader):
                    continue
                if part.name == "payload_json":
                    payload = json.loads(await part.text())
                else:
                    data = bytes(await part.read(decode=False))
                    ctype = part.headers.get("Content-Type")
                    files.append(RecordedFile(part.name or "", part.filename, ctype, data))
            return payload, files
        raw = await request.read()
        if not raw:
            return None, []
        try:
            return json.loads(raw), []
        except ValueError:
            return raw.decode("utf-8", "replace"), []

    def _match(self, method: str, path: str) -> tuple[_Route, dict[str, str]]:
        path_matched = False
        for route in self._routes:
            match = route.regex.fullmatch(path)
            if match is None:
                continue
            path_matched = True
            if route.method == method:
                return route, match.groupdict()
        if path_matched:
            raise _ApiError(405, 0, "405: Method Not Allowed")
        raise _ApiError(404, 0, "404: Not Found")

    async def _handle_api(self, request: web.Request) -> web.StreamResponse:
        path = "/" + request.match_info["tail"]
        body, files = await self._read_body(request)
        interesting = ("Authorization", "Content-Type", "User-Agent", "X-Audit-Log-Reason")
        recorded = RecordedRequest(
            method=request.method,
            path=path,
            query=dict(request.query),
            json=body,
            files=files,
            headers={h: request.headers[h] for h in interesting if h in request.headers},
            time=time.monotonic(),
        )
        self.requests.append(recorded)
        if self.banned:
            response = self._ban_response(self.clock())
        else:
            response = self._respond(recorded)
            self._count_invalid(response)
        recorded.status = response.status
        logger.debug("%s %s -> %s", request.method, path, response.status)
        self._changed()
        return response

    def _respond(self, recorded: RecordedRequest) -> web.Response:
        bucket = hashlib.sha1(recorded.path.encode()).hexdigest()[:32]
        fault = self._take_fault(recorded.method, recorded.path)
        if fault is not None and not fault.after_route:
            return self._fault_response(fault, bucket)
        limited = self._check_global(recorded) if self.limits.enforce else None
        response = limited or self._route_response(recorded)
        if fault is not None:
            # The route acted; the client only sees the fault.
            return self._fault_response(fault, bucket)
        return response

    def _route_response(self, recorded: RecordedRequest) -> web.Response:
        try:
            route, params = self._match(recorded.method, recorded.path)
        except _ApiError as error:
            return self._json(error.status, error.body())
        headers, limited = self._check_route(route, params)
        if limited is not None:
            return limited
        if route.auth and recorded.headers.get("Authorization") != f"Bot {self.bot_token}":
            return self._json(401, {"message": "401: Unauthorized", "code": 0}, headers)
        try:
            status, body = route.handler(recorded, **params)
        except _ApiError as error:
            return self._json(error.status, error.body(), headers)
        if status == 204:
            return web.Response(status=204, headers=headers)
        return self._json(status, body, headers)

    async def _handle_attachment(self, request: web.Request) -> web.StreamResponse:
        try:
            _filename, data, ctype = self._attachments[int(request.match_info["attachment_id"])]
        except (KeyError, ValueError):
            return web.Response(status=404, text="Not Found")
        return web.Response(body=data, headers={"Content-Type": ctype})

    @staticmethod
    def _snowflake(value: str, where: str) -> int:
        if not value.isdigit():
            raise _form_error(where, "NUMBER_TYPE_COERCE", f'Value "{value}" is not snowflake.')
        return int(value)

    @staticmethod
    def _body(request: RecordedRequest) -> dict[str, Any]:
        if request.json is None:
            return {}
        if not isinstance(request.json, dict):
            raise _ApiError(400, 50109, "The request body contains invalid JSON.")
        return request.json

    def _checked_body(
        self,
        payload: dict[str, Any],
        files: list[RecordedFile],
        channel_id: int,
        *,
        existing: list[dict[str, Any]] | None = None,
    ) -> tuple[str, list[dict[str, Any]], list[dict[str, Any]], list[dict[str, Any]]]:
        """Content, embeds, components and attachments of a message being sent, checked as
        Discord checks them."""
        content = payload.get("content") or ""
        if not isinstance(content, str):
            raise _form_error("content", "BASE_TYPE_STRING", "Must be a string.")
        if len(content) > MAX_CONTENT_LENGTH:
            raise _form_error(
                "content",
                "BASE_TYPE_MAX_LENGTH",
                f"Must be {MAX_CONTENT_LENGTH} or fewer in length.",
            )
        embeds = payload.get("embeds") or []
        if len(embeds) > 10:
            raise _form_error("embeds", "BASE_TYPE_MAX_LENGTH", "Must be 10 or fewer in length.")
        components = payload.get("components") or []
        attachments = self._uploaded_attachments(
            channel_id, payload.get("attachments"), files, existing or []
        )
        if not (
            content
            or embeds
            or components
            or attachments
            or payload.get("sticker_ids")
            or payload.get("poll")
        ):
            raise _ApiError(400, 50006, "Cannot send an empty message")
        return content, embeds, components, attachments

    def _history(self, channel_id: int, query: dict[str, str]) -> list[dict[str, Any]]:
        limit_raw = query.get("limit", "50")
        if not limit_raw.isdigit() or not 1 <= int(limit_raw) <= 100:
            raise _form_error("limit", "NUMBER_TYPE_MAX", "int value should be between 1 and 100.")
        limit = int(limit_raw)
        ids = list(self._messages[channel_id])  # oldest first
        if "around" in query:
            around = self._snowflake(query["around"], "around")
            older = [i for i in ids if i < around]
            newer = [i for i in ids if i >= around]
            half = limit // 2
            selected = (older[-half:] if half else []) + newer[: limit - half]
        elif "after" in query:
            after = self._snowflake(query["after"], "after")
            selected = [i for i in ids if i > after][:limit]
        elif "before" in query:
            before = self._snowflake(query["before"], "before")
            selected = [i for i in ids if i < before][-limit:]
        else:
            selected = ids[-limit:]
        # Discord answers newest first whatever the direction.
        return [self._visible(self._messages[channel_id][i]) for i in reversed(selected)]

    def _visible(self, message: dict[str, Any]) -> dict[str, Any]:
        rendered = self._render(message)
        direct = self._is_dm(int(message["channel_id"]))
        if not direct and not self.privileged_intents & GatewayIntent.MESSAGE_CONTENT:
            return self._strip_content(rendered)
        return rendered

    def _edit_message(
        self,
        message: dict[str, Any],
        payload: dict[str, Any],
        files: list[RecordedFile],
    ) -> dict[str, Any]:
        """Apply an edit (only the fields sent change) and dispatch MESSAGE_UPDATE."""
        channel_id = int(message["channel_id"])
        if "content" in payload:
            content = payload["content"] or ""
            if len(content) > MAX_CONTENT_LENGTH:
                raise _form_error(
                    "content",
                    "BASE_TYPE_MAX_LENGTH",
                    f"Must be {MAX_CONTENT_LENGTH} or fewer in length.",
                )
            message["content"] = content
            users, roles, everyone = self._mentions_in(
                content, payload.get("allowed_mentions"), None
            )
            message.update(mentions=users, mention_roles=roles, mention_everyone=everyone)
        if "embeds" in payload:
            message["embeds"] = [dict({"type": "rich"}, **e) for e in payload["embeds"] or []]
        if "components" in payload:
            message["components"] = payload["components"] or []
        if "attachments" in payload or files:
            declared = payload.get("attachments")
            if declared is None:
                declared = [{"id": a["id"]} for a in message["attachments"]]
            message["attachments"] = self._uploaded_attachments(
                channel_id, declared, files, message["attachments"]
            )
        if "flags" in payload and payload["flags"] is not None:
            # Only SUPPRESS_EMBEDS can be toggled by an edit.
            message["flags"] = (message["flags"] & ~4) | (int(payload["flags"]) & 4)
        message["flags"] &= ~128  # an edited deferred response stops "thinking"
        message["edited_timestamp"] = _iso(_now())
        if int(message["id"]) not in self._ephemeral:
            self._dispatch("MESSAGE_UPDATE", self._message_event(message))
        return message

    # ------------------------------------------------------------------ REST: users, gateway, guild

    def _get_me(self, request: RecordedRequest) -> _Reply:
        return 200, dict(
            self._bot_user(), verified=True, mfa_enabled=False, email=None, locale="fr"
        )

    def _get_user(self, request: RecordedRequest, user_id: str) -> _Reply:
        return 200, copy.deepcopy(self._user(self._snowflake(user_id, "user_id")))

    def _create_dm(self, request: RecordedRequest) -> _Reply:
        """Open the DM channel with ``recipient_id``: the same channel every time. Opening
        it succeeds even for a user who refuses DMs; only posting there fails."""
        raw = self._body(request).get("recipient_id")
        if raw is None:
            raise _form_error("recipient_id", "BASE_TYPE_REQUIRED", "This field is required")
        recipient = self._snowflake(str(raw), "recipient_id")
        if recipient not in self._users or recipient == self.bot_user_id:
            raise _ApiError(400, 50033, "Invalid Recipient(s)")
        channel_id = self._dm_channels.get(recipient)
        if channel_id is None:
            channel_id = self._next_id()
            self._channels[channel_id] = {
                "id": str(channel_id),
                "type": _DM_TYPE,
                "last_message_id": None,
                "flags": 0,
                "recipients": [copy.deepcopy(self._users[recipient])],
            }
            self._messages[channel_id] = {}
            self._dm_channels[recipient] = channel_id
        return 200, copy.deepcopy(self._channels[channel_id])

    def _get_application(self, request: RecordedRequest) -> _Reply:
        return 200, self._application_payload()

    def _get_gateway(self, request: RecordedRequest) -> _Reply:
        return 200, {"url": self.gateway_url}

    def _get_gateway_bot(self, request: RecordedRequest) -> _Reply:
        return 200, {
            "url": self.gateway_url,
            "shards": 1,
            "session_start_limit": {
                "total": 1000,
                "remaining": 999,
                "reset_after": 14_400_000,
                "max_concurrency": 1,
            },
        }

    def _get_guild(self, request: RecordedRequest, guild_id: str) -> _Reply:
        self._check_guild(guild_id)
        guild = self._guild_payload()
        if _truthy(request.query.get("with_counts")):
            guild["approximate_member_count"] = len(self._members)
            guild["approximate_presence_count"] = 0
        return 200, guild

    def _get_guild_channels(self, request: RecordedRequest, guild_id: str) -> _Reply:
        self._check_guild(guild_id)
        return 200, [
            copy.deepcopy(c)
            for c in self._channels.values()
            if c["type"] not in _THREAD_TYPES | {_DM_TYPE}
        ]

    def _get_active_threads(self, request: RecordedRequest, guild_id: str) -> _Reply:
        self._check_guild(guild_id)
        threads = [
            copy.deepcopy(c)
            for c in self._channels.values()
            if c["type"] in _THREAD_TYPES and not c["thread_metadata"]["archived"]
        ]
        return 200, {"threads": threads, "members": []}

    def _get_roles(self, request: RecordedRequest, guild_id: str) -> _Reply:
        self._check_guild(guild_id)
        return 200, copy.deepcopy(list(self._roles.values()))

    def _list_members(self, request: RecordedRequest, guild_id: str) -> _Reply:
        self._check_guild(guild_id)
        limit = int(request.query.get("limit", "1"))
        after = int(request.query.get("after", "0"))
        ids = sorted(uid for uid in self._members if uid > after)[:limit]
        return 200, [self._member_payload(uid) for uid in ids]

    def _member_id(self, guild_id: str, user_id: str) -> int:
        self._check_guild(guild_id)
        uid = self.bot_user_id if user_id == "@me" else self._snowflake(user_id, "user_id")
        if uid not in self._members:
            raise _ApiError(404, 10007, "Unknown Member")
        return uid

    def _get_member(self, request: RecordedRequest, guild_id: str, user_id: str) -> _Reply:
        return 200, self._member_payload(self._member_id(guild_id, user_id))

    def _patch_member(self, request: RecordedRequest, guild_id: str, user_id: str) -> _Reply:
        uid = self._member_id(guild_id, user_id)
        payload = self._body(request)
        member = self._members[uid]
        if "nick" in payload:
            member["nick"] = payload["nick"] or None
        if "roles" in payload:
            roles = [int(r) for r in payload["roles"] or []]
            unknown = [r for r in roles if r not in self._roles]
            if unknown:
                raise _ApiError(404, 10011, "Unknown Role")
            member["roles"] = roles
        if "communication_disabled_until" in payload:
            until = payload["communication_disabled_until"]
            if until is not None:
                moment = datetime.fromisoformat(until)
                if (moment - _now()).total_seconds() > 28 * 24 * 3600:
                    raise _form_error(
                        "communication_disabled_until",
                        "BASE_TYPE_BAD_TIMESTAMP",
                        "Timeout cannot be longer than 28 days.",
                    )
            member["communication_disabled_until"] = until
        for flag in ("mute", "deaf"):
            if flag in payload:
                member[flag] = bool(payload[flag])
        self._member_update_event(uid)
        return 200, self._member_payload(uid)

    def _kick_member(self, request: RecordedRequest, guild_id: str, user_id: str) -> _Reply:
        uid = self._member_id(guild_id, user_id)
        self._remove_member(uid)
        return 204, None

    def _member_role(self, guild_id: str, user_id: str, role_id: str) -> tuple[int, int]:
        uid = self._member_id(guild_id, user_id)
        rid = self._snowflake(role_id, "role_id")
        if rid not in self._roles:
            raise _ApiError(404, 10011, "Unknown Role")
        return uid, rid

    def _add_member_role(
        self, request: RecordedRequest, guild_id: str, user_id: str, role_id: str
    ) -> _Reply:
        uid, rid = self._member_role(guild_id, user_id, role_id)
        if rid not in self._members[uid]["roles"]:
            self._members[uid]["roles"].append(rid)
            self._member_update_event(uid)
        return 204, None

    def _remove_member_role(
        self, request: RecordedRequest, guild_id: str, user_id: str, role_id: str
    ) -> _Reply:
        uid, rid = self._member_role(guild_id, user_id, role_id)
        if rid in self._members[uid]["roles"]:
            self._members[uid]["roles"].remove(rid)
            self._member_update_event(uid)
        return 204, None

    def _list_bans(self, request: RecordedRequest, guild_id: str) -> _Reply:
        self._check_guild(guild_id)
        return 200, copy.deepcopy(list(self._bans.values()))

    def _get_ban(self, request: RecordedRequest, guild_id: str, user_id: str) -> _Reply:
        self._check_guild(guild_id)
        ban = self._bans.get(self._snowflake(user_id, "user_id"))
        if ban is None:
            raise _ApiError(404, 10026, "Unknown Ban")
        return 200, copy.deepcopy(ban)

    def _put_ban(self, request: RecordedRequest, guild_id: str, user_id: str) -> _Reply:
        self._check_guild(guild_id)
        uid = self._snowflake(user_id, "user_id")
        self._user(uid)
        payload = self._body(request)
        seconds = int(payload.get("delete_message_seconds") or 0)
        if not 0 <= seconds <= 604800:
            raise _form_error(
                "delete_message_seconds", "NUMBER_TYPE_MAX", "Must be between 0 and 604800."
            )
        self._ban(uid, request.reason, seconds)
        return 204, None

    def _delete_ban(self, request: RecordedRequest, guild_id: str, user_id: str) -> _Reply:
        self._check_guild(guild_id)
        uid = self._snowflake(user_id, "user_id")
        ban = self._bans.pop(uid, None)
        if ban is None:
            raise _ApiError(404, 10026, "Unknown Ban")
        self._dispatch("GUILD_BAN_REMOVE", {"guild_id": str(self.guild_id), "user": ban["user"]})
        return 204, None

    # ------------------------------------------------------------------ REST: channels, messages

    def _get_channel(self, request: RecordedRequest, channel_id: str) -> _Reply:
        return 200, copy.deepcopy(self._channel(self._snowflake(channel_id, "channel_id")))

    def _get_messages(self, request: RecordedRequest, channel_id: str) -> _Reply:
        cid = self._snowflake(channel_id, "channel_id")
        self._channel(cid)
        return 200, self._history(cid, request.query)

    def _post_message(self, request: RecordedRequest, channel_id: str) -> _Reply:
        cid = self._snowflake(channel_id, "channel_id")
        self._channel(cid)
        if self._is_dm(cid) and self._dm_refused(cid):
            raise _ApiError(403, 50007, "Cannot send messages to this user")
        payload = self._body(request)
        nonce = payload.get("nonce")
        if nonce is not None and payload.get("enforce_nonce"):
            # With enforce_nonce, a retried send returns the message created the first time.
            earlier = self._nonces.get((self.bot_user_id, str(nonce)))
            if earlier is not None and earlier in self._message_channel:
                return 200, self._visible(self._messages[self._message_channel[earlier]][earlier])
        content, embeds, components, attachments = self._checked_body(payload, request.files, cid)
        reference = None
        replied_author = None
        raw_reference = payload.get("message_reference")
        if raw_reference:
            ref_channel = int(raw_reference.get("channel_id") or cid)
            ref_id = int(raw_reference["message_id"])
            target = self._messages.get(ref_channel, {}).get(ref_id)
            if target is not None:
                reference = self._reference_to(ref_channel, ref_id)
                replied_author = int(target["author"]["id"])
            elif raw_reference.get("fail_if_not_exists", True):
                raise _form_error(
                    "message_reference", "MESSAGE_REFERENCE_UNKNOWN_MESSAGE", "Unknown message"
                )
        users, roles, everyone = self._mentions_in(
            content, payload.get("allowed_mentions"), replied_author
        )
        message = self._build_message(
            cid,
            self._bot_user(),
            content,
            embeds=embeds,
            components=components,
            attachments=attachments,
            mentions=users,
            mention_roles=roles,
            mention_everyone=everyone,
            reference=reference,
            nonce=nonce,
            flags=int(payload.get("flags") or 0) & (4 | 4096),
            tts=bool(payload.get("tts")),
        )
        self._store_message(cid, message)
        if nonce is not None:
            self._nonces[(self.bot_user_id, str(nonce))] = int(message["id"])
        self._dispatch("MESSAGE_CREATE", self._message_event(message))
        return 200, self._render(message)

    def _start_thread(self, request: RecordedRequest, channel_id: str, message_id: str) -> _Reply:
        """Start a public thread from a message: the thread takes the message's id."""
        cid = self._snowflake(channel_id, "channel_id")
        channel = self._channel(cid)
        mid = self._snowflake(message_id, "message_id")
        message = self._api_message(cid, mid)
        if channel["type"] not in (0, 5):
            raise _ApiError(400, 50024, "Cannot execute action on this channel type")
        if mid in self._channels:
            raise _ApiError(400, 160004, "A thread has already been created for this message")
        payload = self._body(request)
        name = payload.get("name")
        if not isinstance(name, str) or not 1 <= len(name) <= 100:
            raise _form_error(
                "name", "BASE_TYPE_BAD_LENGTH", "Must be between 1 and 100 in length."
            )
        duration = payload.get("auto_archive_duration")
        if duration is not None and duration not in (60, 1440, 4320, 10080):
            raise _form_error(
                "auto_archive_duration",
                "BASE_TYPE_CHOICES",
                "Value must be one of {60, 1440, 4320, 10080}.",
            )
        thread = self.add_channel(
            mid,
            name,
            type=10 if channel["type"] == 5 else 11,
            parent_id=cid,
            auto_archive_duration=duration or 1440,
            rate_limit_per_user=int(payload.get("rate_limit_per_user") or 0),
        )
        message["thread"] = copy.deepcopy(thread)
        self._dispatch("MESSAGE_UPDATE", self._message_event(message))
        self._changed()
        return 201, thread

    def _get_message_route(
        self, request: RecordedRequest, channel_id: str, message_id: str
    ) -> _Reply:
        cid = self._snowflake(channel_id, "channel_id")
        message = self._api_message(cid, self._snowflake(message_id, "message_id"))
        return 200, self._visible(message)

    def _patch_message(self, request: RecordedRequest, channel_id: str, message_id: str) -> _Reply:
        cid = self._snowflake(channel_id, "channel_id")
        message = self._api_message(cid, self._snowflake(message_id, "message_id"))
        payload = self._body(request)
        if message["author"]["id"] != str(self.bot_user_id) or "webhook_id" in message:
            only_flags = set(payload) <= {"flags"}
            if not only_flags:
                raise _ApiError(403, 50005, "Cannot edit a message authored by another user")
        return 200, self._render(self._edit_message(message, payload, request.files))

    def _delete_message_route(
        self, request: RecordedRequest, channel_id: str, message_id: str
    ) -> _Reply:
        cid = self._snowflake(channel_id, "channel_id")
        mid = self._snowflake(message_id, "message_id")
        message = self._api_message(cid, mid)
        if self._is_dm(cid) and message["author"]["id"] != str(self.bot_user_id):
            # In a DM the bot may delete only its own messages.
            raise _ApiError(403, 50003, "Cannot execute action on a DM channel")
        self._delete_message(cid, mid)
        return 204, None

    def _bulk_delete(self, request: RecordedRequest, channel_id: str) -> _Reply:
        cid = self._snowflake(channel_id, "channel_id")
        self._channel(cid)
        ids = [int(m) for m in self._body(request).get("messages") or []]
        if not 2 <= len(ids) <= 100:
            raise _form_error(
                "messages", "BASE_TYPE_BAD_LENGTH", "Must be between 2 and 100 in length."
            )
        two_weeks_ago = time.time() - 14 * 24 * 3600
        if any(snowflake_time(m).timestamp() < two_weeks_ago for m in ids):
            raise _ApiError(
                400, 50034, "You can only bulk delete messages that are under 14 days old."
            )
        history = self._messages[cid]
        deleted = [m for m in ids if m in history]
        for mid in deleted:
            del history[mid]
            self._message_channel.pop(mid, None)
        self._dispatch(
            "MESSAGE_DELETE_BULK",
            {
                "ids": [str(m) for m in deleted],
                "channel_id": str(cid),
                "guild_id": str(self.guild_id),
            },
        )
        return 204, None

    def _pinned(self, channel_id: int) -> list[dict[str, Any]]:
        return [m for m in reversed(self._messages[channel_id].values()) if m["pinned"]]

    def _list_pins(self, request: RecordedRequest, channel_id: str) -> _Reply:
        cid = self._snowflake(channel_id, "channel_id")
        self._channel(cid)
        return 200, [self._visible(m) for m in self._pinned(cid)]

    def _list_pins_v2(self, request: RecordedRequest, channel_id: str) -> _Reply:
        cid = self._snowflake(channel_id, "channel_id")
        self._channel(cid)
        items = [
            {
                "pinned_at": self._pinned_at.get(int(m["id"]), m["timestamp"]),
                "message": self._visible(m),
            }
            for m in self._pinned(cid)
        ]
        return 200, {"items": items, "has_more": False}

    def _pin(self, request: RecordedRequest, channel_id: str, message_id: str) -> _Reply:
        cid = self._snowflake(channel_id, "channel_id")
        mid = self._snowflake(message_id, "message_id")
        message = self._api_message(cid, mid)
        if message["pinned"]:
            return 204, None
        if len(self._pinned(cid)) >= 250:
            raise _ApiError(400, 30003, "Maximum number of pins reached (250)")
        message["pinned"] = True
        self._pinned_at[mid] = _iso(_now())
        self._dispatch(
            "CHANNEL_PINS_UPDATE",
            {
                **self._guild_field(cid),
                "channel_id": str(cid),
                "last_pin_timestamp": self._pinned_at[mid],
            },
        )
        # Discord posts a system message (type 6) saying who pinned what.
        notice = self._build_message(
            cid, self._bot_user(), "", message_type=6, reference=self._reference_to(cid, mid)
        )
        self._store_message(cid, notice)
        self._dispatch("MESSAGE_CREATE", self._message_event(notice))
        return 204, None

    def _unpin(self, request: RecordedRequest, channel_id: str, message_id: str) -> _Reply:
        cid = self._snowflake(channel_id, "channel_id")
        message = self._api_message(cid, self._snowflake(message_id, "message_id"))
        if not message["pinned"]:
            raise _ApiError(404, 10008, "Unknown Message")
        message["pinned"] = False
        self._pinned_at.pop(int(message["id"]), None)
        self._dispatch(
            "CHANNEL_PINS_UPDATE",
            {**self._guild_field(cid), "channel_id": str(cid), "last_pin_timestamp": None},
        )
        return 204, None

    def _reaction_target(
        self, channel_id: str, message_id: str, emoji: str
    ) -> tuple[int, int, dict[str, Any], dict[str, Any]]:
        cid = self._snowflake(channel_id, "channel_id")
        mid = self._snowflake(message_id, "message_id")
        message = self._api_message(cid, mid)
        name = unquote(emoji)
        custom = re.fullmatch(r"(\w+):(\d+)", name)
        parsed = (
            {"id": custom.group(2), "name": custom.group(1)}
            if custom
            else {"id": None, "name": name}
        )
        return cid, mid, message, parsed

    def _add_reaction(
        self, request: RecordedRequest, channel_id: str, message_id: str, emoji: str
    ) -> _Reply:
        cid, mid, message, parsed = self._reaction_target(channel_id, message_id, emoji)
        reaction = next((r for r in message["reactions"] if r["emoji"] == parsed), None)
        if reaction is None:
            reaction = {
                "emoji": parsed,
                "count": 0,
                "me": False,
                "burst_colors": [],
                "me_burst": False,
                "burst_me": False,
                "count_details": {"burst": 0, "normal": 0},
            }
            message["reactions"].append(reaction)
        if not reaction["me"]:
            reaction["me"] = True
            reaction["count"] += 1
            reaction["count_details"]["normal"] += 1
            event: dict[str, Any] = {
                "user_id": str(self.bot_user_id),
                "channel_id": str(cid),
                "message_id": str(mid),
                **self._guild_field(cid),
                "emoji": parsed,
                "burst": False,
                "type": 0,
                "message_author_id": message["author"]["id"],
            }
            if not self._is_dm(cid):
                event["member"] = self._member_payload(self.bot_user_id)
            self._dispatch("MESSAGE_REACTION_ADD", event)
        return 204, None

    def _remove_reaction(
        self, request: RecordedRequest, channel_id: str, message_id: str, emoji: str
    ) -> _Reply:
        cid, mid, message, parsed = self._reaction_target(channel_id, message_id, emoji)
        reaction = next((r for r in message["reactions"] if r["emoji"] == parsed), None)
        if reaction is not None and reaction["me"]:
            reaction["me"] = False
            reaction["count"] -= 1
            reaction["count_details"]["normal"] -= 1
            if reaction["count"] <= 0:
                message["reactions"].remove(reaction)
            self._dispatch(
                "MESSAGE_REACTION_REMOVE",
                {
                    "user_id": str(self.bot_user_id),
                    "channel_id": str(cid),
                    "message_id": str(mid),
                    **self._guild_field(cid),
                    "emoji": parsed,
                    "burst": False,
                    "type": 0,
                },
            )
        return 204, None

    def _typing(self, request: RecordedRequest, channel_id: str) -> _Reply:
        self._channel(self._snowflake(channel_id, "channel_id"))
        return 204, None

    # ------------------------------------------------------------------ REST: webhooks

    def _public_webhook(self, hook: dict[str, Any], *, with_token: bool = True) -> dict[str, Any]:
        public = copy.deepcopy(hook)
        if not with_token:
            public.pop("token", None)
            public.pop("user", None)
        return public

    @staticmethod
    def _check_webhook_name(name: Any, where: str) -> None:
        if not isinstance(name, str) or not 1 <= len(name) <= 80:
            raise _form_error(where, "BASE_TYPE_BAD_LENGTH", "Must be between 1 and 80 in length.")
        lowered = name.lower()
        if "clyde" in lowered or "discord" in lowered:
            raise _form_error(
                where, "USERNAME_INVALID_CONTAINS", f'Username cannot contain "{name}"'
            )

    def _channel_webhooks(self, request: RecordedRequest, channel_id: str) -> _Reply:
        cid = self._snowflake(channel_id, "channel_id")
        if self._channel(cid)["type"] == _DM_TYPE:
            raise _ApiError(400, 50024, "Cannot execute action on this channel type")
        return 200, [
            self._public_webhook(h) for h in self._webhooks.values() if h["channel_id"] == str(cid)
        ]

    def _guild_webhooks(self, request: RecordedRequest, guild_id: str) -> _Reply:
        self._check_guild(guild_id)
        return 200, [self._public_webhook(h) for h in self._webhooks.values()]

    def _create_webhook(self, request: RecordedRequest, channel_id: str) -> _Reply:
        cid = self._snowflake(channel_id, "channel_id")
        channel = self._channel(cid)
        if channel["type"] in _THREAD_TYPES | {_DM_TYPE}:
            raise _ApiError(400, 50024, "Cannot execute action on this channel type")
        payload = self._body(request)
        self._check_webhook_name(payload.get("name"), "name")
        if sum(1 for h in self._webhooks.values() if h["channel_id"] == str(cid)) >= 15:
            raise _ApiError(400, 30007, "Maximum number of webhooks reached (15)")
        hook_id = self._next_id()
        hook = {
            "id": str(hook_id),
            "type": 1,
            "guild_id": str(self.guild_id),
            "channel_id": str(cid),
            "user": self._bot_user(),
            "name": payload["name"],
            "avatar": None,
            "token": secrets.token_urlsafe(51),
            "application_id": str(self.application_id),
        }
        self._webhooks[hook_id] = hook
        self._dispatch("WEBHOOKS_UPDATE", {"guild_id": str(self.guild_id), "channel_id": str(cid)})
        return 200, self._public_webhook(hook)

    def _webhook(self, webhook_id: str, token: str | None = None) -> dict[str, Any]:
        hook = self._webhooks.get(self._snowflake(webhook_id, "webhook_id"))
        if hook is None:
            raise _ApiError(404, 10015, "Unknown Webhook")
        if token is not None and not secrets.compare_digest(hook["token"], token):
            raise _ApiError(401, 50027, "Invalid Webhook Token")
        return hook

    def _update_webhook(self, hook: dict[str, Any], payload: dict[str, Any]) -> None:
        if "name" in payload:
            self._check_webhook_name(payload["name"], "name")
            hook["name"] = payload["name"]
        if "channel_id" in payload:
            self._channel(int(payload["channel_id"]))
            hook["channel_id"] = str(payload["channel_id"])
        if "avatar" in payload:
            avatar = payload["avatar"]
            hook["avatar"] = (
                None if avatar is None else hashlib.md5(str(avatar).encode()).hexdigest()
            )
        self._dispatch(
            "WEBHOOKS_UPDATE", {"guild_id": str(self.guild_id), "channel_id": hook["channel_id"]}
        )

    def _get_webhook(self, request: RecordedRequest, webhook_id: str) -> _Reply:
        return 200, self._public_webhook(self._webhook(webhook_id))

    def _patch_webhook(self, request: RecordedRequest, webhook_id: str) -> _Reply:
        hook = self._webhook(webhook_id)
        self._update_webhook(hook, self._body(request))
        return 200, self._public_webhook(hook)

    def _delete_webhook(self, request: RecordedRequest, webhook_id: str) -> _Reply:
        hook = self._webhook(webhook_id)
        del self._webhooks[int(hook["id"])]
        self._dispatch(
            "WEBHOOKS_UPDATE", {"guild_id": str(self.guild_id), "channel_id": hook["channel_id"]}
        )
        return 204, None

    def _get_webhook_token(self, request: RecordedRequest, webhook_id: str, token: str) -> _Reply:
        return 200, self._public_webhook(self._webhook(webhook_id, token), with_token=False)

    def _patch_webhook_token(self, request: RecordedRequest, webhook_id: str, token: str) -> _Reply:
        hook = self._webhook(webhook_id, token)
        payload = {k: v for k, v in self._body(request).items() if k in ("name", "avatar")}
        self._update_webhook(hook, payload)
        return 200, self._public_webhook(hook, with_token=False)

    def _delete_webhook_token(
        self, request: RecordedRequest, webhook_id: str, token: str
    ) -> _Reply:
        hook = self._webhook(webhook_id, token)
        return self._delete_webhook(request, hook["id"])

    def _interaction_for(self, webhook_id: str, token: str) -> _Interaction | None:
        if webhook_id != str(self.application_id):
            return None
        return self._interactions.get(token)

    def _execute_webhook(self, request: RecordedRequest, webhook_id: str, token: str) -> _Reply:
        interaction = self._interaction_for(webhook_id, token)
        if interaction is not None:
            return self._followup(request, interaction)
        hook = self._webhook(webhook_id, token)
        payload = self._body(request)
        channel_id = int(hook["channel_id"])
        thread_id = request.query.get("thread_id")
        if thread_id is not None:
            tid = self._snowflake(thread_id, "thread_id")
            thread = self._channels.get(tid)
            if thread is None or thread["type"] not in _THREAD_TYPES:
                raise _ApiError(404, 10003, "Unknown Channel")
            if thread["parent_id"] != hook["channel_id"]:
                raise _form_error(
                    "thread_id", "THREAD_NOT_IN_CHANNEL", "Thread is not in the webhook's channel."
                )
            channel_id = tid
        elif payload.get("thread_name"):
            if self._channels[channel_id]["type"] != 15:
                raise _ApiError(400, 220003, "Webhooks can only create threads in forum channels")
            tid = self._next_id()
            self.add_channel(tid, payload["thread_name"], type=11, parent_id=channel_id)
            channel_id = tid
        elif self._channels[channel_id]["type"] == 15:
            raise _ApiError(
                400,
                220001,
                "Webhooks posted to forum channels must have a thread_name or thread_id",
            )
        name = payload.get("username")
        if name is not None:
            self._check_webhook_name(name, "username")
        avatar = hook["avatar"]
        if payload.get("avatar_url"):
            avatar = hashlib.md5(payload["avatar_url"].encode()).hexdigest()
            self.avatar_urls[avatar] = payload["avatar_url"]
        content, embeds, components, attachments = self._checked_body(
            payload, request.files, channel_id
        )
        users, roles, everyone = self._mentions_in(content, payload.get("allowed_mentions"), None)
        message = self._build_message(
            channel_id,
            self._webhook_author(int(hook["id"]), name or hook["name"], avatar),
            content,
            embeds=embeds,
            components=components,
            attachments=attachments,
            mentions=users,
            mention_roles=roles,
            mention_everyone=everyone,
            webhook_id=int(hook["id"]),
            flags=int(payload.get("flags") or 0) & (4 | 4096),
            tts=bool(payload.get("tts")),
        )
        self._store_message(channel_id, message)
        self._dispatch("MESSAGE_CREATE", self._message_event(message))
        if _truthy(request.query.get("wait")):
            return 200, self._render(message)
        return 204, None

    def _webhook_message(
        self, hook: dict[str, Any], message_id: str, thread_id: str | None
    ) -> dict[str, Any]:
        mid = self._snowflake(message_id, "message_id")
        channel_id = self._message_channel.get(mid)
        message = None if channel_id is None else self._messages[channel_id][mid]
        if message is None or message.get("webhook_id") != hook["id"]:
            raise _ApiError(404, 10008, "Unknown Message")
        if thread_id is not None and str(channel_id) != thread_id:
            raise _ApiError(404, 10008, "Unknown Message")
        return message

    def _interaction_target(self, interaction: _Interaction, message_id: str) -> dict[str, Any]:
        if message_id == "@original":
            mid = interaction.original_message_id
        else:
            mid = self._snowflake(message_id, "message_id")
            if mid not in interaction.followups:
                raise _ApiError(404, 10008, "Unknown Message")
        if mid is None:
            raise _ApiError(404, 10015, "Unknown Webhook")
        if mid in self._ephemeral:
            return self._ephemeral[mid]
        channel_id = self._message_channel.get(mid)
        if channel_id is None:
            raise _ApiError(404, 10008, "Unknown Message")
        return self._messages[channel_id][mid]

    def _get_webhook_message(
        self, request: RecordedRequest, webhook_id: str, token: str, message_id: str
    ) -> _Reply:
        interaction = self._interaction_for(webhook_id, token)
        if interaction is not None:
            return 200, self._render(self._interaction_target(interaction, message_id))
        hook = self._webhook(webhook_id, token)
        return 200, self._render(
            self._webhook_message(hook, message_id, request.query.get("thread_id"))
        )

    def _patch_webhook_message(
        self, request: RecordedRequest, webhook_id: str, token: str, message_id: str
    ) -> _Reply:
        payload = self._body(request)
        interaction = self._interaction_for(webhook_id, token)
        if interaction is not None:
            message = self._edit_message(
                self._interaction_target(interaction, message_id), payload, request.files
            )
            kind = "edit_original" if message_id == "@original" else "edit_followup"
            self._record_interaction(
                kind, interaction, response_type=None, data=payload, message=message
            )
            return 200, self._render(message)
        hook = self._webhook(webhook_id, token)
        message = self._webhook_message(hook, message_id, request.query.get("thread_id"))
        return 200, self._render(self._edit_message(message, payload, request.files))

    def _delete_webhook_message(
        self, request: RecordedRequest, webhook_id: str, token: str, message_id: str
    ) -> _Reply:
        interaction = self._interaction_for(webhook_id, token)
        if interaction is not None:
            message = self._interaction_target(interaction, message_id)
            mid = int(message["id"])
            if mid in self._ephemeral:
                del self._ephemeral[mid]
            else:
                self._delete_message(int(message["channel_id"]), mid)
            kind = "delete_original" if message_id == "@original" else "delete_followup"
            self._record_interaction(
                kind, interaction, response_type=None, data=None, message=message
            )
            return 204, None
        hook = self._webhook(webhook_id, token)
        message = self._webhook_message(hook, message_id, request.query.get("thread_id"))
        self._delete_message(int(message["channel_id"]), int(message["id"]))
        return 204, None

    # ------------------------------------------------------------------ REST: interactions

    def _interaction_callback(
        self, request: RecordedRequest, interaction_id: str, token: str
    ) -> _Reply:
        interaction = self._interactions.get(token)
        if interaction is None or str(interaction.id) != interaction_id:
            raise _ApiError(404, 10062, "Unknown interaction")
        if time.monotonic() - interaction.created > self.interaction_deadline:
            # Discord forgets an interaction nobody answered within 3 seconds.
            raise _ApiError(404, 10062, "Unknown interaction")
        if interaction.acknowledged is not None:
            raise _ApiError(400, 40060, "Interaction has already been acknowledged.")
        body = self._body(request)
        response_type = body.get("type")
        data = body.get("data") or {}
        allowed = {
            1: {1},
            2: {4, 5, 9},
            3: {4, 5, 6, 7, 9},
            4: {8},
            5: {4, 5, 6, 7},
        }[interaction.type]
        if response_type not in allowed:
            raise _form_error(
                "type", "INTERACTION_RESPONSE_TYPE_INVALID", "Interaction response type is invalid."
            )
        message: dict[str, Any] | None = None
        message_type = 20 if interaction.type == 2 else 0
        if response_type == 4:
            message = self._interaction_message(
                interaction, data, request.files, message_type=message_type
            )
            interaction.original_message_id = int(message["id"])
        elif response_type == 5:
            message = self._interaction_message(
                interaction, data, [], message_type=message_type, loading=True
            )
            interaction.original_message_id = int(message["id"])
        elif response_type in (6, 7):
            if interaction.message_id is None:
                raise _form_error(
                    "type", "INTERACTION_RESPONSE_TYPE_INVALID", "No message to update."
                )
            interaction.original_message_id = interaction.message_id
            if response_type == 7:
                target = (
                    self._ephemeral.get(interaction.message_id)
                    or self._messages[self._message_channel[interaction.message_id]][
                        interaction.message_id
                    ]
                )
                message = self._edit_message(target, data, request.files)
        elif response_type == 9:
            self._check_modal(data)
        interaction.acknowledged = response_type
        self._record_interaction(
            "callback", interaction, response_type=response_type, data=data, message=message
        )
        if not _truthy(request.query.get("with_response")):
            return 204, None
        ephemeral = message is not None and bool(message["flags"] & 64)
        callback: dict[str, Any] = {
            "interaction": {
                "id": str(interaction.id),
                "type": interaction.type,
                "response_message_loading": response_type == 5,
                "response_message_ephemeral": ephemeral,
            },
            "resource": {"type": response_type},
        }
        if message is not None:
            callback["interaction"]["response_message_id"] = message["id"]
            callback["resource"]["message"] = self._render(message)
        return 200, callback

    @staticmethod
    def _check_modal(data: dict[str, Any]) -> None:
        if not data.get("custom_id"):
            raise _form_error("data.custom_id", "BASE_TYPE_REQUIRED", "This field is required")
        if not 1 <= len(data.get("title") or "") <= 45:
            raise _form_error(
                "data.title", "BASE_TYPE_BAD_LENGTH", "Must be between 1 and 45 in length."
            )
        if not 1 <= len(data.get("components") or []) <= 5:
            raise _form_error(
                "data.components", "BASE_TYPE_BAD_LENGTH", "Must be between 1 and 5 in length."
            )

    def _followup(self, request: RecordedRequest, interaction: _Interaction) -> _Reply:
        if interaction.acknowledged is None:
            raise _ApiError(404, 10015, "Unknown Webhook")
        payload = self._body(request)
        message = self._interaction_message(interaction, payload, request.files, message_type=0)
        interaction.followups.append(int(message["id"]))
        self._record_interaction(
            "followup", interaction, response_type=None, data=payload, message=message
        )
        return 200, self._render(message)

    # ------------------------------------------------------------------ REST: application commands

    def _command_scope(self, application_id: str, guild_id: str | None) -> list[dict[str, Any]]:
        if application_id != str(self.application_id):
            raise _ApiError(403, 50001, "Missing Access")
        if guild_id is None:
            return self._global_commands
        self._check_guild(guild_id)
        return self._guild_commands.setdefault(int(guild_id), [])

    def _stored_command(
        self,
        payload: dict[str, Any],
        existing: list[dict[str, Any]],
        guild_id: str | None,
        index: int,
    ) -> dict[str, Any]:
        where = f"{index}"
        name = payload.get("name")
        kind = int(payload.get("type") or 1)
        if (
            not isinstance(name, str)
            or not _COMMAND_NAME.fullmatch(name)
            or (kind == 1 and name != name.lower())
        ):
            raise _form_error(
                f"{where}.name", "APPLICATION_COMMAND_INVALID_NAME", "Command name is invalid"
            )
        description = payload.get("description") or ""
        if kind == 1 and not 1 <= len(description) <= 100:
            raise _form_error(
                f"{where}.description",
                "BASE_TYPE_BAD_LENGTH",
                "Must be between 1 and 100 in length.",
            )
        options = payload.get("options") or []
        self._check_options(options, f"{where}.options")
        previous = next(
            (c for c in existing if c["name"] == name and c.get("type", 1) == kind), None
        )
        command = copy.deepcopy(payload)
        command.update(
            id=previous["id"] if previous else str(self._next_id()),
            application_id=str(self.application_id),
            version=str(self._next_id()),
            type=kind,
            description=description,
            default_member_permissions=payload.get("default_member_permissions"),
            nsfw=bool(payload.get("nsfw", False)),
        )
        if kind == 1:
            command["options"] = options
        if guild_id is not None:
            command["guild_id"] = guild_id
        return command

    def _check_options(self, options: list[dict[str, Any]], where: str) -> None:
        if len(options) > 25:
            raise _form_error(where, "BASE_TYPE_MAX_LENGTH", "Must be 25 or fewer in length.")
        seen_optional = False
        for index, option in enumerate(options):
            name = option.get("name")
            if (
                not isinstance(name, str)
                or not _COMMAND_NAME.fullmatch(name)
                or name != name.lower()
            ):
                raise _form_error(
                    f"{where}.{index}.name",
                    "APPLICATION_COMMAND_INVALID_NAME",
                    "Option name is invalid",
                )
            if not 1 <= len(option.get("description") or "") <= 100:
                raise _form_error(
                    f"{where}.{index}.description",
                    "BASE_TYPE_BAD_LENGTH",
                    "Must be between 1 and 100 in length.",
                )
            if option.get("type") in (1, 2):
                self._check_options(option.get("options") or [], f"{where}.{index}.options")
            elif option.get("required"):
                if seen_optional:
                    raise _form_error(
                        f"{where}.{index}",
                        "APPLICATION_COMMAND_OPTIONS_REQUIRED_INVALID",
                        "Required options must be placed before non-required options",
                    )
            else:
                seen_optional = True

    def _get_commands(
        self, request: RecordedRequest, application_id: str, guild_id: str | None = None
    ) -> _Reply:
        return 200, copy.deepcopy(self._command_scope(application_id, guild_id))

    def _put_commands(
        self, request: RecordedRequest, application_id: str, guild_id: str | None = None
    ) -> _Reply:
        existing = self._command_scope(application_id, guild_id)
        payload = request.json if isinstance(request.json, list) else []
        if len(payload) > 100:
            raise _form_error("_", "BASE_TYPE_MAX_LENGTH", "Must be 100 or fewer in length.")
        commands = [self._stored_command(p, existing, guild_id, i) for i, p in enumerate(payload)]
        names = [(c["name"], c["type"]) for c in commands]
        if len(names) != len(set(names)):
            raise _ApiError(
                400,
                50035,
                "Invalid Form Body",
                {
                    "_errors": [
                        {
                            "code": "APPLICATION_COMMANDS_DUPLICATE_NAME",
                            "message": "Application command names must be unique",
                        }
                    ]
                },
            )
        existing[:] = commands
        return 200, copy.deepcopy(commands)

    def _post_command(
        self, request: RecordedRequest, application_id: str, guild_id: str | None = None
    ) -> _Reply:
        existing = self._command_scope(application_id, guild_id)
        command = self._stored_command(self._body(request), existing, guild_id, 0)
        replaced = [i for i, c in enumerate(existing) if c["id"] == command["id"]]
        if replaced:
            existing[replaced[0]] = command
            return 200, copy.deepcopy(command)
        existing.append(command)
        return 201, copy.deepcopy(command)

    def _delete_command(
        self,
        request: RecordedRequest,
        application_id: str,
        command_id: str,
        guild_id: str | None = None,
    ) -> _Reply:
        existing = self._command_scope(application_id, guild_id)
        kept = [c for c in existing if c["id"] != command_id]
        if len(kept) == len(existing):
            raise _ApiError(404, 10063, "Unknown application command")
        existing[:] = kept
        return 204, None

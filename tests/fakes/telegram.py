"""A fake Telegram Bot API server on 127.0.0.1, for driving the real python-telegram-bot.

The fake speaks the Bot API's HTTP protocol (``{url}/bot{token}/{method}`` and file downloads
at ``{url}/file/bot{token}/{file_path}``), keeps chats, users, memberships, messages and files
in memory, and lets a test play the residents (``inject_*``) and inspect what the bot did
(``requests``, ``sent_messages``, ``message``).  It imitates the parts of Telegram that bots
get wrong in production: flood limits (429 with ``retry_after``), text limits counted in
UTF-16 code units, strict HTML parse mode, "message is not modified", long polling and its
409 conflicts, webhook delivery with the secret header and retries, and private chats: a
user's private chat with the bot exists once the user wrote to it (``inject_message(user_id,
user_id, ...)`` opens it, like pressing Start); until then a send to the user's id answers 403
"Forbidden: bot can't initiate conversation with a user", and a user who blocked the bot
(``set_member_status(user_id, bot_id, "kicked")``) gets "Forbidden: bot was blocked by the user".

Forum supergroups (``add_chat(..., is_forum=True)``; getChat says ``is_forum``) have topics:
``createForumTopic`` (the bot must be an administrator; name 1 to 128 characters) makes one,
whose id is the id of its "forum_topic_created" service message, and answers a ForumTopic; in
a group that is not a forum it answers "Bad Request: the chat is not a forum". A message in a
topic carries ``message_thread_id`` and ``is_topic_message``, and, unless it answers another
message, ``reply_to_message`` is the topic's service message, as Telegram shows it. A topic
a resident writes in (``inject_message(..., message_thread_id=n)``) exists from then on; a
bot's message to a topic the forum does not have answers "Bad Request: message thread not
found". Service messages are not among ``sent_messages``; ``forum_topics`` lists the topics.

Nothing here talks to a host other than loopback: file inputs given as HTTP URLs are refused
and webhooks may only point at loopback addresses.
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import ipaddress
import itertools
import json
import logging
import math
import mimetypes
import re
import struct
import time
from collections import deque
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from http import HTTPStatus
from typing import Any
from urllib.parse import urlsplit

import aiohttp
from aiohttp import web

logger = logging.getLogger(__name__)

JSONDict = dict[str, Any]

__all__ = [
    "FakeTelegram",
    "HtmlParseError",
    "InjectedFault",
    "RecordedRequest",
    "TelegramApiError",
    "TelegramLimits",
    "UploadedFile",
    "WebhookDelivery",
    "detect_entities",
    "finalize_text",
    "parse_html",
    "utf16_len",
]

# Message kinds that count against Telegram's flood limits.
SEND_METHODS = frozenset(
    {
        "sendmessage",
        "sendphoto",
        "senddocument",
        "sendpoll",
        "sendaudio",
        "sendvideo",
        "sendanimation",
        "sendvoice",
        "sendsticker",
        "sendmediagroup",
        "copymessage",
        "forwardmessage",
    }
)

GROUP_CHAT_TYPES = frozenset({"group", "supergroup", "channel"})
MEMBER_STATUSES = frozenset({"creator", "administrator", "member", "restricted", "left", "kicked"})

# Update kinds Telegram leaves out unless a bot asks for them in allowed_updates.
_OPT_IN_UPDATES = frozenset({"chat_member", "message_reaction", "message_reaction_count"})

# Form values are all strings; these parameters are strings in the Bot API and must not be
# JSON-decoded (a text of "123" or "[1]" has to stay text).
_RAW_STRING_PARAMS = frozenset(
    {
        "text",
        "caption",
        "parse_mode",
        "caption_parse_mode",
        "question",
        "question_parse_mode",
        "explanation",
        "explanation_parse_mode",
        "callback_query_id",
        "inline_message_id",
        "url",
        "secret_token",
        "ip_address",
        "data",
        "title",
        "description",
        "short_description",
        "language_code",
        "file_id",
        "action",
        "emoji",
        "custom_title",
        "name",
        "business_connection_id",
        "message_effect_id",
        "photo",
        "document",
        "video",
        "audio",
        "animation",
        "voice",
        "sticker",
        "thumbnail",
        "certificate",
        "cover",
    }
)

# Users Telegram puts in ``from`` when a message is sent on behalf of a chat.
_GROUP_ANONYMOUS_BOT: JSONDict = {
    "id": 1087968824,
    "is_bot": True,
    "first_name": "Group",
    "username": "GroupAnonymousBot",
}
_CHANNEL_BOT: JSONDict = {
    "id": 136817688,
    "is_bot": True,
    "first_name": "Channel",
    "username": "Channel_Bot",
}

_PERMISSION_KEYS = (
    "can_send_messages",
    "can_send_audios",
    "can_send_documents",
    "can_send_photos",
    "can_send_videos",
    "can_send_video_notes",
    "can_send_voice_notes",
    "can_send_polls",
    "can_send_other_messages",
    "can_add_web_page_previews",
    "can_react_to_messages",
    "can_change_info",
    "can_invite_users",
    "can_pin_messages",
    "can_manage_topics",
    "can_edit_tag",
)

_MAX_UPLOAD_BYTES = 50 * 1024 * 1024  # Telegram's cloud Bot API upload limit
_MAX_TOPIC_NAME = 128  # createForumTopic: 1-128 characters
# The colours createForumTopic accepts for a topic's icon (the first is its default).
_TOPIC_ICON_COLORS = (7322096, 16766590, 13338331, 9367192, 16749490, 16478047)
_MAX_DOWNLOAD_BYTES = 20 * 1024 * 1024  # getFile refuses bigger files


# --------------------------------------------------------------------------------------------
# Public data classes
# --------------------------------------------------------------------------------------------


@dataclass
class TelegramLimits:
    """The limits the fake enforces, in Telegram's units.

    Sends (``SEND_METHODS``) count against three limits: ``global_per_second`` over every
    chat, ``per_group_per_minute`` per group, supergroup or channel, and about one message a
    second per chat of any type, with short bursts allowed: a token bucket of ``per_chat_burst``
    messages refilled at ``per_chat_per_second``. Edits (editMessageText and
    editMessageCaption; reply-markup edits are left free) have their own budget, Telegram's
    "less documented" one as commonly reported: the same kind of token bucket per chat
    (``edits_per_chat_per_second``, ``edit_burst``) and ``edits_per_group_per_minute`` per group.

    ``window_scale`` multiplies the rate-limit windows (60 s per group, 1 s global, the bucket
    refill times): 0.01 makes the limits 100 times faster so a benchmark or test can hit them
    quickly. ``retry_after`` counts whole Telegram seconds, at least one, rounded up: unscaled
    it is the integer Telegram sends; scaled it is that count times ``window_scale``, a float
    (0.01 -> ``retry_after`` 0.01, 0.02...), so a client that obeys it waits in proportion
    instead of a whole real second per 429. ``enforce=False`` turns the flood limits off; the text and caption
    lengths are always checked (raise ``max_text`` / ``max_caption`` to relax them).
    """

    max_text: int = 4096
    max_caption: int = 1024
    per_group_per_minute: int = 20
    global_per_second: int = 30
    per_chat_per_second: float = 1.0
    per_chat_burst: int = 3
    edits_per_chat_per_second: float = 1.0
    edit_burst: int = 3
    edits_per_group_per_minute: int = 20
    window_scale: float = 1.0
    enforce: bool = True


@dataclass
class UploadedFile:
    """A file part of a multipart request."""

    name: str
    filename: str | None
    content_type: str | None
    data: bytes


@dataclass
class RecordedRequest:
    """One API call as the fake saw it.

    ``status`` is ``None`` while the call is still being answered (a long poll, a delayed
    answer) and 0 when the fake dropped the connection without answering.
    """

    method: str
    params: dict[str, Any]
    time: float
    status: int | None = None
    files: dict[str, UploadedFile] = field(default_factory=dict)
    response: JSONDict | None = None
    http_method: str = "POST"

    @property
    def ok(self) -> bool:
        return self.status == 200


@dataclass
class WebhookDelivery:
    """One attempt to POST an update to the bot's webhook."""

    url: str
    update: JSONDict
    time: float
    status: int | None = None
    error: str | None = None
    secret_header: str | None = None


class TelegramApiError(Exception):
    """Raised inside a method handler to answer like Telegram does on errors."""

    def __init__(self, status: int, description: str, parameters: JSONDict | None = None) -> None:
        super().__init__(description)
        self.status = status
        self.description = description
        self.parameters = parameters

    def body(self) -> JSONDict:
        body: JSONDict = {"ok": False, "error_code": self.status, "description": self.description}
        if self.parameters:
            body["parameters"] = self.parameters
        return body


def _bad_request(reason: str) -> TelegramApiError:
    return TelegramApiError(400, f"Bad Request: {reason}")


# --------------------------------------------------------------------------------------------
# Text: UTF-16 lengths, HTML parse mode, automatic entities
# --------------------------------------------------------------------------------------------


def utf16_len(text: str) -> int:
    """Length of ``text`` in UTF-16 code units, the unit of every Telegram offset and limit."""
    return len(text.encode("utf-16-le")) // 2


def _utf16_prefix(text: str) -> list[int]:
    """``prefix[i]`` is the UTF-16 offset of ``text[i]`` (and ``prefix[len]`` the length)."""
    prefix = [0]
    total = 0
    for ch in text:
        total += 2 if ord(ch) > 0xFFFF else 1
        prefix.append(total)
    return prefix


class HtmlParseError(ValueError):
    """The HTML is malformed the way Telegram would refuse it."""


# Start tag name -> entity type. "span" only with class="tg-spoiler", checked below.
_HTML_TAGS: dict[str, str] = {
    "b": "bold",
    "strong": "bold",
    "i": "italic",
    "em": "italic",
    "u": "underline",
    "ins": "underline",
    "s": "strikethrough",
    "strike": "strikethrough",
    "del": "strikethrough",
    "tg-spoiler": "spoiler",
    "span": "spoiler",
    "code": "code",
    "pre": "pre",
    "a": "text_link",
    "blockquote": "blockquote",
    "tg-emoji": "custom_emoji",
}

_HTML_CHAR_REF = re.compile(r"&(?:#([0-9]{1,8})|#[xX]([0-9a-fA-F]{1,7})|(lt|gt|amp|quot));")
_NAMED_REFS = {"lt": "<", "gt": ">", "amp": "&", "quot": '"'}

# tdlib sorts entities that cover the same range by this priority: lower is outer.
_ENTITY_PRIORITY: dict[str, int] = {
    "blockquote": 0,
    "expandable_blockquote": 0,
    "pre": 11,
    "code": 20,
    "text_link": 49,
    "text_mention": 49,
    "bold": 90,
    "italic": 91,
    "underline": 92,
    "strikethrough": 93,
    "spoiler": 94,
    "custom_emoji": 99,
}

# Entities Telegram does not look inside for URLs, mentions and the like.
_OPAQUE_ENTITIES = frozenset({"code", "pre", "text_link", "text_mention", "custom_emoji"})


@dataclass
class _OpenTag:
    name: str
    entity_type: str | None
    start: int  # UTF-16 offset in the plain text
    order: int  # opening order, to know which entity is nested in which
    extra: JSONDict = field(default_factory=dict)


def _byte_offset(source: str, index: int) -> int:
    return len(source[:index].encode("utf-8"))


def _decode_char_ref(source: str, index: int) -> tuple[str, int] | None:
    """Decode the character reference at ``source[index]`` ('&'); None if there is none."""
    match = _HTML_CHAR_REF.match(source, index)
    if match is None:
        return None
    dec, hexa, named = match.groups()
    if named is not None:
        return _NAMED_REFS[named], match.end()
    code = int(dec) if dec is not None else int(hexa, 16)
    if code == 0 or code > 0x10FFFF or 0xD800 <= code <= 0xDFFF:
        return None
    return chr(code), match.end()


def _parse_attributes(source: str, index: int, tag: str, tag_start: int) -> tuple[JSONDict, int]:
    """Parse ``name="value"`` pairs up to the closing '>'; return them and the index after it."""
    attrs: JSONDict = {}
    n = len(source)
    while True:
        while index < n and source[index].isspace():
            index += 1
        if index >= n:
            raise HtmlParseError(
                f"Unclosed start tag at byte offset {_byte_offset(source, tag_start)}"
            )
        if source[index] == ">":
            return attrs, index + 1
        name_start = index
        while index < n and (
            source[index].isascii() and (source[index].isalnum() or source[index] in "-_")
        ):
            index += 1
        attr_name = source[name_start:index].lower()
        if not attr_name:
            raise HtmlParseError(
                f'Empty attribute name in the tag "{tag}" at byte offset '
                f"{_byte_offset(source, name_start)}"
            )
        while index < n and source[index].isspace():
            index += 1
        if index >= n or source[index] != "=":
            attrs[attr_name] = ""  # a bare attribute, like <blockquote expandable>
            continue
        index += 1
        while index < n and source[index].isspace():
            index += 1
        if index >= n:
            raise HtmlParseError(
                f"Unclosed start tag at byte offset {_byte_offset(source, tag_start)}"
            )
        if source[index] in "\"'":
            quote = source[index]
            end = source.find(quote, index + 1)
            if end == -1:
                raise HtmlParseError(
                    f"Unclosed start tag at byte offset {_byte_offset(source, tag_start)}"
                )
            raw = source[index + 1 : end]
            index = end + 1
        else:
            value_start = index
            while index < n and not source[index].isspace() and source[index] != ">":
                index += 1
            raw = source[value_start:index]
        attrs[attr_name] = _unescape_attribute(raw)


def _unescape_attribute(raw: str) -> str:
    out: list[str] = []
    i = 0
    while i < len(raw):
        if raw[i] == "&":
            decoded = _decode_char_ref(raw, i)
            if decoded is not None:
                out.append(decoded[0])
                i = decoded[1]
                continue
        out.append(raw[i])
        i += 1
    return "".join(out)


def parse_html(source: str) -> tuple[str, list[JSONDict]]:
    """Turn Bot API HTML into plain text and entities (UTF-16 offsets), like Telegram does.

    Raises HtmlParseError, with Telegram's wording where known, for an unknown or unclosed tag,
    a mismatched end tag, a bare '<', or a '&' that does not start a character reference.
    Entities are returned unsorted and untrimmed; ``finalize_text`` does that part.
    """
    out: list[str] = []
    pos = 0  # UTF-16 offset of the next plain character
    stack: list[_OpenTag] = []
    entities: list[tuple[int, JSONDict]] = []  # (opening order, entity)
    order = itertools.count()
    n = len(source)
    i = 0
    while i < n:
        ch = source[i]
        if ch == "<":
            if i + 1 < n and source[i + 1] == "/":
                end = source.find(">", i)
                if end == -1:
                    raise HtmlParseError(
                        f"Unclosed end tag at byte offset {_byte_offset(source, i)}"
                    )
                name = source[i + 2 : end].strip().lower()
                if not stack:
                    raise HtmlParseError(
                        f"Unexpected end tag at byte offset {_byte_offset(source, i)}"
                    )
                top = stack.pop()
                if top.name != name:
                    raise HtmlParseError(
                        f"Unmatched end tag at byte offset {_byte_offset(source, i)}, "
                        f'expected "</{top.name}>", found "</{name}>"'
                    )
                if top.entity_type is not None and pos > top.start:
                    entity: JSONDict = {
                        "offset": top.start,
                        "length": pos - top.start,
                        "type": top.entity_type,
                    }
                    entity.update(top.extra)
                    entities.append((top.order, entity))
                i = end + 1
                continue
            j = i + 1
            while j < n and source[j].isascii() and (source[j].isalnum() or source[j] == "-"):
                j += 1
            name = source[i + 1 : j].lower()
            if name not in _HTML_TAGS:
                raise HtmlParseError(
                    f'Unsupported start tag "{name}" at byte offset {_byte_offset(source, i)}'
                )
            attrs, j = _parse_attributes(source, j, name, i)
            entity_type: str | None = _HTML_TAGS[name]
            extra: JSONDict = {}
            if name == "span" and attrs.get("class") != "tg-spoiler":
                raise HtmlParseError(
                    f'Tag "span" must have class "tg-spoiler" at byte offset {_byte_offset(source, i)}'
                )
            if name == "a":
                href = attrs.get("href", "")
                user_match = re.fullmatch(r"tg://user\?id=(\d+)", href)
                if user_match:
                    entity_type = "text_mention"
                    extra["user"] = {
                        "id": int(user_match.group(1)),
                        "is_bot": False,
                        "first_name": "",
                    }
                elif href:
                    extra["url"] = href
                else:
                    entity_type = None  # Telegram drops links without a target
            elif name == "blockquote" and "expandable" in attrs:
                entity_type = "expandable_blockquote"
            elif name == "tg-emoji":
                emoji_id = attrs.get("emoji-id")
                if not emoji_id:
                    raise HtmlParseError(
                        f'Tag "tg-emoji" must have attribute "emoji-id" at byte offset '
                        f"{_byte_offset(source, i)}"
                    )
                extra["custom_emoji_id"] = emoji_id
            elif name == "code" and stack and stack[-1].name == "pre":
                # <pre><code class="language-x"> is one pre entity carrying the language.
                language = attrs.get("class", "")
                if language.startswith("language-") and len(language) > len("language-"):
                    stack[-1].extra["language"] = language[len("language-") :]
                entity_type = None
            stack.append(_OpenTag(name, entity_type, pos, next(order), extra))
            i = j
            continue
        if ch == "&":
            decoded = _decode_char_ref(source, i)
            if decoded is None:
                raise HtmlParseError(
                    f"Character '&' at byte offset {_byte_offset(source, i)} does not start an "
                    "HTML entity; write &amp;"
                )
            ch, i = decoded
        else:
            i += 1
        out.append(ch)
        pos += 2 if ord(ch) > 0xFFFF else 1
    if stack:
        raise HtmlParseError(f'Can\'t find end tag corresponding to start tag "{stack[-1].name}"')

    # Code and pre cannot contain other entities: Telegram drops those opened inside them.
    kept: list[JSONDict] = []
    for opened, ent in entities:
        inside_code = any(
            other["type"] in ("code", "pre")
            and other_opened < opened
            and other["offset"] <= ent["offset"]
            and ent["offset"] + ent["length"] <= other["offset"] + other["length"]
            for other_opened, other in entities
        )
        if not inside_code:
            kept.append(ent)
    return "".join(out), kept


_AUTO_PATTERNS: list[tuple[str, re.Pattern[str]]] = [
    ("url", re.compile(r"(?<![\w@/.])(?:https?://|www\.)[^\s<>\"']+", re.IGNORECASE)),
    ("email", re.compile(r"(?<![\w.+-])[\w.+-]+@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*\.[A-Za-z]{2,}")),
    ("bot_command", re.compile(r"(?<![\w/])/[A-Za-z0-9_]{1,64}(?:@[A-Za-z0-9_]{3,32})?(?![\w/])")),
    ("mention", re.compile(r"(?<![\w@])@[A-Za-z0-9_]{5,32}(?![\w@])")),
    ("hashtag", re.compile(r"(?<![\w#])#\w*[^\W\d]\w*")),
    ("cashtag", re.compile(r"(?<![\w$])\$[A-Z]{3,8}(?![\w$])")),
]


def detect_entities(text: str, existing: Iterable[JSONDict] = ()) -> list[JSONDict]:
    """Entities Telegram finds by itself: URLs, e-mails, bot commands, mentions, hashtags.

    A simplified version of tdlib's detection (no bare domains, no phone numbers). Nothing is
    detected inside code, pre, links, or overlapping an entity that is already there.
    """
    prefix = _utf16_prefix(text)
    taken: list[tuple[int, int]] = [
        (e["offset"], e["offset"] + e["length"])
        for e in existing
        if e["type"] in _OPAQUE_ENTITIES or e["type"] in {p for p, _ in _AUTO_PATTERNS}
    ]
    found: list[JSONDict] = []
    for entity_type, pattern in _AUTO_PATTERNS:
        for match in pattern.finditer(text):
            start, end = match.start(), match.end()
            if entity_type == "url":
                # Trailing punctuation ends a sentence, not the URL.
                while end > start and text[end - 1] in ".,;:!?)]}":
                    end -= 1
            lo, hi = prefix[start], prefix[end]
            if hi <= lo or any(lo < t_hi and t_lo < hi for t_lo, t_hi in taken):
                continue
            taken.append((lo, hi))
            found.append({"offset": lo, "length": hi - lo, "type": entity_type})
    return found


_TRIM_CHARS = " \t\n\r\v\f"


def _sort_entities(entities: list[JSONDict]) -> list[JSONDict]:
    return sorted(
        entities,
        key=lambda e: (e["offset"], -e["length"], _ENTITY_PRIORITY.get(e["type"], 50)),
    )


def finalize_text(
    text: str, entities: list[JSONDict], *, auto_entities: bool = True
) -> tuple[str, list[JSONDict]]:
    """Trim surrounding whitespace (Telegram does), clip entities, add detected ones, sort."""
    stripped = text.strip(_TRIM_CHARS)
    lead = len(text) - len(text.lstrip(_TRIM_CHARS))  # whitespace is BMP: chars == units
    total = utf16_len(stripped)
    clipped: list[JSONDict] = []
    for ent in entities:
        start = max(int(ent["offset"]) - lead, 0)
        end = min(int(ent["offset"]) + int(ent["length"]) - lead, total)
        if end > start:
            clipped.append({**ent, "offset": start, "length": end - start})
    if auto_entities:
        clipped.extend(detect_entities(stripped, clipped))
    return stripped, _sort_entities(clipped)


# --------------------------------------------------------------------------------------------
# Small parameter helpers (form values arrive as strings, JSON bodies typed)
# --------------------------------------------------------------------------------------------


def _decode_value(name: str, value: Any, *, from_form: bool) -> Any:
    if not isinstance(value, str) or name in _RAW_STRING_PARAMS:
        return value
    stripped = value.strip()
    if not from_form and not stripped.startswith(("{", "[")):
        # JSON bodies are typed already; only nested objects sent as strings need decoding.
        return value
    try:
        return json.loads(stripped)
    except ValueError:
        return value


def _as_int(params: dict[str, Any], name: str, *, required: bool = False) -> int | None:
    value = params.get(name)
    if value is None or value == "":
        if required:
            raise _bad_request(f"{name} is empty")
        return None
    if isinstance(value, bool):
        raise _bad_request(f"invalid {name} specified")
    if isinstance(value, int):
        return value
    try:
        return int(str(value).strip())
    except ValueError:
        raise _bad_request(f"invalid {name} specified") from None


def _as_bool(value: Any) -> bool:
    if isinstance(value, str):
        return value.strip().lower() in ("true", "1")
    return bool(value)


def _as_float(value: Any, default: float) -> float:
    if value is None or value == "":
        return default
    try:
        return float(value)
    except (TypeError, ValueError):
        raise _bad_request("invalid number") from None


def _as_json(value: Any, what: str) -> Any:
    if isinstance(value, str):
        try:
            return json.loads(value)
        except ValueError:
            raise _bad_request(f"can't parse {what} JSON object") from None
    return value


def _image_size(data: bytes) -> tuple[int, int] | None:
    """Width and height of a PNG, GIF or JPEG, read from its header."""
    if data.startswith(b"\x89PNG\r\n\x1a\n") and len(data) >= 24:
        width, height = struct.unpack(">II", data[16:24])
        return int(width), int(height)
    if data[:6] in (b"GIF87a", b"GIF89a") and len(data) >= 10:
        width, height = struct.unpack("<HH", data[6:10])
        return int(width), int(height)
    if data.startswith(b"\xff\xd8"):
        i = 2
        while i + 9 < len(data):
            if data[i] != 0xFF:
                i += 1
                continue
            marker = data[i + 1]
            if marker in (
                0xC0,
                0xC1,
                0xC2,
                0xC3,
                0xC5,
                0xC6,
                0xC7,
                0xC9,
                0xCA,
                0xCB,
                0xCD,
                0xCE,
                0xCF,
            ):
                height, width = struct.unpack(">HH", data[i + 5 : i + 9])
                return int(width), int(height)
            if marker in (0xD8, 0x01) or 0xD0 <= marker <= 0xD7:
                i += 2
                continue
            (length,) = struct.unpack(">H", data[i + 2 : i + 4])
            i += 2 + length
    return None


def _is_loopback_url(url: str) -> bool:
    try:
        host = urlsplit(url).hostname
    except ValueError:
        return False
    if host is None:
        return False
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


# --------------------------------------------------------------------------------------------
# Internal records
# --------------------------------------------------------------------------------------------


@dataclass
class _StoredFile:
    file_id: str
    file_unique_id: str
    data: bytes
    file_path: str


@dataclass
class InjectedFault:
    """A fault ``fail_next``, ``drop_next`` or ``delay_next`` armed; ``fired`` counts the calls
    it hit, so a test can assert that its fault really happened."""

    kind: str  # "fail", "drop" or "delay"
    method: str | None  # lower-cased method name, None = any
    remaining: int
    status: int = 429
    retry_after: int | None = None
    description: str | None = None
    raw_body: str | None = None
    seconds: float = 0.0
    fired: int = 0

    def matches(self, method: str) -> bool:
        return self.remaining > 0 and (self.method is None or self.method == method)


@dataclass
class _Answer:
    """A successful result with a description, as setWebhook and deleteWebhook answer."""

    result: Any
    description: str


_Handler = Callable[[dict[str, Any], dict[str, UploadedFile]], Awaitable[Any]]


class FakeTelegram:
    """A fake Telegram Bot API server; see the module docstring."""

    def __init__(
        self,
        *,
        token: str = "123456:TEST-token",
        bot_username: str = "forum_habitant_bot",
        limits: TelegramLimits | None = None,
        bot_first_name: str = "Forum Habitant",
        auto_entities: bool = True,
        webhook_retry_delay: float = 0.05,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        # ``clock`` drives the flood-limit windows and request times; a test can pass a manual
        # clock to move past a window without sleeping.
        self.clock = clock
        self.token = token
        self.bot_username = bot_username
        self.limits = limits if limits is not None else TelegramLimits()
        self.auto_entities = auto_entities
        self.webhook_retry_delay = webhook_retry_delay
        try:
            self.bot_id = int(token.split(":", 1)[0])
        except ValueError:
            raise ValueError(f"a bot token starts with the bot's numeric id: {token!r}") from None
        self.bot_user: JSONDict = {
            "id": self.bot_id,
            "is_bot": True,
            "first_name": bot_first_name,
            "username": bot_username,
        }
        # What getMe answers; a test may change the flags (e.g. privacy mode) before starting.
        self.me: JSONDict = {
            **self.bot_user,
            "can_join_groups": True,
            "can_read_all_group_messages": False,
            "supports_inline_queries": False,
            "can_connect_to_business": False,
            "has_main_web_app": False,
        }

        self.requests: list[RecordedRequest] = []
        self.webhook_deliveries: list[WebhookDelivery] = []
        self.downloads: list[str] = []
        self.callback_answers: dict[str, JSONDict] = {}
        self.logged_out = False
        self.internal_errors: list[Exception] = []

        self._chats: dict[int, JSONDict] = {}
        self._users: dict[int, JSONDict] = {}
        self._members: dict[tuple[int, int], JSONDict] = {}
        self._messages: dict[tuple[int, int], JSONDict] = {}
        self._sent_keys: list[tuple[int, int]] = []
        self._deleted: set[tuple[int, int]] = set()
        self._next_message_id: dict[int, int] = {}
        self._pinned: dict[int, list[int]] = {}
        # Forum topics by chat: thread id -> ForumTopic (the id of its service message, or
        # of a topic residents were already writing in).
        self._topics: dict[int, dict[int, JSONDict]] = {}
        self._polls: dict[str, tuple[int, int]] = {}
        self._open_callbacks: dict[str, JSONDict] = {}
        self._commands: dict[tuple[str, str], list[JSONDict]] = {}

        self._updates: list[JSONDict] = []
        self.injected_updates: list[JSONDict] = []
        self._update_ids = itertools.count(1)
        self._allowed_updates: list[str] | None = None
        self._poll_generation = 0

        self._webhook: JSONDict | None = None
        self._webhook_queue: deque[JSONDict] = deque()
        self._webhook_error: tuple[int, str] | None = None
        self._webhook_task: asyncio.Task[None] | None = None
        self._session: aiohttp.ClientSession | None = None

        self._files: dict[str, _StoredFile] = {}
        self._files_by_path: dict[str, _StoredFile] = {}
        self._file_counter = itertools.count(1)
        self._id_counter = itertools.count(1)

        self._faults: list[InjectedFault] = []
        self._global_sends: deque[float] = deque()
        self._chat_sends: dict[int, deque[float]] = {}
        # Token buckets per chat: (tokens, clock time of the last refill).
        self._chat_tokens: dict[int, tuple[float, float]] = {}
        self._edit_tokens: dict[int, tuple[float, float]] = {}
        self._chat_edits: dict[int, deque[float]] = {}

        self._change = asyncio.Event()
        self._closing = asyncio.Event()
        self._runner: web.AppRunner | None = None
        self._port: int | None = None

        self._handlers: dict[str, _Handler] = {
            "getme": self._get_me,
            "getupdates": self._get_updates,
            "logout": self._log_out,
            "close": self._close,
            "setmycommands": self._set_my_commands,
            "getmycommands": self._get_my_commands,
            "deletemycommands": self._delete_my_commands,
            "setwebhook": self._set_webhook,
            "deletewebhook": self._delete_webhook,
            "getwebhookinfo": self._get_webhook_info,
            "sendmessage": self._send_message,
            "editmessagetext": self._edit_message_text,
            "editmessagereplymarkup": self._edit_message_reply_markup,
            "editmessagecaption": self._edit_message_caption,
            "deletemessage": self._delete_message,
            "deletemessages": self._delete_messages,
            "sendphoto": self._send_photo,
            "senddocument": self._send_document,
            "getfile": self._get_file,
            "answercallbackquery": self._answer_callback_query,
            "sendpoll": self._send_poll,
            "stoppoll": self._stop_poll,
            "getchat": self._get_chat,
            "getchatmember": self._get_chat_member,
            "getchatadministrators": self._get_chat_administrators,
            "restrictchatmember": self._restrict_chat_member,
            "banchatmember": self._ban_chat_member,
            "unbanchatmember": self._unban_chat_member,
            "pinchatmessage": self._pin_chat_message,
            "unpinchatmessage": self._unpin_chat_message,
            "sendchataction": self._send_chat_action,
            "createforumtopic": self._create_forum_topic,
        }

    # ----------------------------------------------------------------------------------------
    # Lifecycle
    # ----------------------------------------------------------------------------------------

    @property
    def url(self) -> str:
        """Base URL, ``http://127.0.0.1:PORT``; the bot calls ``{url}/bot{token}/{method}``."""
        if self._port is None:
            raise RuntimeError("FakeTelegram is not started")
        return f"http://127.0.0.1:{self._port}"

    @property
    def api_base_url(self) -> str:
        """What to give PTB's ``base_url`` (it appends the token itself)."""
        return f"{self.url}/bot"

    @property
    def file_base_url(self) -> str:
        """What to give PTB's ``base_file_url``."""
        return f"{self.url}/file/bot"

    async def start(self) -> None:
        if self._runner is not None:
            raise RuntimeError("FakeTelegram is already started")
        # Events made now belong to the running loop, whatever loop the constructor ran in.
        self._change = asyncio.Event()
        self._closing = asyncio.Event()
        app = web.Application(client_max_size=_MAX_UPLOAD_BYTES + 1024 * 1024)
        app.router.add_route("*", "/bot{token}/{method}", self._handle_api)
        app.router.add_get("/file/bot{token}/{file_path:.+}", self._handle_download)
        # No access log: the recorded requests say more, and tests stay quiet.
        runner = web.AppRunner(app, access_log=None, shutdown_timeout=1.0)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        self._runner = runner
        address = runner.addresses[0]
        self._port = int(address[1])
        self._session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10))
        self._webhook_task = asyncio.create_task(self._deliver_webhooks(), name="fake-tg-webhook")
        logger.debug("fake Telegram listening on %s", self.url)

    async def stop(self) -> None:
        self._closing.set()
        self._notify()  # wakes long polls so they answer at once
        if self._webhook_task is not None:
            self._webhook_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._webhook_task
            self._webhook_task = None
        if self._session is not None:
            await self._session.close()
            self._session = None
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
        if self.internal_errors:
            first = self.internal_errors[0]
            raise RuntimeError(
                f"the fake Telegram itself failed {len(self.internal_errors)} time(s); "
                f"first: {first!r}"
            ) from first

    async def __aenter__(self) -> FakeTelegram:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.stop()

    # ----------------------------------------------------------------------------------------
    # Waiting and inspection
    # ----------------------------------------------------------------------------------------

    def _notify(self) -> None:
        # A fresh event per change: whoever waited on the old one re-checks its condition.
        event, self._change = self._change, asyncio.Event()
        event.set()

    async def wait_for(
        self,
        predicate: Callable[[], bool],
        timeout: float = 10.0,  # noqa: ASYNC109 - part of the helper's public contract
    ) -> None:
        """Wait until ``predicate()`` is true, re-checking after every request or state change."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            event = self._change
            if predicate():
                return
            remaining = deadline - loop.time()
            if remaining <= 0:
                recent = ", ".join(f"{r.method}->{r.status}" for r in self.requests[-10:]) or "none"
                name = getattr(predicate, "__qualname__", repr(predicate))
                raise TimeoutError(
                    f"condition {name} still false after {timeout}s; "
                    f"{len(self.requests)} requests, last ones: {recent}; "
                    f"{len(self._updates)} updates queued, webhook={self.webhook_url or 'none'}"
                )
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(event.wait(), remaining)

    async def wait_for_call(
        self,
        method: str,
        *,
        count: int = 1,
        timeout: float = 10.0,  # noqa: ASYNC109 - same contract as wait_for
    ) -> RecordedRequest:
        """Wait until ``method`` has been answered ``count`` times; return the count-th call."""

        def answered() -> list[RecordedRequest]:
            return [r for r in self.calls(method) if r.status is not None]

        def enough() -> bool:
            return len(answered()) >= count

        enough.__qualname__ = f"{count} answered {method} call(s)"
        await self.wait_for(enough, timeout)
        return answered()[count - 1]

    def calls(self, method: str) -> list[RecordedRequest]:
        wanted = method.lower()
        return [r for r in self.requests if r.method.lower() == wanted]

    def sent_messages(
        self, chat_id: int | None = None, *, include_deleted: bool = True
    ) -> list[JSONDict]:
        """Messages the bot created, oldest first, as they are now (edits applied).

        Deleted ones carry ``"deleted": True`` unless ``include_deleted`` is False.
        """
        result: list[JSONDict] = []
        for key in self._sent_keys:
            if chat_id is not None and key[0] != chat_id:
                continue
            if key in self._deleted and not include_deleted:
                continue
            result.append(self._snapshot(key))
        return result

    def forum_topics(self, chat_id: int) -> list[JSONDict]:
        """The topics of a forum, oldest first, as ForumTopic objects."""
        return [copy.deepcopy(t) for _, t in sorted(self._topics.get(chat_id, {}).items())]

    def message(self, chat_id: int, message_id: int) -> JSONDict | None:
        key = (chat_id, message_id)
        return self._snapshot(key) if key in self._messages else None

    def _snapshot(self, key: tuple[int, int]) -> JSONDict:
        msg = copy.deepcopy(self._messages[key])
        if key in self._deleted:
            msg["deleted"] = True
        return msg

    def file_bytes(self, file_id: str) -> bytes:
        return self._files[file_id].data

    def member_status(self, chat_id: int, user_id: int) -> str:
        return str(self._member_record(chat_id, user_id)["status"])

    def member_record(self, chat_id: int, user_id: int) -> JSONDict:
        """Status plus what restrict/ban stored (``until_date``, ``permissions``)."""
        return copy.deepcopy(self._member_record(chat_id, user_id))

    def commands(self, scope: JSONDict | None = None, language_code: str = "") -> list[JSONDict]:
        return copy.deepcopy(self._commands.get(self._commands_key(scope, language_code), []))

    def pinned_messages(self, chat_id: int) -> list[int]:
        return list(self._pinned.get(chat_id, []))

    @property
    def pending_updates(self) -> list[JSONDict]:
        """Updates queued for getUpdates and not yet confirmed."""
        return copy.deepcopy(self._updates)

    @property
    def webhook_url(self) -> str:
        return str(self._webhook["url"]) if self._webhook else ""

    # ----------------------------------------------------------------------------------------
    # Faults
    # ----------------------------------------------------------------------------------------

    def fail_next(
        self,
        method: str | None,
        *,
        status: int = 429,
        retry_after: int | None = 1,
        count: int = 1,
        description: str | None = None,
        raw_body: str | None = None,
    ) -> InjectedFault:
        """Answer the next ``count`` calls of ``method`` (None: any) with an error.

        A 429 carries ``parameters.retry_after`` like Telegram's. ``raw_body`` sends that text
        as text/html instead of a JSON error, like the proxy page of a real 502. Returns the
        fault: its ``fired`` counts the calls it answered.
        """
        fault = InjectedFault(
            "fail",
            method.lower() if method else None,
            count,
            status=status,
            retry_after=retry_after,
            description=description,
            raw_body=raw_body,
        )
        self._faults.append(fault)
        return fault

    def drop_next(self, method: str | None, count: int = 1) -> InjectedFault:
        """Close the connection of the next ``count`` calls without answering."""
        fault = InjectedFault("drop", method.lower() if method else None, count)
        self._faults.append(fault)
        return fault

    def delay_next(self, method: str | None, seconds: float, count: int = 1) -> InjectedFault:
        """Hold the next ``count`` answers of ``method`` for ``seconds`` before handling them."""
        fault = InjectedFault("delay", method.lower() if method else None, count, seconds=seconds)
        self._faults.append(fault)
        return fault

    def _take_fault(self, kind: str, method: str) -> InjectedFault | None:
        for fault in self._faults:
            if fault.kind == kind and fault.matches(method):
                fault.remaining -= 1
                fault.fired += 1
                if fault.remaining <= 0:
                    self._faults.remove(fault)
                return fault
        return None

    # ----------------------------------------------------------------------------------------
    # Chats and users
    # ----------------------------------------------------------------------------------------

    def add_chat(
        self,
        chat_id: int,
        *,
        type: str = "supergroup",
        title: str = "Quartier Ouest",
        is_forum: bool = False,
        username: str | None = None,
    ) -> JSONDict:
        if type not in ("private", "group", "supergroup", "channel"):
            raise ValueError(f"unknown chat type {type!r}")
        chat: JSONDict = {"id": chat_id, "type": type, "title": title}
        if is_forum:
            chat["is_forum"] = True
        if username:
            chat["username"] = username
        self._chats[chat_id] = chat
        self._notify()
        return copy.deepcopy(self._chat_obj(chat_id))

    def add_user(
        self,
        user_id: int,
        first_name: str,
        *,
        last_name: str | None = None,
        username: str | None = None,
        language_code: str | None = "fr",
        is_bot: bool = False,
    ) -> JSONDict:
        user: JSONDict = {"id": user_id, "is_bot": is_bot, "first_name": first_name}
        if last_name is not None:
            user["last_name"] = last_name
        if username is not None:
            user["username"] = username
        if language_code is not None:
            user["language_code"] = language_code
        self._users[user_id] = user
        self._notify()
        return copy.deepcopy(user)

    def set_member_status(self, chat_id: int, user_id: int, status: str) -> None:
        """Set what getChatMember answers. The bot itself defaults to administrator,
        known users to member; set the bot to "member" to make moderation calls fail."""
        if status not in MEMBER_STATUSES:
            raise ValueError(f"unknown member status {status!r}")
        self._require_chat(chat_id)
        self._members[(chat_id, user_id)] = {"status": status}
        self._notify()

    def _require_chat(self, chat_id: int) -> JSONDict:
        try:
            return self._chats[chat_id]
        except KeyError:
            raise ValueError(f"chat {chat_id} not added; call add_chat first") from None

    def _resident_chat(self, chat_id: int, user_id: int) -> JSONDict:
        """The chat a resident writes in. Writing to the bot privately (chat id = the user's
        id) opens their private chat if it is not open yet, as pressing Start does."""
        if chat_id not in self._chats and chat_id == user_id and user_id in self._users:
            self.add_chat(chat_id, type="private", title=self._users[user_id]["first_name"])
        return self._require_chat(chat_id)

    def _require_user(self, user_id: int) -> JSONDict:
        if user_id == self.bot_id:
            return self.bot_user
        try:
            return self._users[user_id]
        except KeyError:
            raise ValueError(f"user {user_id} not added; call add_user first") from None

    def _chat_obj(self, chat_id: int) -> JSONDict:
        chat = self._chats[chat_id]
        if chat["type"] != "private":
            return copy.deepcopy(chat)
        # A private chat is shown as the user it is with.
        user = self._users.get(chat_id, {})
        obj: JSONDict = {"id": chat_id, "type": "private"}
        obj["first_name"] = user.get("first_name", chat.get("title", ""))
        for key in ("last_name", "username"):
            if key in user:
                obj[key] = user[key]
        return obj

    def _chat_id_param(self, params: dict[str, Any]) -> int:
        raw = params.get("chat_id")
        if raw is None or raw == "":
            raise _bad_request("chat_id is empty")
        if isinstance(raw, str) and raw.startswith("@"):
            for chat in self._chats.values():
                if chat.get("username") and "@" + str(chat["username"]) == raw:
                    return int(chat["id"])
            raise _bad_request("chat not found")
        chat_id = _as_int(params, "chat_id")
        if chat_id is None or chat_id not in self._chats:
            raise _bad_request("chat not found")
        return chat_id

    def _member_record(self, chat_id: int, user_id: int) -> JSONDict:
        record = self._members.get((chat_id, user_id))
        if record is None:
            record = {"status": "administrator" if user_id == self.bot_id else "member"}
            self._members[(chat_id, user_id)] = record
        return record

    def _member_obj(self, chat_id: int, user_id: int) -> JSONDict:
        user = copy.deepcopy(self._require_user(user_id))
        record = self._member_record(chat_id, user_id)
        status = record["status"]
        obj: JSONDict = {"user": user, "status": status}
        if status == "creator":
            obj["is_anonymous"] = False
        elif status == "administrator":
            obj.update(
                {
                    "can_be_edited": False,
                    "is_anonymous": False,
                    "can_manage_chat": True,
                    "can_delete_messages": True,
                    "can_manage_video_chats": True,
                    "can_restrict_members": True,
                    "can_promote_members": False,
                    "can_change_info": True,
                    "can_invite_users": True,
                    "can_post_stories": True,
                    "can_edit_stories": True,
                    "can_delete_stories": True,
                    "can_pin_messages": True,
                    "can_manage_topics": True,
                }
            )
        elif status == "restricted":
            permissions = record.get("permissions", {})
            obj["is_member"] = True
            obj.update({key: bool(permissions.get(key, False)) for key in _PERMISSION_KEYS})
            obj["until_date"] = int(record.get("until_date", 0))
        elif status == "kicked":
            obj["until_date"] = int(record.get("until_date", 0))
        return obj

    def _bot_is_admin(self, chat_id: int) -> bool:
        return self._member_record(chat_id, self.bot_id)["status"] in ("creator", "administrator")

    # ----------------------------------------------------------------------------------------
    # Messages and updates
    # ----------------------------------------------------------------------------------------

    def _new_message_id(self, chat_id: int) -> int:
        message_id = self._next_message_id.get(chat_id, 1)
        self._next_message_id[chat_id] = message_id + 1
        return message_id

    def _new_message(
        self,
        chat_id: int,
        sender: JSONDict,
        *,
        date: int | None = None,
        thread_id: int | None = None,
        reply_to: JSONDict | None = None,
        sender_chat: JSONDict | None = None,
    ) -> JSONDict:
        msg: JSONDict = {"message_id": self._new_message_id(chat_id), "from": copy.deepcopy(sender)}
        if sender_chat is not None:
            msg["sender_chat"] = copy.deepcopy(sender_chat)
        msg["chat"] = self._chat_obj(chat_id)
        msg["date"] = int(time.time()) if date is None else date
        if thread_id is None and reply_to is not None:
            thread_id = reply_to.get("message_thread_id")
        if thread_id is not None:
            msg["message_thread_id"] = thread_id
            if self._chats[chat_id].get("is_forum"):
                msg["is_topic_message"] = True
                start = self._live_message(chat_id, thread_id)
                if reply_to is None and start is not None and "forum_topic_created" in start:
                    # In a topic, a message that answers nothing "answers" the topic's start.
                    reply_to = start
        if reply_to is not None:
            target = copy.deepcopy(reply_to)
            target.pop("reply_to_message", None)  # Telegram nests replies one level only
            msg["reply_to_message"] = target
        return msg

    def _store(self, msg: JSONDict, *, by_bot: bool) -> None:
        key = (int(msg["chat"]["id"]), int(msg["message_id"]))
        self._messages[key] = msg
        if by_bot:
            self._sent_keys.append(key)
        self._notify()

    def _live_message(self, chat_id: int, message_id: int) -> JSONDict | None:
        key = (chat_id, message_id)
        if key in self._deleted:
            return None
        return self._messages.get(key)

    def inject_update(self, update: JSONDict) -> JSONDict:
        """Queue any update body (without update_id) and return it with its update_id."""
        full: JSONDict = {"update_id": next(self._update_ids), **update}
        self.injected_updates.append(full)
        if self._webhook is not None:
            self._webhook_queue.append(full)
        else:
            self._updates.append(full)
        self._notify()
        return copy.deepcopy(full)

    def inject_message(
        self,
        chat_id: int,
        user_id: int,
        text: str,
        *,
        entities: list[JSONDict] | None = None,
        reply_to_message_id: int | None = None,
        message_thread_id: int | None = None,
        date: int | None = None,
        sender_chat: JSONDict | None = None,
    ) -> JSONDict:
        """A resident writes ``text``; entities default to what Telegram would detect."""
        self._resident_chat(chat_id, user_id)
        if entities is None:
            text, entities = finalize_text(text, [], auto_entities=self.auto_entities)
        return self._inject_resident_message(
            chat_id,
            user_id,
            {"text": text, **({"entities": copy.deepcopy(entities)} if entities else {})},
            reply_to_message_id=reply_to_message_id,
            message_thread_id=message_thread_id,
            date=date,
            sender_chat=sender_chat,
        )

    def inject_command(
        self,
        chat_id: int,
        user_id: int,
        command: str,
        args: str = "",
        *,
        mention_bot: bool = False,
        reply_to_message_id: int | None = None,
        message_thread_id: int | None = None,
    ) -> JSONDict:
        """A resident sends ``/command args``, with the bot_command entity at offset 0."""
        name = command.lstrip("/")
        head = f"/{name}@{self.bot_username}" if mention_bot else f"/{name}"
        text = f"{head} {args}".strip() if args else head
        command_entity: JSONDict = {"offset": 0, "length": utf16_len(head), "type": "bot_command"}
        text, entities = finalize_text(text, [command_entity], auto_entities=self.auto_entities)
        return self.inject_message(
            chat_id,
            user_id,
            text,
            entities=entities,
            reply_to_message_id=reply_to_message_id,
            message_thread_id=message_thread_id,
        )

    def _inject_resident_message(
        self,
        chat_id: int,
        user_id: int,
        content: JSONDict,
        *,
        reply_to_message_id: int | None = None,
        message_thread_id: int | None = None,
        date: int | None = None,
        sender_chat: JSONDict | None = None,
    ) -> JSONDict:
        self._resident_chat(chat_id, user_id)
        sender = self._require_user(user_id)
        if sender_chat is not None:
            # Anonymous admins and linked channels post with a placeholder bot in "from".
            sender = _GROUP_ANONYMOUS_BOT if sender_chat.get("id") == chat_id else _CHANNEL_BOT
        reply_to = None
        if reply_to_message_id is not None:
            reply_to = self._live_message(chat_id, reply_to_message_id)
            if reply_to is None:
                raise ValueError(f"no message {reply_to_message_id} in chat {chat_id} to reply to")
        if message_thread_id is not None and self._chats[chat_id].get("is_forum"):
            # Residents write in topics that exist: one written in exists from now on.
            self._topics.setdefault(chat_id, {}).setdefault(
                message_thread_id,
                {
                    "message_thread_id": message_thread_id,
                    "name": f"Sujet {message_thread_id}",
                    "icon_color": _TOPIC_ICON_COLORS[0],
                },
            )
        msg = self._new_message(
            chat_id,
            sender,
            date=date,
            thread_id=message_thread_id,
            reply_to=reply_to,
            sender_chat=sender_chat,
        )
        msg.update(copy.deepcopy(content))
        self._store(msg, by_bot=False)
        return self.inject_update({"message": copy.deepcopy(msg)})

    def inject_edit(
        self,
        chat_id: int,
        message_id: int,
        text: str,
        *,
        entities: list[JSONDict] | None = None,
    ) -> JSONDict:
        """A resident edits an earlier message (its caption, for a photo or document)."""
        msg = self._live_message(chat_id, message_id)
        if msg is None:
            raise ValueError(f"no message {message_id} in chat {chat_id}")
        if entities is None:
            text, entities = finalize_text(text, [], auto_entities=self.auto_entities)
        text_key, entities_key = (
            ("caption", "caption_entities") if "text" not in msg else ("text", "entities")
        )
        msg[text_key] = text
        msg.pop(entities_key, None)
        if entities:
            msg[entities_key] = copy.deepcopy(entities)
        msg["edit_date"] = max(int(time.time()), int(msg["date"]))
        self._notify()
        return self.inject_update({"edited_message": copy.deepcopy(msg)})

    def _store_file(self, data: bytes, folder: str, extension: str) -> _StoredFile:
        number = next(self._file_counter)
        stored = _StoredFile(
            file_id=f"FAKE-{folder}-{number}-{len(data)}",
            file_unique_id=f"U{number:08d}",
            data=data,
            file_path=f"{folder}/file_{number}{extension}",
        )
        self._files[stored.file_id] = stored
        self._files_by_path[stored.file_path] = stored
        return stored

    def _photo_sizes(self, data: bytes) -> list[JSONDict]:
        width, height = _image_size(data) or (320, 320)
        sizes: list[JSONDict] = []
        # Telegram also returns small renditions; the fake's share the original bytes.
        if max(width, height) > 90:
            scale = 90 / max(width, height)
            thumb = self._store_file(data, "photos", ".jpg")
            sizes.append(
                {
                    "file_id": thumb.file_id,
                    "file_unique_id": thumb.file_unique_id,
                    "file_size": len(data),
                    "width": max(1, round(width * scale)),
                    "height": max(1, round(height * scale)),
                }
            )
        full = self._store_file(data, "photos", ".jpg")
        sizes.append(
            {
                "file_id": full.file_id,
                "file_unique_id": full.file_unique_id,
                "file_size": len(data),
                "width": width,
                "height": height,
            }
        )
        return sizes

    def _document_obj(self, data: bytes, filename: str | None, mime_type: str | None) -> JSONDict:
        extension = ""
        if filename and "." in filename:
            extension = "." + filename.rsplit(".", 1)[1]
        stored = self._store_file(data, "documents", extension)
        doc: JSONDict = {"file_id": stored.file_id, "file_unique_id": stored.file_unique_id}
        if filename:
            doc["file_name"] = filename
        guessed = mime_type or (mimetypes.guess_type(filename)[0] if filename else None)
        doc["mime_type"] = guessed or "application/octet-stream"
        doc["file_size"] = len(data)
        return doc

    def _caption_content(self, caption: str | None) -> JSONDict:
        if not caption:
            return {}
        text, entities = finalize_text(caption, [], auto_entities=self.auto_entities)
        content: JSONDict = {"caption": text}
        if entities:
            content["caption_entities"] = entities
        return content

    def inject_photo(
        self, chat_id: int, user_id: int, data: bytes, *, caption: str | None = None
    ) -> JSONDict:
        """A resident posts a photo; getFile and the download URL give ``data`` back."""
        self._resident_chat(chat_id, user_id)
        content: JSONDict = {"photo": self._photo_sizes(data), **self._caption_content(caption)}
        return self._inject_resident_message(chat_id, user_id, content)

    def inject_document(
        self,
        chat_id: int,
        user_id: int,
        data: bytes,
        filename: str,
        *,
        mime_type: str = "application/octet-stream",
        caption: str | None = None,
    ) -> JSONDict:
        self._resident_chat(chat_id, user_id)
        content: JSONDict = {
            "document": self._document_obj(data, filename, mime_type),
            **self._caption_content(caption),
        }
        return self._inject_resident_message(chat_id, user_id, content)

    def inject_callback_query(
        self, chat_id: int, user_id: int, message_id: int, data: str
    ) -> JSONDict:
        """A resident presses an inline button with ``data`` under message ``message_id``."""
        msg = self._live_message(chat_id, message_id)
        if msg is None:
            raise ValueError(f"no message {message_id} in chat {chat_id}")
        user = self._require_user(user_id)
        query_id = str(4_000_000_000_000_000 + next(self._id_counter))
        query: JSONDict = {
            "id": query_id,
            "from": copy.deepcopy(user),
            "message": copy.deepcopy(msg),
            "chat_instance": str(abs(hash(("chat_instance", chat_id))) % 10**18),
            "data": data,
        }
        self._open_callbacks[query_id] = query
        return self.inject_update({"callback_query": copy.deepcopy(query)})

    def _chat_member_update(self, chat_id: int, user: JSONDict, old: str, new: str) -> JSONDict:
        return {
            "chat": self._chat_obj(chat_id),
            "from": copy.deepcopy(user),
            "date": int(time.time()),
            "old_chat_member": {"user": copy.deepcopy(user), "status": old},
            "new_chat_member": {"user": copy.deepcopy(user), "status": new},
        }

    def inject_member_joined(self, chat_id: int, user_id: int) -> JSONDict:
        """A resident joins: a service message with new_chat_members, plus a chat_member
        update (delivered only to a bot that asked for chat_member in allowed_updates)."""
        self._require_chat(chat_id)
        user = self._require_user(user_id)
        old = self._members.get((chat_id, user_id), {"status": "left"})["status"]
        self._members[(chat_id, user_id)] = {"status": "member"}
        update = self._inject_resident_message(
            chat_id, user_id, {"new_chat_members": [copy.deepcopy(user)]}
        )
        self.inject_update({"chat_member": self._chat_member_update(chat_id, user, old, "member")})
        return update

    def inject_member_left(self, chat_id: int, user_id: int) -> JSONDict:
        self._require_chat(chat_id)
        user = self._require_user(user_id)
        old = self._member_record(chat_id, user_id)["status"]
        self._members[(chat_id, user_id)] = {"status": "left"}
        update = self._inject_resident_message(
            chat_id, user_id, {"left_chat_member": copy.deepcopy(user)}
        )
        self.inject_update({"chat_member": self._chat_member_update(chat_id, user, old, "left")})
        return update

    def _update_allowed(self, update: JSONDict) -> bool:
        kind = next((k for k in update if k != "update_id"), "")
        if self._allowed_updates:
            return kind in self._allowed_updates
        return kind not in _OPT_IN_UPDATES

    # ----------------------------------------------------------------------------------------
    # HTTP layer
    # ----------------------------------------------------------------------------------------

    @staticmethod
    def _json_response(body: JSONDict, status: int = 200) -> web.Response:
        # Exactly "application/json", like Telegram (aiohttp's json_response adds a charset).
        return web.Response(
            status=status,
            body=json.dumps(body, ensure_ascii=False).encode("utf-8"),
            headers={"Content-Type": "application/json"},
        )

    async def _read_params(
        self, request: web.Request
    ) -> tuple[dict[str, Any], dict[str, UploadedFile]]:
        params: dict[str, Any] = {
            k: _decode_value(k, v, from_form=True) for k, v in request.query.items()
        }
        files: dict[str, UploadedFile] = {}
        if request.method != "POST" or not request.body_exists:
            return params, files
        if request.content_type == "application/json":
            raw = await request.read()
            if raw.strip():
                try:
                    body = json.loads(raw)
                except ValueError:
                    raise _bad_request("can't parse JSON request body") from None
                if not isinstance(body, dict):
                    raise _bad_request("request body must be a JSON object")
                params.update({k: _decode_value(k, v, from_form=False) for k, v in body.items()})
            return params, files
        if request.content_type in ("multipart/form-data", "application/x-www-form-urlencoded"):
            form = await request.post()
            for name, value in form.items():
                if isinstance(value, web.FileField):
                    data = value.file.read()
                    files[name] = UploadedFile(name, value.filename, value.content_type, data)
                    params[name] = data
                else:
                    params[name] = _decode_value(name, value, from_form=True)
            return params, files
        await request.read()
        return params, files

    async def _handle_api(self, request: web.Request) -> web.StreamResponse:
        method = request.match_info["method"]
        key = method.lower()
        record = RecordedRequest(
            method=method, params={}, time=self.clock(), http_method=request.method
        )
        try:
            params, files = await self._read_params(request)
        except TelegramApiError as exc:
            params, files = {}, {}
            error: TelegramApiError | None = exc
        else:
            error = None
        record.params, record.files = params, files
        self.requests.append(record)
        self._notify()

        if request.match_info["token"] != self.token:
            error = TelegramApiError(401, "Unauthorized")
        delay = self._take_fault("delay", key)
        if delay is not None:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._closing.wait(), delay.seconds)
        if self._take_fault("drop", key) is not None:
            logger.debug("dropping the connection of %s", method)
            if request.transport is not None:
                request.transport.abort()
            record.status = 0
            self._notify()
            return web.Response(status=204)  # never reaches the client: the socket is gone
        fail = self._take_fault("fail", key)
        if error is None and fail is not None:
            if fail.raw_body is not None:
                record.status = fail.status
                self._notify()
                return web.Response(
                    status=fail.status, text=fail.raw_body, content_type="text/html"
                )
            error = self._fault_error(fail)
        result: Any = None
        description: str | None = None
        if error is None:
            handler = self._handlers.get(key)
            if handler is None:
                error = TelegramApiError(404, "Not Found")
            else:
                try:
                    result = await handler(params, files)
                except TelegramApiError as exc:
                    error = exc
                except Exception as exc:
                    # A bug in the fake must not pass for a flaky server: stop() re-raises it.
                    logger.exception("fake Telegram failed on %s", method)
                    self.internal_errors.append(exc)
                    error = TelegramApiError(500, "Internal Server Error: fake Telegram bug")
        if isinstance(result, _Answer):
            result, description = result.result, result.description
        if error is not None:
            body = error.body()
            status = error.status
        else:
            body = {"ok": True, "result": result}
            if description is not None:
                body["description"] = description
            status = 200
        record.status, record.response = status, body
        self._notify()
        return self._json_response(body, status)

    def _fault_error(self, fault: InjectedFault) -> TelegramApiError:
        status = fault.status
        parameters: JSONDict | None = None
        if status == 429:
            retry = fault.retry_after if fault.retry_after is not None else 1
            parameters = {"retry_after": retry}
            description = fault.description or f"Too Many Requests: retry after {retry}"
        else:
            try:
                phrase = HTTPStatus(status).phrase
            except ValueError:
                phrase = "Error"
            description = fault.description or phrase
        return TelegramApiError(status, description, parameters)

    async def _handle_download(self, request: web.Request) -> web.StreamResponse:
        path = request.match_info["file_path"]
        stored = self._files_by_path.get(path)
        self.downloads.append(path)
        self._notify()
        if request.match_info["token"] != self.token or stored is None:
            return self._json_response(
                {"ok": False, "error_code": 404, "description": "Not Found"}, 404
            )
        return web.Response(body=stored.data, content_type="application/octet-stream")

    # ----------------------------------------------------------------------------------------
    # Flood limits
    # ----------------------------------------------------------------------------------------

    def _check_rate(self, chat_id: int) -> None:
        if not self.limits.enforce:
            return
        now = self.clock()
        waits: list[float] = []
        global_window = 1.0 * self.limits.window_scale
        while self._global_sends and self._global_sends[0] <= now - global_window:
            self._global_sends.popleft()
        cap = self.limits.global_per_second
        if len(self._global_sends) >= cap:
            waits.append(self._global_sends[-cap] + global_window - now)
        if self._chats[chat_id]["type"] in GROUP_CHAT_TYPES:
            sends = self._chat_sends.setdefault(chat_id, deque())
            waits.extend(self._window_wait(sends, self.limits.per_group_per_minute, 60.0, now))
        waits.extend(
            self._bucket_wait(
                self._chat_tokens,
                chat_id,
                self.limits.per_chat_per_second,
                self.limits.per_chat_burst,
                now,
            )
        )
        self._raise_flood(waits)

    def _check_edit_rate(self, chat_id: int) -> None:
        if not self.limits.enforce:
            return
        now = self.clock()
        waits: list[float] = []
        if self._chats[chat_id]["type"] in GROUP_CHAT_TYPES:
            edits = self._chat_edits.setdefault(chat_id, deque())
            waits.extend(
                self._window_wait(edits, self.limits.edits_per_group_per_minute, 60.0, now)
            )
        waits.extend(
            self._bucket_wait(
                self._edit_tokens,
                chat_id,
                self.limits.edits_per_chat_per_second,
                self.limits.edit_burst,
                now,
            )
        )
        self._raise_flood(waits)

    def _window_wait(
        self, times: deque[float], cap: int, seconds: float, now: float
    ) -> list[float]:
        """The wait before one more event fits in a sliding window of ``seconds`` (unscaled)."""
        window = seconds * self.limits.window_scale
        while times and times[0] <= now - window:
            times.popleft()
        return [times[-cap] + window - now] if len(times) >= cap else []

    def _bucket_wait(
        self,
        buckets: dict[int, tuple[float, float]],
        chat_id: int,
        rate: float,
        burst: int,
        now: float,
    ) -> list[float]:
        """The wait for a token in ``chat_id``'s bucket (refilled at ``rate`` per unscaled
        second, holding at most ``burst``); the bucket is refilled up to ``now`` on the way."""
        per_token = self.limits.window_scale / rate
        tokens, last = buckets.get(chat_id, (float(burst), now))
        tokens = min(float(burst), tokens + (now - last) / per_token)
        buckets[chat_id] = (tokens, now)
        # A hair of tolerance: a client that waited exactly the refill time must not be
        # refused over a floating-point rounding.
        return [(1.0 - tokens) * per_token] if tokens < 1.0 - 1e-9 else []

    def _raise_flood(self, waits: list[float]) -> None:
        if waits:
            # Whole Telegram seconds, at least one, as Telegram sends it; scaled like the
            # windows (see TelegramLimits), so unscaled it is the integer Telegram sends.
            scale = self.limits.window_scale
            whole = max(1, math.ceil(max(waits) / scale - 1e-9))
            retry: float = whole if scale == 1.0 else round(whole * scale, 6)
            raise TelegramApiError(
                429, f"Too Many Requests: retry after {retry}", {"retry_after": retry}
            )

    def _take_token(self, buckets: dict[int, tuple[float, float]], chat_id: int) -> None:
        tokens, last = buckets[chat_id]  # refilled by the check just before
        buckets[chat_id] = (max(0.0, tokens - 1.0), last)

    def _consume_send(self, chat_id: int) -> None:
        now = self.clock()
        self._global_sends.append(now)
        if self._chats[chat_id]["type"] in GROUP_CHAT_TYPES:
            self._chat_sends.setdefault(chat_id, deque()).append(now)
        if self.limits.enforce:
            self._take_token(self._chat_tokens, chat_id)

    def _consume_edit(self, chat_id: int) -> None:
        if not self.limits.enforce:
            return
        if self._chats[chat_id]["type"] in GROUP_CHAT_TYPES:
            self._chat_edits.setdefault(chat_id, deque()).append(self.clock())
        self._take_token(self._edit_tokens, chat_id)

    # ----------------------------------------------------------------------------------------
    # Shared pieces of the send/edit methods
    # ----------------------------------------------------------------------------------------

    def _formatted(
        self,
        params: dict[str, Any],
        text_key: str,
        entities_key: str,
        parse_mode_key: str,
        limit: int,
        too_long: str,
        *,
        required: bool,
    ) -> tuple[str | None, list[JSONDict]]:
        raw = params.get(text_key)
        if raw is None or raw == "":
            if required:
                raise _bad_request("message text is empty")
            return None, []
        text = str(raw)
        given = params.get(entities_key)
        parse_mode = str(params.get(parse_mode_key) or "")
        if given not in (None, "", []):
            entities = _as_json(given, entities_key)
            if not isinstance(entities, list):
                raise _bad_request(f"can't parse {entities_key} JSON object")
        elif parse_mode:
            if parse_mode.lower() != "html":
                if parse_mode.lower() in ("markdown", "markdownv2"):
                    raise _bad_request(
                        f"unsupported parse_mode {parse_mode}: the fake Telegram only implements HTML"
                    )
                raise _bad_request("unsupported parse_mode")
            try:
                text, entities = parse_html(text)
            except HtmlParseError as exc:
                raise _bad_request(f"can't parse entities: {exc}") from None
        else:
            entities = []
        text, entities = finalize_text(text, entities, auto_entities=self.auto_entities)
        for entity in entities:
            # A mention by id shows the user as Telegram knows them.
            if entity["type"] == "text_mention" and entity.get("user", {}).get("id") in self._users:
                entity["user"] = copy.deepcopy(self._users[entity["user"]["id"]])
        if not text:
            if required:
                raise _bad_request("message text is empty")
            return None, []
        if utf16_len(text) > limit:
            raise _bad_request(too_long)
        return text, entities

    def _inline_markup(self, params: dict[str, Any]) -> JSONDict | None:
        markup = params.get("reply_markup")
        if markup in (None, ""):
            return None
        markup = _as_json(markup, "reply_markup")
        if not isinstance(markup, dict):
            raise _bad_request("can't parse reply keyboard markup JSON object")
        if "inline_keyboard" not in markup:
            return None  # reply keyboards are not stored on the message
        rows = markup["inline_keyboard"]
        if not isinstance(rows, list) or not all(isinstance(row, list) for row in rows):
            raise _bad_request(
                'field "inline_keyboard" of the InlineKeyboardMarkup must be an Array'
            )
        for row in rows:
            for button in row:
                data = button.get("callback_data")
                if data is not None and not 1 <= len(str(data).encode("utf-8")) <= 64:
                    raise _bad_request("BUTTON_DATA_INVALID")
                if not button.get("text"):
                    raise _bad_request("text buttons are unallowed in the inline keyboard")
        return markup

    def _reply_target(self, chat_id: int, params: dict[str, Any]) -> JSONDict | None:
        reply_parameters = params.get("reply_parameters")
        if reply_parameters not in (None, ""):
            reply_parameters = _as_json(reply_parameters, "reply_parameters")
            message_id = _as_int(reply_parameters, "message_id")
            allow = _as_bool(reply_parameters.get("allow_sending_without_reply", False))
        else:
            message_id = _as_int(params, "reply_to_message_id")
            allow = _as_bool(params.get("allow_sending_without_reply", False))
        if message_id is None:
            return None
        target = self._live_message(chat_id, message_id)
        if target is None and not allow:
            raise _bad_request("message to be replied not found")
        return target

    def _check_bot_in_chat(self, chat_id: int) -> None:
        status = self._member_record(chat_id, self.bot_id)["status"]
        kind = self._chats[chat_id]["type"]
        if status == "kicked" and kind == "private":
            raise TelegramApiError(403, "Forbidden: bot was blocked by the user")
        if status == "kicked":
            raise TelegramApiError(403, f"Forbidden: bot was kicked from the {kind} chat")
        if status == "left":
            raise TelegramApiError(403, f"Forbidden: bot is not a member of the {kind} chat")

    def _check_private_chat_open(self, params: dict[str, Any]) -> None:
        """A bot cannot write first: a user known to Telegram but without a private chat with
        the bot (never started it) cannot be sent anything, nor can another bot."""
        try:
            chat_id = int(str(params.get("chat_id", "")).strip())
        except ValueError:
            return  # "@username" or garbage: _chat_id_param answers
        user = self._users.get(chat_id)
        if chat_id in self._chats or user is None:
            return
        if user.get("is_bot"):
            raise TelegramApiError(403, "Forbidden: bot can't send messages to bots")
        raise TelegramApiError(403, "Forbidden: bot can't initiate conversation with a user")

    def _send(self, params: dict[str, Any], build: Callable[[int], JSONDict]) -> JSONDict:
        """The common path of every send: checks, flood limit, message creation, storage."""
        self._check_private_chat_open(params)
        chat_id = self._chat_id_param(params)
        self._check_bot_in_chat(chat_id)
        thread_id = _as_int(params, "message_thread_id")
        if (
            thread_id is not None
            and self._chats[chat_id].get("is_forum")
            and thread_id not in self._topics.get(chat_id, {})
        ):
            raise _bad_request("message thread not found")
        reply_to = self._reply_target(chat_id, params)
        markup = self._inline_markup(params)
        content = build(chat_id)
        self._check_rate(chat_id)
        msg = self._new_message(chat_id, self.bot_user, thread_id=thread_id, reply_to=reply_to)
        msg.update(content)
        if markup is not None:
            msg["reply_markup"] = markup
        self._store(msg, by_bot=True)
        self._consume_send(chat_id)
        return copy.deepcopy(msg)

    def _upload(
        self, params: dict[str, Any], files: dict[str, UploadedFile], name: str
    ) -> tuple[UploadedFile | None, _StoredFile | None]:
        """The file of parameter ``name``: a fresh upload or a known file_id."""
        value = params.get(name)
        if isinstance(value, str) and value.startswith("attach://"):
            attached = files.get(value[len("attach://") :])
            if attached is None:
                raise _bad_request(f"file {value} not found in the request")
            return attached, None
        if name in files:
            return files[name], None
        if isinstance(value, str) and value:
            if value in self._files:
                return None, self._files[value]
            # Never fetch: the fake only talks to loopback, and tests must not depend on URLs.
            raise _bad_request("wrong file identifier/HTTP URL specified")
        raise _bad_request(f"there is no {name} in the request")

    def _editable(self, params: dict[str, Any]) -> JSONDict:
        if params.get("inline_message_id"):
            raise _bad_request("the fake Telegram does not implement inline messages")
        chat_id = self._chat_id_param(params)
        message_id = _as_int(params, "message_id", required=True)
        assert message_id is not None
        msg = self._live_message(chat_id, message_id)
        if msg is None:
            raise _bad_request("message to edit not found")
        if msg["from"]["id"] != self.bot_id:
            raise _bad_request("message can't be edited")
        return msg

    _NOT_MODIFIED = (
        "message is not modified: specified new message content and reply markup are exactly "
        "the same as a current content and reply markup of the message"
    )

    # ----------------------------------------------------------------------------------------
    # Bot API methods
    # ----------------------------------------------------------------------------------------

    async def _get_me(self, params: dict[str, Any], files: dict[str, UploadedFile]) -> Any:
        return copy.deepcopy(self.me)

    async def _log_out(self, params: dict[str, Any], files: dict[str, UploadedFile]) -> Any:
        self.logged_out = True
        return True

    async def _close(self, params: dict[str, Any], files: dict[str, UploadedFile]) -> Any:
        return True

    async def _get_updates(self, params: dict[str, Any], files: dict[str, UploadedFile]) -> Any:
        if self._webhook is not None:
            raise TelegramApiError(
                409,
                "Conflict: can't use getUpdates method while webhook is active; "
                "use deleteWebhook to delete the webhook first",
            )
        offset = _as_int(params, "offset") or 0
        limit = min(max(_as_int(params, "limit") or 100, 1), 100)
        timeout = max(_as_float(params.get("timeout"), 0.0), 0.0)
        allowed = params.get("allowed_updates")
        if allowed not in (None, ""):
            allowed = _as_json(allowed, "allowed_updates")
            self._allowed_updates = list(allowed) if allowed else None
        # Confirm: a positive offset forgets everything before it, a negative one keeps the
        # last -offset updates.
        if offset > 0:
            self._updates = [u for u in self._updates if u["update_id"] >= offset]
        elif offset < 0:
            self._updates = self._updates[offset:]
        self._poll_generation += 1
        generation = self._poll_generation
        self._notify()  # an older long poll learns it was superseded
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            event = self._change
            if generation != self._poll_generation:
                raise TelegramApiError(
                    409,
                    "Conflict: terminated by other getUpdates request; make sure that only "
                    "one bot instance is running",
                )
            if self._webhook is not None:
                return []
            batch = [u for u in self._updates if self._update_allowed(u)][:limit]
            remaining = deadline - loop.time()
            if batch or remaining <= 0 or self._closing.is_set():
                return copy.deepcopy(batch)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(event.wait(), remaining)

    @staticmethod
    def _commands_key(scope: Any, language_code: Any) -> tuple[str, str]:
        scope = _as_json(scope, "scope") if scope not in (None, "") else {"type": "default"}
        return json.dumps(scope, sort_keys=True), str(language_code or "")

    async def _set_my_commands(self, params: dict[str, Any], files: dict[str, UploadedFile]) -> Any:
        commands = _as_json(params.get("commands", "[]"), "commands")
        if not isinstance(commands, list):
            raise _bad_request("can't parse commands JSON object")
        for command in commands:
            name = str(command.get("command", ""))
            if not re.fullmatch(r"[a-z0-9_]{1,32}", name):
                raise _bad_request("BOT_COMMAND_INVALID")
            if not 1 <= len(str(command.get("description", ""))) <= 256:
                raise _bad_request("BOT_COMMAND_DESCRIPTION_INVALID")
        key = self._commands_key(params.get("scope"), params.get("language_code"))
        self._commands[key] = [
            {"command": c["command"], "description": c["description"]} for c in commands
        ]
        return True

    async def _get_my_commands(self, params: dict[str, Any], files: dict[str, UploadedFile]) -> Any:
        key = self._commands_key(params.get("scope"), params.get("language_code"))
        return copy.deepcopy(self._commands.get(key, []))

    async def _delete_my_commands(
        self, params: dict[str, Any], files: dict[str, UploadedFile]
    ) -> Any:
        key = self._commands_key(params.get("scope"), params.get("language_code"))
        self._commands.pop(key, None)
        return True

    async def _set_webhook(self, params: dict[str, Any], files: dict[str, UploadedFile]) -> Any:
        url = str(params.get("url") or "")
        if not url:
            return await self._delete_webhook(params, files)
        if not _is_loopback_url(url):
            raise _bad_request("bad webhook: the fake Telegram only delivers to loopback addresses")
        secret = params.get("secret_token")
        if secret not in (None, "") and not re.fullmatch(r"[A-Za-z0-9_-]{1,256}", str(secret)):
            raise _bad_request("secret token contains unallowed characters")
        allowed = params.get("allowed_updates")
        if allowed not in (None, ""):
            allowed = _as_json(allowed, "allowed_updates")
            self._allowed_updates = list(allowed) if allowed else None
        if _as_bool(params.get("drop_pending_updates", False)):
            self._updates.clear()
            self._webhook_queue.clear()
        self._webhook = {
            "url": url,
            "secret_token": str(secret) if secret not in (None, "") else None,
            "max_connections": _as_int(params, "max_connections") or 40,
        }
        self._webhook_error = None
        # Updates waiting for getUpdates now go to the webhook, in order.
        self._webhook_queue.extend(self._updates)
        self._updates.clear()
        self._notify()
        return _Answer(True, "Webhook was set")

    async def _delete_webhook(self, params: dict[str, Any], files: dict[str, UploadedFile]) -> Any:
        was_set = self._webhook is not None
        self._webhook = None
        if _as_bool(params.get("drop_pending_updates", False)):
            self._webhook_queue.clear()
            self._updates.clear()
        else:
            self._updates.extend(self._webhook_queue)
            self._webhook_queue.clear()
        self._notify()
        return _Answer(True, "Webhook was deleted" if was_set else "Webhook is already deleted")

    async def _get_webhook_info(
        self, params: dict[str, Any], files: dict[str, UploadedFile]
    ) -> Any:
        info: JSONDict = {
            "url": self.webhook_url,
            "has_custom_certificate": False,
            "pending_update_count": len(self._webhook_queue) + len(self._updates),
        }
        if self._webhook is not None:
            info["max_connections"] = self._webhook["max_connections"]
            info["ip_address"] = "127.0.0.1"
            if self._allowed_updates:
                info["allowed_updates"] = list(self._allowed_updates)
        if self._webhook_error is not None:
            info["last_error_date"], info["last_error_message"] = self._webhook_error
        return info

    async def _deliver_webhooks(self) -> None:
        """POST queued updates to the webhook one at a time, retrying until a 2xx answer."""
        while True:
            event = self._change
            webhook = self._webhook
            if webhook is None or not self._webhook_queue or self._session is None:
                await event.wait()
                continue
            update = self._webhook_queue[0]
            if not self._update_allowed(update):
                self._webhook_queue.popleft()
                continue
            headers = {"Content-Type": "application/json"}
            if webhook["secret_token"]:
                headers["X-Telegram-Bot-Api-Secret-Token"] = webhook["secret_token"]
            delivery = WebhookDelivery(
                url=webhook["url"],
                update=copy.deepcopy(update),
                time=self.clock(),
                secret_header=webhook["secret_token"],
            )
            self.webhook_deliveries.append(delivery)
            try:
                async with self._session.post(
                    webhook["url"], data=json.dumps(update).encode("utf-8"), headers=headers
                ) as response:
                    await response.read()
                    delivery.status = response.status
            except (aiohttp.ClientError, TimeoutError) as exc:
                delivery.error = f"{type(exc).__name__}: {exc}"
            # Telegram treats any 2xx as delivered and retries everything else.
            if delivery.status is not None and 200 <= delivery.status < 300:
                if self._webhook_queue and self._webhook_queue[0] is update:
                    self._webhook_queue.popleft()
                self._notify()
                continue
            reason = delivery.error or f"Wrong response from the webhook: {delivery.status}"
            self._webhook_error = (int(time.time()), reason)
            self._notify()
            try:
                await asyncio.wait_for(self._closing.wait(), self.webhook_retry_delay)
                return
            except TimeoutError:
                pass

    async def _send_message(self, params: dict[str, Any], files: dict[str, UploadedFile]) -> Any:
        def build(chat_id: int) -> JSONDict:
            text, entities = self._formatted(
                params,
                "text",
                "entities",
                "parse_mode",
                self.limits.max_text,
                "message is too long",
                required=True,
            )
            content: JSONDict = {"text": text}
            if entities:
                content["entities"] = entities
            preview = params.get("link_preview_options")
            if preview not in (None, ""):
                content["link_preview_options"] = _as_json(preview, "link_preview_options")
            return content

        return self._send(params, build)

    def _caption_from_params(self, params: dict[str, Any]) -> JSONDict:
        caption, entities = self._formatted(
            params,
            "caption",
            "caption_entities",
            "parse_mode",
            self.limits.max_caption,
            "message caption is too long",
            required=False,
        )
        content: JSONDict = {}
        if caption:
            content["caption"] = caption
            if entities:
                content["caption_entities"] = entities
        return content

    async def _send_photo(self, params: dict[str, Any], files: dict[str, UploadedFile]) -> Any:
        def build(chat_id: int) -> JSONDict:
            caption = self._caption_from_params(params)
            upload, known = self._upload(params, files, "photo")
            if upload is not None:
                if len(upload.data) > 10 * 1024 * 1024:
                    raise _bad_request("PHOTO_INVALID_DIMENSIONS")
                sizes = self._photo_sizes(upload.data)
            else:
                assert known is not None
                sizes = self._photo_sizes(known.data)
            content: JSONDict = {"photo": sizes, **caption}
            if _as_bool(params.get("has_spoiler", False)):
                content["has_media_spoiler"] = True
            return content

        return self._send(params, build)

    async def _send_document(self, params: dict[str, Any], files: dict[str, UploadedFile]) -> Any:
        def build(chat_id: int) -> JSONDict:
            caption = self._caption_from_params(params)
            upload, known = self._upload(params, files, "document")
            if upload is not None:
                document = self._document_obj(
                    upload.data,
                    upload.filename,
                    upload.content_type
                    if upload.content_type not in (None, "application/octet-stream")
                    else None,
                )
            else:
                assert known is not None
                document = self._document_obj(known.data, None, None)
            return {"document": document, **caption}

        return self._send(params, build)

    async def _get_file(self, params: dict[str, Any], files: dict[str, UploadedFile]) -> Any:
        file_id = str(params.get("file_id") or "")
        stored = self._files.get(file_id)
        if stored is None:
            raise _bad_request("invalid file_id")
        if len(stored.data) > _MAX_DOWNLOAD_BYTES:
            raise _bad_request("file is too big")
        return {
            "file_id": stored.file_id,
            "file_unique_id": stored.file_unique_id,
            "file_size": len(stored.data),
            "file_path": stored.file_path,
        }

    async def _edit_message_text(
        self, params: dict[str, Any], files: dict[str, UploadedFile]
    ) -> Any:
        msg = self._editable(params)
        if "text" not in msg:
            raise _bad_request("there is no text in the message to edit")
        text, entities = self._formatted(
            params,
            "text",
            "entities",
            "parse_mode",
            self.limits.max_text,
            "message is too long",
            required=True,
        )
        markup = self._inline_markup(params)
        if (
            text == msg["text"]
            and entities == msg.get("entities", [])
            and markup == msg.get("reply_markup")
        ):
            raise _bad_request(self._NOT_MODIFIED)
        self._check_edit_rate(int(msg["chat"]["id"]))
        msg["text"] = text
        msg.pop("entities", None)
        if entities:
            msg["entities"] = entities
        self._set_markup(msg, markup)
        preview = params.get("link_preview_options")
        if preview not in (None, ""):
            msg["link_preview_options"] = _as_json(preview, "link_preview_options")
        msg["edit_date"] = int(time.time())
        self._consume_edit(int(msg["chat"]["id"]))
        self._notify()
        return copy.deepcopy(msg)

    @staticmethod
    def _set_markup(msg: JSONDict, markup: JSONDict | None) -> None:
        if markup is None:
            msg.pop("reply_markup", None)
        else:
            msg["reply_markup"] = markup

    async def _edit_message_caption(
        self, params: dict[str, Any], files: dict[str, UploadedFile]
    ) -> Any:
        msg = self._editable(params)
        if "text" in msg:
            raise _bad_request("there is no caption in the message to edit")
        caption = self._caption_from_params(params)
        markup = self._inline_markup(params)
        if (
            caption.get("caption") == msg.get("caption")
            and caption.get("caption_entities", []) == msg.get("caption_entities", [])
            and markup == msg.get("reply_markup")
        ):
            raise _bad_request(self._NOT_MODIFIED)
        self._check_edit_rate(int(msg["chat"]["id"]))
        msg.pop("caption", None)
        msg.pop("caption_entities", None)
        msg.update(caption)
        self._set_markup(msg, markup)
        msg["edit_date"] = int(time.time())
        self._consume_edit(int(msg["chat"]["id"]))
        self._notify()
        return copy.deepcopy(msg)

    async def _edit_message_reply_markup(
        self, params: dict[str, Any], files: dict[str, UploadedFile]
    ) -> Any:
        msg = self._editable(params)
        markup = self._inline_markup(params)
        if markup == msg.get("reply_markup"):
            raise _bad_request(self._NOT_MODIFIED)
        self._set_markup(msg, markup)
        msg["edit_date"] = int(time.time())
        self._notify()
        return copy.deepcopy(msg)

    def _delete_one(self, chat_id: int, message_id: int) -> bool:
        key = (chat_id, message_id)
        if key not in self._messages or key in self._deleted:
            return False
        if self._messages[key]["from"]["id"] != self.bot_id and not self._bot_is_admin(chat_id):
            raise _bad_request("message can't be deleted")
        self._deleted.add(key)
        return True

    async def _delete_message(self, params: dict[str, Any], files: dict[str, UploadedFile]) -> Any:
        chat_id = self._chat_id_param(params)
        message_id = _as_int(params, "message_id", required=True)
        assert message_id is not None
        if not self._delete_one(chat_id, message_id):
            raise _bad_request("message to delete not found")
        self._notify()
        return True

    async def _delete_messages(self, params: dict[str, Any], files: dict[str, UploadedFile]) -> Any:
        chat_id = self._chat_id_param(params)
        ids = _as_json(params.get("message_ids", "[]"), "message_ids")
        if not isinstance(ids, list) or not 1 <= len(ids) <= 100:
            raise _bad_request("message_ids must contain 1-100 identifiers")
        for message_id in ids:
            self._delete_one(chat_id, int(message_id))  # missing ones are skipped silently
        self._notify()
        return True

    async def _answer_callback_query(
        self, params: dict[str, Any], files: dict[str, UploadedFile]
    ) -> Any:
        query_id = str(params.get("callback_query_id") or "")
        if query_id not in self._open_callbacks:
            raise _bad_request(
                "query is too old and response timeout expired or query ID is invalid"
            )
        text = params.get("text")
        if text is not None and len(str(text)) > 200:
            raise _bad_request("MESSAGE_TOO_LONG")
        del self._open_callbacks[query_id]
        answer: JSONDict = {
            "text": text,
            "show_alert": _as_bool(params.get("show_alert", False)),
            "url": params.get("url"),
            "cache_time": _as_int(params, "cache_time") or 0,
        }
        self.callback_answers[query_id] = answer
        self._notify()
        return True

    async def _send_poll(self, params: dict[str, Any], files: dict[str, UploadedFile]) -> Any:
        def build(chat_id: int) -> JSONDict:
            question = str(params.get("question") or "")
            if not question:
                raise _bad_request("poll question must be non-empty")
            if len(question) > 300:
                raise _bad_request("poll question length must not exceed 300")
            raw_options = _as_json(params.get("options", "[]"), "options")
            options = [o if isinstance(o, str) else str(o.get("text", "")) for o in raw_options]
            if not 2 <= len(options) <= 12:
                too_few = len(options) < 2
                raise _bad_request(
                    "poll must have at least 2 option"
                    if too_few
                    else "poll can't have more than 12 options"
                )
            if any(not 1 <= len(o) <= 100 for o in options):
                raise _bad_request("poll options length must not exceed 100")
            poll_id = str(5_000_000_000_000_000 + next(self._id_counter))
            poll: JSONDict = {
                "id": poll_id,
                "question": question,
                "options": [
                    {"text": o, "voter_count": 0, "persistent_id": str(i)}
                    for i, o in enumerate(options)
                ],
                "total_voter_count": 0,
                "is_closed": _as_bool(params.get("is_closed", False)),
                "is_anonymous": _as_bool(params.get("is_anonymous", True)),
                "type": str(params.get("type") or "regular"),
                "allows_multiple_answers": _as_bool(params.get("allows_multiple_answers", False)),
                "allows_revoting": _as_bool(params.get("allows_revoting", True)),
                "members_only": _as_bool(params.get("members_only", False)),
            }
            correct = params.get("correct_option_ids")
            if correct in (None, "") and params.get("correct_option_id") not in (None, ""):
                correct = [_as_int(params, "correct_option_id")]
            if correct not in (None, ""):
                poll["correct_option_ids"] = list(_as_json(correct, "correct_option_ids"))
            if params.get("explanation"):
                poll["explanation"] = str(params["explanation"])
            if params.get("open_period") not in (None, ""):
                poll["open_period"] = _as_int(params, "open_period")
            if params.get("close_date") not in (None, ""):
                poll["close_date"] = _as_int(params, "close_date")
            return {"poll": poll}

        msg = self._send(params, build)
        self._polls[msg["poll"]["id"]] = (int(msg["chat"]["id"]), int(msg["message_id"]))
        return msg

    async def _stop_poll(self, params: dict[str, Any], files: dict[str, UploadedFile]) -> Any:
        chat_id = self._chat_id_param(params)
        message_id = _as_int(params, "message_id", required=True)
        assert message_id is not None
        msg = self._live_message(chat_id, message_id)
        if msg is None or "poll" not in msg:
            raise _bad_request("message with poll to stop not found")
        if msg["poll"]["is_closed"]:
            raise _bad_request("poll has already been closed")
        msg["poll"]["is_closed"] = True
        self._set_markup(msg, self._inline_markup(params))
        self._notify()
        return copy.deepcopy(msg["poll"])

    async def _get_chat(self, params: dict[str, Any], files: dict[str, UploadedFile]) -> Any:
        chat_id = self._chat_id_param(params)
        info = self._chat_obj(chat_id)
        info.update(
            {
                "accent_color_id": 0,
                "max_reaction_count": 11,
                "accepted_gift_types": {
                    "unlimited_gifts": False,
                    "limited_gifts": False,
                    "unique_gifts": False,
                    "premium_subscription": False,
                    "gifts_from_channels": False,
                },
            }
        )
        pinned = self._pinned.get(chat_id)
        if pinned:
            pinned_msg = self._live_message(chat_id, pinned[-1])
            if pinned_msg is not None:
                info["pinned_message"] = copy.deepcopy(pinned_msg)
        return info

    def _user_id_param(self, params: dict[str, Any]) -> int:
        user_id = _as_int(params, "user_id", required=True)
        assert user_id is not None
        if user_id != self.bot_id and user_id not in self._users:
            raise _bad_request("user not found")
        return user_id

    async def _get_chat_member(self, params: dict[str, Any], files: dict[str, UploadedFile]) -> Any:
        chat_id = self._chat_id_param(params)
        return self._member_obj(chat_id, self._user_id_param(params))

    async def _get_chat_administrators(
        self, params: dict[str, Any], files: dict[str, UploadedFile]
    ) -> Any:
        chat_id = self._chat_id_param(params)
        self._member_record(chat_id, self.bot_id)  # the bot's default status counts too
        return [
            self._member_obj(chat_id, user_id)
            for (member_chat, user_id), record in self._members.items()
            if member_chat == chat_id and record["status"] in ("creator", "administrator")
        ]

    def _moderation_target(self, params: dict[str, Any], action: str) -> tuple[int, int]:
        chat_id = self._chat_id_param(params)
        user_id = self._user_id_param(params)
        if not self._bot_is_admin(chat_id):
            raise _bad_request(f"not enough rights to {action}")
        status = self._member_record(chat_id, user_id)["status"]
        if status == "creator":
            raise _bad_request("can't remove chat owner")
        if status == "administrator":
            raise _bad_request("user is an administrator of the chat")
        return chat_id, user_id

    async def _restrict_chat_member(
        self, params: dict[str, Any], files: dict[str, UploadedFile]
    ) -> Any:
        chat_id, user_id = self._moderation_target(params, "restrict/unrestrict chat member")
        permissions = _as_json(params.get("permissions", "{}"), "permissions")
        if not isinstance(permissions, dict):
            raise _bad_request("can't parse permissions JSON object")
        until = _as_int(params, "until_date") or 0
        current = self._member_record(chat_id, user_id)["status"]
        if all(_as_bool(permissions.get(key, False)) for key in _PERMISSION_KEYS):
            # Granting everything lifts the restriction, as Telegram does.
            new: JSONDict = {"status": "member" if current != "left" else "left"}
        else:
            new = {"status": "restricted", "permissions": permissions, "until_date": until}
        self._members[(chat_id, user_id)] = new
        self._notify()
        return True

    async def _ban_chat_member(self, params: dict[str, Any], files: dict[str, UploadedFile]) -> Any:
        chat_id, user_id = self._moderation_target(params, "restrict/unrestrict chat member")
        until = _as_int(params, "until_date") or 0
        self._members[(chat_id, user_id)] = {"status": "kicked", "until_date": until}
        if _as_bool(params.get("revoke_messages", False)):
            for key, msg in self._messages.items():
                if key[0] == chat_id and msg.get("from", {}).get("id") == user_id:
                    self._deleted.add(key)
        self._notify()
        return True

    async def _unban_chat_member(
        self, params: dict[str, Any], files: dict[str, UploadedFile]
    ) -> Any:
        chat_id, user_id = self._moderation_target(params, "restrict/unrestrict chat member")
        status = self._member_record(chat_id, user_id)["status"]
        only_if_banned = _as_bool(params.get("only_if_banned", False))
        # Without only_if_banned, unbanning a member removes them (the Bot API guarantees the
        # user is not a member afterwards).
        if status == "kicked" or not only_if_banned:
            self._members[(chat_id, user_id)] = {"status": "left"}
        self._notify()
        return True

    async def _pin_chat_message(
        self, params: dict[str, Any], files: dict[str, UploadedFile]
    ) -> Any:
        chat_id = self._chat_id_param(params)
        message_id = _as_int(params, "message_id", required=True)
        assert message_id is not None
        if self._live_message(chat_id, message_id) is None:
            raise _bad_request("message to pin not found")
        if not self._bot_is_admin(chat_id) and self._chats[chat_id]["type"] != "private":
            raise _bad_request("not enough rights to manage pinned messages in the chat")
        pinned = self._pinned.setdefault(chat_id, [])
        if message_id in pinned:
            pinned.remove(message_id)
        pinned.append(message_id)
        self._notify()
        return True

    async def _unpin_chat_message(
        self, params: dict[str, Any], files: dict[str, UploadedFile]
    ) -> Any:
        chat_id = self._chat_id_param(params)
        pinned = self._pinned.get(chat_id, [])
        message_id = _as_int(params, "message_id")
        if message_id is None:
            if not pinned:
                raise _bad_request("message to unpin not found")
            pinned.pop()
        elif message_id in pinned:
            pinned.remove(message_id)
        else:
            raise _bad_request("message to unpin not found")
        self._notify()
        return True

    async def _create_forum_topic(
        self, params: dict[str, Any], files: dict[str, UploadedFile]
    ) -> Any:
        """A new topic in a forum supergroup; its id is its service message's.

        The wording of the refusals of a bad name is Telegram's error names, not checked
        against the live Bot API; the others are what bots meet in production.
        """
        chat_id = self._chat_id_param(params)
        self._check_bot_in_chat(chat_id)
        chat = self._chats[chat_id]
        if chat["type"] != "supergroup" or not chat.get("is_forum"):
            raise _bad_request("the chat is not a forum")
        record = self._member_record(chat_id, self.bot_id)
        if record["status"] != "creator" and (
            record["status"] != "administrator" or record.get("can_manage_topics") is False
        ):
            raise _bad_request("not enough rights to create a topic")
        name = params.get("name")
        if not isinstance(name, str) or not name.strip():
            raise _bad_request("TOPIC_TITLE_EMPTY")
        if utf16_len(name) > _MAX_TOPIC_NAME:
            raise _bad_request("TOPIC_TITLE_TOO_LONG")
        color = _as_int(params, "icon_color")
        if color is None:
            color = _TOPIC_ICON_COLORS[0]
        elif color not in _TOPIC_ICON_COLORS:
            raise _bad_request("TOPIC_ICON_COLOR_INVALID")
        topic: JSONDict = {"name": name, "icon_color": color}
        emoji = params.get("icon_custom_emoji_id")
        if emoji not in (None, ""):
            topic["icon_custom_emoji_id"] = str(emoji)
        message_id = self._new_message_id(chat_id)
        service: JSONDict = {
            "message_id": message_id,
            "from": copy.deepcopy(self.bot_user),
            "chat": self._chat_obj(chat_id),
            "date": int(time.time()),
            "message_thread_id": message_id,
            "forum_topic_created": copy.deepcopy(topic),
            "is_topic_message": True,
        }
        self._store(service, by_bot=False)
        created = {"message_thread_id": message_id, **topic}
        self._topics.setdefault(chat_id, {})[message_id] = created
        self._notify()
        return copy.deepcopy(created)

    async def _send_chat_action(
        self, params: dict[str, Any], files: dict[str, UploadedFile]
    ) -> Any:
        self._chat_id_param(params)
        if not params.get("action"):
            raise _bad_request("action is empty")
        return True

"""The platform-neutral vocabulary: events that come in, actions that go out.

Adapters translate platform updates into these frozen dataclasses and perform the actions;
handlers, moderation and digests only ever see this module's types.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime

from bot.richtext import FormattedText

# ---------------------------------------------------------------------------------------------
# References


@dataclass(frozen=True, slots=True)
class ChatRef:
    """A conversation on one platform: a group, a channel, optionally a topic or thread in it."""

    platform: str
    chat_id: str
    thread_id: str | None = None

    def __str__(self) -> str:
        suffix = f"/{self.thread_id}" if self.thread_id else ""
        return f"{self.platform}:{self.chat_id}{suffix}"


DIRECT_PREFIX = "dm:"


def direct_chat(platform: str, user_id: str) -> ChatRef:
    """The private conversation between the bot and one account, where a person is told
    what concerns them (a proposal answered, a meeting moved).

    On Telegram a private chat's id is the user's id; elsewhere the adapter opens the
    conversation itself (a Discord DM channel) from ``dm:<user id>``.
    """
    if platform == "telegram":
        return ChatRef("telegram", user_id)
    return ChatRef(platform, f"{DIRECT_PREFIX}{user_id}")


@dataclass(frozen=True, slots=True)
class MessageRef:
    """One message on one platform."""

    chat: ChatRef
    message_id: str


@dataclass(frozen=True, slots=True)
class Author:
    """Who did something, as the platform knows them."""

    platform: str
    user_id: str
    display_name: str
    username: str | None = None
    is_bot: bool = False
    language: str | None = None
    # Telegram: a message sent "on behalf of" a channel or an anonymous group admin.
    sender_chat_id: str | None = None


@dataclass(frozen=True, slots=True)
class Attachment:
    """A file attached to a message; the adapter fetches its bytes on demand."""

    kind: str  # "photo", "document", "sticker", "audio", "video", "voice"
    file_id: str
    filename: str | None = None
    mime_type: str | None = None
    size: int | None = None
    # Text shown instead when the file cannot be carried (stickers, custom emoji, oversize).
    fallback: str | None = None


# ---------------------------------------------------------------------------------------------
# Events


@dataclass(frozen=True, slots=True, kw_only=True)
class Event:
    """Something that happened on a platform, at the platform's own time."""

    chat: ChatRef
    author: Author
    at: datetime


@dataclass(frozen=True, slots=True, kw_only=True)
class MessageReceived(Event):
    """A resident wrote a message (not a command)."""

    message_id: str
    content: FormattedText
    reply_to: str | None = None
    attachments: tuple[Attachment, ...] = ()
    # Posted by a webhook or by this bot itself: never relayed, never answered.
    from_relay: bool = False

    @property
    def ref(self) -> MessageRef:
        return MessageRef(self.chat, self.message_id)


@dataclass(frozen=True, slots=True, kw_only=True)
class CommandReceived(Event):
    """A resident typed a command such as ``/aide`` or used a slash command."""

    message_id: str | None
    name: str
    args: str = ""
    reply_to: str | None = None
    # Discord slash commands must be answered through their interaction, not a plain post.
    interaction_id: str | None = None
    options: tuple[tuple[str, str], ...] = ()

    @property
    def ref(self) -> MessageRef | None:
        return MessageRef(self.chat, self.message_id) if self.message_id else None


@dataclass(frozen=True, slots=True, kw_only=True)
class ButtonPressed(Event):
    """A resident pressed a button whose id carries its state, e.g. ``poll:42:option:3``."""

    data: str
    message_id: str | None
    interaction_id: str
    values: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True, kw_only=True)
class FormSubmitted(Event):
    """A resident submitted a form (a Discord modal)."""

    form_id: str
    fields: tuple[tuple[str, str], ...]
    interaction_id: str


@dataclass(frozen=True, slots=True, kw_only=True)
class MessageEdited(Event):
    """A message was edited; ``content`` is its new text."""

    message_id: str
    content: FormattedText


@dataclass(frozen=True, slots=True, kw_only=True)
class MessageDeleted(Event):
    """A message was deleted (Discord tells; Telegram does not tell bots)."""

    message_id: str


@dataclass(frozen=True, slots=True, kw_only=True)
class MemberJoined(Event):
    """Someone joined the chat or the server."""


@dataclass(frozen=True, slots=True, kw_only=True)
class MemberLeft(Event):
    """Someone left or was removed from the chat or the server."""


@dataclass(frozen=True, slots=True, kw_only=True)
class TimeCame(Event):
    """A due time fell due (a poll closes, a reminder, a mute ends); ``at`` is when it was due.

    Its ``chat`` is ``CLOCK_CHAT`` and its author ``CLOCK_AUTHOR``: nobody wrote it.
    """

    kind: str
    subject: str
    key: str


@dataclass(frozen=True, slots=True, kw_only=True)
class Released(Event):
    """A message the gate held was released by a moderator: handle ``original`` unscreened."""

    held_id: int
    original: Event


CLOCK_CHAT = ChatRef("clock", "due")
CLOCK_AUTHOR = Author(platform="clock", user_id="clock", display_name="clock", is_bot=True)


# ---------------------------------------------------------------------------------------------
# Actions


@dataclass(frozen=True, slots=True)
class Button:
    """A button; ``data`` is its whole state so it still works after a restart."""

    label: str
    data: str


@dataclass(frozen=True, slots=True)
class Choice:
    """A menu of options (a Discord select menu; one button per option on Telegram).

    Picking an option reports ``ButtonPressed`` with data ``"{data}:{value}"``.
    """

    data: str
    placeholder: str
    options: tuple[tuple[str, str], ...]  # (label, value)


@dataclass(frozen=True, slots=True)
class FormField:
    """One text box of a form."""

    field_id: str
    label: str
    long: bool = False
    required: bool = True
    max_length: int | None = None
    placeholder: str | None = None


@dataclass(frozen=True, slots=True)
class Form:
    """A form a command opens where the platform has them (Discord modals).

    Elsewhere the command takes its text as arguments instead. The submission arrives as
    ``FormSubmitted`` with ``form_id``.
    """

    form_id: str
    title: str
    fields: tuple[FormField, ...]


@dataclass(frozen=True, slots=True, kw_only=True)
class Action:
    """Something the core asks a platform adapter to do."""

    chat: ChatRef

    @property
    def platform(self) -> str:
        return self.chat.platform


@dataclass(frozen=True, slots=True, kw_only=True)
class SendMessage(Action):
    """Post a message, optionally as a reply, with buttons, and as someone (relays)."""

    content: FormattedText
    reply_to: str | None = None
    buttons: tuple[tuple[Button, ...], ...] = ()
    choice: Choice | None = None
    # Relayed posts show who wrote them; Discord uses a webhook with this name.
    as_name: str | None = None
    avatar_url: str | None = None
    # Pings are off unless a handler explicitly needs to notify these user ids.
    notify_user_ids: tuple[str, ...] = ()
    silent: bool = False
    # A slash command is answered through its interaction when there is one.
    interaction_id: str | None = None
    ephemeral: bool = False
    # A name for the post (``poll:42``): edits, pins and deletions can then find it by name.
    post_key: str | None = None
    # For a relay: the message this post carries, and the message it answers on the origin
    # side; the outbox turns the latter into a native reply when that message is mapped.
    origin: MessageRef | None = None
    reply_to_origin: MessageRef | None = None
    # Shown above the text when ``reply_to_origin`` has no copy here (a short quote).
    reply_fallback: FormattedText | None = None
    attachments: tuple[Attachment, ...] = ()


@dataclass(frozen=True, slots=True, kw_only=True)
class EditMessage(Action):
    """Replace the text (and buttons) of a message the bot sent.

    ``message_id`` names it, or ``origin`` names the message it relays, or ``post_key`` names
    a post the bot made (the outbox finds every copy, every part).
    """

    message_id: str | None = None
    content: FormattedText
    buttons: tuple[tuple[Button, ...], ...] | None = None
    origin: MessageRef | None = None
    post_key: str | None = None
    as_name: str | None = None
    # Posted as a reply instead, when the copy of ``origin`` turns out to share a merged post
    # with other residents' messages (their words are not rewritten).
    if_merged: FormattedText | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class DeleteMessage(Action):
    """Delete a message, by id, by the origin message it relays or by a post's name."""

    message_id: str | None = None
    origin: MessageRef | None = None
    post_key: str | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class SendFile(Action):
    """Post a file (photo, calendar, chart) with an optional caption."""

    filename: str
    data: bytes
    mime_type: str = "application/octet-stream"
    caption: FormattedText | None = None
    reply_to: str | None = None
    as_name: str | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class AnswerButton(Action):
    """Acknowledge a button press, optionally with a short notice only the presser sees."""

    interaction_id: str
    text: str | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class PinMessage(Action):
    """Pin a message in the chat, by id or by a post's name."""

    message_id: str | None = None
    post_key: str | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class UnpinMessage(Action):
    """Unpin a message in the chat, by id or by a post's name."""

    message_id: str | None = None
    post_key: str | None = None


# The name of a post's discussion thread, as ``Context.open_thread`` gives it: the bridge pairs
# the threads of one name across chats, and finds the post ``thread:<post key>`` hangs from.
THREAD_PREFIX = "thread:"


def thread_key(post_key: str) -> str:
    """The name under which the discussion thread of the post ``post_key`` is recorded."""
    return f"{THREAD_PREFIX}{post_key}"


@dataclass(frozen=True, slots=True, kw_only=True)
class OpenThread(Action):
    """Open a discussion thread named ``name`` on the post named ``post_key`` in ``chat``.

    A Discord thread started from the post's message, a Telegram forum topic where the group
    is a forum. Where the platform has no thread for it (a Telegram group that is not a forum,
    a post already inside a Discord thread) the adapter answers ``Sent`` without an id: the
    discussion is then the reply chain under the post. The outbox records the outcome under
    ``thread_key`` (a ``NamedPost`` row whose only id is the thread's, empty for a reply
    chain), and the bridge links the threads of one ``thread_key`` across chats.
    """

    name: str
    post_key: str
    thread_key: str
    # Filled in by the outbox: the post's (first) message in ``chat``.
    message_id: str | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class MuteMember(Action):
    """Stop a member from writing until ``until``."""

    user_id: str
    until: datetime
    reason: str | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class BanMember(Action):
    """Remove a member and keep them out."""

    user_id: str
    reason: str | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class UnbanMember(Action):
    """Let a banned member back."""

    user_id: str


@dataclass(frozen=True, slots=True)
class Delivery:
    """The outbox's bookkeeping for one try, handed to the adapter beside the action.

    Handlers never build it: it comes from the outbox's own record of the delivery.
    """

    # Stable across retries, so that a retried post cannot land twice (Discord nonce).
    key: str | None = None
    # An earlier try may have gone through: look before posting again.
    maybe_sent: bool = False
    # When the first try of this delivery was made (kept across tries and restarts): a post
    # older than this is never taken for this one.
    first_try_at: datetime | None = None
    # Parts already posted by an earlier try (their ids); the adapter posts the rest.
    sent_parts: tuple[str, ...] = ()
    # Every part of the message an edit targets (a message split when it was sent).
    part_ids: tuple[str, ...] = ()
    # The target is a relayed copy (on Discord, a webhook post).
    relayed_copy: bool = False


NO_DELIVERY = Delivery()


@dataclass(frozen=True, slots=True)
class Sent:
    """What a platform answered to an action that created messages (one id per part)."""

    chat: ChatRef
    message_ids: tuple[str, ...] = field(default_factory=tuple)


class DeliveryError(Exception):
    """A platform refused or failed an action; subclasses say whether to try again."""


class RateLimited(DeliveryError):
    """The platform asked to wait ``retry_after`` seconds before the next try in this chat."""

    def __init__(self, retry_after: float, message: str = "rate limited") -> None:
        super().__init__(f"{message} (retry after {retry_after:g} s)")
        self.retry_after = retry_after


class PartialDelivery(DeliveryError):
    """A message split in parts got only its first parts through before ``cause``.

    The outbox keeps ``sent_ids`` and the next try starts at the part after them, so no
    part is posted twice.
    """

    def __init__(self, sent_ids: tuple[str, ...], cause: DeliveryError) -> None:
        super().__init__(f"{len(sent_ids)} part(s) sent, then: {cause}")
        self.sent_ids = sent_ids
        self.cause = cause


class TemporaryFailure(DeliveryError):
    """A server error or a lost connection: try again later."""


class PermanentFailure(DeliveryError):
    """The platform will never accept this action (chat gone, message too old …)."""


class UnsupportedAction(RuntimeError):
    """An adapter was asked for an action its platform cannot perform."""

    def __init__(self, adapter: str, action: Action) -> None:
        super().__init__(f"{adapter} cannot perform {type(action).__name__}")
        self.action = action

"""The fake Discord driven by the real discord.py: if these pass, the fake speaks Discord well
enough for the project's adapter to be tested against it."""

from __future__ import annotations

import asyncio
import contextlib
import io
import warnings
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import aiohttp
import pytest
import yarl

from tests.fakes.discord import DiscordLimits, FakeDiscord

with warnings.catch_warnings():
    # discord.py's voice player imports audioop, deprecated since Python 3.11: with the
    # project's filterwarnings = ["error"] the import would fail collection.
    warnings.simplefilter("ignore", DeprecationWarning)
    import discord
    import discord.client
    from discord import app_commands
    from discord.backoff import ExponentialBackoff
    from discord.gateway import DiscordWebSocket
    from discord.http import Route

TOKEN = "TEST.discord.token"
GUILD_ID = 1000
APPLICATION_ID = 2000
BOT_ID = 3000
GENERAL = 1100
ANNOUNCES = 1101  # a thread under GENERAL
MODERATORS = 1200
RESIDENT = 4000
NEIGHBOUR = 4001


def _populate(fake: FakeDiscord) -> FakeDiscord:
    fake.add_role(MODERATORS, "Modération", permissions=1 << 40)
    fake.add_channel(GENERAL, "général", topic="La place du village")
    fake.add_channel(ANNOUNCES, "annonces de la mairie", type=11, parent_id=GENERAL)
    fake.add_member(RESIDENT, "marie", global_name="Marie Dupont")
    fake.add_member(NEIGHBOUR, "paul", roles=[MODERATORS])
    return fake


@contextlib.asynccontextmanager
async def serving(fake: FakeDiscord) -> AsyncIterator[FakeDiscord]:
    """Start the fake and point discord.py's REST base and gateway at it, then restore both."""
    await fake.start()
    saved_base, saved_gateway = Route.BASE, DiscordWebSocket.DEFAULT_GATEWAY
    Route.BASE = fake.api_url
    DiscordWebSocket.DEFAULT_GATEWAY = yarl.URL(fake.gateway_url)
    try:
        yield fake
    finally:
        Route.BASE, DiscordWebSocket.DEFAULT_GATEWAY = saved_base, saved_gateway
        await fake.stop()


@pytest.fixture
async def fake_discord() -> AsyncIterator[FakeDiscord]:
    async with serving(_populate(FakeDiscord())) as fake:
        yield fake


class RecordingClient(discord.Client):
    """The client the project's adapter will build, recording what it is told."""

    def __init__(self, *, intents: discord.Intents | None = None) -> None:
        if intents is None:
            intents = discord.Intents.default()
            intents.message_content = True
            intents.members = True
        # guild_ready_timeout: discord.py waits that long after the last GUILD_CREATE before
        # on_ready (2 s by default); the fake sends its only guild at once.
        super().__init__(
            intents=intents,
            allowed_mentions=discord.AllowedMentions.none(),
            guild_ready_timeout=0.1,
        )
        self.received: list[discord.Message] = []
        self.ready_count = 0
        self.first_ready = asyncio.Event()

    async def before_identify_hook(self, shard_id: int | None, *, initial: bool = False) -> None:
        # discord.py sleeps 5 s here before every IDENTIFY but the first (Discord's identify
        # rate limit); the fake has none.
        return None

    async def on_ready(self) -> None:
        self.ready_count += 1
        self.first_ready.set()

    async def on_message(self, message: discord.Message) -> None:
        self.received.append(message)


@contextlib.asynccontextmanager
async def running(client: RecordingClient) -> AsyncIterator[RecordingClient]:
    """Log the client in, wait for on_ready, and always close it."""
    task = asyncio.create_task(client.start(TOKEN))
    ready = asyncio.create_task(client.first_ready.wait())
    try:
        done, _ = await asyncio.wait({task, ready}, timeout=10, return_when=asyncio.FIRST_COMPLETED)
        if task in done:
            task.result()
            raise AssertionError("the client stopped before on_ready")
        if ready not in done:
            raise AssertionError("on_ready did not fire within 10 s")
        yield client
    finally:
        ready.cancel()
        await client.close()
        if not task.done():
            await asyncio.wait_for(task, timeout=10)
        elif not task.cancelled():
            task.exception()  # retrieved: the test already reported it


@pytest.fixture
async def bot(fake_discord: FakeDiscord) -> AsyncIterator[RecordingClient]:
    async with running(RecordingClient()) as client:
        yield client


def general(client: discord.Client) -> discord.TextChannel:
    channel = client.get_channel(GENERAL)
    assert isinstance(channel, discord.TextChannel)
    return channel


async def test_on_ready_fills_the_cache(fake_discord: FakeDiscord, bot: RecordingClient) -> None:
    assert bot.ready_count == 1
    assert bot.user is not None and bot.user.id == BOT_ID
    assert bot.application_id == APPLICATION_ID
    guild = bot.get_guild(GUILD_ID)
    assert guild is not None and guild.name == "Forum du village"
    assert general(bot).name == "général" and general(bot).topic == "La place du village"
    thread = guild.get_thread(ANNOUNCES)
    assert thread is not None and thread.parent_id == GENERAL
    assert guild.get_role(MODERATORS) is not None
    # GUILD_CREATE lists only the bot; discord.py asked for the rest (op 8) before on_ready.
    assert len(fake_discord.gateway_events("request_members")) == 1
    assert guild.chunked
    marie = guild.get_member(RESIDENT)
    assert marie is not None and marie.display_name == "Marie Dupont"
    paul = guild.get_member(NEIGHBOUR)
    assert paul is not None and [r.id for r in paul.roles if not r.is_default()] == [MODERATORS]
    assert guild.me.id == BOT_ID
    assert [r.path for r in fake_discord.requests[:2]] == ["/users/@me", "/oauth2/applications/@me"]
    connect = fake_discord.gateway_events("connect")[0]
    assert connect.path == "/gateway" and connect.detail["query"]["v"] == "10"


async def test_injected_message_reaches_on_message(
    fake_discord: FakeDiscord, bot: RecordingClient
) -> None:
    first = fake_discord.inject_message(GENERAL, RESIDENT, "Bonjour à tous !")
    message = await bot.wait_for("message", timeout=5)
    assert message.id == int(first["id"])
    assert message.content == "Bonjour à tous !"
    assert message.author.id == RESIDENT
    assert isinstance(message.author, discord.Member)
    assert message.author.display_name == "Marie Dupont"
    assert message.channel.id == GENERAL and message.guild is not None

    fake_discord.inject_message(
        ANNOUNCES,
        NEIGHBOUR,
        "Voici le plan, <@4000>",
        reply_to=None,
        attachments=[("plan.png", b"\x89PNG fake", "image/png")],
    )
    with_file = await bot.wait_for("message", timeout=5)
    assert isinstance(with_file.channel, discord.Thread)
    assert [m.id for m in with_file.mentions] == [RESIDENT]
    assert with_file.attachments[0].filename == "plan.png"
    assert await with_file.attachments[0].read() == b"\x89PNG fake"

    fake_discord.inject_message(GENERAL, NEIGHBOUR, "Bienvenue Marie", reply_to=message.id)
    reply = await bot.wait_for("message", timeout=5)
    assert reply.reference is not None and reply.reference.message_id == message.id
    assert isinstance(reply.reference.resolved, discord.Message)
    assert reply.reference.resolved.content == "Bonjour à tous !"


async def test_channel_send_records_payload_without_mentions(
    fake_discord: FakeDiscord, bot: RecordingClient
) -> None:
    sent = await general(bot).send("Rappel pour <@4000> et <@&1200> : @everyone")
    call = fake_discord.calls("POST", rf"/channels/{GENERAL}/messages")[-1]
    assert call.status == 200
    assert call.json["allowed_mentions"] == {"parse": []}
    assert call.json["nonce"] and call.json["enforce_nonce"] is True
    stored = fake_discord.channel_messages(GENERAL)[-1]
    assert stored["id"] == str(sent.id) and stored["nonce"] == call.json["nonce"]
    assert stored["mentions"] == [] and stored["mention_roles"] == []
    assert stored["mention_everyone"] is False
    # Discord echoes the bot's own posts on the gateway: the bot must see and skip them.
    own = await bot.wait_for("message", check=lambda m: m.id == sent.id, timeout=5)
    assert own.author.id == BOT_ID

    with_file = await general(bot).send(
        "Le compte rendu", file=discord.File(io.BytesIO(b"%PDF-1.7"), "cr.pdf")
    )
    upload = fake_discord.calls("POST", rf"/channels/{GENERAL}/messages")[-1]
    assert upload.json["content"] == "Le compte rendu"
    assert upload.files[0].filename == "cr.pdf" and upload.files[0].data == b"%PDF-1.7"
    assert await with_file.attachments[0].read() == b"%PDF-1.7"


async def test_edit_and_delete_both_ways(fake_discord: FakeDiscord, bot: RecordingClient) -> None:
    sent = await general(bot).send("Marché samedi")
    edited = await sent.edit(content="Marché dimanche")
    assert edited.content == "Marché dimanche" and edited.edited_at is not None
    stored = fake_discord.channel_messages(GENERAL)[-1]
    assert stored["content"] == "Marché dimanche" and stored["edited_timestamp"] is not None
    await sent.delete()
    assert all(m["id"] != str(sent.id) for m in fake_discord.channel_messages(GENERAL))
    assert fake_discord.calls("DELETE", rf"/channels/{GENERAL}/messages/{sent.id}")[0].status == 204

    posted = fake_discord.inject_message(GENERAL, RESIDENT, "Fête du village à 18h")
    original = await bot.wait_for("message", timeout=5)
    fake_discord.inject_edit(GENERAL, original.id, "Fête du village à 19h")
    before, after = await bot.wait_for("message_edit", timeout=5)
    assert (before.content, after.content) == ("Fête du village à 18h", "Fête du village à 19h")
    fake_discord.inject_delete(GENERAL, int(posted["id"]))
    deleted = await bot.wait_for("raw_message_delete", timeout=5)
    assert deleted.message_id == original.id and deleted.channel_id == GENERAL
    assert fake_discord.message(original.id) is None


async def test_webhook_send_shows_the_username(
    fake_discord: FakeDiscord, bot: RecordingClient
) -> None:
    webhook = await general(bot).create_webhook(name="Pont Telegram", reason="pont")
    assert fake_discord.calls("POST", rf"/channels/{GENERAL}/webhooks")[0].reason == "pont"
    sent = await webhook.send(
        "Bonjour depuis Telegram, <@4000>",
        username="Marie (Telegram)",
        avatar_url="https://cdn.example.invalid/marie.png",
        allowed_mentions=discord.AllowedMentions.none(),
        wait=True,
    )
    assert sent.author.name == "Marie (Telegram)" and sent.webhook_id == webhook.id
    stored = fake_discord.channel_messages(GENERAL)[-1]
    assert stored["author"]["username"] == "Marie (Telegram)"
    assert stored["webhook_id"] == str(webhook.id) and stored["mentions"] == []
    assert fake_discord.avatar_urls[stored["author"]["avatar"]] == (
        "https://cdn.example.invalid/marie.png"
    )
    execute = fake_discord.calls("POST", rf"/webhooks/{webhook.id}/.+")[0]
    assert execute.json["allowed_mentions"] == {"parse": []}
    echoed = await bot.wait_for("message", check=lambda m: m.id == sent.id, timeout=5)
    assert echoed.webhook_id == webhook.id

    in_thread = await webhook.send("Dans le fil", thread=discord.Object(ANNOUNCES), wait=True)
    assert in_thread.channel.id == ANNOUNCES
    assert fake_discord.channel_messages(ANNOUNCES)[-1]["author"]["username"] == "Pont Telegram"
    edited = await webhook.edit_message(sent.id, content="Bonjour (modifié)")
    assert edited.content == "Bonjour (modifié)"
    await webhook.delete_message(sent.id)
    assert fake_discord.message(sent.id) is None


async def test_slash_command_syncs_and_runs(fake_discord: FakeDiscord) -> None:
    client = RecordingClient()
    tree = app_commands.CommandTree(client)
    ran: asyncio.Queue[tuple[str, int]] = asyncio.Queue()

    @tree.command(
        name="sondage",
        description="Créer un sondage pour le village",
        guild=discord.Object(GUILD_ID),
    )
    @app_commands.describe(question="La question posée aux habitants", duree="Durée en minutes")
    async def sondage(interaction: discord.Interaction, question: str, duree: int = 60) -> None:
        ran.put_nowait((question, duree))
        await interaction.response.send_message(f"Sondage : {question} ({duree} min)")

    async with running(client):
        synced = await tree.sync(guild=discord.Object(GUILD_ID))
        assert [c.name for c in synced] == ["sondage"]
        [command] = fake_discord.application_commands
        assert command["guild_id"] == str(GUILD_ID)
        assert command["description"] == "Créer un sondage pour le village"
        assert [o["name"] for o in command["options"]] == ["question", "duree"]

        interaction = fake_discord.inject_slash_command(
            GENERAL, RESIDENT, "sondage", {"question": "Un banc sur la place ?", "duree": 30}
        )
        assert await asyncio.wait_for(ran.get(), 5) == ("Un banc sur la place ?", 30)
        await fake_discord.wait_for(lambda: len(fake_discord.interaction_responses) == 1)
        [response] = fake_discord.interaction_responses
        assert response["interaction_id"] == interaction["id"]
        assert response["token"] == interaction["token"]
        assert response["type"] == 4
        assert response["data"]["content"] == "Sondage : Un banc sur la place ? (30 min)"
        posted = fake_discord.channel_messages(GENERAL)[-1]
        assert posted["type"] == 20 and posted["interaction_metadata"]["user"]["id"] == str(
            RESIDENT
        )


async def test_late_interaction_response_is_refused(fake_discord: FakeDiscord) -> None:
    client = RecordingClient()
    tree = app_commands.CommandTree(client)
    errors: asyncio.Queue[BaseException] = asyncio.Queue()

    @tree.command(name="aide", description="Afficher l'aide")
    async def aide(interaction: discord.Interaction) -> None:
        try:
            await interaction.response.send_message("Voici l'aide")
        except discord.NotFound as exc:
            errors.put_nowait(exc)

    async with running(client):
        await tree.sync()
        fake_discord.interaction_deadline = 0.0  # every answer arrives too late
        fake_discord.inject_slash_command(GENERAL, RESIDENT, "aide")
        error = await asyncio.wait_for(errors.get(), 5)
        assert isinstance(error, discord.NotFound) and error.code == 10062
        assert fake_discord.interaction_responses == []


class PollView(discord.ui.View):
    def __init__(self, clicks: asyncio.Queue[tuple[int, str]]) -> None:
        super().__init__(timeout=None)
        self.clicks = clicks

    @discord.ui.button(label="Option 3", custom_id="poll:42:option:3")
    async def option(
        self, interaction: discord.Interaction, button: discord.ui.Button[Any]
    ) -> None:
        self.clicks.put_nowait((interaction.user.id, button.custom_id or ""))
        await interaction.response.send_message("A voté !", ephemeral=True)


async def test_persistent_view_receives_the_click(fake_discord: FakeDiscord) -> None:
    clicks: asyncio.Queue[tuple[int, str]] = asyncio.Queue()
    client = RecordingClient()
    client.add_view(PollView(clicks))
    # The poll was posted by a previous run of the bot.
    poll = fake_discord.add_message(
        GENERAL,
        BOT_ID,
        "Sondage n°42",
        components=[
            {
                "type": 1,
                "components": [
                    {"type": 2, "style": 1, "label": "Option 3", "custom_id": "poll:42:option:3"}
                ],
            }
        ],
    )
    async with running(client):
        fake_discord.inject_component(GENERAL, RESIDENT, int(poll["id"]), "poll:42:option:3")
        assert await asyncio.wait_for(clicks.get(), 5) == (RESIDENT, "poll:42:option:3")
        await fake_discord.wait_for(lambda: len(fake_discord.interaction_responses) == 1)
        [response] = fake_discord.interaction_responses
        assert response["type"] == 4 and response["data"]["flags"] == 64
        assert response["message"]["content"] == "A voté !"
        # Ephemeral answers never land in the channel.
        assert [m["content"] for m in fake_discord.channel_messages(GENERAL)] == ["Sondage n°42"]
    with pytest.raises(ValueError, match="no component"):
        fake_discord.inject_component(GENERAL, RESIDENT, int(poll["id"]), "poll:42:option:9")


class ReportModal(discord.ui.Modal, title="Signaler un message"):
    reason: discord.ui.TextInput[ReportModal] = discord.ui.TextInput(
        label="Motif", custom_id="motif"
    )

    def __init__(self, reports: asyncio.Queue[str]) -> None:
        super().__init__(custom_id="report:7", timeout=None)
        self.reports = reports

    async def on_submit(self, interaction: discord.Interaction) -> None:
        self.reports.put_nowait(self.reason.value)
        await interaction.response.defer(ephemeral=True, thinking=True)
        await interaction.followup.send("Merci, la modération est prévenue.", ephemeral=True)


class ReportView(discord.ui.View):
    def __init__(self, reports: asyncio.Queue[str]) -> None:
        super().__init__(timeout=None)
        self.reports = reports

    @discord.ui.button(label="Signaler", custom_id="report:7")
    async def report(
        self, interaction: discord.Interaction, button: discord.ui.Button[Any]
    ) -> None:
        await interaction.response.send_modal(ReportModal(self.reports))


async def test_modal_submit_after_a_button(fake_discord: FakeDiscord, bot: RecordingClient) -> None:
    reports: asyncio.Queue[str] = asyncio.Queue()
    sent = await general(bot).send("Un message douteux ?", view=ReportView(reports))
    assert fake_discord.channel_messages(GENERAL)[-1]["components"][0]["components"][0][
        "custom_id"
    ] == ("report:7")
    fake_discord.inject_component(GENERAL, RESIDENT, sent.id, "report:7")
    await fake_discord.wait_for(lambda: len(fake_discord.interaction_responses) == 1)
    assert fake_discord.interaction_responses[0]["type"] == 9
    fake_discord.inject_modal_submit(GENERAL, RESIDENT, "report:7", {"motif": "Publicité"})
    assert await asyncio.wait_for(reports.get(), 5) == "Publicité"
    await fake_discord.wait_for(lambda: len(fake_discord.interaction_responses) == 3)
    kinds = [(r["kind"], r["type"]) for r in fake_discord.interaction_responses]
    assert kinds == [("callback", 9), ("callback", 5), ("followup", None)]
    assert fake_discord.interaction_responses[2]["message"]["flags"] & 64


async def test_rate_limit_is_retried(fake_discord: FakeDiscord, bot: RecordingClient) -> None:
    fault = fake_discord.fail_next(
        "POST", rf"/channels/{GENERAL}/messages", status=429, retry_after=0.2
    )
    sent = await general(bot).send("Après la limite")
    assert fault.fired == 1
    first, second = fake_discord.calls("POST", rf"/channels/{GENERAL}/messages")
    assert (first.status, second.status) == (429, 200)
    assert second.time - first.time >= 0.2
    assert first.json == second.json
    assert fake_discord.channel_messages(GENERAL)[-1]["id"] == str(sent.id)


async def test_discord_py_waits_for_the_channel_bucket_by_itself() -> None:
    # A 0.5 s window (5 s scaled by 0.1): discord.py reads Remaining and Reset-After and holds
    # the sixth send until the window resets, so the fake never has to answer 429.
    async with serving(_populate(FakeDiscord(limits=DiscordLimits(window_scale=0.1)))) as fake:
        async with running(RecordingClient()) as client:
            for i in range(7):
                await general(client).send(f"annonce {i}")
        sends = fake.calls("POST", rf"/channels/{GENERAL}/messages")
        assert [c.status for c in sends] == [200] * 7
        assert sends[5].time - sends[0].time >= 0.45
        assert [m["content"] for m in fake.channel_messages(GENERAL)] == [
            f"annonce {i}" for i in range(7)
        ]


async def test_bad_gateway_is_retried(fake_discord: FakeDiscord, bot: RecordingClient) -> None:
    # discord.py waits 1 s before retrying a 502, whatever the body.
    fault = fake_discord.fail_next("POST", rf"/channels/{GENERAL}/messages", status=502)
    await general(bot).send("Malgré Cloudflare")
    assert fault.fired == 1
    statuses = [c.status for c in fake_discord.calls("POST", rf"/channels/{GENERAL}/messages")]
    assert statuses == [502, 200]
    assert [m["content"] for m in fake_discord.channel_messages(GENERAL)] == ["Malgré Cloudflare"]


async def test_close_gateway_resumes_and_delivers_once(
    fake_discord: FakeDiscord, bot: RecordingClient
) -> None:
    fake_discord.close_gateway(1001)
    await bot.wait_for("resumed", timeout=10)
    [resume] = fake_discord.gateway_events("resume")
    assert resume.path == "/resume-gateway"
    assert len(fake_discord.gateway_events("identify")) == 1
    first = fake_discord.inject_message(GENERAL, RESIDENT, "Après la reprise")
    last = fake_discord.inject_message(GENERAL, RESIDENT, "Et encore un")
    # Frames arrive in order: once the last one is in, any duplicate of the first would be too.
    await bot.wait_for("message", check=lambda m: m.id == int(last["id"]), timeout=5)
    assert [m.id for m in bot.received].count(int(first["id"])) == 1
    assert bot.ready_count == 1


async def test_events_missed_while_disconnected_are_replayed(
    fake_discord: FakeDiscord, bot: RecordingClient
) -> None:
    fake_discord.close_gateway(4000)
    # The client has not reconnected yet: this one is kept for the RESUME.
    missed = fake_discord.inject_message(GENERAL, RESIDENT, "Pendant la coupure")
    await bot.wait_for("resumed", timeout=10)
    assert fake_discord.gateway_events("resume")[-1].detail["replayed"] >= 1
    later = fake_discord.inject_message(GENERAL, RESIDENT, "Après")
    await bot.wait_for("message", check=lambda m: m.id == int(later["id"]), timeout=5)
    ids = [m.id for m in bot.received]
    assert ids.count(int(missed["id"])) == 1
    assert ids.index(int(missed["id"])) < ids.index(int(later["id"]))


async def test_outage_then_reconnect(
    fake_discord: FakeDiscord, monkeypatch: pytest.MonkeyPatch
) -> None:
    # discord.py waits uniform(0, 2 s), then up to 4 s, 8 s... between failed connections. The
    # backoff is created when connect() starts, so it must be patched before the client starts;
    # a 50 ms base keeps the retries real but quick.
    monkeypatch.setattr(
        discord.client,
        "ExponentialBackoff",
        lambda: ExponentialBackoff(base=0.05),  # type: ignore[arg-type]
    )
    async with running(RecordingClient()) as bot:
        fake_discord.refuse_connections(True)
        fake_discord.close_gateway(1001)
        await fake_discord.wait_for(lambda: len(fake_discord.gateway_events("refused")) >= 3)
        lost = fake_discord.inject_message(GENERAL, RESIDENT, "Pendant la panne")
        fake_discord.refuse_connections(False)
        await bot.wait_for("resumed", timeout=10)
        after = fake_discord.inject_message(GENERAL, RESIDENT, "Après la panne")
        await bot.wait_for("message", check=lambda m: m.id == int(after["id"]), timeout=5)
        # Nothing is replayed after an outage: the bot has to read the history to catch up.
        assert int(lost["id"]) not in [m.id for m in bot.received]
        assert fake_discord.gateway_events("resume")[-1].detail["replayed"] == 0
        history = [m async for m in general(bot).history(limit=10)]
        assert [m.content for m in history][:2] == ["Après la panne", "Pendant la panne"]


async def test_invalid_session_forces_identify(
    fake_discord: FakeDiscord, bot: RecordingClient
) -> None:
    fake_discord.invalidate_sessions()
    fake_discord.close_gateway(1001)
    await bot.wait_for("ready", timeout=10)
    assert bot.ready_count == 2
    assert len(fake_discord.gateway_events("invalid_session")) == 1
    assert len(fake_discord.gateway_events("identify")) == 2
    posted = fake_discord.inject_message(GENERAL, RESIDENT, "Nouvelle session")
    message = await bot.wait_for("message", timeout=5)
    assert message.id == int(posted["id"]) and message.content == "Nouvelle session"


async def test_reconnect_opcode_resumes(fake_discord: FakeDiscord, bot: RecordingClient) -> None:
    fake_discord.send_reconnect()
    await bot.wait_for("resumed", timeout=10)
    assert len(fake_discord.gateway_events("identify")) == 1
    fake_discord.inject_message(GENERAL, RESIDENT, "Toujours là")
    assert (await bot.wait_for("message", timeout=5)).content == "Toujours là"


async def test_members_join_leave_and_moderation(
    fake_discord: FakeDiscord, bot: RecordingClient
) -> None:
    fake_discord.inject_member_join(5000, username="nouveau", global_name="Jean Nouveau")
    joined = await bot.wait_for("member_join", timeout=5)
    assert joined.id == 5000 and joined.display_name == "Jean Nouveau"
    fake_discord.inject_member_remove(5000)
    left = await bot.wait_for("member_remove", timeout=5)
    assert left.id == 5000

    guild = bot.get_guild(GUILD_ID)
    assert guild is not None
    marie = guild.get_member(RESIDENT)
    assert marie is not None
    await marie.timeout(timedelta(minutes=10), reason="Propos déplacés")
    call = fake_discord.calls("PATCH", rf"/guilds/{GUILD_ID}/members/{RESIDENT}")[-1]
    assert call.reason == "Propos déplacés"
    until = fake_discord.member(RESIDENT)["communication_disabled_until"]  # type: ignore[index]
    assert datetime.fromisoformat(until) > datetime.now(UTC)
    await marie.add_roles(discord.Object(MODERATORS))
    assert str(MODERATORS) in fake_discord.member(RESIDENT)["roles"]  # type: ignore[index]

    fake_discord.add_member(6000, "troll")
    await guild.ban(discord.Object(6000), reason="Spam", delete_message_seconds=0)
    assert fake_discord.bans == {6000: "Spam"}
    assert fake_discord.member(6000) is None
    # The bot's own ban comes back on the gateway too.
    await bot.wait_for("member_ban", check=lambda g, user: user.id == 6000, timeout=5)
    fake_discord.inject_ban(NEIGHBOUR)
    banned_guild, banned = await bot.wait_for(
        "member_ban", check=lambda g, user: user.id == NEIGHBOUR, timeout=5
    )
    assert banned_guild.id == GUILD_ID and isinstance(banned, discord.Member)
    assert fake_discord.bans[NEIGHBOUR] is None


async def test_history_pages_like_discord(fake_discord: FakeDiscord, bot: RecordingClient) -> None:
    start = datetime.now(UTC) - timedelta(days=2)
    for index in range(130):
        fake_discord.add_message(
            GENERAL, RESIDENT, f"message {index}", at=start + timedelta(minutes=index)
        )
    channel = general(bot)
    everything = [m.content async for m in channel.history(limit=None, oldest_first=True)]
    assert everything == [f"message {i}" for i in range(130)]
    newest = [m.content async for m in channel.history(limit=3)]
    assert newest == ["message 129", "message 128", "message 127"]
    anchor = fake_discord.channel_messages(GENERAL)[100]
    after = [
        m.content async for m in channel.history(limit=5, after=discord.Object(int(anchor["id"])))
    ]
    assert after == [f"message {i}" for i in range(101, 106)]
    around = [
        m.content async for m in channel.history(limit=4, around=discord.Object(int(anchor["id"])))
    ]
    assert sorted(around) == sorted(f"message {i}" for i in (98, 99, 100, 101))
    pages = [
        c.query.get("limit") for c in fake_discord.calls("GET", rf"/channels/{GENERAL}/messages")
    ]
    assert pages[:2] == ["100", "100"]


async def test_message_content_needs_the_intent(fake_discord: FakeDiscord) -> None:
    intents = discord.Intents.default()
    intents.members = True
    async with running(RecordingClient(intents=intents)) as client:
        fake_discord.inject_message(GENERAL, RESIDENT, "Secret")
        assert (await client.wait_for("message", timeout=5)).content == ""
        fake_discord.inject_message(GENERAL, RESIDENT, f"<@{BOT_ID}> aide-moi")
        assert (await client.wait_for("message", timeout=5)).content == f"<@{BOT_ID}> aide-moi"


async def test_disallowed_privileged_intent_stops_the_client() -> None:
    fake = _populate(FakeDiscord(privileged_intents=0))
    async with serving(fake):
        client = RecordingClient()
        try:
            with pytest.raises(discord.PrivilegedIntentsRequired):
                await asyncio.wait_for(client.start(TOKEN), timeout=10)
        finally:
            await client.close()
    assert fake.gateway_events("server_close")[0].detail["code"] == 4014


async def test_zlib_stream_compression() -> None:
    fake = _populate(FakeDiscord(gateway_compression=True))
    async with serving(fake), running(RecordingClient()) as client:
        assert fake.gateway_events("connect")[0].detail["query"]["compress"] == "zlib-stream"
        fake.inject_message(GENERAL, RESIDENT, "Compressé")
        assert (await client.wait_for("message", timeout=5)).content == "Compressé"


async def test_raw_http_shapes(fake_discord: FakeDiscord) -> None:
    headers = {"Authorization": f"Bot {TOKEN}"}
    async with aiohttp.ClientSession() as session:
        async with session.get(f"{fake_discord.api_url}/users/@me", headers=headers) as response:
            assert response.status == 200
            assert response.headers["Content-Type"] == "application/json"
            for name in ("Limit", "Remaining", "Reset", "Reset-After", "Bucket"):
                assert f"X-RateLimit-{name}" in response.headers
        async with session.get(f"{fake_discord.api_url}/nowhere", headers=headers) as response:
            assert response.status == 404
            assert await response.json() == {"message": "404: Not Found", "code": 0}
        async with session.get(f"{fake_discord.api_url}/users/@me") as response:
            assert response.status == 401
        fault = fake_discord.fail_next(None, None, status=429, retry_after=1.5, global_=True)
        async with session.get(f"{fake_discord.api_url}/users/@me", headers=headers) as response:
            assert response.status == 429
            assert await response.json() == {
                "message": "You are being rate limited.",
                "retry_after": 1.5,
                "global": True,
                "code": 0,
            }
            assert response.headers["Retry-After"] == "2"
            assert response.headers["X-RateLimit-Global"] == "true"
            assert response.headers["X-RateLimit-Scope"] == "global"
            assert response.headers["Via"]
        assert fault.fired == 1


async def test_deferred_command_edits_its_original_response(fake_discord: FakeDiscord) -> None:
    client = RecordingClient()
    tree = app_commands.CommandTree(client)

    @tree.command(name="meteo", description="La météo du village")
    @app_commands.describe(habitant="À qui répondre")
    async def meteo(interaction: discord.Interaction, habitant: discord.Member) -> None:
        await interaction.response.defer(thinking=True)
        await interaction.edit_original_response(content=f"Soleil pour {habitant.display_name}")

    async with running(client):
        await tree.sync()
        assert "guild_id" not in fake_discord.application_commands[0]
        fake_discord.inject_slash_command(GENERAL, NEIGHBOUR, "meteo", {"habitant": RESIDENT})
        await fake_discord.wait_for(lambda: len(fake_discord.interaction_responses) == 2)
        kinds = [(r["kind"], r["type"]) for r in fake_discord.interaction_responses]
        assert kinds == [("callback", 5), ("edit_original", None)]
        [answer] = fake_discord.channel_messages(GENERAL)
        assert answer["content"] == "Soleil pour Marie Dupont"
        assert answer["flags"] & 128 == 0 and answer["edited_timestamp"] is not None
    with pytest.raises(LookupError):
        fake_discord.inject_slash_command(GENERAL, RESIDENT, "inconnue")
    with pytest.raises(ValueError, match="required option"):
        fake_discord.inject_slash_command(GENERAL, RESIDENT, "meteo")


async def test_pins_reactions_and_bulk_delete(
    fake_discord: FakeDiscord, bot: RecordingClient
) -> None:
    channel = general(bot)
    first = await channel.send("Ordre du jour")
    second = await channel.send("Compte rendu")
    await first.pin(reason="important")
    notice = await bot.wait_for("message", check=lambda m: m.type is discord.MessageType.pins_add)
    assert notice.reference is not None and notice.reference.message_id == first.id
    assert [m.id async for m in channel.pins()] == [first.id]
    await second.add_reaction("👍")
    fetched = await channel.fetch_message(second.id)
    assert [(str(r.emoji), r.count, r.me) for r in fetched.reactions] == [("👍", 1, True)]
    await channel.delete_messages([first, second])
    deleted = await bot.wait_for("raw_bulk_message_delete", timeout=5)
    assert deleted.message_ids == {first.id, second.id}
    assert [m["type"] for m in fake_discord.channel_messages(GENERAL)] == [6]
    with pytest.raises(discord.HTTPException) as too_long:
        await channel.send("x" * 2001)
    assert too_long.value.code == 50035


async def test_small_heartbeat_interval_is_honoured() -> None:
    fake = _populate(FakeDiscord(heartbeat_interval_ms=50))
    async with serving(fake), running(RecordingClient()) as client:
        # One heartbeat right after HELLO, then one every 50 ms, each acknowledged.
        await fake.wait_for(lambda: fake.heartbeats >= 4, timeout=5)
        assert client.latency < 1.0

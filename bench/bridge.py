"""The bridge benchmark: the real app and both platform libraries against the loopback fakes.

Every phase runs on a fresh pair of fakes, a fresh SQLite database in a temporary directory
and a fresh app, wired exactly as ``tests/test_bridge.py`` does, with every rate-limit window
scaled by ``scale`` (0.01: a hundred times faster) on both the fakes and the bot:

* **burst** (Discord → Telegram, Telegram being the stricter side): ``burst_messages`` short
  resident messages are injected on Discord at once. The bridge has to merge the backlog
  into fewer Telegram posts and keep Telegram busy at its pace. Measured: the delivered post
  rate over the busy period divided by the allowed rate, lost and duplicated messages, 429s.
* **burst_long**: the same with paragraph-long messages, so that merged posts outgrow
  Telegram's 4096 characters and are split (a case the short burst never reaches).
* **latency** (both directions, below the limit): one message at a time, alternately
  Telegram → Discord and Discord → Telegram, each waiting for its relay, with a gap above the
  pace. Measured: the time the destination fake recorded the relay post minus the time the
  message was injected into the origin fake (both ``time.monotonic()``).

Only loopback is used, and every wait is bounded by one overall deadline, so the benchmark
always ends.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import math
import os
import re
import statistics
import tempfile
import time
import traceback
from collections import Counter
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from discord import client as discord_client
from discord.backoff import ExponentialBackoff

from bot.bootstrap import App
from bot.platforms.discord import CHANNEL_PACE
from tests.fakes.discord import FakeDiscord
from tests.fakes.discord import RecordedRequest as DiscordRequest
from tests.fakes.telegram import FakeTelegram, TelegramLimits
from tests.fakes.telegram import RecordedRequest as TelegramRequest
from tests.harness import GENERAL, GROUP, PLATFORM_ENV, bridge_app, bridge_settings
from tests.harness import settle as settle_app

# The same people as tests/test_bridge.py.
MARIE_TG = 42
PAUL_DC = 4001

DEFAULT_SCALE = 0.01

# Markers are fixed-width so that one can never be a prefix of another ("burst-00001" is not
# inside "burst-00017"), which makes counting them in merged posts exact.
MARKER = re.compile(r"\b(burst|long|tg|dc)-(\d{5})\b")
# A chat line after the marker: merged posts then have a realistic length (50 of them, the
# outbox's largest batch, stay within one Telegram message).
SHORT_TEXT = "Quelqu'un a vu le chat roux de la boulangerie ?"
# A paragraph: fifteen of them already exceed Telegram's 4096 characters once merged.
LONG_TEXT = (
    "Réunion du comité de quartier jeudi à 19 h à la salle Ferrer. À l'ordre du jour : les "
    "travaux de la rue des Écoles, le jardin partagé (qui arrose en août ?), la fête des "
    "voisins et le marché de Noël. Venez nombreux, et apportez vos idées pour le budget "
    "participatif de l'an prochain ; un pot suivra."
)

# The platform settings a developer may have exported; Settings reads the environment first,
# so they must not leak into the benchmark (tests/conftest.py clears the same ones).


@dataclass(frozen=True)
class Limits:
    """What the fakes accept at a given scale — their own limits, not the bot's paces.

    Telegram: ``per_group_per_minute`` posts per minute in a group. Discord: relays are
    webhook posts, limited per webhook and, all webhooks together, per channel; the tighter
    of the two sustained rates is what a channel accepts.
    """

    scale: float

    @property
    def tg_posts(self) -> int:
        return TelegramLimits().per_group_per_minute  # 20 posts per minute in one group

    @property
    def tg_window(self) -> float:
        return 60.0 * self.scale  # 60 s scaled: 0.6 s

    def _discord(self) -> tuple[int, float]:
        limits = _discord_limits()
        if limits is None:
            # A fake without limits: the documented channel figure.
            return CHANNEL_PACE.count, CHANNEL_PACE.window
        return min(
            (limits.webhook_executes, limits.webhook_channel), key=lambda pair: pair[0] / pair[1]
        )

    @property
    def dc_posts(self) -> int:
        return self._discord()[0]

    @property
    def dc_window(self) -> float:
        return self._discord()[1] * self.scale


def _discord_limits() -> Any:
    try:
        from tests.fakes.discord import DiscordLimits
    except ImportError:
        return None
    return DiscordLimits()


class Deadline:
    """One bound for the whole run: each wait takes what is left, up to its own cap."""

    def __init__(self, seconds: float) -> None:
        self.at = time.monotonic() + seconds

    def left(self, cap: float) -> float:
        return max(0.1, min(cap, self.at - time.monotonic()))


def marker(kind: str, index: int) -> str:
    return f"{kind}-{index:05d}"


def percentile(values: list[float], p: float) -> float:
    """Nearest-rank percentile: the smallest value with at least p % of the values at or below."""
    if not values:
        return math.nan
    ordered = sorted(values)
    rank = max(1, math.ceil(p / 100 * len(ordered)))
    return ordered[rank - 1]


# ------------------------------------------------------------------------------------------
# Reading what the fakes recorded, incrementally
# ------------------------------------------------------------------------------------------


@dataclass
class Post:
    """One post a fake accepted: when its request arrived, and the markers it carries."""

    time: float
    markers: list[str]


@dataclass
class TelegramWatch:
    """Every sendMessage the fake answered, read incrementally.

    ``wait_for`` re-checks its predicate after every request and state change; rescanning the
    whole request log each time would be quadratic and would steal the event loop from the
    bridge being measured, so this keeps a cursor and a short list of calls still in progress
    (a long-polling getUpdates stays unanswered for up to a second, so a plain cursor would
    stall behind it; only sendMessage calls are kept).
    """

    fake: FakeTelegram
    posts: list[Post] = field(default_factory=list)
    first_seen: dict[str, float] = field(default_factory=dict)
    counts: Counter[str] = field(default_factory=Counter)
    too_many_requests: int = 0
    other_errors: int = 0
    _cursor: int = 0
    _open: list[TelegramRequest] = field(default_factory=list)

    def scan(self) -> None:
        requests = self.fake.requests
        if self._cursor < len(requests):
            fresh = requests[self._cursor :]
            self._cursor = len(requests)
            self._open.extend(
                r for r in fresh if r.method.lower() in ("sendmessage", "editmessagetext")
            )
        still_open: list[TelegramRequest] = []
        for request in self._open:
            if request.status is None:
                still_open.append(request)
            elif request.status == 200:
                assert request.response is not None
                result = request.response["result"]
                text = str(result.get("text", "")) if isinstance(result, dict) else ""
                if request.method.lower() == "sendmessage":
                    self._count(request.time, text)
                else:
                    # A merged post is a placeholder edited into the merged text: the post
                    # was counted when the placeholder went out, its messages arrive now.
                    self._count_messages(request.time, text)
            elif request.status == 429:
                self.too_many_requests += 1
            else:
                self.other_errors += 1
        self._open = still_open

    def _count(self, at: float, text: str) -> None:
        found = self._count_messages(at, text)
        self.posts.append(Post(at, found))

    def _count_messages(self, at: float, text: str) -> list[str]:
        found = ["-".join(m) for m in MARKER.findall(text)]
        for name in found:
            self.counts[name] += 1
            self.first_seen.setdefault(name, at)
        return found

    def has(self, name: str) -> bool:
        self.scan()
        return name in self.first_seen


@dataclass
class DiscordWatch:
    """Every webhook post (the bridge's relays) the fake answered, read incrementally."""

    fake: FakeDiscord
    posts: list[Post] = field(default_factory=list)
    first_seen: dict[str, float] = field(default_factory=dict)
    counts: Counter[str] = field(default_factory=Counter)
    too_many_requests: int = 0
    other_errors: int = 0
    _cursor: int = 0

    _EXECUTE = re.compile(r"/webhooks/\d+/[^/]+")

    def scan(self) -> None:
        requests = self.fake.requests
        # The Discord fake records a request and sets its status in one synchronous step,
        # so a cursor is enough here.
        while self._cursor < len(requests):
            request: DiscordRequest = requests[self._cursor]
            self._cursor += 1
            if request.method != "POST" or not self._EXECUTE.fullmatch(request.path):
                continue
            if request.status in (200, 204):
                content = str((request.json or {}).get("content") or "")
                found = ["-".join(m) for m in MARKER.findall(content)]
                self.posts.append(Post(request.time, found))
                for name in found:
                    self.counts[name] += 1
                    self.first_seen.setdefault(name, request.time)
            elif request.status == 429:
                self.too_many_requests += 1
            else:
                self.other_errors += 1

    def has(self, name: str) -> bool:
        self.scan()
        return name in self.first_seen


# ------------------------------------------------------------------------------------------
# Starting the bridge
# ------------------------------------------------------------------------------------------


@dataclass
class Rig:
    telegram: FakeTelegram
    discord: FakeDiscord
    app: App
    on_telegram: TelegramWatch
    on_discord: DiscordWatch


class LogCounter(logging.Handler):
    """Counts the bridge's warnings and errors instead of printing them mid-run."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.counts: Counter[str] = Counter()
        self.first: dict[str, str] = {}

    def emit(self, record: logging.LogRecord) -> None:
        key = f"{record.levelname} {record.name}"
        self.counts[key] += 1
        if key not in self.first:
            with contextlib.suppress(Exception):
                self.first[key] = record.getMessage()[:200] + _exception_origin(record)


_PROJECT = Path(__file__).resolve().parent.parent


def _exception_origin(record: logging.LogRecord) -> str:
    """The exception of a logged traceback and the project line it came from, in brief."""
    if not record.exc_info or record.exc_info[1] is None:
        return ""
    error = record.exc_info[1]
    where = ""
    for frame in traceback.extract_tb(error.__traceback__):
        path = Path(frame.filename)
        if path.is_relative_to(_PROJECT) and ".venv" not in path.parts:
            where = f" at {path.relative_to(_PROJECT)}:{frame.lineno} in {frame.name}"
    return f" [{type(error).__name__}: {str(error)[:300]}{where}]"


@contextlib.contextmanager
def bench_environment() -> Iterator[None]:
    """What tests/test_bridge.py sets up with monkeypatch, undone afterwards."""
    saved = {name: os.environ.pop(name, None) for name in (*PLATFORM_ENV, "PTB_TIMEDELTA")}
    # python-telegram-bot warns on every integer time period unless told to use timedeltas.
    os.environ["PTB_TIMEDELTA"] = "true"
    # discord.py backs off for seconds before reconnecting; against the fake it need not.
    backoff = discord_client.ExponentialBackoff
    discord_client.ExponentialBackoff = lambda: ExponentialBackoff(base=0.05)  # type: ignore[assignment,misc,arg-type]
    try:
        yield
    finally:
        discord_client.ExponentialBackoff = backoff  # type: ignore[misc]
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


@contextlib.asynccontextmanager
async def running_bridge(workdir: Path, scale: float) -> AsyncIterator[Rig]:
    """Both fakes, a SQLite database in ``workdir`` and the app, as the tests start them."""
    telegram = FakeTelegram(limits=TelegramLimits(window_scale=scale))
    limits = _discord_limits()
    if limits is not None:
        discord = FakeDiscord(guild_id=1000, limits=type(limits)(window_scale=scale))
    else:
        discord = FakeDiscord(guild_id=1000)
    # Latencies subtract our time.monotonic() from the fakes' request times: one clock.
    assert telegram.clock is time.monotonic, "the fake Telegram must stamp with time.monotonic"
    await telegram.start()
    await discord.start()
    app: App | None = None
    try:
        telegram.add_chat(GROUP, title="Quartier Ouest")
        telegram.add_user(MARIE_TG, "Marie", last_name="Dupont")
        telegram.set_member_status(GROUP, MARIE_TG, "member")
        discord.add_channel(GENERAL, "quartier-ouest")
        discord.add_member(PAUL_DC, "paul", global_name="Paul")

        # Database() creates the directory of its SQLite file itself.
        database_url = f"sqlite+aiosqlite:///{workdir / 'forum.db'}"
        # The bot's paces scaled like the fakes' limits.
        settings = bridge_settings(telegram, discord, database_url, rate_limit_scale=scale)
        app, discord_adapter = bridge_app(settings)
        async with asyncio.timeout(30):
            await app.start()
            await discord_adapter.wait_ready()
        yield Rig(telegram, discord, app, TelegramWatch(telegram), DiscordWatch(discord))
    finally:
        with contextlib.suppress(Exception):
            async with asyncio.timeout(30):
                if app is not None:
                    await app.stop()
        with contextlib.suppress(Exception):
            async with asyncio.timeout(15):
                await discord.stop()
        # The fake Telegram raises at stop if it failed internally: that must be seen.
        async with asyncio.timeout(15):
            await telegram.stop()


async def settle(app: App, timeout: float) -> bool:  # noqa: ASYNC109 - a plain bound
    """Wait until every stored update is handled and the outbox is empty; False on timeout."""
    try:
        async with asyncio.timeout(timeout):
            await settle_app(app)
    except TimeoutError:
        return False
    return True


# ------------------------------------------------------------------------------------------
# Bursts, Discord -> Telegram
# ------------------------------------------------------------------------------------------


def delivered_over_allowed(times: list[float], count: int, window: float) -> dict[str, float]:
    """The delivered post rate over the busy period, divided by the allowed rate.

    A sliding window of ``count`` posts per ``window`` seconds lets any schedule post at most
    ``count * (1 + floor(D / window))`` times in a busy period of length ``D`` (first to last
    post): the first window's ``count`` posts come without any wait. So
    ``(posts - count) / D <= count / window`` for every schedule that obeys the limit, with
    equality when the bridge posts a full window every window; that is the rate used here. The
    plain ``posts / D`` is reported too: for a perfectly paced bridge it is ``1 + window / D``
    times the allowed rate, which matters only for a short busy period.
    """
    allowed = count / window
    posts = len(times)
    busy = max(times) - min(times) if posts >= 2 else 0.0
    if busy <= 0 or posts <= count:
        # Not one window's worth of posts: the bridge never had to keep pace, no figure.
        return {
            "ratio": math.nan,
            "naive_ratio": math.nan,
            "rate": math.nan,
            "busy_seconds": busy,
            "allowed": allowed,
        }
    return {
        "ratio": (posts - count) / busy / allowed,
        "naive_ratio": posts / busy / allowed,
        "rate": (posts - count) / busy,
        "busy_seconds": busy,
        "allowed": allowed,
    }


def _max_gap(times: list[float]) -> float:
    return max((b - a for a, b in itertools.pairwise(times)), default=0.0)


def _gaps_over(times: list[float], limit: float) -> int:
    """Idle stretches longer than a whole window: time the bridge left Telegram unused."""
    return sum(1 for a, b in itertools.pairwise(times) if b - a > limit)


async def run_burst(
    workdir: Path,
    *,
    kind: str,
    messages: int,
    text: str,
    limits: Limits,
    deadline: Deadline,
    cap: float,
    to_telegram: bool = True,
) -> dict[str, Any]:
    """Inject ``messages`` on one side at once and watch them reach the other."""
    async with running_bridge(workdir, limits.scale) as rig:
        names = [marker(kind, i) for i in range(messages)]
        watch: TelegramWatch | DiscordWatch = rig.on_telegram if to_telegram else rig.on_discord
        destination: FakeTelegram | FakeDiscord = rig.telegram if to_telegram else rig.discord
        started = time.monotonic()
        # All at once: the backlog is the point. Injecting is synchronous (the fakes queue
        # the frames and updates), so the bridge sees the first ones only after the loop.
        for name in names:
            if to_telegram:
                rig.discord.inject_message(GENERAL, PAUL_DC, f"{name} {text}")
            else:
                rig.telegram.inject_message(GROUP, MARIE_TG, f"{name} {text}")
        injected = time.monotonic()

        def all_relayed() -> bool:
            watch.scan()
            return len(watch.first_seen) >= messages

        timed_out = False
        try:
            await destination.wait_for(all_relayed, timeout=deadline.left(cap))
        except TimeoutError:
            timed_out = True
        relayed = time.monotonic()
        # Wait for the queues to empty so that a late duplicate is counted too.
        settled = await settle(rig.app, timeout=deadline.left(20))
        watch.scan()

    times = sorted(p.time for p in watch.posts)
    posts, window = (
        (limits.tg_posts, limits.tg_window) if to_telegram else (limits.dc_posts, limits.dc_window)
    )
    rate = delivered_over_allowed(times, posts, window)
    return {
        "messages": messages,
        "message_chars": len(f"{names[0]} {text}") if names else 0,
        "posts": len(times),
        "messages_per_post": messages / len(times) if times else math.nan,
        "delivered_over_allowed": rate["ratio"],
        "delivered_over_allowed_naive": rate["naive_ratio"],
        "allowed_posts_per_second": rate["allowed"],
        "delivered_posts_per_second": rate["rate"],
        "busy_seconds": rate["busy_seconds"],
        "lost": sum(1 for name in names if watch.counts[name] == 0),
        "duplicated": sum(max(0, watch.counts[name] - 1) for name in names),
        "too_many_requests": watch.too_many_requests,
        "errors": watch.other_errors,
        "inject_seconds": injected - started,
        "first_post_after_seconds": (times[0] - started) if times else math.nan,
        "wall_seconds": relayed - started,
        "messages_per_second": messages / (relayed - started),
        "timed_out": timed_out,
        "settled": settled,
        "gaps_over_window": _gaps_over(times, window),
        "max_gap_ms": _max_gap(times) * 1000,
    }


# ------------------------------------------------------------------------------------------
# Latency below the limit, both directions
# ------------------------------------------------------------------------------------------


def _latency_summary(values: list[float]) -> dict[str, float]:
    ms = [v * 1000 for v in values]
    return {
        "p50_ms": percentile(ms, 50),
        "p90_ms": percentile(ms, 90),
        "p99_ms": percentile(ms, 99),
        "max_ms": max(ms) if ms else math.nan,
        "mean_ms": sum(ms) / len(ms) if ms else math.nan,
        "samples": len(ms),
    }


async def _sleep_until(moment: float) -> None:
    """Keep the gap between posts into one chat (load shaping, not waiting for an event)."""
    delay = moment - time.monotonic()
    if delay > 0:
        await asyncio.sleep(delay)


async def run_latency(
    workdir: Path,
    *,
    per_direction: int,
    warmup: int,
    limits: Limits,
    deadline: Deadline,
) -> dict[str, Any]:
    # Gaps between posts into one chat half as long again as the pace's average spacing:
    # steady posting at this rate never fills a sliding window (14 posts of 20 on Telegram),
    # so nothing waits for the pace and what is measured is the bridge alone.
    tg_gap = 1.5 * limits.tg_window / limits.tg_posts
    dc_gap = 1.5 * limits.dc_window / limits.dc_posts
    to_discord: list[float] = []
    to_telegram: list[float] = []
    warm: list[float] = []
    # What was injected: after a timeout, messages never sent are not counted as lost.
    expected_dc: list[str] = []
    expected_tg: list[str] = []
    timed_out = False
    total = warmup + per_direction
    started = time.monotonic()
    async with running_bridge(workdir, limits.scale) as rig:
        last_tg_post = last_dc_post = -math.inf
        try:
            for i in range(total):
                # Telegram -> Discord
                await _sleep_until(last_dc_post + dc_gap)
                name = marker("tg", i)
                sent = time.monotonic()
                rig.telegram.inject_message(GROUP, MARIE_TG, f"{name} {SHORT_TEXT}")
                expected_dc.append(name)
                await rig.discord.wait_for(
                    lambda name=name: rig.on_discord.has(name),  # type: ignore[misc]
                    timeout=deadline.left(10),
                )
                last_dc_post = rig.on_discord.first_seen[name]
                (warm if i < warmup else to_discord).append(last_dc_post - sent)

                # Discord -> Telegram
                await _sleep_until(last_tg_post + tg_gap)
                name = marker("dc", i)
                sent = time.monotonic()
                rig.discord.inject_message(GENERAL, PAUL_DC, f"{name} {SHORT_TEXT}")
                expected_tg.append(name)
                await rig.telegram.wait_for(
                    lambda name=name: rig.on_telegram.has(name),  # type: ignore[misc]
                    timeout=deadline.left(10),
                )
                last_tg_post = rig.on_telegram.first_seen[name]
                (warm if i < warmup else to_telegram).append(last_tg_post - sent)
        except TimeoutError:
            timed_out = True
        settled = await settle(rig.app, timeout=deadline.left(20))
        rig.on_telegram.scan()
        rig.on_discord.scan()
    dc_counts, tg_counts = rig.on_discord.counts, rig.on_telegram.counts
    return {
        "overall": _latency_summary(to_discord + to_telegram),
        "telegram_to_discord": _latency_summary(to_discord),
        "discord_to_telegram": _latency_summary(to_telegram),
        "warmup_ms": [round(v * 1000, 2) for v in warm],
        "messages_per_direction": per_direction,
        "lost": sum(1 for n in expected_dc if dc_counts[n] == 0)
        + sum(1 for n in expected_tg if tg_counts[n] == 0),
        "duplicated": sum(max(0, dc_counts[n] - 1) for n in expected_dc)
        + sum(max(0, tg_counts[n] - 1) for n in expected_tg),
        "telegram_429": rig.on_telegram.too_many_requests,
        "discord_429": rig.on_discord.too_many_requests,
        "timed_out": timed_out,
        "settled": settled,
        "wall_seconds": time.monotonic() - started,
    }


# ------------------------------------------------------------------------------------------
# All phases
# ------------------------------------------------------------------------------------------


async def run(
    *,
    burst_messages: int = 3000,
    long_burst_messages: int = 1000,
    latency_messages: int = 200,
    runs: int = 3,
    warmup: int = 5,
    scale: float = DEFAULT_SCALE,
    budget: float = 240.0,
    progress: Callable[[str], None] = lambda line: None,
) -> dict[str, Any]:
    """Run every phase; flat ``bridge.*`` results (goals are reported, never asserted)."""
    limits = Limits(scale)
    deadline = Deadline(budget)
    counter = LogCounter()
    root = logging.getLogger()
    root.addHandler(counter)
    # Without a handler of its own, Python prints WARNING records on stderr (lastResort);
    # with the counter installed they are counted instead of interleaved with the summary.
    previous_level = root.level
    root.setLevel(logging.WARNING)
    started = time.monotonic()
    phases: dict[str, dict[str, Any]] = {}
    try:
        with bench_environment(), tempfile.TemporaryDirectory(prefix="fh-bench-") as tmp:
            for run_index in range(runs):
                for name, to_telegram, label in (
                    ("burst", True, "Discord -> Telegram"),
                    ("burst_to_discord", False, "Telegram -> Discord"),
                ):
                    progress(
                        f"{name} run {run_index + 1}/{runs}: {burst_messages} short messages "
                        f"{label} ..."
                    )
                    phases[f"{name}.{run_index + 1}"] = await run_burst(
                        Path(tmp) / f"{name}-{run_index}",
                        kind="burst",
                        messages=burst_messages,
                        text=SHORT_TEXT,
                        limits=limits,
                        deadline=deadline,
                        cap=budget * 0.5 / runs,
                        to_telegram=to_telegram,
                    )
            if long_burst_messages:
                progress(f"burst_long: {long_burst_messages} paragraphs Discord -> Telegram ...")
                phases["burst_long"] = await run_burst(
                    Path(tmp) / "burst_long",
                    kind="long",
                    messages=long_burst_messages,
                    text=LONG_TEXT,
                    limits=limits,
                    deadline=deadline,
                    cap=budget * 0.2,
                )
            progress(f"latency: {latency_messages} messages each way, one at a time ...")
            phases["latency"] = await run_latency(
                Path(tmp) / "latency",
                per_direction=latency_messages,
                warmup=warmup,
                limits=limits,
                deadline=deadline,
            )
    finally:
        root.removeHandler(counter)
        root.setLevel(previous_level)

    latency = phases["latency"]
    results: dict[str, Any] = {
        "bridge.added_latency_p50_ms": latency["overall"]["p50_ms"],
        "bridge.added_latency_p99_ms": latency["overall"]["p99_ms"],
        # Over every phase: a message missing or doubled anywhere counts.
        "bridge.lost": sum(phase["lost"] for phase in phases.values()),
        "bridge.duplicated": sum(phase["duplicated"] for phase in phases.values()),
        "bridge.runs": runs,
    }
    for name, key in (
        ("burst", "bridge.delivered_over_allowed.to_telegram"),
        ("burst_to_discord", "bridge.delivered_over_allowed.to_discord"),
    ):
        ratios = [
            phase["delivered_over_allowed"]
            for phase_name, phase in phases.items()
            if phase_name.partition(".")[0] == name
        ]
        results[key] = statistics.median(ratios) if ratios else math.nan
        results[f"{key}.min"] = min(ratios, default=math.nan)
        results[f"{key}.max"] = max(ratios, default=math.nan)
    # The goal holds in each direction: the lower median is the headline figure.
    results["bridge.delivered_over_allowed"] = min(
        results["bridge.delivered_over_allowed.to_telegram"],
        results["bridge.delivered_over_allowed.to_discord"],
    )
    for name, phase in phases.items():
        if name == "latency":
            continue
        for key, value in phase.items():
            results[f"bridge.{name}.{key}"] = value
    for key, value in latency.items():
        if isinstance(value, dict):
            for stat, figure in value.items():
                results[f"bridge.latency.{key}.{stat}"] = figure
        else:
            results[f"bridge.latency.{key}"] = value
    results["bridge.scale"] = scale
    results["bridge.telegram_pace"] = f"{limits.tg_posts} posts / {limits.tg_window:g} s per group"
    results["bridge.discord_pace"] = (
        f"{limits.dc_posts} webhook posts / {limits.dc_window:g} s per channel"
    )
    for key, count in sorted(counter.counts.items()):
        results[f"bridge.log.{key}"] = count
        results[f"bridge.log.{key}.first"] = counter.first.get(key, "")
    results["bridge.wall_seconds"] = time.monotonic() - started
    return results

"""Counting polls: plain choices, instant runoff, date finding and text bar charts.

Pure functions over ballots already loaded by the caller: no I/O, no database, no clock, so a
result can be recomputed at any time (live counts, the close, an export) and always agrees.

Ballots come from the database and ultimately from button ids, which anyone can forge and
which outlive an edited poll. Every function here therefore ignores what it cannot make sense
of rather than raising: a forged or stale ballot must never crash the tally, nor count.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace
from typing import Final, Literal

__all__ = [
    "MAYBE",
    "NO",
    "YES",
    "Round",
    "Runoff",
    "SlotTally",
    "TieBreak",
    "bars",
    "count_choices",
    "date_finding",
    "instant_runoff",
    "percentages",
]

YES: Final = "yes"
MAYBE: Final = "maybe"
NO: Final = "no"

# French typography puts a space before "%"; a no-break one keeps "40" and "%" on one line
# when a chat client wraps a narrow screen.
_PERCENT: Final = "\u00a0%"
_FULL: Final = "▓"
_EMPTY: Final = "░"

TieBreak = Literal["earlier_round", "last_listed"]


def _is_index(value: object, options: int) -> bool:
    """Whether ``value`` is a valid option index for a poll of ``options`` options."""
    # bool is an int subclass and Python accepts negative indexes: both would silently hit the
    # wrong option, so only a genuine int in range counts.
    return isinstance(value, int) and not isinstance(value, bool) and 0 <= value < options


def _clean(options: int, ballot: Sequence[int]) -> list[int]:
    """The valid indexes of ``ballot`` in their order, each kept at its first place only."""
    seen: set[int] = set()
    kept: list[int] = []
    for choice in ballot:
        # Out of range: a forged button or a ballot cast before the poll lost an option.
        # Repeated: a forged ranking ("1, 1, 1") must not weigh more than one mention.
        if _is_index(choice, options) and choice not in seen:
            seen.add(choice)
            kept.append(choice)
    return kept


# -- single choice, multiple choice, yes / no / abstain -------------------------------------


def count_choices(
    options: int, ballots: Iterable[Sequence[int]], *, max_choices: int | None = None
) -> list[int]:
    """Votes per option for single, multiple and yes/no/abstain polls (a ballot lists indexes)."""
    counts = [0] * max(options, 0)
    for ballot in ballots:
        chosen = _clean(options, ballot)
        # Too many choices cannot come from our buttons; truncating would pick for the voter,
        # so the whole ballot is set aside.
        if max_choices is not None and len(chosen) > max_choices:
            continue
        for choice in chosen:
            counts[choice] += 1
    return counts


# -- ranked choice: instant runoff ----------------------------------------------------------


@dataclass(frozen=True)
class Round:
    """One round of an instant runoff."""

    # Votes per option, by option index; an option already eliminated shows 0.
    counts: tuple[int, ...]
    # The options still in the race during this round, ascending.
    continuing: tuple[int, ...]
    # Ballots with no preference left among ``continuing`` (blank ones included).
    exhausted: int
    # The option eliminated at the end of this round; None in the last round.
    eliminated: int | None = None
    # How a tie for last place was broken; None when the last place was not tied.
    tie_break: TieBreak | None = None

    @property
    def active(self) -> int:
        """Ballots still counting in this round."""
        return sum(self.counts)


@dataclass(frozen=True)
class Runoff:
    """The result of an instant runoff: every round, then the winner or the final tie."""

    options: int
    ballots: int
    rounds: tuple[Round, ...]
    winner: int | None
    # The last two options when they finish with equal votes (then ``winner`` is None).
    tied: tuple[int, ...] = ()


def instant_runoff(options: int, rankings: Iterable[Sequence[int]]) -> Runoff:
    """Ranked choice by instant runoff, with Scottish-STV backward tie-breaking.

    Each round counts every ballot for its highest-ranked option still in the race. An option
    with more than half of the ballots still counting wins. Otherwise one option is eliminated:
    the one with the fewest votes.

    Tie for last place (the exclusion rule of Scottish STV, SSI 2007/42 schedule 1 rule 50,
    applied round by round): among the tied options keep those with the fewest votes in the
    previous round, then in the round before, back to the first round (whose counts are the
    first preferences), until one is left. If several are still tied after the first round,
    the one with the highest index (listed last in the poll) is eliminated: Scottish law draws
    lots there, but a tally must give the same result every time it is recomputed.

    Ballots: indexes out of range and repeats are ignored (the first mention counts); a ballot
    with no valid preference is exhausted from the first round.

    Ends without a winner when there is no option or no ballot (no rounds), when no ballot
    holds a valid preference (one round, all exhausted), or when the last two options have
    equal votes: that tie is reported in ``tied`` and left to people, since deciding it by an
    earlier round or by the order of the list would hand the poll to a rule nobody voted for.
    """
    clean = [_clean(options, ranking) for ranking in rankings]
    total = len(clean)
    if options <= 0 or total == 0:
        return Runoff(options=max(options, 0), ballots=total, rounds=(), winner=None)

    continuing = set(range(options))
    rounds: list[Round] = []
    while True:
        counts = [0] * options
        exhausted = 0
        for ranking in clean:
            top = next((choice for choice in ranking if choice in continuing), None)
            if top is None:
                exhausted += 1
            else:
                counts[top] += 1
        in_race = tuple(sorted(continuing))
        this_round = Round(tuple(counts), in_race, exhausted)
        active = total - exhausted
        # Highest count first, then the lower index, so the leader is never a matter of chance.
        leader = max(in_race, key=lambda option: (counts[option], -option))
        if active == 0:
            # Only possible in the first round: an eliminated option always has the fewest
            # votes, so once a ballot counts some ballot keeps counting.
            return Runoff(options, total, (*rounds, this_round), None)
        if 2 * counts[leader] > active:
            return Runoff(options, total, (*rounds, this_round), leader)
        if len(in_race) == 2:
            # Two left without a majority: they have equal votes.
            return Runoff(options, total, (*rounds, this_round), None, in_race)
        eliminated, tie_break = _last_place(counts, in_race, [r.counts for r in rounds])
        rounds.append(replace(this_round, eliminated=eliminated, tie_break=tie_break))
        continuing.discard(eliminated)


def _last_place(
    counts: Sequence[int], in_race: Sequence[int], earlier: Sequence[Sequence[int]]
) -> tuple[int, TieBreak | None]:
    """The option to eliminate this round, and how a tie for it was broken (see instant_runoff)."""
    fewest = min(counts[option] for option in in_race)
    tied = [option for option in in_race if counts[option] == fewest]
    if len(tied) == 1:
        return tied[0], None
    for previous in reversed(earlier):
        fewest = min(previous[option] for option in tied)
        tied = [option for option in tied if previous[option] == fewest]
        if len(tied) == 1:
            return tied[0], "earlier_round"
    return max(tied), "last_listed"


# -- date finding ---------------------------------------------------------------------------


@dataclass(frozen=True)
class SlotTally:
    """The answers for one proposed slot of a date-finding poll."""

    slot: int
    yes: int
    maybe: int
    no: int
    # Among the slots with the most "yes", then the most "maybe" (ties are all best).
    best: bool = False


def date_finding(slots: int, ballots: Iterable[Sequence[str]]) -> list[SlotTally]:
    """Framadate-style tally: one "yes"/"maybe"/"no" per slot per ballot; best slots marked."""
    slots = max(slots, 0)
    yes = [0] * slots
    maybe = [0] * slots
    no = [0] * slots
    for ballot in ballots:
        # A ballot of another length was cast for another list of slots: which answer meant
        # which slot is unknown, so none of it counts.
        if len(ballot) != slots:
            continue
        for slot, answer in enumerate(ballot):
            # An unknown answer is no answer for that slot; the rest of the ballot still holds.
            if answer == YES:
                yes[slot] += 1
            elif answer == MAYBE:
                maybe[slot] += 1
            elif answer == NO:
                no[slot] += 1
    top = max(zip(yes, maybe, strict=True), default=(0, 0))
    # A slot nobody can attend is no "best" slot, even if every slot is equally bad.
    has_best = top != (0, 0)
    return [
        SlotTally(
            slot=slot,
            yes=yes[slot],
            maybe=maybe[slot],
            no=no[slot],
            best=has_best and (yes[slot], maybe[slot]) == top,
        )
        for slot in range(slots)
    ]


# -- text bar chart -------------------------------------------------------------------------


def percentages(counts: Sequence[int]) -> list[int]:
    """Whole percentages of ``counts`` summing to exactly 100 (all 0 when nothing is counted)."""
    if any(count < 0 for count in counts):
        raise ValueError("counts cannot be negative")
    total = sum(counts)
    if total == 0:
        return [0] * len(counts)
    # Largest remainder (Hamilton): rounding each share alone can show 99 % or 101 % in all,
    # which residents read as a counting error.
    floors = [count * 100 // total for count in counts]
    remainders = [count * 100 % total for count in counts]
    missing = 100 - sum(floors)
    # Earlier options first among equal remainders, so the output never depends on chance.
    order = sorted(range(len(counts)), key=lambda index: -remainders[index])
    for index in order[:missing]:
        floors[index] += 1
    return floors


def bars(labels: Sequence[str], counts: Sequence[int], width: int = 10) -> str:
    """A text bar chart for a chat post: each label, then "▓▓▓▓░░░░░░ 40 % (4)"."""
    if len(labels) != len(counts):
        raise ValueError(f"{len(labels)} labels for {len(counts)} counts")
    if width < 1:
        raise ValueError("width must be at least 1")
    lines: list[str] = []
    for label, count, percent in zip(labels, counts, percentages(counts), strict=True):
        # The bar follows the rounded percentage, so "40 %" always shows four cells in ten.
        filled = (percent * width + 50) // 100
        # A newline in a label would break the one-label-one-bar layout.
        lines.append(" ".join(label.split()))
        lines.append(f"{_FULL * filled}{_EMPTY * (width - filled)} {percent}{_PERCENT} ({count})")
    return "\n".join(lines)

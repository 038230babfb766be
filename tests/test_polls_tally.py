"""Poll counting (handlers/polls_tally.py): hand-computed examples, then properties.

Options are named A, B, C, … for indexes 0, 1, 2, …; a ranking lists options best first.
Each example's docstring holds the table it checks, so a reader can redo the count by hand.
"""

from __future__ import annotations

from collections.abc import Sequence
from random import Random

from hypothesis import given, settings
from hypothesis import strategies as st

from handlers.polls_tally import (
    Round,
    Runoff,
    SlotTally,
    bars,
    count_choices,
    date_finding,
    instant_runoff,
    percentages,
)

A, B, C, D, E = range(5)
# Cheap pure functions: 150 examples each keep the file near five seconds.
PROPERTIES = settings(max_examples=150, deadline=None, database=None)


def ballots(*groups: tuple[int, Sequence[int]]) -> list[list[int]]:
    """``(3, [A, B])`` is three ballots ranking A then B."""
    return [list(ranking) for times, ranking in groups for _ in range(times)]


# -- instant runoff: hand-computed examples -------------------------------------------------


def test_a_first_round_majority_wins_at_once() -> None:
    """
    | ballots   | × |
    |-----------|---|
    | A > B     | 3 |
    | B > C     | 1 |
    | C         | 1 |

    Round 1: A 3, B 1, C 1 of 5 counting; 3 > 5/2, A wins. One round, nothing eliminated.
    """
    result = instant_runoff(3, ballots((3, [A, B]), (1, [B, C]), (1, [C])))
    assert result == Runoff(
        options=3, ballots=5, rounds=(Round((3, 1, 1), (A, B, C), 0),), winner=A
    )


def test_a_three_round_runoff_where_the_first_round_leader_loses() -> None:
    """
    | ballots | × |
    |---------|---|
    | A > D   | 4 |
    | B > C   | 3 |
    | C > B   | 2 |
    | D > B   | 1 |

    Round 1: A 4, B 3, C 2, D 1 of 10; none above 5; D eliminated, its ballot goes to B.
    Round 2: A 4, B 4, C 2 of 10; none above 5; C eliminated, its 2 ballots go to B.
    Round 3: A 4, B 6 of 10; 6 > 5, B wins.
    """
    result = instant_runoff(4, ballots((4, [A, D]), (3, [B, C]), (2, [C, B]), (1, [D, B])))
    assert result.rounds == (
        Round((4, 3, 2, 1), (A, B, C, D), 0, eliminated=D),
        Round((4, 4, 2, 0), (A, B, C), 0, eliminated=C),
        Round((4, 6, 0, 0), (A, B), 0),
    )
    assert result.winner == B
    assert result.tied == ()


def test_a_tie_for_last_place_is_broken_by_the_previous_round() -> None:
    """
    | ballots | × |
    |---------|---|
    | A       | 4 |
    | C > A   | 3 |
    | B > C   | 2 |
    | D > B   | 1 |

    Round 1: A 4, B 2, C 3, D 1 of 10; D eliminated, its ballot goes to B.
    Round 2: A 4, B 3, C 3 of 10; B and C tie for last. In round 1 B had 2, C had 3: B is
             eliminated (listing order alone would have eliminated C). B's two ballots go to
             C; the D > B ballot has no preference left: 1 exhausted.
    Round 3: A 4, C 5 of 9 still counting; 5 > 4.5, C wins.
    """
    result = instant_runoff(4, ballots((4, [A]), (3, [C, A]), (2, [B, C]), (1, [D, B])))
    assert result.rounds == (
        Round((4, 2, 3, 1), (A, B, C, D), 0, eliminated=D),
        Round((4, 3, 3, 0), (A, B, C), 0, eliminated=B, tie_break="earlier_round"),
        Round((4, 0, 5, 0), (A, C), 1),
    )
    assert result.winner == C


def test_a_tie_through_every_round_eliminates_the_option_listed_last() -> None:
    """
    | ballots | × |
    |---------|---|
    | A       | 3 |
    | B > A   | 2 |
    | C > A   | 2 |
    | D       | 1 |

    Round 1: A 3, B 2, C 2, D 1 of 8; 3 is not above 4; D eliminated: 1 exhausted.
    Round 2: A 3, B 2, C 2 of 7; 3 is not above 3.5; B and C tie for last, and tied in
             round 1 too (2 and 2): the one listed last, C, is eliminated; its ballots go to A.
    Round 3: A 5, B 2 of 7; A wins.
    """
    result = instant_runoff(4, ballots((3, [A]), (2, [B, A]), (2, [C, A]), (1, [D])))
    assert result.rounds == (
        Round((3, 2, 2, 1), (A, B, C, D), 0, eliminated=D),
        Round((3, 2, 2, 0), (A, B, C), 1, eliminated=C, tie_break="last_listed"),
        Round((5, 2, 0, 0), (A, B), 1),
    )
    assert result.winner == A


def test_a_first_round_tie_has_no_earlier_round_and_goes_to_the_final_rule() -> None:
    """
    | ballots | × |
    |---------|---|
    | A       | 3 |
    | B > C   | 2 |
    | C > B   | 1 |
    | D > B   | 1 |

    Round 1: A 3, B 2, C 1, D 1 of 7; C and D tie, no earlier round: D (listed last) goes.
    Round 2: A 3, B 3, C 1 of 7; C eliminated, its ballot goes to B.
    Round 3: A 3, B 4 of 7; 4 > 3.5, B wins.
    """
    result = instant_runoff(4, ballots((3, [A]), (2, [B, C]), (1, [C, B]), (1, [D, B])))
    assert [(r.eliminated, r.tie_break) for r in result.rounds] == [
        (D, "last_listed"),
        (C, None),
        (None, None),
    ]
    assert result.rounds[-1].counts == (3, 4, 0, 0)
    assert result.winner == B


def test_exhausted_ballots_leave_the_count_and_the_majority_is_of_those_still_counting() -> None:
    """
    | ballots | × |
    |---------|---|
    | A       | 4 |
    | B       | 3 |
    | C       | 2 |

    Round 1: A 4, B 3, C 2 of 9; 4 is not above 4.5; C eliminated: its 2 ballots exhausted.
    Round 2: A 4, B 3 of 7 still counting, 2 exhausted; 4 > 3.5, A wins with 4 of 9 ballots.
    """
    result = instant_runoff(3, ballots((4, [A]), (3, [B]), (2, [C])))
    assert [r.exhausted for r in result.rounds] == [0, 2]
    assert result.rounds[-1].active == 7
    assert result.winner == A


def test_a_final_tie_of_two_has_no_winner() -> None:
    """
    | ballots | × |
    |---------|---|
    | A       | 2 |
    | B       | 2 |
    | C > A   | 1 |
    | D > B   | 1 |

    Round 1: A 2, B 2, C 1, D 1 of 6; C and D tie, no earlier round: D goes, to B.
    Round 2: A 2, B 3, C 1 of 6; C goes, to A.
    Round 3: A 3, B 3 of 6: two left with equal votes; no winner, the tie is reported.
    """
    result = instant_runoff(4, ballots((2, [A]), (2, [B]), (1, [C, A]), (1, [D, B])))
    assert result.rounds[-1] == Round((3, 3, 0, 0), (A, B), 0)
    assert result.winner is None
    assert result.tied == (A, B)


def test_no_ballot_no_round_no_winner() -> None:
    """No ballot, or a poll without options: nothing to count."""
    assert instant_runoff(3, []) == Runoff(options=3, ballots=0, rounds=(), winner=None)
    assert instant_runoff(0, [[0], [1]]) == Runoff(options=0, ballots=2, rounds=(), winner=None)


def test_only_blank_ballots_give_one_round_all_exhausted() -> None:
    """Three ballots with no valid preference: one round, 0 votes each, 3 exhausted."""
    result = instant_runoff(2, [[], [7], [-1]])
    assert result.rounds == (Round((0, 0), (A, B), 3),)
    assert result.winner is None
    assert result.tied == ()


def test_a_ballot_ranking_one_option_counts_until_that_option_goes() -> None:
    """
    | ballots | × |
    |---------|---|
    | B       | 1 |

    One ballot for B alone among three options: round 1, B 1 of 1, B wins. Then with
    A 2, B 1, C 2 (every ballot one option): B eliminated, its ballot exhausted;
    A 2, C 2 left: a tie.
    """
    assert instant_runoff(3, [[B]]).winner == B
    result = instant_runoff(3, ballots((2, [A]), (1, [B]), (2, [C])))
    assert result.rounds[-1] == Round((2, 0, 2), (A, C), 1)
    assert result.tied == (A, C)


def test_repeated_and_out_of_range_preferences_are_ignored() -> None:
    """
    | ballot as cast  | read as | × |
    |-----------------|---------|---|
    | A               | A       | 2 |
    | B               | B       | 3 |
    | C > C > B       | C > B   | 1 |
    | -1 > 3 > A      | A       | 1 |

    -1 is not "the last option" and 3 does not exist (3 options): that ballot is for A.
    Round 1: A 3, B 3, C 1 of 7; C eliminated, its ballot goes to B (its first mention of C
             was used, the repeat is not a second chance for C).
    Round 2: A 3, B 4 of 7; B wins.
    """
    cast = ballots((2, [A]), (3, [B]), (1, [C, C, B]), (1, [-1, 3, A]))
    result = instant_runoff(3, cast)
    assert [r.counts for r in result.rounds] == [(3, 3, 1), (3, 4, 0)]
    assert result.winner == B


def test_forged_values_in_a_ranking_never_crash_the_tally() -> None:
    """Booleans, huge numbers and other junk from a forged or stale ballot are skipped."""
    junk: list[list[int]] = [[True, 2**70, -(2**70), A], [False], [None, "B", 1.0, B]]  # type: ignore[list-item]
    result = instant_runoff(2, junk)
    assert result.rounds == (Round((1, 1), (A, B), 1),)
    assert result.tied == (A, B)


# -- instant runoff: properties -------------------------------------------------------------


@st.composite
def runoff_polls(draw: st.DrawFn) -> tuple[int, list[list[int]]]:
    """A number of options and rankings, with some junk indexes (out of range, repeated)."""
    options = draw(st.integers(min_value=0, max_value=6))
    index = st.integers(min_value=-2, max_value=options + 1)
    rankings = draw(st.lists(st.lists(index, max_size=options + 2), max_size=30))
    return options, rankings


@PROPERTIES
@given(runoff_polls())
def test_the_winner_has_a_majority_of_the_ballots_still_counting_in_the_last_round(
    poll: tuple[int, list[list[int]]],
) -> None:
    """The winner, if any, has more than half of the non-exhausted ballots of the last round."""
    result = instant_runoff(*poll)
    if result.winner is not None:
        last = result.rounds[-1]
        assert 2 * last.counts[result.winner] > last.active
        assert result.tied == ()
    else:
        assert not result.rounds or result.rounds[-1].active == 0 or len(result.tied) == 2


@PROPERTIES
@given(runoff_polls())
def test_rounds_are_consistent(poll: tuple[int, list[list[int]]]) -> None:
    """At most one round per option; every ballot counts or is exhausted; one goes per round."""
    options, rankings = poll
    result = instant_runoff(options, rankings)
    assert len(result.rounds) <= options
    if options and rankings:
        assert result.rounds
    previous_exhausted = 0
    for number, round_ in enumerate(result.rounds):
        assert round_.active + round_.exhausted == len(rankings)
        assert round_.exhausted >= previous_exhausted
        previous_exhausted = round_.exhausted
        assert all(
            count == 0 for i, count in enumerate(round_.counts) if i not in round_.continuing
        )
        last = number == len(result.rounds) - 1
        assert (round_.eliminated is None) == last
        if round_.eliminated is not None:
            fewest = min(round_.counts[i] for i in round_.continuing)
            assert round_.counts[round_.eliminated] == fewest
            following = result.rounds[number + 1].continuing
            assert set(round_.continuing) - set(following) == {round_.eliminated}


@PROPERTIES
@given(runoff_polls(), st.randoms(use_true_random=False))
def test_the_order_of_the_ballots_does_not_change_the_result(
    poll: tuple[int, list[list[int]]], random: Random
) -> None:
    """Shuffling the ballots gives the same rounds and winner."""
    options, rankings = poll
    shuffled = list(rankings)
    random.shuffle(shuffled)
    assert instant_runoff(options, shuffled) == instant_runoff(options, rankings)


@PROPERTIES
@given(runoff_polls())
def test_a_majority_of_first_preferences_wins_in_the_first_round(
    poll: tuple[int, list[list[int]]],
) -> None:
    """Whoever is first on more than half of all valid ballots wins at once."""
    options, rankings = poll
    firsts = count_choices(options, [[r[0]] for r in _cleaned(options, rankings) if r])
    counting = sum(firsts)
    result = instant_runoff(options, rankings)
    for option, count in enumerate(firsts):
        if 2 * count > counting:
            assert result.winner == option
            assert len(result.rounds) == 1


def _cleaned(options: int, rankings: list[list[int]]) -> list[list[int]]:
    """Rankings as the tally reads them, computed independently of the code under test."""
    out = []
    for ranking in rankings:
        kept: list[int] = []
        for i in ranking:
            if 0 <= i < options and i not in kept:
                kept.append(i)
        out.append(kept)
    return out


# -- single, multiple, yes / no / abstain ---------------------------------------------------


def test_count_choices_by_hand() -> None:
    """
    Yes / no / abstain (3 options), and a multiple choice over 4 options with at most 2:

    | ballot      | counts as        |
    |-------------|------------------|
    | [0]         | yes              |
    | [0]         | yes              |
    | [1]         | no               |
    | [2, 2]      | abstain, once    |
    | [5]         | nothing (forged) |
    | [-1]        | nothing (forged) |
    | []          | nothing          |

    yes 2, no 1, abstain 1.
    """
    assert count_choices(3, [[0], [0], [1], [2, 2], [5], [-1], []]) == [2, 1, 1]
    # With at most 2: [0, 1, 2] is set aside whole, [3, 3, 1] is read as [3, 1].
    multiple = [[0, 1], [1], [0, 1, 2], [3, 3, 1]]
    assert count_choices(4, multiple, max_choices=2) == [1, 3, 0, 1]
    assert count_choices(4, multiple) == [2, 4, 1, 1]
    assert count_choices(0, multiple) == []


@st.composite
def choice_polls(draw: st.DrawFn) -> tuple[int, list[list[int]]]:
    """Options and ballots of chosen indexes, some out of range or repeated."""
    options = draw(st.integers(min_value=0, max_value=8))
    index = st.integers(min_value=-3, max_value=options + 3)
    return options, draw(st.lists(st.lists(index, max_size=6), max_size=40))


@PROPERTIES
@given(choice_polls(), st.randoms(use_true_random=False))
def test_count_choices_counts_each_valid_choice_once_whatever_the_order(
    poll: tuple[int, list[list[int]]], random: Random
) -> None:
    """Total = distinct valid choices; no option above the number of ballots; order-free."""
    options, cast = poll
    counts = count_choices(options, cast)
    assert len(counts) == options
    assert sum(counts) == sum(len(r) for r in _cleaned(options, cast))
    assert all(0 <= count <= len(cast) for count in counts)
    shuffled = list(cast)
    random.shuffle(shuffled)
    assert count_choices(options, shuffled) == counts
    single = count_choices(options, cast, max_choices=1)
    assert sum(single) == sum(1 for r in _cleaned(options, cast) if len(r) == 1)


# -- date finding ---------------------------------------------------------------------------


def test_date_finding_by_hand() -> None:
    """
    | ballot                  | slot 0 | slot 1 | slot 2 |
    |-------------------------|--------|--------|--------|
    | yes, maybe, no          | yes    | maybe  | no     |
    | yes, no, yes            | yes    | no     | yes    |
    | maybe, yes, yes         | maybe  | yes    | yes    |
    | oui, yes, no            | —      | yes    | no     |
    | yes, yes (2 answers)    | —      | —      | —      |

    slot 0: 2 yes, 1 maybe, 0 no · slot 1: 2 yes, 1 maybe, 1 no · slot 2: 2 yes, 0 maybe, 2 no.
    Most yes: all three (2); then most maybe: slots 0 and 1 (1) are the best.
    """
    tally = date_finding(
        3,
        [
            ["yes", "maybe", "no"],
            ["yes", "no", "yes"],
            ["maybe", "yes", "yes"],
            ["oui", "yes", "no"],
            ["yes", "yes"],
        ],
    )
    assert tally == [
        SlotTally(0, yes=2, maybe=1, no=0, best=True),
        SlotTally(1, yes=2, maybe=1, no=1, best=True),
        SlotTally(2, yes=2, maybe=0, no=2, best=False),
    ]


def test_date_finding_has_no_best_slot_when_nobody_can_come() -> None:
    """Only "no" answers, or no ballot at all: no slot is marked best."""
    assert not any(s.best for s in date_finding(2, [["no", "no"], ["no", "no"]]))
    assert date_finding(2, []) == [SlotTally(0, 0, 0, 0), SlotTally(1, 0, 0, 0)]
    assert date_finding(0, [["yes"]]) == []


ANSWERS = st.sampled_from(["yes", "maybe", "no", "oui", ""])


@PROPERTIES
@given(
    st.integers(min_value=0, max_value=5).flatmap(
        lambda slots: st.tuples(
            st.just(slots),
            st.lists(
                st.lists(ANSWERS, min_size=max(slots - 1, 0), max_size=slots + 1), max_size=30
            ),
        )
    )
)
def test_date_finding_properties(poll: tuple[int, list[list[str]]]) -> None:
    """Answers per slot never exceed the well-formed ballots; best = most yes, then maybe."""
    slots, cast = poll
    tally = date_finding(slots, cast)
    well_formed = [b for b in cast if len(b) == slots]
    assert [s.slot for s in tally] == list(range(slots))
    for s in tally:
        answers = [b[s.slot] for b in well_formed]
        assert (s.yes, s.maybe, s.no) == (
            answers.count("yes"),
            answers.count("maybe"),
            answers.count("no"),
        )
    top = max(((s.yes, s.maybe) for s in tally), default=(0, 0))
    assert [s.best for s in tally] == [top != (0, 0) and (s.yes, s.maybe) == top for s in tally]


# -- text bars ------------------------------------------------------------------------------


def test_bars_by_hand() -> None:
    """Yes 4, no 5, abstain 1 of 10: 40 %, 50 %, 10 % and 4, 5, 1 cells of 10."""
    assert bars(["Oui", "Non", "Abstention"], [4, 5, 1]) == (
        "Oui\n▓▓▓▓░░░░░░ 40\u00a0% (4)\n"
        "Non\n▓▓▓▓▓░░░░░ 50\u00a0% (5)\n"
        "Abstention\n▓░░░░░░░░░ 10\u00a0% (1)"
    )


def test_bars_with_thirds_still_sum_to_100() -> None:
    """1, 1, 1: 33.3 % each; the largest-remainder rule gives the spare point to the first."""
    assert percentages([1, 1, 1]) == [34, 33, 33]
    assert bars(["a", "b", "c"], [1, 1, 1], width=3).splitlines()[1::2] == [
        "▓░░ 34\u00a0% (1)",
        "▓░░ 33\u00a0% (1)",
        "▓░░ 33\u00a0% (1)",
    ]


def test_bars_with_no_vote_show_empty_bars_and_no_division_by_zero() -> None:
    """Nothing counted yet: every bar empty, 0 %."""
    assert bars(["Oui", "Non"], [0, 0], width=4) == "Oui\n░░░░ 0\u00a0% (0)\nNon\n░░░░ 0\u00a0% (0)"
    assert bars([], []) == ""


def test_bars_keep_one_line_per_label() -> None:
    """A label with line breaks is put back on one line."""
    assert bars(["Place\ndu  marché"], [1]).splitlines()[0] == "Place du marché"


def test_bars_refuse_mismatched_input() -> None:
    """Programming errors, not voters' input: they raise."""
    for call in (
        lambda: bars(["a"], [1, 2]),
        lambda: bars(["a"], [-1]),
        lambda: bars(["a"], [1], width=0),
    ):
        try:
            call()
        except ValueError:
            continue
        raise AssertionError("expected ValueError")


@PROPERTIES
@given(
    st.lists(st.integers(min_value=0, max_value=10_000), max_size=12),
    st.integers(min_value=1, max_value=30),
)
def test_bars_properties(counts: list[int], width: int) -> None:
    """Percentages sum to 100 (or are all 0), each within 1 of the exact share; bars fit."""
    shares = percentages(counts)
    total = sum(counts)
    assert sum(shares) == (100 if total else 0)
    for count, share in zip(counts, shares, strict=True):
        exact = 100 * count / total if total else 0
        assert abs(share - exact) < 1
    lines = bars([f"option {i}" for i in range(len(counts))], counts, width).splitlines()
    assert len(lines) == 2 * len(counts)
    for line, count, share in zip(lines[1::2], counts, shares, strict=True):
        cells = line.split(" ")[0]
        assert len(cells) == width and set(cells) <= {"▓", "░"}
        assert line.endswith(f" {share}\u00a0% ({count})")

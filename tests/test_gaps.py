"""Trade-id continuity (connectors.gaps): duplicates, late trades, gaps made final, resets."""

from __future__ import annotations

import random

import pytest
from hypothesis import given
from hypothesis import strategies as st

from connectors.gaps import REORDER_WINDOW, Gap, GapTracker, Reset
from engine.records import SymbolBatch, Trade, by_symbol


def trades(*pairs: tuple[str, int]) -> list[Trade]:
    """Trades of exchange ``b``; ``ts_recv`` is the id plus 10**12, to tell trades apart."""
    return [Trade("b", sym, sym, str(i), "1", "1", "buy", 0, 10**12 + i) for sym, i in pairs]


def run(ids: list[int], symbol: str = "X") -> list[Trade]:
    return trades(*((symbol, i) for i in ids))


def stored_ids(kept: list[Trade]) -> list[int]:
    return [int(t.trade_id) for t in kept]


def test_an_id_late_by_one_is_stored_not_a_duplicate_and_leaves_no_gap() -> None:
    """ids 1..10, 12, 11, 13..20: all 20 stored, no gap (the old tracker stored 19 and
    reported a false gap {11})."""
    g = GapTracker()
    ids = [*range(1, 11), 12, 11, *range(13, 21)]
    kept = g.filter("b", run(ids))
    g.finish()
    assert stored_ids(kept) == ids
    assert (g.duplicates, g.out_of_order) == (0, 1)
    assert g.gaps == {} and g.resets == {}


def test_ids_restarting_lower_after_a_reconnect_are_a_reset_and_all_stored() -> None:
    """ids 1000..1050 then 1..50: 101 trades stored and one reset recorded (the old tracker
    dropped the second range as duplicates)."""
    g = GapTracker()
    first = g.filter("b", run(list(range(1000, 1051))))
    second = g.filter("b", run(list(range(1, 51))))
    g.finish()
    assert len(first) + len(second) == 101
    assert g.resets == {"b:X": [Reset(from_id=1050, to_id=1, ts_recv=10**12 + 1)]}
    assert g.reset_count == 1
    assert (g.duplicates, g.out_of_order, g.gaps) == (0, 0, {})


def test_ids_seen_before_are_dropped_as_duplicates() -> None:
    g = GapTracker()
    batch = run([10, 11, 12, 13])
    assert g.filter("b", batch) is batch  # nothing dropped: the same list back
    kept = g.filter("b", run([13, 11, 10, 14, 14, 12]))  # a reconnect overlap, then repeats
    assert stored_ids(kept) == [14]
    assert g.duplicates == 5
    g.filter("b", run([20]))
    assert stored_ids(g.filter("b", run([17, 17]))) == [17]  # filled once, then a duplicate
    assert (g.duplicates, g.out_of_order) == (6, 1)


def test_a_gap_filled_late_shrinks_and_splits() -> None:
    g = GapTracker()
    g.filter("b", run([10, 16]))  # pending 11..15
    assert g.pending_gaps == {"b:X": [Gap(11, 15)]} and g.gaps == {}
    assert stored_ids(g.filter("b", run([13, 11, 15]))) == [13, 11, 15]
    assert g.pending_gaps == {"b:X": [Gap(12, 12), Gap(14, 14)]}
    g.filter("b", run([12]))
    assert g.pending_gaps == {"b:X": [Gap(14, 14)]}
    g.finish()
    assert g.gaps == {"b:X": [Gap(14, 14)]} and g.pending_gaps == {}
    assert g.out_of_order == 4 and g.gap_count == 1 and g.missing_total == 1


def test_a_gap_is_final_once_the_window_has_passed_it() -> None:
    g = GapTracker(window=10)
    g.filter("b", run([1, 2, 6]))  # pending 3..5
    g.filter("b", run(list(range(7, 16))))  # high 15: 5 is not below 15 - 10
    assert g.gaps == {} and g.pending_gaps == {"b:X": [Gap(3, 5)]}
    g.filter("b", run([16]))  # high 16: every id of 3..5 is below 16 - 10
    assert g.gaps == {"b:X": [Gap(3, 5)]} and g.pending_gaps == {}
    assert g.gap_count == 1


def test_the_default_window_is_a_thousand_ids() -> None:
    assert REORDER_WINDOW == 1_000
    g = GapTracker()
    g.filter("b", run([1, 3, *range(4, 1003)]))  # pending {2}, high 1002
    assert g.pending_gaps == {"b:X": [Gap(2, 2)]}
    g.filter("b", run([1003]))
    assert g.gaps == {"b:X": [Gap(2, 2)]}


@pytest.mark.parametrize(
    ("late", "kind"),
    [(90, "duplicate"), (89, "reset"), (100, "duplicate")],
    ids=["window-edge-is-inside", "one-beyond-is-a-reset", "the-highest-again"],
)
def test_window_edges(late: int, kind: str) -> None:
    """With a window of 10 and ids 1..100 seen: 90 (= 100 - 10) is inside the window, a
    duplicate; 89 is beyond it, a reset."""
    g = GapTracker(window=10)
    g.filter("b", run(list(range(1, 101))))
    kept = g.filter("b", run([late]))
    if kind == "duplicate":
        assert kept == [] and g.duplicates == 1 and g.resets == {}
    else:
        assert stored_ids(kept) == [late]
        assert g.resets == {"b:X": [Reset(100, late, 10**12 + late)]}


def test_a_late_id_of_a_pending_gap_partly_beyond_the_window_still_fills_it() -> None:
    g = GapTracker(window=10)
    g.filter("b", run([1, 30, *range(31, 36)]))  # pending 2..29, high 35: 2..24 beyond
    assert stored_ids(g.filter("b", run([3]))) == [3]
    assert g.resets == {} and g.pending_gaps == {"b:X": [Gap(4, 29)]}
    assert g.gaps == {"b:X": [Gap(2, 2)]}  # split off beyond the window: final at once


def test_a_trade_older_than_the_first_one_seen_is_kept_within_the_window() -> None:
    g = GapTracker()
    assert stored_ids(g.filter("b", run([12, 13, 11, 8, 14]))) == [12, 13, 11, 8, 14]
    assert g.out_of_order == 2 and g.pending_gaps == {"b:X": [Gap(9, 10)]}
    assert stored_ids(g.filter("b", run([9, 12]))) == [9]
    g.finish()
    assert g.gaps == {"b:X": [Gap(10, 10)]} and g.duplicates == 1


def test_a_reset_makes_the_old_sequence_gaps_final_and_restarts_the_sequence() -> None:
    g = GapTracker(window=10)
    g.filter("b", run([100, 103, 104]))  # pending 101..102
    g.filter("b", run([5, 6, 8]))  # reset to 5, then pending 7
    assert g.gaps == {"b:X": [Gap(101, 102)]}
    assert g.pending_gaps == {"b:X": [Gap(7, 7)]}
    assert g.filter("b", run([6])) == [] and g.duplicates == 1  # seen in the new sequence
    g.finish()
    g.finish()  # idempotent
    assert g.gaps == {"b:X": [Gap(101, 102), Gap(7, 7)]}
    assert g.resets == {"b:X": [Reset(104, 5, 10**12 + 5)]}


def test_symbols_and_exchanges_are_independent() -> None:
    g = GapTracker()
    g.filter("b", trades(("X", 5), ("Y", 500)))
    other = [Trade("c", "X", "X", "5", "1", "1", "buy", 0, 0)]
    assert g.filter("c", other) is other  # same symbol, another exchange: not a duplicate
    kept = g.filter("b", trades(("Y", 501), ("X", 7), ("X", 6), ("Y", 501)))
    assert [(t.symbol, t.trade_id) for t in kept] == [("Y", "501"), ("X", "7"), ("X", "6")]
    g.finish()
    assert g.gaps == {} and g.duplicates == 1 and g.out_of_order == 1


def test_the_window_must_be_positive() -> None:
    with pytest.raises(ValueError, match="at least one id"):
        GapTracker(window=0)


# -- properties ------------------------------------------------------------------------------


def shuffled_within(ids: list[int], block: int, rng: random.Random) -> list[int]:
    """``ids`` cut into blocks of ``block`` consecutive ids, each block shuffled: every id
    arrives at most ``block - 1`` ids below the highest seen."""
    out: list[int] = []
    for start in range(0, len(ids), block):
        chunk = ids[start : start + block]
        rng.shuffle(chunk)
        out += chunk
    return out


def feed(g: GapTracker, ids: list[int], batch: int) -> list[int]:
    kept: list[int] = []
    for start in range(0, len(ids), batch):
        kept += stored_ids(g.filter("b", run(ids[start : start + batch])))
    return kept


@given(
    first=st.integers(min_value=0, max_value=10**12),
    count=st.integers(min_value=1, max_value=300),
    window=st.integers(min_value=1, max_value=50),
    batch=st.integers(min_value=1, max_value=40),
    seed=st.integers(min_value=0, max_value=2**32),
)
def test_any_permutation_within_the_window_stores_every_id_once_without_gap(
    first: int, count: int, window: int, batch: int, seed: int
) -> None:
    ids = shuffled_within(list(range(first, first + count)), window, random.Random(seed))
    g = GapTracker(window=window)
    kept = feed(g, ids, batch)
    g.finish()
    assert kept == ids
    assert (g.gaps, g.resets, g.duplicates) == ({}, {}, 0)


@given(
    count=st.integers(min_value=1, max_value=300),
    window=st.integers(min_value=1, max_value=50),
    batch=st.integers(min_value=1, max_value=40),
    seed=st.integers(min_value=0, max_value=2**32),
)
def test_ids_seen_again_within_the_window_are_always_dropped(
    count: int, window: int, batch: int, seed: int
) -> None:
    rng = random.Random(seed)
    ids = shuffled_within(list(range(1, count + 1)), window, rng)
    arrivals: list[int] = []
    high = 0
    for index, seq in enumerate(ids):
        arrivals.append(seq)
        high = max(high, seq)
        seen = [i for i in ids[: index + 1] if i >= high - window]
        arrivals += rng.sample(seen, k=min(len(seen), rng.randrange(3)))
    g = GapTracker(window=window)
    kept = feed(g, arrivals, batch)
    g.finish()
    assert kept == ids
    assert g.duplicates == len(arrivals) - len(ids)
    assert (g.gaps, g.resets) == ({}, {})


@given(
    st.lists(st.integers(min_value=0, max_value=500), min_size=1, max_size=200),
    st.integers(min_value=1, max_value=50),
)
def test_stored_ids_and_final_gaps_cover_the_range_exactly(ids: list[int], batch: int) -> None:
    """Any ids closer together than the window: each id stored once, and the stored ids and
    the gaps made final by ``finish`` tile the range from the lowest to the highest."""
    g = GapTracker()
    accepted = feed(g, ids, batch)
    g.finish()
    assert sorted(accepted) == sorted(set(ids))
    covered = set(accepted)
    for gap in g.gaps.get("b:X", []):
        span = set(range(gap.from_id, gap.to_id + 1))
        assert not span & covered
        covered |= span
    assert covered == set(range(min(ids), max(ids) + 1))
    assert g.duplicates == len(ids) - len(accepted) and g.resets == {}


@given(
    st.lists(
        st.tuples(st.sampled_from("XYZ"), st.integers(min_value=0, max_value=60)),
        min_size=1,
        max_size=200,
    ),
    st.integers(min_value=1, max_value=50),
    st.integers(min_value=1, max_value=20),
)
def test_one_batch_per_symbol_is_checked_exactly_as_the_mixed_batch(
    arrivals: list[tuple[str, int]], batch: int, window: int
) -> None:
    """The sessions hand the tracker one batch per symbol (engine.records.by_symbol), which
    takes its one-comparison path when the ids run on: per symbol, the same trades kept, and
    the same gaps, resets, duplicates and late trades, as the mixed batches they came from."""
    mixed, grouped = GapTracker(window=window), GapTracker(window=window)
    kept_mixed: list[Trade] = []
    kept_grouped: list[Trade] = []
    for start in range(0, len(arrivals), batch):
        chunk = trades(*arrivals[start : start + batch])
        kept_mixed += mixed.filter("b", chunk)
        for group in by_symbol(chunk):
            kept_grouped += grouped.filter("b", group)
    for g in (mixed, grouped):
        g.finish()
    for symbol in "XYZ":
        assert [t for t in kept_mixed if t.symbol == symbol] == [
            t for t in kept_grouped if t.symbol == symbol
        ]
    assert (mixed.gaps, mixed.resets, mixed.duplicates, mixed.out_of_order) == (
        grouped.gaps,
        grouped.resets,
        grouped.duplicates,
        grouped.out_of_order,
    )


def test_by_symbol_keeps_arrival_order_and_returns_one_symbols_batch_itself() -> None:
    batch = trades(("X", 1), ("Y", 1), ("X", 2), ("Z", 1), ("Y", 2))
    assert [[(t.symbol, t.trade_id) for t in g] for g in by_symbol(batch)] == [
        [("X", "1"), ("X", "2")],
        [("Y", "1"), ("Y", "2")],
        [("Z", "1")],
    ]
    only = run([1, 2, 3])
    assert by_symbol(only) == [only]
    assert all(type(group) is SymbolBatch for group in by_symbol(batch) + by_symbol(only))
    assert by_symbol([]) == []

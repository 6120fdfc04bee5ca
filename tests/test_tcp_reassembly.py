"""Sequence arithmetic modulo 2**32 and the out-of-order buffer, against simple models."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from slirpnet.core.reassembly import MAX_RUNS, Reassembly
from slirpnet.core.sequence import seq_add, seq_diff, seq_le, seq_lt

TOP = 0xFFFFFFFF


def test_comparisons_wrap() -> None:
    assert seq_diff(5, TOP) == 6
    assert seq_diff(TOP, 5) == -6
    assert seq_lt(TOP, 0) and not seq_lt(0, TOP)
    assert seq_le(7, 7) and not seq_lt(7, 7)
    assert seq_add(TOP, 1) == 0 and seq_add(0, -1) == TOP
    assert seq_diff(2**31 - 1, 0) == 2**31 - 1  # the farthest "after"
    assert seq_diff(2**31, 0) == -(2**31)  # half way round reads as before


@given(st.integers(0, TOP), st.integers(-(2**31) + 1, 2**31 - 1))
def test_diff_undoes_add(base: int, distance: int) -> None:
    # (Exactly half way round, each number reads as before the other: never compared.)
    assert seq_diff(seq_add(base, distance), base) == distance
    assert seq_lt(base, seq_add(base, distance)) == (distance > 0)


def test_runs_join_and_pop_in_order() -> None:
    r = Reassembly()
    base = TOP - 5  # the buffer's data wraps past 2**32
    r.add(seq_add(base, 10), b"KLM", base)
    r.add(seq_add(base, 4), b"EFG", base)
    r.add(seq_add(base, 7), b"HIJ", base)  # touches both: one run
    assert r.blocks(base) == [(4, 13)] and r.held == 9
    assert r.pop(base) == []  # a gap before it
    assert r.pop(seq_add(base, 4)) == [b"EFG", b"HIJ", b"KLM"]
    assert len(r) == 0 and r.held == 0


def test_held_bytes_win_over_a_retransmission() -> None:
    r = Reassembly()
    r.add(10, b"abcdef", 0)
    r.add(8, b"XXabcdefYY", 0)  # overlaps at both ends
    assert r.blocks(0) == [(8, 18)] and r.held == 10
    assert b"".join(r.pop(8)) == b"XXabcdefYY"


def test_pop_cuts_what_base_already_passed() -> None:
    r = Reassembly()
    r.add(10, b"0123456789", 0)
    r.add(30, b"xyz", 0)
    assert r.pop(14) == [b"456789"]
    assert r.pop(40) == []  # passed the second run entirely: dropped
    assert len(r) == 0 and r.held == 0


def test_bookkeeping_is_bounded() -> None:
    r = Reassembly()
    for i in range(1, 3 * MAX_RUNS):
        r.add(2 * i, b"s", 0)
    assert len(r) == MAX_RUNS and r.held == MAX_RUNS
    r.add(3, b"t", 0)  # joins two held runs: still room for it
    assert len(r) == MAX_RUNS - 1


@given(
    st.integers(0, TOP),
    st.lists(st.tuples(st.integers(1, 300), st.integers(1, 40)), max_size=40),
)
def test_matches_a_byte_map(base: int, pieces: list[tuple[int, int]]) -> None:
    """Whatever the order and overlap, what comes out is the stream's bytes."""
    stream = bytes(i % 251 for i in range(400))
    r = Reassembly()
    held: set[int] = set()
    for offset, size in pieces:
        r.add(seq_add(base, offset), stream[offset : offset + size], base)
        held |= set(range(offset, min(offset + size, len(stream))))
    if len(r) < MAX_RUNS:  # nothing was turned away
        assert r.held == len(held)
    first = min(held, default=1)
    out = b"".join(r.pop(seq_add(base, first)))
    run_end = first
    while run_end in held:
        run_end += 1
    assert out == stream[first:run_end]

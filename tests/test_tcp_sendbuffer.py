"""The send buffer of chunks against a plain bytearray doing the same."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from slirpnet.core.sendbuffer import MERGE, SendBuffer

SIZES = st.sampled_from([1, 7, 100, 1460, MERGE - 1, MERGE, MERGE + 1, 3 * MERGE])
OPS = st.lists(
    st.one_of(
        st.tuples(st.just("append"), SIZES),
        st.tuples(st.just("drop"), st.integers(0, 4 * MERGE)),
        st.tuples(st.just("get"), st.tuples(st.integers(0, 4 * MERGE), SIZES)),
        st.tuples(st.just("clear"), st.just(0)),
    ),
    max_size=60,
)


@given(OPS)
def test_behaves_as_a_bytearray(ops: list[tuple[str, object]]) -> None:
    buffer, model = SendBuffer(), bytearray()
    counter = 0
    held = []  # segments taken earlier: still intact, and never in the way of an append
    for op, arg in ops:
        if op == "append":
            assert isinstance(arg, int)
            data = bytes((counter + n) % 251 for n in range(arg))
            counter += arg
            buffer.append(data)
            model += data
        elif op == "drop":
            assert isinstance(arg, int)
            count = min(arg, len(model))
            buffer.drop(count)
            del model[:count]
        elif op == "get":
            assert isinstance(arg, tuple)
            offset, size = arg
            offset = min(offset, len(model))
            size = min(size, len(model) - offset)
            segment = buffer.get(offset, size)
            assert bytes(segment) == model[offset : offset + size]
            held.append((segment, bytes(segment)))
        else:
            buffer.clear()
            model.clear()
        assert len(buffer) == len(model)
    for segment, was in held:
        assert bytes(segment) == was


def test_small_reads_are_merged_and_large_ones_kept_as_they_came() -> None:
    buffer = SendBuffer()
    for _ in range(2 * MERGE):
        buffer.append(b"x")  # a trickle: two chunks, not 131,072
    big = bytes(range(256)) * 1024
    buffer.append(big)
    assert len(buffer._chunks) == 3
    segment = buffer.get(2 * MERGE, 1460)
    assert isinstance(segment, memoryview) and segment.obj is big  # no copy
    buffer.drop(2 * MERGE + 10)
    assert len(buffer._chunks) == 1 and bytes(buffer.get(0, 5)) == big[10:15]

"""The lossy relay's fate-deciding, with no sockets: rates, reproducibility, order."""

from __future__ import annotations

import pytest
import trio
import trio.testing

from integration.linux.relay import (
    HOLD_SECONDS,
    MAX_HOLD_FRAMES,
    Faults,
    StreamLink,
    directions,
    pump,
)
from slirpnet.framing import QEMU_STREAM

FRAMES = [i.to_bytes(4, "big") * 4 for i in range(20000)]


def run(faults: Faults, frames: list[bytes]) -> tuple[list[bytes], list[bytes]]:
    """Each direction's output for ``frames`` arriving 1 ms apart, then the link going quiet."""
    outputs = []
    for direction in directions(faults):
        out: list[bytes] = []
        now = 0.0
        for frame in frames:
            now += 0.001
            out += direction.due(now)
            out += direction.push(frame, now)
        out += direction.due(now + HOLD_SECONDS)
        outputs.append(out)
    return outputs[0], outputs[1]


def test_the_rates_are_what_was_asked_and_every_frame_is_accounted_for() -> None:
    faults = Faults(loss=0.02, duplicate=0.01, reorder=0.05, seed=1)
    direction = directions(faults)[0]
    out: list[bytes] = []
    for frame in FRAMES:
        out += direction.push(frame, 0.0)
    out += direction.due(HOLD_SECONDS)
    counters = direction.counters
    n = len(FRAMES)
    # Binomial with n = 20000: these bounds are more than 5 standard deviations wide.
    assert abs(counters.dropped - 0.02 * n) < 5 * (0.02 * n) ** 0.5
    assert abs(counters.duplicated - 0.01 * n) < 5 * (0.01 * n) ** 0.5
    assert abs(counters.reordered - 0.05 * n) < 5 * (0.05 * n) ** 0.5
    assert counters.passed == len(out) == n - counters.dropped + counters.duplicated
    assert len(set(out)) == n - counters.dropped


def test_the_same_seed_gives_the_same_link_and_directions_differ() -> None:
    faults = Faults(loss=0.05, duplicate=0.05, reorder=0.1, seed=7)
    first = run(faults, FRAMES[:2000])
    assert run(faults, FRAMES[:2000]) == first
    assert first[0] != first[1]
    assert run(Faults(loss=0.05, duplicate=0.05, reorder=0.1, seed=8), FRAMES[:2000]) != first


def test_reordering_only_moves_frames_a_few_places() -> None:
    faults = Faults(reorder=0.05, seed=3)
    out, _ = run(faults, FRAMES[:3000])
    assert sorted(out) == FRAMES[:3000]  # nothing lost, nothing doubled
    late = [out.index(frame) - i for i, frame in enumerate(FRAMES[:3000])]
    # A held frame waits for one to three frames that pass; frames held meanwhile wait too.
    assert 1 <= max(late) <= 2 * MAX_HOLD_FRAMES
    assert 100 < sum(lag > 0 for lag in late) < 300


def test_a_perfect_link_changes_nothing() -> None:
    out, back = run(Faults(), FRAMES[:1000])
    assert out == back == FRAMES[:1000]


def test_rates_over_one_are_refused() -> None:
    with pytest.raises(ValueError, match="sum to at most 1"):
        Faults(loss=0.5, duplicate=0.3, reorder=0.3)


async def test_a_held_frame_goes_when_the_link_is_quiet() -> None:
    """The pump lets a held frame go after HOLD_SECONDS even when no frame follows it."""
    to_relay, from_test = trio.testing.memory_stream_pair()
    to_sink, from_relay = trio.testing.memory_stream_pair()
    direction = directions(Faults(reorder=1.0, seed=0))[0]
    async with trio.open_nursery() as nursery:
        nursery.start_soon(pump, StreamLink(from_test), StreamLink(to_sink), direction)
        await to_relay.send_all(QEMU_STREAM.encode(FRAMES[0]))
        started = trio.current_time()
        with trio.fail_after(5):
            data = await from_relay.receive_some()
        assert trio.current_time() - started >= HOLD_SECONDS
        assert QEMU_STREAM.decoder().feed(data) == [FRAMES[0]]
        nursery.cancel_scope.cancel()

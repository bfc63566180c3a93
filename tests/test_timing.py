"""edgesqueeze.timing.interleaved_ms: the rotation, the pause and the untimed calls before each
runner's block, and the checks on its options. No latency is asserted."""

from __future__ import annotations

import time

import pytest

from edgesqueeze.timing import interleaved_ms


def test_rotation_discard_and_counts():
    calls = []
    runners = {k: (lambda k=k: calls.append(k)) for k in "abc"}
    times = interleaved_ms(runners, warmup=2, rounds=3, per_round=4, settle_s=0.0, discard=1)
    assert {k: len(v) for k, v in times.items()} == {"a": 12, "b": 12, "c": 12}
    assert all(t >= 0 for v in times.values() for t in v)
    assert calls[:6] == list("aabbcc")  # warm-up, runner by runner
    blocks = [calls[6 + i * 5:6 + (i + 1) * 5] for i in range(9)]  # 1 untimed + 4 timed calls each
    assert all(len(set(b)) == 1 for b in blocks)
    assert [b[0] for b in blocks] == list("abc" "bca" "cab")  # one runner later each round
    assert len(calls) == 6 + 9 * 5


def test_settle_pause_before_every_block():
    runners = {k: (lambda: None) for k in range(3)}
    t0 = time.perf_counter()
    interleaved_ms(runners, warmup=0, rounds=2, per_round=1, settle_s=0.02, discard=0)
    assert time.perf_counter() - t0 >= 6 * 0.02  # 3 runners x 2 rounds, one pause each


def test_timed_calls_exclude_the_pause_and_the_discarded_call():
    state = {"n": 0}

    def slow_first():  # the untimed call of each block is the slow one
        state["n"] += 1
        if state["n"] % 3 == 1:
            time.sleep(0.05)

    times = interleaved_ms({"x": slow_first}, warmup=0, rounds=3, per_round=2, settle_s=0.01, discard=1)
    assert len(times["x"]) == 6 and max(times["x"]) < 40.0


@pytest.mark.parametrize("kw", [dict(settle_s=-0.1), dict(discard=-1), dict(discard=1.5), dict(discard=True)])
def test_bad_options_are_refused(kw):
    with pytest.raises(ValueError, match="must be >= 0"):
        interleaved_ms({"a": lambda: None}, warmup=0, rounds=1, per_round=1, **kw)

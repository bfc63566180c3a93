"""Interleaved latency measurement: the main job's latency cost and the benchmark scripts.

Runners are timed in rounds whose order rotates, so every runner sees the same share of the
machine's background load: on a noisy 2-core machine, ratios measured this way, side by side,
are what can be trusted.
"""

from __future__ import annotations

import time
from typing import Callable, Hashable


def interleaved_ms(runners: dict[Hashable, Callable[[], object]], *, warmup: int, rounds: int,
                   per_round: int) -> dict[Hashable, list[float]]:
    """{key: [ms per call, ...]}: `warmup` untimed calls each, then `rounds` rounds of
    `per_round` timed calls per runner, starting one runner later each round."""
    for run in runners.values():
        for _ in range(warmup):
            run()
    keys = list(runners)
    times: dict[Hashable, list[float]] = {k: [] for k in keys}
    for r in range(rounds):
        for k in keys[r % len(keys):] + keys[:r % len(keys)]:
            run = runners[k]
            for _ in range(per_round):
                t0 = time.perf_counter()
                run()
                times[k].append((time.perf_counter() - t0) * 1000.0)
    return times

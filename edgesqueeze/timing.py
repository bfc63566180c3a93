"""Interleaved latency measurement: the main job's latency cost and the benchmark scripts.

Runners are timed in rounds whose order rotates, so every runner sees the same share of the
machine's background load: on a noisy 2-core machine, ratios measured this way, side by side,
are what can be trusted.

Each runner's block of calls starts after a pause (`settle_s`) and one untimed call (`discard`).
The reason is the runner before it: onnxruntime's intra-op thread pool keeps its worker threads
spinning after a run (session.intra_op.allow_spinning, on by default), so on 2 cores the next
runner shares the machine with a busy loop. Measured (AMD EPYC, 2 cores, the INT8 files of
SqueezeNet v1.0): a 2-thread onnxruntime session paced at 15 frames per second used 77 ms of CPU
per 67 ms frame, against 24 ms per run back to back, so its pool spins for more than 50 ms after
a run. Timed straight after 2-thread onnxruntime sessions, a 2-thread LiteRT file took 21.5 ms,
against 19.4 ms when those sessions were set to stop spinning and 19.5-19.6 ms with the 0.1 s
pause. The 2-thread ratio of two onnxruntime files (with and without range splitting) read
1.054-1.062 in three of four runs without the pause and 1.027 and 1.037 in two runs with it. The
untimed call pays for waking the runner's own sleeping threads, which a runner called back to
back does not.
"""

from __future__ import annotations

import time
from typing import Callable, Hashable

SETTLE_S = 0.1  # seconds: enough for the spinning measured after an onnxruntime run (module doc)
DISCARD = 1  # untimed calls after the pause: the runner's own threads wake up


def interleaved_ms(runners: dict[Hashable, Callable[[], object]], *, warmup: int, rounds: int,
                   per_round: int, settle_s: float = SETTLE_S, discard: int = DISCARD) -> dict[Hashable, list[float]]:
    """{key: [ms per call, ...]}: `warmup` untimed calls each, then `rounds` rounds of
    `per_round` timed calls per runner, starting one runner later each round. Before each
    runner's calls in a round: a pause of `settle_s` seconds and `discard` untimed calls
    (module doc: the previous runner's thread pool stops spinning, this one's wakes up)."""
    if not settle_s >= 0 or isinstance(discard, bool) or not isinstance(discard, int) or discard < 0:
        raise ValueError(f"settle_s={settle_s!r} and discard={discard!r} must be >= 0 (discard an int)")
    for run in runners.values():
        for _ in range(warmup):
            run()
    keys = list(runners)
    times: dict[Hashable, list[float]] = {k: [] for k in keys}
    for r in range(rounds):
        for k in keys[r % len(keys):] + keys[:r % len(keys)]:
            run = runners[k]
            if settle_s:
                time.sleep(settle_s)
            for _ in range(discard):
                run()
            for _ in range(per_round):
                t0 = time.perf_counter()
                run()
                times[k].append((time.perf_counter() - t0) * 1000.0)
    return times

"""The FP32 shadow: an FP32 model in one background worker thread compares its top-1 with the
INT8 top-1 of every N-th frame; rolling agreement over the last K comparisons.

Thread priority: POSIX makes the nice value per process, so `os.nice()` is not a portable way to
slow down one thread. Linux keeps it per thread: `os.setpriority(os.PRIO_PROCESS,
threading.get_native_id(), n)` called from a thread changes that thread only (measured here; on
Linux glibc's nice() does the same through setpriority(PRIO_PROCESS, 0), but that is the
non-POSIX behaviour a reader would not expect, so the thread id is passed explicitly). The
worker lowers itself by +10; where this fails (macOS, Windows) it runs at normal priority, and
on a live source it still never blocks the loop: work is handed over with a non-blocking put
into a 1-slot queue. Load the FP32 model with threads=1 so that its runtime computes in the
worker thread itself (threads it would start later inherit the lowered priority on Linux).

Rate (live sources): a lower priority only helps when a core is contended; on a 4-core Pi with
the INT8 model on all 4 cores the FP32 run (several times slower than INT8) would still take a
core's worth of memory bandwidth and cache whenever it runs. So the worker also caps its own
duty cycle: after a run of t seconds it rests t * (1 / max_load - 1) seconds (`--shadow-max-load`,
default 0.25: busy at most a quarter of one core on average, whatever the board's speed), and
frames handed over while it rests are skipped like frames handed over while it is busy.

Recorded footage read frame by frame has no real time to keep up with: there every N-th frame
is compared (the loop waits for the worker), so a clip is tracked completely.
"""

from __future__ import annotations

import logging
import os
import queue
import threading
import time
from collections import deque
from typing import Callable

import numpy as np

from ..errors import OptionError

log = logging.getLogger("edgesqueeze.camera")


def lower_thread_priority(increment: int) -> bool:
    """Raise the calling thread's nice value by `increment` (Linux: this thread only). False
    where the platform does not support per-thread priority this way."""
    if increment <= 0:
        return False
    try:
        tid = threading.get_native_id()
        cur = os.getpriority(os.PRIO_PROCESS, tid)
        os.setpriority(os.PRIO_PROCESS, tid, min(cur + increment, 19))
        return True
    except (AttributeError, OSError):
        return False


class ShadowTracker:
    """An FP32 model run on every `every`-th frame in one background worker thread; its top-1 is
    compared with the INT8 top-1 of the same frame, and the agreement is kept over the last
    `window` comparisons. Below `warn_below` percent (once `min_comparisons` exist) `warning`
    is set and logged once per episode.

    `submit` never blocks: the frame goes into a 1-slot queue, and is dropped (`skipped`) when
    the worker still has one waiting. With `max_load` (a fraction of one core; the camera
    command's default is 0.25, the library's None: no cap) a frame is taken only when the worker
    is idle and has rested after its last run long enough that it is busy at most `max_load` of
    the time; the frames refused while it rests are counted in `skipped` and `rate_limited`.
    `submit(..., wait=True)` (recorded footage read frame by frame) waits instead, so a clip of
    n frames gets exactly ceil(n / every) comparisons."""

    def __init__(self, classifier, *, every: int = 10, window: int = 50, warn_below: float = 90.0,
                 min_comparisons: int = 10, nice: int = 10, max_load: float | None = None,
                 clock: Callable[[], float] = time.perf_counter, start: bool = True):
        if every < 1:
            raise OptionError(f"--shadow-every {every}: must be at least 1")
        if max_load is not None and not (isinstance(max_load, (int, float)) and 0.0 < max_load <= 1.0):
            raise OptionError(f"--shadow-max-load {max_load}: a fraction of one core, above 0 and at most 1 "
                              "(0.25: the FP32 worker is busy at most a quarter of the time)")
        if window < 1:
            raise OptionError(f"--window {window}: must be at least 1")
        if not 0.0 <= warn_below <= 100.0:
            raise OptionError(f"--warn-below {warn_below}: a percentage, 0 to 100")
        self.classifier = classifier
        self.every, self.window, self.warn_below = every, window, warn_below
        self.min_comparisons, self.nice = min_comparisons, nice
        self.max_load = None if max_load is None else float(max_load)
        self._clock = clock
        self._rest_until = float("-inf")  # the worker takes no frame before this (clock time)
        self.rate_limited = 0
        self._results: deque[bool] = deque(maxlen=window)
        self._lock = threading.Lock()
        self._queue: queue.Queue = queue.Queue(maxsize=1)
        self._pending = 0  # queued or running
        self._idle = threading.Condition(self._lock)
        self.comparisons = 0  # all comparisons made (the window holds the last `window`)
        self.submitted = 0
        self.skipped = 0  # handed a frame while busy: dropped
        self.errors = 0
        self.infer_ms: deque[float] = deque(maxlen=1000)
        self.warning: str | None = None
        self.priority_lowered: bool | None = None
        self._thread = threading.Thread(target=self._run, name="edgesqueeze-shadow", daemon=True)
        if start:
            self._thread.start()

    # -- main-loop side
    def submit(self, frame_index: int, frame: np.ndarray, int8_top1: int, *, wait: bool = False) -> bool:
        """Hand frame `frame_index` over when it is an `every`-th one; True if queued. The caller
        must not modify `frame` afterwards.

        wait=False (a live source): never blocks; a frame handed over while the worker is busy
        or resting (`max_load`) is skipped. wait=True (a recording read frame by frame): blocks
        until the worker takes it and ignores `max_load`, so every `every`-th frame is compared;
        the loop then runs no faster than the FP32 model allows on those frames."""
        if frame_index % self.every:
            return False
        item = (frame_index, frame, int8_top1)
        if wait:
            with self._lock:
                self._pending += 1  # before the put: the worker decrements when it is done
            try:
                while self._thread.is_alive():  # once closed, nothing would ever take it
                    try:
                        self._queue.put(item, timeout=0.5)
                        self.submitted += 1
                        return True
                    except queue.Full:
                        continue
            except BaseException:  # Ctrl-C while waiting: the frame was not handed over
                self._not_handed_over()
                raise
            self._not_handed_over()
            return False
        with self._lock:
            if self.max_load is not None and (self._pending or self._clock() < self._rest_until):
                self.skipped += 1  # busy (a queued frame would run without a rest) or resting
                self.rate_limited += not self._pending
                return False
            try:
                self._queue.put_nowait(item)
            except queue.Full:
                self.skipped += 1
                return False
            self._pending += 1
        self.submitted += 1
        return True

    def _not_handed_over(self) -> None:
        with self._lock:
            self._pending -= 1
            self.skipped += 1
            self._idle.notify_all()

    @property
    def agreement(self) -> float | None:
        """Percent of the last `window` comparisons whose top-1 matched; None before the first."""
        with self._lock:
            n = len(self._results)
            return 100.0 * sum(self._results) / n if n else None

    @property
    def in_window(self) -> int:
        with self._lock:
            return len(self._results)

    def record(self, int8_top1: int, fp32_top1: int) -> bool:
        """One comparison into the rolling window (the worker calls this; tests may too)."""
        same = int(int8_top1) == int(fp32_top1)
        with self._lock:
            self._results.append(same)
            self.comparisons += 1
            n = len(self._results)
            agree = 100.0 * sum(self._results) / n
        if n >= self.min_comparisons and agree < self.warn_below:
            msg = (f"INT8/FP32 top-1 agreement {agree:.1f} % over the last {n} compared frames is below "
                   f"{self.warn_below:g} %")
            if self.warning is None:
                log.warning("%s", msg)
            self.warning = msg
        elif self.warning is not None:
            log.warning("INT8/FP32 top-1 agreement back to %.1f %% (>= %g %%)", agree, self.warn_below)
            self.warning = None
        return same

    # -- worker side
    def _run(self) -> None:
        self.priority_lowered = lower_thread_priority(self.nice)
        while True:
            item = self._queue.get()
            if item is None:
                return
            _, frame, int8_top1 = item
            t0 = self._clock()
            try:
                top = self.classifier.classify(frame, top_k=1)
                self.infer_ms.append(float(getattr(self.classifier, "last_inference_ms", 0.0))
                                     or 1e3 * (self._clock() - t0))
                self.record(int8_top1, top[0].index)
            except Exception as e:  # noqa: BLE001 - the shadow must never take the demo down
                self.errors += 1
                if self.errors <= 3:
                    log.warning("FP32 shadow model failed on a frame: %s: %s", type(e).__name__, e)
            finally:
                self.rest_after(t0, self._clock())
                with self._lock:
                    self._pending -= 1
                    self._idle.notify_all()

    def rest_after(self, start: float, end: float) -> float:
        """After a run from `start` to `end` (clock time): no frame is taken until `end` plus
        the rest that keeps the duty cycle at `max_load`. Returns the rest in seconds."""
        if self.max_load is None:
            return 0.0
        rest = max(0.0, end - start) * (1.0 / self.max_load - 1.0)
        with self._lock:
            self._rest_until = end + rest
        return rest

    def wait_idle(self, timeout: float | None = None) -> bool:
        """Block until the queued work is done (tests, and the end of a run); False on timeout."""
        with self._lock:
            return self._idle.wait_for(lambda: self._pending == 0, timeout)

    def close(self, timeout: float = 2.0) -> None:
        """Finish the queued frame (at most `timeout` s), then stop the worker."""
        if not self._thread.is_alive():
            return
        self.wait_idle(timeout)
        try:
            self._queue.put(None, timeout=timeout)
        except queue.Full:
            return
        self._thread.join(timeout)

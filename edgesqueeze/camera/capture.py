"""Getting frames to the loop: a capture thread that keeps only the newest frame for a live
source (LatestFrame: a 1-slot holder, so the loop never works through a backlog; overwritten
frames are counted as dropped), or direct reads in the loop for a file (every frame).
"""

from __future__ import annotations

import threading
import time
from collections import deque
from dataclasses import dataclass

import numpy as np

from ..data import check_frame
from ..errors import DataError
from .sources import EndOfStream, FrameSource, SourceFailed


@dataclass(frozen=True)
class Captured:
    image: np.ndarray
    seq: int  # capture sequence number, 0-based (gaps = dropped frames)
    t: float  # time.perf_counter() when captured


class LatestFrame:
    """A 1-slot holder between a producer and a consumer: `put` overwrites an unread frame
    (counted in `dropped`), `get` takes the newest and leaves the slot empty. The consumer never
    sees a backlog, whatever the speeds."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._item: Captured | None = None
        self._seq = 0
        self._end: BaseException | None = None
        self.dropped = 0

    def put(self, image: np.ndarray, t: float | None = None) -> None:
        with self._cond:
            if self._item is not None:
                self.dropped += 1
            self._item = Captured(image, self._seq, time.perf_counter() if t is None else t)
            self._seq += 1
            self._cond.notify()

    def get(self, timeout: float | None = None) -> Captured | None:
        """The newest frame; None on timeout; raises the end (EndOfStream / SourceFailed) once the
        producer closed and the last frame was taken."""
        with self._cond:
            if self._item is None and self._end is None:
                self._cond.wait(timeout)
            item, self._item = self._item, None
            if item is None and self._end is not None:
                raise self._end
            return item

    def close(self, end: BaseException | None = None) -> None:
        with self._cond:
            self._end = end or EndOfStream("closed")
            self._cond.notify_all()


class Counters:
    """Counts shared by the capture side and the loop."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.bad = 0
        self.consecutive_bad = 0
        self.warnings: deque[str] = deque(maxlen=100)

    def bad_frame(self, why: str) -> int:
        with self.lock:
            self.bad += 1
            self.consecutive_bad += 1
            self.warnings.append(f"bad frame: {why}")
            return self.consecutive_bad

    def good_frame(self) -> None:
        self.consecutive_bad = 0

    def drain(self) -> list[str]:
        with self.lock:
            out = list(self.warnings)
            self.warnings.clear()
        return out


def read_checked(source: FrameSource, counters: Counters, max_consecutive_bad: int) -> np.ndarray | None:
    """One read: a checked frame, or None (counted as bad). EndOfStream/SourceFailed pass through."""
    try:
        raw = source.read()
    except (EndOfStream, SourceFailed, KeyboardInterrupt):
        raise
    except Exception as e:  # noqa: BLE001 - a source that raises: a bad frame, go on
        why = f"{source.name} raised {type(e).__name__}: {e}"
    else:
        try:
            frame = check_frame(raw, source=source.name)
        except DataError as e:
            why = str(e)
        else:
            counters.good_frame()
            return frame
    n = counters.bad_frame(why)
    if max_consecutive_bad > 0 and n >= max_consecutive_bad:
        raise SourceFailed(f"{source.name}: {n} bad frames in a row (last: {why})")
    return None


class CaptureThread:
    """Reads a source as fast as it delivers (or at `pace_fps`) into a LatestFrame."""

    direct = False  # frames come in real time: the loop may miss some

    def __init__(self, source: FrameSource, counters: Counters, *, pace_fps: float | None = None,
                 max_consecutive_bad: int = 1000):
        self.source, self.counters = source, counters
        self.holder = LatestFrame()
        self.pace = 1.0 / pace_fps if pace_fps else 0.0
        self.max_consecutive_bad = max_consecutive_bad
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="edgesqueeze-capture", daemon=True)

    def start(self) -> "CaptureThread":
        self._thread.start()
        return self

    def _run(self) -> None:
        end: BaseException | None = None
        next_t = time.perf_counter()
        try:
            while not self._stop.is_set():
                frame = read_checked(self.source, self.counters, self.max_consecutive_bad)
                if frame is None:
                    self._stop.wait(0.002)  # a source failing without blocking must not spin
                    continue
                self.holder.put(frame)
                if self.pace:
                    next_t += self.pace
                    delay = next_t - time.perf_counter()
                    if delay > 0:
                        self._stop.wait(delay)
                    else:
                        next_t = time.perf_counter()
        except (EndOfStream, SourceFailed) as e:
            end = e
        except BaseException as e:  # noqa: BLE001 - never die silently: end the stream with it
            end = SourceFailed(f"{self.source.name}: capture thread failed: {type(e).__name__}: {e}")
        self.holder.close(end)

    def next(self, timeout: float = 0.1) -> Captured | None:
        return self.holder.get(timeout)

    @property
    def dropped(self) -> int:
        return self.holder.dropped

    def stop(self, timeout: float = 2.0) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout)


class DirectFeed:
    """The source read in the loop itself: every frame processed, nothing dropped."""

    direct = True  # every frame reaches the loop: it may wait for the FP32 shadow
    dropped = 0

    def __init__(self, source: FrameSource, counters: Counters, max_consecutive_bad: int):
        self.source, self.counters, self.max_bad = source, counters, max_consecutive_bad
        self._seq = 0

    def next(self, timeout: float = 0.1) -> Captured | None:
        frame = read_checked(self.source, self.counters, self.max_bad)
        if frame is None:
            return None
        self._seq += 1
        return Captured(frame, self._seq - 1, time.perf_counter())

    def stop(self, timeout: float = 0.0) -> None:
        pass


def make_feed(source: FrameSource, counters: Counters, threaded: bool | None, pace_fps: float | None,
              max_consecutive_bad: int) -> CaptureThread | DirectFeed:
    """threaded None: a capture thread for a live source, direct reads for a file or folder."""
    if source.live if threaded is None else threaded:
        pace = None if source.live else (pace_fps or source.fps)
        return CaptureThread(source, counters, pace_fps=pace, max_consecutive_bad=max_consecutive_bad).start()
    return DirectFeed(source, counters, max_consecutive_bad)

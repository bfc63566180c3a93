"""The live view: what the web page shows, handed over by the loop without slowing it.

The loop calls `publish(image, result, annotated)` once per frame: a reference is stored under
a lock, nothing else (the frame is not copied, encoded or drawn on in the loop). One encoder
thread turns the newest frame into a JPEG only while a stream viewer is connected, at most
`serve_fps` times a second and at most once per frame, for all viewers together: each viewer
thread sends the newest JPEG when it is ready for one, so a slow viewer skips frames instead of
queueing them, and a viewer holds no buffer of its own.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections import OrderedDict, deque
from typing import Any, Callable

import numpy as np

from .loop import FrameResult
from .overlay import draw_overlay, overlay_lines
from .sources import _cv2

log = logging.getLogger("edgesqueeze.camera")

MAX_WARNINGS = 20  # distinct recent warnings the page lists


class LiveView:
    """The newest frame and its result (loop side), the newest JPEG (viewer side), the page's
    state (`state()`). `encoded` counts JPEGs made; `viewers` the connected streams."""

    def __init__(self, *, serve_fps: float = 10.0, shadow_window: int | None = None, title: str = "edgesqueeze",
                 jpeg_quality: int = 80, max_width: int = 1280, history: int = 120,
                 clock: Callable[[], float] = time.monotonic):
        self.serve_fps, self.shadow_window, self.title = float(serve_fps), shadow_window, title
        self.jpeg_quality, self.max_width = int(jpeg_quality), int(max_width)
        self._clock = clock
        self._lock = threading.Lock()
        self._new_frame = threading.Condition(self._lock)  # the encoder waits here
        self._new_jpeg = threading.Condition(self._lock)  # the viewers wait here
        self._frame: tuple[np.ndarray, FrameResult, bool] | None = None
        self._frame_seq = 0
        self._jpeg: bytes | None = None
        self._jpeg_id = 0
        self._viewers = 0
        self._closed = False
        self._stopped = threading.Event()
        self._warnings: OrderedDict[str, float] = OrderedDict()
        self._history: deque[float] = deque(maxlen=history)  # agreement at each new comparison
        self._comparisons = 0
        self.encoded = 0
        self.published = 0
        self._encoder = threading.Thread(target=self._encode_loop, name="edgesqueeze-jpeg", daemon=True)
        self._encoder.start()

    # -- loop side
    def publish(self, image: np.ndarray, result: FrameResult, annotated: bool = False) -> None:
        """The loop's newest frame (not modified afterwards), its result, and whether the overlay
        is drawn on it already. O(1): stores references and wakes the encoder when someone
        watches."""
        with self._lock:
            self._frame = (image, result, annotated)
            self._frame_seq += 1
            self.published += 1
            for w in result.warnings:
                self._warnings[w] = time.time()
                self._warnings.move_to_end(w)
                if len(self._warnings) > MAX_WARNINGS:
                    self._warnings.popitem(last=False)
            if result.comparisons != self._comparisons and result.agreement is not None:
                self._comparisons = result.comparisons
                self._history.append(round(result.agreement, 2))
            if self._viewers:
                self._new_frame.notify()

    # -- viewer side
    def open_stream(self) -> bool:
        """A stream viewer arrives (False once closed); pair with close_stream()."""
        with self._lock:
            if self._closed:
                return False
            self._viewers += 1
            self._new_frame.notify()  # encode the newest frame now, not at the next one
            return True

    def close_stream(self) -> None:
        with self._lock:
            self._viewers = max(0, self._viewers - 1)

    @property
    def viewers(self) -> int:
        return self._viewers

    @property
    def closed(self) -> bool:
        return self._closed

    def next_jpeg(self, after: int, timeout: float) -> tuple[int, bytes | None]:
        """(id, JPEG) of a newer JPEG than `after`, waiting up to `timeout` s; (after, None)
        when none came (or the view is closed)."""
        with self._lock:
            if self._jpeg_id == after and not self._closed:
                self._new_jpeg.wait(timeout)
            if self._jpeg_id == after or self._jpeg is None:
                return after, None
            return self._jpeg_id, self._jpeg

    def latest_jpeg(self) -> bytes | None:
        return self._jpeg

    def state(self) -> dict[str, Any]:
        """The page's data: the newest frame's result (`top` as [[label, score], ...] best
        first), the counts, recent warnings and the agreement history."""
        with self._lock:
            result = self._frame[1] if self._frame is not None else None
            warnings = list(self._warnings)
            history = list(self._history)
            viewers = self._viewers
        doc: dict[str, Any] = {
            "title": self.title, "running": not self._closed, "frame": None, "top": [], "fps": None,
            "infer_ms": None, "total_ms": None, "agreement": None, "comparisons": 0, "dropped": 0, "bad": 0,
            "shadow": self.shadow_window is not None, "window": self.shadow_window, "warnings": warnings,
            "agreement_history": history, "viewers": viewers, "serve_fps": self.serve_fps,
        }
        if result is not None:
            d = result.to_dict()
            doc.update({k: d[k] for k in ("frame", "seq", "fps", "infer_ms", "total_ms", "agreement",
                                          "comparisons", "dropped", "bad")})
            doc["top"] = d["top3"]
        for k, v in doc.items():  # JSON has no NaN: a runtime without timings gives None
            if isinstance(v, float) and not math.isfinite(v):
                doc[k] = None
        return doc

    # -- the encoder
    def _encode_loop(self) -> None:
        done_seq, next_t = 0, float("-inf")
        while True:
            with self._lock:
                while not self._closed and (self._viewers == 0 or self._frame_seq == done_seq):
                    self._new_frame.wait()
                if self._closed:
                    return
            delay = next_t - self._clock()
            if delay > 0 and self._stopped.wait(delay):  # the rate cap; close() ends the wait
                return
            with self._lock:
                frame, seq = self._frame, self._frame_seq
            next_t = self._clock() + 1.0 / self.serve_fps
            try:
                data = self.encode(*frame)
            except Exception as e:  # noqa: BLE001 - one bad frame must not end the stream
                log.debug("live view: cannot encode a frame: %s: %s", type(e).__name__, e)
                done_seq = seq
                continue
            with self._lock:
                self._jpeg, self._jpeg_id = data, self._jpeg_id + 1
                self.encoded += 1
                self._new_jpeg.notify_all()
            done_seq = seq

    def encode(self, image: np.ndarray, result: FrameResult, annotated: bool) -> bytes:
        """The JPEG of one frame: scaled to at most `max_width` wide, the overlay drawn on a copy
        unless the loop drew it already."""
        cv2 = _cv2()
        h, w = image.shape[:2]
        if w > self.max_width:
            image = cv2.resize(image, (self.max_width, max(1, round(h * self.max_width / w))),
                               interpolation=cv2.INTER_AREA)
        elif not annotated:
            image = image.copy()
        if not annotated:
            lines = overlay_lines(result.top3, result.fps, result.infer_ms, result.agreement, result.comparisons,
                                  self.shadow_window)
            draw_overlay(image, lines)
        ok, buf = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, self.jpeg_quality])
        if not ok:
            raise ValueError("OpenCV could not encode the frame as JPEG")
        return buf.tobytes()

    def close(self) -> None:
        """Stop the encoder and wake every viewer (their streams end)."""
        with self._lock:
            self._closed = True
            self._new_frame.notify_all()
            self._new_jpeg.notify_all()
        self._stopped.set()
        if self._encoder.is_alive() and self._encoder is not threading.current_thread():
            self._encoder.join(2.0)

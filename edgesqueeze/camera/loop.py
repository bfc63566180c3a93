"""The demo loop: take a frame, classify it, hand every N-th one to the FP32 shadow, draw the
overlay when someone looks (window, video, web page), report one FrameResult per frame and a
Summary at the end. Library code: it returns results and never prints.
"""

from __future__ import annotations

import logging
import statistics
import time
from collections import deque
from dataclasses import asdict, dataclass, field
from typing import Any, Callable

import numpy as np

from ..errors import DataError, InferenceError
from .capture import Counters, make_feed
from .overlay import CvWindow, VideoOut, draw_overlay, overlay_lines
from .shadow import ShadowTracker
from .sources import EndOfStream, FrameSource, SourceFailed

log = logging.getLogger("edgesqueeze.camera")

TOP_K = 3
MAX_WARNINGS_PER_FRAME = 10

# publish(image, result, annotated): the frame (not to be modified afterwards), its result, and
# whether the overlay is already drawn on it. The web view takes frames this way.
Publish = Callable[[np.ndarray, "FrameResult", bool], Any]


@dataclass(frozen=True)
class FrameResult:
    frame: int  # processed-frame index, 0-based
    seq: int  # capture sequence number (gaps: dropped frames)
    top3: tuple[tuple[str, float], ...]
    top1_index: int
    infer_ms: float  # the model's own inference time
    total_ms: float  # the loop's whole work on this frame, capture excluded
    fps: float | None  # rolling, over the last frames
    age_ms: float  # capture -> start of processing
    agreement: float | None  # rolling INT8/FP32 top-1 agreement, percent
    comparisons: int  # all made so far (the agreement covers the last `window` of them)
    warnings: tuple[str, ...] = ()  # new since the previous frame
    dropped: int = 0  # so far: frames a live source delivered that the loop never took
    bad: int = 0  # so far: unreadable or refused frames

    def to_dict(self) -> dict:
        return {
            "frame": self.frame, "seq": self.seq,
            "top3": [[label, round(score, 4)] for label, score in self.top3],
            "infer_ms": round(self.infer_ms, 3), "total_ms": round(self.total_ms, 3),
            "fps": None if self.fps is None else round(self.fps, 2),
            "age_ms": round(self.age_ms, 2),
            "agreement": None if self.agreement is None else round(self.agreement, 2),
            "comparisons": self.comparisons,
            "warnings": list(self.warnings),
            "dropped": self.dropped, "bad": self.bad,
        }


@dataclass(frozen=True)
class Summary:
    frames: int  # processed
    dropped: int  # overwritten in the latest-frame holder before the loop took them
    bad: int  # None / empty / wrong-type / unreadable / raising reads, and frames the model refused
    median_infer_ms: float | None
    median_frame_ms: float | None  # per-frame work, capture excluded
    p90_frame_ms: float | None
    fps: float | None  # frames / wall time of the loop
    agreement: float | None
    comparisons: int
    shadow_skipped: int
    reconnects: int
    elapsed_s: float
    stop_reason: str  # max-frames | end-of-stream | interrupted | quit | output-closed | source-failed: ...
    shadow_median_ms: float | None = None
    warnings: tuple[str, ...] = field(default=())

    @property
    def ok(self) -> bool:
        return not self.stop_reason.startswith("source-failed")

    def to_dict(self) -> dict:
        d = asdict(self)
        d["warnings"] = list(self.warnings)
        for k, v in d.items():
            if isinstance(v, float):
                d[k] = round(v, 3)
        return d


def _median(values) -> float | None:
    return float(statistics.median(values)) if values else None


def format_summary(s: Summary) -> str:
    def ms(v):
        return "n/a" if v is None else f"{v:.2f} ms"

    agree = "n/a" if s.agreement is None else f"{s.agreement:.1f} % (rolling; {s.comparisons} frames compared)"
    fps = "n/a" if s.fps is None else f"{s.fps:.1f}"
    return (f"{s.frames} frames processed, {s.dropped} dropped, {s.bad} bad; median inference {ms(s.median_infer_ms)}, "
            f"median per-frame {ms(s.median_frame_ms)} (capture excluded); {fps} FPS; FP32 agreement {agree}; "
            f"stopped: {s.stop_reason} after {s.elapsed_s:.1f} s")


class _Timings:
    """Per-frame times over the last `history` frames (bounded memory) and a rolling FPS."""

    def __init__(self, history: int, fps_window: int):
        self.infer: deque[float] = deque(maxlen=history)
        self.frame: deque[float] = deque(maxlen=history)
        self.done: deque[float] = deque(maxlen=max(2, fps_window))

    def add(self, infer_ms: float, frame_ms: float, t_done: float) -> None:
        self.infer.append(infer_ms)
        self.frame.append(frame_ms)
        self.done.append(t_done)

    def fps(self) -> float | None:
        d = self.done
        return (len(d) - 1) / (d[-1] - d[0]) if len(d) >= 2 and d[-1] > d[0] else None

    def p90_frame_ms(self) -> float | None:
        return float(np.percentile(list(self.frame), 90)) if self.frame else None


def _cap_warnings(warnings: list[str]) -> tuple[str, ...]:
    if len(warnings) > MAX_WARNINGS_PER_FRAME:
        more = len(warnings) - MAX_WARNINGS_PER_FRAME + 1
        warnings = warnings[: MAX_WARNINGS_PER_FRAME - 1] + [f"... and {more} more"]
    return tuple(warnings)


def run_loop(source: FrameSource, classifier, *, shadow: ShadowTracker | None = None, headless: bool = True,
             max_frames: int | None = None, on_frame: Callable[[FrameResult], Any] | None = None,
             display: CvWindow | None = None, writer: VideoOut | None = None, threaded: bool | None = None,
             pace_fps: float | None = None, max_consecutive_bad: int = 1000, fps_window: int = 30,
             history: int = 10_000, publish: Publish | None = None, shadow_wait: bool | None = None,
             clock: Callable[[], float] = time.perf_counter) -> Summary:
    """Classify frames from `source` until it ends, `max_frames` are processed, the window is
    closed (q/Esc), `on_frame` returns False, or Ctrl-C; returns the Summary (never raises for a
    bad frame, a failing source, a failing `publish` or KeyboardInterrupt).

    Per frame: classify (the classifier's one resize + crop, then the model) -> hand every N-th
    frame to `shadow` -> overlay, only when there is a window or a video to write (`headless`
    alone draws nothing) -> `on_frame(FrameResult)` -> `publish(image, result, annotated)` (the
    web view: it draws its own overlay on a copy when `annotated` is False). `total_ms` runs from
    the moment the frame is in hand to the end of the overlay/write/show: capture, and the wait
    for the shadow on a recording, are excluded.

    threaded: None -> a capture thread for live sources, direct reads for files. shadow_wait:
    None -> on direct reads the shadow compares every N-th frame (the loop waits for it), on a
    capture thread it skips frames while busy or resting (True/False force one or the other). pace_fps: the capture thread's rate for a non-live source
    (default its own fps). Medians are over the last `history` frames."""
    display = None if headless else display
    draw = display is not None or writer is not None
    counters = Counters()
    feed = make_feed(source, counters, threaded, pace_fps, max_consecutive_bad)
    times = _Timings(history, fps_window)
    wait = feed.direct if shadow_wait is None else bool(shadow_wait)
    all_warnings: deque[str] = deque(maxlen=50)
    publish_errors = 0
    n, stop_reason = 0, "end-of-stream"
    t_start = t_last = clock()
    try:
        while max_frames is None or n < max_frames:
            try:
                got = feed.next(0.1)
            except EndOfStream:
                break
            except SourceFailed as e:
                stop_reason = f"source-failed: {e}"
                break
            if got is None:  # a bad frame or no frame yet: keep the window responsive
                if display is not None and not display.poll():
                    stop_reason = "quit"
                    break
                continue
            t0 = clock()
            try:
                classes = classifier.classify(got.image, top_k=TOP_K)
            except (DataError, InferenceError) as e:  # the model refused the frame or the runtime failed once: go on
                counters.bad_frame(str(e))
                continue
            infer_ms = float(getattr(classifier, "last_inference_ms", float("nan")))
            top = tuple((c.label, float(c.score)) for c in classes[:TOP_K])
            image, agreement, comparisons, shadow_warning, waited = got.image, None, 0, None, 0.0
            if shadow is not None:
                t_wait = clock()
                if shadow.submit(n, image, classes[0].index, wait=wait) and draw:
                    image = image.copy()  # the worker reads this frame: draw on a copy
                if wait:
                    waited = clock() - t_wait
                agreement, comparisons, shadow_warning = shadow.agreement, shadow.comparisons, shadow.warning
            fps = times.fps()
            keep_going = True
            if draw:
                draw_overlay(image, overlay_lines(top, fps, infer_ms, agreement, comparisons,
                                                  shadow.window if shadow is not None else None), shadow_warning)
                if writer is not None:
                    writer.write(image)
                if display is not None:
                    keep_going = display.show(image)
            t_last = clock()
            times.add(infer_ms, 1e3 * (t_last - t0 - waited), t_last)
            warnings = counters.drain() + source.drain_warnings() + ([shadow_warning] if shadow_warning else [])
            all_warnings.extend(warnings)
            result = FrameResult(
                frame=n, seq=got.seq, top3=top, top1_index=int(classes[0].index), infer_ms=infer_ms,
                total_ms=times.frame[-1], fps=fps, age_ms=1e3 * (t0 - got.t), agreement=agreement,
                comparisons=comparisons, warnings=_cap_warnings(warnings), dropped=feed.dropped, bad=counters.bad)
            n += 1
            if on_frame is not None and on_frame(result) is False:
                stop_reason = "output-closed"
                break
            if publish is not None:
                try:
                    publish(image, result, draw)
                except Exception as e:  # noqa: BLE001 - the web view must never stop the classifier
                    publish_errors += 1
                    if publish_errors <= 3:
                        log.warning("live view failed on a frame: %s: %s", type(e).__name__, e)
            if not keep_going:
                stop_reason = "quit"
                break
        else:
            stop_reason = "max-frames"
    except KeyboardInterrupt:
        stop_reason = "interrupted"
    finally:
        feed.stop()
    if shadow is not None:
        try:
            shadow.wait_idle(2.0)  # let the frame in flight count
        except KeyboardInterrupt:
            pass
    elapsed = t_last - t_start
    return Summary(
        frames=n, dropped=feed.dropped, bad=counters.bad,
        median_infer_ms=_median(times.infer), median_frame_ms=_median(times.frame),
        p90_frame_ms=times.p90_frame_ms(), fps=n / elapsed if n and elapsed > 0 else None,
        agreement=shadow.agreement if shadow else None, comparisons=shadow.comparisons if shadow else 0,
        shadow_skipped=shadow.skipped if shadow else 0, reconnects=source.reconnects, elapsed_s=elapsed,
        stop_reason=stop_reason, shadow_median_ms=_median(shadow.infer_ms) if shadow else None,
        warnings=tuple(dict.fromkeys(all_warnings)),
    )

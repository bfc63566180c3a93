"""Real-time camera demo: the INT8 model on live frames, with an FP32 model tracking its accuracy.

Board-side: numpy, OpenCV and one runtime (`edgesqueeze.runtime`); never torch.

    source (camera / video / image folder / picamera2)
      -> capture thread -> LatestFrame (1 slot: a newer frame overwrites an unread one, so the
         loop never works through a backlog; overwritten frames are counted as dropped)
      -> run_loop: classify (one cv2.resize + crop, then the INT8 model) -> overlay / JSON line
      -> every N-th frame also handed to ShadowTracker: an FP32 model in one background worker
         thread (1-slot queue, work dropped when busy, lowered thread priority, busy at most
         `max_load` of one core) compares its top-1 with the INT8 top-1 of the same frame;
         rolling agreement over the last K.

Library code returns results (`FrameResult` per frame through a callback, `Summary` at the end);
`run_camera` (the `edgesqueeze camera` command and `demos/camera.py`) does the printing.

Capture modes: a live source (camera, picamera2, network stream) is read by a capture thread
(`threaded=True`); a video file or image folder is read in the loop itself by default, so every
frame is processed and results are reproducible. `threaded=True` on a file paces the capture
thread at the file's frame rate, so it behaves like a camera (frames dropped when the model is
slower than the video).

Thread priority: POSIX makes the nice value per process, so `os.nice()` is not a portable way to
slow down one thread. Linux keeps it per thread: `os.setpriority(os.PRIO_PROCESS,
threading.get_native_id(), n)` called from a thread changes that thread only (measured here; on
Linux glibc's nice() does the same through setpriority(PRIO_PROCESS, 0), but that is the
non-POSIX behaviour a reader would not expect, so the thread id is passed explicitly). The
shadow worker lowers itself by +10; where this fails (macOS, Windows) it runs at normal
priority, and it still never blocks the loop: work is handed over with a non-blocking put into
a 1-slot queue. Load the FP32 model with threads=1 so that its runtime computes in the worker
thread itself (threads it would start later inherit the lowered priority on Linux).

Rate: a lower priority only helps when a core is contended; on a 4-core Pi with the INT8 model
on all 4 cores the FP32 run (several times slower than INT8) would still take a core's worth of
memory bandwidth and cache whenever it runs. So the worker also caps its own duty cycle: after
a run of t seconds it rests t * (1 / max_load - 1) seconds (`--shadow-max-load`, default 0.25:
busy at most a quarter of one core on average, whatever the board's speed), and frames handed
over while it rests are skipped like frames handed over while it is busy.

Autostart: `--print-systemd-unit` prints a systemd service for the options given (absolute
paths, headless, restarted on failure, JSON lines to the journal) and `--install-systemd-unit
PATH` writes it atomically; `systemd_unit()` builds the text. demos/edgesqueeze-camera.service
is an example.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import queue
import statistics
import sys
import threading
import time
from collections import deque
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from .data import check_frame
from .errors import DataError, EdgeSqueezeError, InferenceError, OptionError, run_command

log = logging.getLogger("edgesqueeze.camera")

TOP_K = 3
BACKOFF_INITIAL_S = 0.5
BACKOFF_CAP_S = 8.0
MAX_WARNINGS_PER_FRAME = 10


# ---------------------------------------------------------------- errors and small helpers


class EndOfStream(Exception):
    """A source has no more frames (a video or a folder that is not looped ended)."""


class SourceFailed(EdgeSqueezeError, RuntimeError):
    """A source cannot deliver frames any more (camera gone after every reconnect attempt)."""


def _cv2():
    from .data import _cv2 as load

    return load()


class Backoff:
    """Exponential back-off: 0.5, 1, 2, 4, 8, 8, ... seconds; `reset()` after a success."""

    def __init__(self, initial: float = BACKOFF_INITIAL_S, cap: float = BACKOFF_CAP_S):
        self.initial, self.cap, self._n = initial, cap, 0

    def next(self) -> float:
        d = min(self.initial * (2**self._n), self.cap)
        self._n += 1
        return d

    def reset(self) -> None:
        self._n = 0


# ---------------------------------------------------------------- sources


class FrameSource:
    """Base: `read()` returns a frame (any array; the loop checks it) or None for a missing/bad
    frame this time, and raises EndOfStream when there are no more. `live` sources are read by
    a capture thread by default; `fps` paces a non-live source when it is read by one."""

    name = "source"
    live = False
    fps: float = 30.0

    def __init__(self) -> None:
        self._warnings: deque[str] = deque(maxlen=100)
        self.reconnects = 0

    def read(self) -> np.ndarray | None:  # pragma: no cover - interface
        raise NotImplementedError

    def close(self) -> None:
        pass

    def warn(self, message: str) -> None:
        self._warnings.append(message)
        log.warning("%s", message)

    def drain_warnings(self) -> list[str]:
        out = []
        while True:
            try:
                out.append(self._warnings.popleft())
            except IndexError:
                return out

    def __enter__(self) -> "FrameSource":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


class CameraSource(FrameSource):
    """A cv2.VideoCapture device (index, /dev/videoN) or stream URL, reconnecting when it fails.

    `fail_threshold` failed reads in a row release the device; the next read reopens it after a
    back-off wait (0.5 s, 1, 2, 4, 8, 8, ... reset by a good frame). More than `max_reconnects`
    attempts without a good frame in between raise SourceFailed (-1: try forever). `opener` and
    `sleep` are injectable (tests); `backoff_log` records every wait."""

    live = True

    def __init__(self, device: int | str, *, width: int | None = 640, height: int | None = 480,
                 max_reconnects: int = 10, fail_threshold: int = 5,
                 opener: Callable[[int | str], Any] | None = None,
                 sleep: Callable[[float], Any] | None = None, backoff: Backoff | None = None):
        super().__init__()
        self.device, self.width, self.height = device, width, height
        self.name = f"camera {device}"
        self.max_reconnects, self.fail_threshold = max_reconnects, max(1, fail_threshold)
        self._opener = opener or self._cv_open
        self._closed = threading.Event()
        self._sleep = sleep or self._closed.wait  # close() wakes a back-off wait
        self._backoff = backoff or Backoff()
        self._cap = None
        self._fails = 0
        self._attempts = 0  # reconnect attempts since the last good frame
        self.backoff_log: list[float] = []

    def _cv_open(self, device):
        cv2 = _cv2()
        cap = cv2.VideoCapture(device)
        if cap.isOpened():
            cap.set(cv2.CAP_PROP_BUFFERSIZE, 1)  # the driver's own queue: keep it short too
            if self.width and self.height:
                cap.set(cv2.CAP_PROP_FRAME_WIDTH, self.width)
                cap.set(cv2.CAP_PROP_FRAME_HEIGHT, self.height)
            fps = cap.get(cv2.CAP_PROP_FPS)
            if fps and 0 < fps < 1000:
                self.fps = float(fps)
        return cap

    def _try_open(self) -> bool:
        try:
            cap = self._opener(self.device)
        except Exception as e:  # a driver can raise instead of returning a closed capture
            log.debug("%s: open raised %s", self.name, e)
            return False
        if cap is not None and cap.isOpened():
            self._cap = cap
            return True
        if cap is not None:
            cap.release()
        return False

    def open(self) -> "CameraSource":
        """First open, without waiting: DataError when the device cannot be opened at all."""
        if not self._try_open():
            raise DataError(f"{self.name}: cannot open it (is it connected, and not used by another "
                            "program? list devices with `v4l2-ctl --list-devices`)")
        return self

    def _release(self) -> None:
        if self._cap is not None:
            try:
                self._cap.release()
            except Exception:  # noqa: BLE001 - a dead device may fail to release
                pass
            self._cap = None

    def _reconnect(self) -> None:
        while self._cap is None:
            if self._closed.is_set():
                raise EndOfStream(f"{self.name} closed")
            if 0 <= self.max_reconnects <= self._attempts:
                raise SourceFailed(f"{self.name}: no frames after {self._attempts} reconnect attempts "
                                   f"({sum(self.backoff_log[-self._attempts:]):.1f} s)")
            delay = self._backoff.next()
            self.backoff_log.append(delay)
            self._attempts += 1
            self.reconnects += 1
            self.warn(f"{self.name}: reconnecting in {delay:g} s (attempt {self._attempts})")
            self._sleep(delay)
            if self._closed.is_set():
                raise EndOfStream(f"{self.name} closed")
            self._try_open()

    def read(self) -> np.ndarray | None:
        if self._cap is None:
            self._reconnect()
        try:
            ok, frame = self._cap.read()
        except Exception as e:  # noqa: BLE001 - count it as a failed read
            log.debug("%s: read raised %s", self.name, e)
            ok, frame = False, None
        if ok and frame is not None:
            self._fails = self._attempts = 0
            self._backoff.reset()
            return frame
        self._fails += 1
        if self._fails >= self.fail_threshold:
            self.warn(f"{self.name}: {self._fails} failed reads in a row; releasing the device")
            self._fails = 0
            self._release()
        return None

    def close(self) -> None:
        self._closed.set()
        self._release()


class VideoSource(FrameSource):
    """A video file; EndOfStream at its end, or back to the start with `loop`."""

    def __init__(self, path: str | os.PathLike, *, loop: bool = False):
        super().__init__()
        cv2 = _cv2()
        self.path, self.loop = Path(path), loop
        self.name = str(self.path)
        if not self.path.is_file():
            raise DataError(f"{self.path}: no such video file")
        self._cap = cv2.VideoCapture(str(self.path))
        if not self._cap.isOpened():
            raise DataError(f"{self.path}: OpenCV cannot open this video (unknown format or codec)")
        fps = self._cap.get(cv2.CAP_PROP_FPS)
        self.fps = float(fps) if fps and 0 < fps < 1000 else 30.0
        self._pass_frames = 0

    def read(self) -> np.ndarray | None:
        ok, frame = self._cap.read()
        if ok:
            self._pass_frames += 1
            return frame
        if not self.loop or self._pass_frames == 0:
            raise EndOfStream(f"{self.path}: end of video")
        self._pass_frames = 0
        self._cap.set(_cv2().CAP_PROP_POS_FRAMES, 0)
        ok, frame = self._cap.read()
        if not ok:
            raise EndOfStream(f"{self.path}: cannot rewind the video")
        self._pass_frames = 1
        return frame

    def close(self) -> None:
        self._cap.release()


class FolderSource(FrameSource):
    """Image files, in name order, once or cycled (`loop`). An unreadable image is a warning and a
    bad frame (None), then the next one."""

    def __init__(self, files_or_folder: str | os.PathLike | Sequence[str | os.PathLike], *,
                 loop: bool = False, fps: float = 30.0):
        super().__init__()
        from .data import list_images

        if isinstance(files_or_folder, (str, os.PathLike)):
            p = Path(files_or_folder)
            self.files = list_images(p) if p.is_dir() else [p]
            self.name = str(p)
        else:
            self.files = [Path(f) for f in files_or_folder]
            self.name = f"{len(self.files)} images"
        if not self.files:
            raise DataError(f"{self.name}: no images in this folder")
        self.loop, self.fps = loop, fps
        self._i = 0
        self._good_this_pass = 0

    def read(self) -> np.ndarray | None:
        from .data import load_image

        if self._i >= len(self.files):
            if not self.loop or self._good_this_pass == 0:
                raise EndOfStream(f"{self.name}: no more images")
            self._i, self._good_this_pass = 0, 0
        path = self.files[self._i]
        self._i += 1
        try:
            img = load_image(path)
        except DataError as e:
            self.warn(f"skipped: {e}")
            return None
        self._good_this_pass += 1
        return img


class Picamera2Source(FrameSource):
    """The Raspberry Pi camera through picamera2 (libcamera). Format "RGB888" is, in libcamera's
    naming, B,G,R byte order: what OpenCV calls BGR, so frames need no conversion."""

    live = True
    name = "picamera2"

    def __init__(self, *, width: int = 640, height: int = 480):
        super().__init__()
        try:
            from picamera2 import Picamera2
        except ImportError:
            raise DataError("--source picamera2: the picamera2 module is not installed (on Raspberry Pi OS: "
                            "sudo apt install python3-picamera2; in a venv create it with "
                            "--system-site-packages); or use a camera index, e.g. --source 0") from None
        try:
            self._cam = Picamera2()
            cfg = self._cam.create_video_configuration(main={"size": (width, height), "format": "RGB888"})
            self._cam.configure(cfg)
            self._cam.start()
        except Exception as e:  # noqa: BLE001 - libcamera errors are plain RuntimeErrors
            raise DataError(f"picamera2: cannot start the camera ({e})") from None

    def read(self) -> np.ndarray | None:
        try:
            return self._cam.capture_array("main")
        except Exception as e:  # noqa: BLE001
            log.debug("picamera2: capture failed: %s", e)
            return None

    def close(self) -> None:
        try:
            self._cam.stop()
            self._cam.close()
        except Exception:  # noqa: BLE001
            pass


def open_source(spec: str, *, loop: bool = False, width: int = 640, height: int = 480,
                max_reconnects: int = 10, fps: float = 30.0) -> FrameSource:
    """`0` (camera index), `/dev/video0`, `rtsp://...`, `picamera2`, a video file, an image
    folder or a single image file."""
    from .data import IMAGE_SUFFIXES

    spec = str(spec)
    if spec == "picamera2":
        return Picamera2Source(width=width, height=height)
    if spec.isdigit() or spec.startswith("/dev/video"):
        dev: int | str = int(spec) if spec.isdigit() else spec
        return CameraSource(dev, width=width, height=height, max_reconnects=max_reconnects).open()
    if "://" in spec:
        return CameraSource(spec, width=None, height=None, max_reconnects=max_reconnects).open()
    p = Path(spec)
    if p.is_dir():
        return FolderSource(p, loop=loop, fps=fps)
    if p.is_file():
        if p.suffix.lower() in IMAGE_SUFFIXES:
            return FolderSource([p], loop=loop, fps=fps)
        return VideoSource(p, loop=loop)
    raise DataError(f"--source {spec}: no such file or folder, and not a camera index (0, 1, ...), "
                    "/dev/videoN, a stream URL or 'picamera2'")


# ---------------------------------------------------------------- latest-frame holder and capture


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


class _Counters:
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


def _read_checked(source: FrameSource, counters: _Counters, max_consecutive_bad: int) -> np.ndarray | None:
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

    def __init__(self, source: FrameSource, counters: _Counters, *, pace_fps: float | None = None,
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
                frame = _read_checked(self.source, self.counters, self.max_consecutive_bad)
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


class _DirectFeed:
    """The source read in the loop itself: every frame processed, nothing dropped."""

    dropped = 0

    def __init__(self, source: FrameSource, counters: _Counters, max_consecutive_bad: int):
        self.source, self.counters, self.max_bad = source, counters, max_consecutive_bad
        self._seq = 0

    def next(self, timeout: float = 0.1) -> Captured | None:
        frame = _read_checked(self.source, self.counters, self.max_bad)
        if frame is None:
            return None
        self._seq += 1
        return Captured(frame, self._seq - 1, time.perf_counter())

    def stop(self, timeout: float = 0.0) -> None:
        pass


# ---------------------------------------------------------------- shadow FP32 tracker


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
    the time; the frames refused while it rests are counted in `skipped` and `rate_limited`."""

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
    def submit(self, frame_index: int, frame: np.ndarray, int8_top1: int) -> bool:
        """Hand frame `frame_index` over when it is an `every`-th one; True if queued. The caller
        must not modify `frame` afterwards."""
        if frame_index % self.every:
            return False
        with self._lock:
            if self.max_load is not None and (self._pending or self._clock() < self._rest_until):
                self.skipped += 1  # busy (a queued frame would run without a rest) or resting
                self.rate_limited += not self._pending
                return False
            try:
                self._queue.put_nowait((frame_index, frame, int8_top1))
            except queue.Full:
                self.skipped += 1
                return False
            self._pending += 1
        self.submitted += 1
        return True

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


# ---------------------------------------------------------------- overlay, window, video out


def _short(label: str, n: int = 28) -> str:
    label = label.split(",")[0].strip() or label
    return label if len(label) <= n else label[: n - 1] + "~"


def draw_overlay(img: np.ndarray, lines: Sequence[str], warning: str | None = None) -> np.ndarray:
    """Text lines at the top left, white on a filled dark box (readable on any picture); the
    warning in red below them. Draws in place and returns `img`."""
    cv2 = _cv2()
    font, scale = cv2.FONT_HERSHEY_SIMPLEX, max(0.4, img.shape[1] / 1280.0)
    step = int(round(30 * scale)) + 6
    texts = [(t, (255, 255, 255)) for t in lines] + ([("! " + warning, (60, 60, 255))] if warning else [])
    width = max(cv2.getTextSize(t, font, scale, 1)[0][0] for t, _ in texts) if texts else 0
    cv2.rectangle(img, (0, 0), (min(width + 16, img.shape[1] - 1), step * len(texts) + 8), (0, 0, 0), -1)
    for i, (text, colour) in enumerate(texts):
        cv2.putText(img, text, (8, step * (i + 1)), font, scale, colour, 1, cv2.LINE_AA)
    return img


def gui_unavailable(environ=None) -> str | None:
    """Why cv2.imshow cannot work here, or None. Checked before any window call: a Qt build of
    OpenCV without a display aborts the whole process instead of raising."""
    env = os.environ if environ is None else environ
    info = _cv2().getBuildInformation()
    gui = info.split("GUI:", 1)[1].split("\n", 1)[0].strip() if "GUI:" in info else "?"
    if gui.upper() == "NONE":
        return "this OpenCV has no GUI support (opencv-python-headless; install opencv-python for a window)"
    if sys.platform.startswith("linux") and not (env.get("DISPLAY") or env.get("WAYLAND_DISPLAY")):
        return "no display (DISPLAY is not set)"
    return None


class CvWindow:
    """cv2.imshow; `show` returns False when q or Esc was pressed (or the window was closed)."""

    def __init__(self, title: str = "edgesqueeze"):
        cv2 = _cv2()
        self.title = title
        why = gui_unavailable()
        if why is None:
            try:
                cv2.namedWindow(title, cv2.WINDOW_AUTOSIZE)
            except cv2.error as e:
                why = f"OpenCV cannot open one ({' '.join(str(e).split())[:120]})"
        if why:
            raise OptionError(f"cannot open a window: {why}; use --headless (JSON lines) and/or --out video.mp4")
        self._shown = False

    def poll(self) -> bool:
        """Handle window events while no frame comes; False when q or Esc was pressed."""
        return (_cv2().waitKey(1) & 0xFF) not in (ord("q"), 27)

    def show(self, img: np.ndarray) -> bool:
        cv2 = _cv2()
        cv2.imshow(self.title, img)
        key = cv2.waitKey(1) & 0xFF
        if key in (ord("q"), 27):
            return False
        if self._shown and cv2.getWindowProperty(self.title, cv2.WND_PROP_VISIBLE) < 1:
            return False
        self._shown = True
        return True

    def close(self) -> None:
        try:
            _cv2().destroyWindow(self.title)
        except Exception:  # noqa: BLE001
            pass


class VideoOut:
    """Writes frames to a video file, opened on the first frame (its size); later frames of
    another size are resized. .mp4 -> mp4v, anything else (.avi, .mkv) -> MJPG."""

    def __init__(self, path: str | os.PathLike, fps: float = 30.0):
        self.path, self.fps = Path(path), fps
        if not self.path.parent.is_dir():
            raise DataError(f"--out {self.path}: folder {self.path.parent} does not exist")
        self._w = None
        self._size: tuple[int, int] | None = None
        self.frames = 0

    def write(self, img: np.ndarray) -> None:
        cv2 = _cv2()
        h, w = img.shape[:2]
        if self._w is None:
            code = "mp4v" if self.path.suffix.lower() in (".mp4", ".m4v", ".mov") else "MJPG"
            self._w = cv2.VideoWriter(str(self.path), cv2.VideoWriter_fourcc(*code), self.fps, (w, h))
            if not self._w.isOpened():
                raise DataError(f"--out {self.path}: OpenCV cannot write this video ({code}); try a .avi file")
            self._size = (w, h)
        if (w, h) != self._size:
            img = cv2.resize(img, self._size, interpolation=cv2.INTER_LINEAR)
        self._w.write(img)
        self.frames += 1

    def close(self) -> None:
        if self._w is not None:
            self._w.release()


# ---------------------------------------------------------------- the loop


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
    warnings: tuple[str, ...] = ()

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


def _make_feed(source: FrameSource, counters: _Counters, threaded: bool | None, pace_fps: float | None,
               max_consecutive_bad: int) -> CaptureThread | _DirectFeed:
    if source.live if threaded is None else threaded:
        pace = None if source.live else (pace_fps or source.fps)
        return CaptureThread(source, counters, pace_fps=pace, max_consecutive_bad=max_consecutive_bad).start()
    return _DirectFeed(source, counters, max_consecutive_bad)


def _overlay_lines(classes, fps: float | None, infer_ms: float, shadow: ShadowTracker | None,
                   agreement: float | None, comparisons: int) -> list[str]:
    lines = [f"{i + 1}. {_short(c.label)} {c.score:.2f}" for i, c in enumerate(classes)]
    lines.append(f"{fps or 0:.1f} FPS  infer {infer_ms:.1f} ms")
    if shadow is not None:
        lines.append("FP32 agree: n/a" if agreement is None else
                     f"FP32 agree {agreement:.0f}% (last {min(comparisons, shadow.window)})")
    return lines


def _cap_warnings(warnings: list[str]) -> tuple[str, ...]:
    if len(warnings) > MAX_WARNINGS_PER_FRAME:
        more = len(warnings) - MAX_WARNINGS_PER_FRAME + 1
        warnings = warnings[: MAX_WARNINGS_PER_FRAME - 1] + [f"... and {more} more"]
    return tuple(warnings)


def run_loop(source: FrameSource, classifier, *, shadow: ShadowTracker | None = None, headless: bool = True,
             max_frames: int | None = None, on_frame: Callable[[FrameResult], Any] | None = None,
             display: CvWindow | None = None, writer: VideoOut | None = None, threaded: bool | None = None,
             pace_fps: float | None = None, max_consecutive_bad: int = 1000, fps_window: int = 30,
             history: int = 10_000, clock: Callable[[], float] = time.perf_counter) -> Summary:
    """Classify frames from `source` until it ends, `max_frames` are processed, the window is
    closed (q/Esc), `on_frame` returns False, or Ctrl-C; returns the Summary (never raises for a
    bad frame, a failing source or KeyboardInterrupt).

    Per frame: classify (the classifier's one resize + crop, then the model) -> hand every N-th
    frame to `shadow` (non-blocking) -> overlay, only when there is a window or a video to write
    (`headless` alone draws nothing) -> `on_frame(FrameResult)`. `total_ms` runs from the moment
    the frame is in hand to the end of the overlay/write/show: capture is excluded.

    threaded: None -> a capture thread for live sources, direct reads for files. pace_fps: the
    capture thread's rate for a non-live source (default its own fps). Medians are over the last
    `history` frames."""
    display = None if headless else display
    draw = display is not None or writer is not None
    counters = _Counters()
    feed = _make_feed(source, counters, threaded, pace_fps, max_consecutive_bad)
    times = _Timings(history, fps_window)
    all_warnings: deque[str] = deque(maxlen=50)
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
            image, agreement, comparisons, shadow_warning = got.image, None, 0, None
            if shadow is not None:
                if shadow.submit(n, image, classes[0].index) and draw:
                    image = image.copy()  # the worker reads this frame: draw on a copy
                agreement, comparisons, shadow_warning = shadow.agreement, shadow.comparisons, shadow.warning
            fps = times.fps()
            keep_going = True
            if draw:
                draw_overlay(image, _overlay_lines(classes, fps, infer_ms, shadow, agreement, comparisons),
                             shadow_warning)
                if writer is not None:
                    writer.write(image)
                if display is not None:
                    keep_going = display.show(image)
            t_last = clock()
            times.add(infer_ms, 1e3 * (t_last - t0), t_last)
            warnings = counters.drain() + source.drain_warnings() + ([shadow_warning] if shadow_warning else [])
            all_warnings.extend(warnings)
            result = FrameResult(
                frame=n, seq=got.seq, top3=tuple((c.label, float(c.score)) for c in classes[:TOP_K]),
                top1_index=int(classes[0].index), infer_ms=infer_ms, total_ms=times.frame[-1], fps=fps,
                age_ms=1e3 * (t0 - got.t), agreement=agreement, comparisons=comparisons,
                warnings=_cap_warnings(warnings))
            n += 1
            if on_frame is not None and on_frame(result) is False:
                stop_reason = "output-closed"
                break
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


# ---------------------------------------------------------------- command line


EXAMPLES = """examples:
  edgesqueeze camera --model export/squeezenet1_0-affine-int8.tflite --source 0
  edgesqueeze camera --model m.tflite --source picamera2 --fp32 export/squeezenet1_0-fp32.onnx
  edgesqueeze camera --model m.tflite --source clip.mp4 --headless --max-frames 100 > frames.jsonl
  edgesqueeze camera --model m.tflite --source images/ --loop --headless --out annotated.avi

autostart at boot (systemd; the unit runs these options headless, restarts on failure, JSON
lines go to the journal: journalctl -u edgesqueeze-camera -f -o cat):
  edgesqueeze camera --model m.tflite --source 0 --print-systemd-unit
  sudo $(command -v edgesqueeze) camera --model m.tflite --source 0 \\
      --install-systemd-unit /etc/systemd/system/edgesqueeze-camera.service \\
      && sudo systemctl daemon-reload && sudo systemctl enable --now edgesqueeze-camera
"""


def _default_model() -> str | None:
    found = sorted(Path("export").glob("*-int8.tflite")) + sorted(Path("export").glob("*-int8.onnx"))
    return str(found[0]) if found else None


def configure_parser(p: argparse.ArgumentParser) -> argparse.ArgumentParser:
    p.add_argument("--model", help="the INT8 model (.tflite or .onnx; default: the first export/*-int8.tflite)")
    p.add_argument("--source", default="0",
                   help="camera index (0), /dev/videoN, stream URL, 'picamera2', a video file, an image "
                   "folder or an image (default 0)")
    p.add_argument("--loop", action="store_true", help="restart a video or image folder at its end")
    p.add_argument("--headless", action="store_true",
                   help="no window: one JSON line per processed frame on stdout, summary line last")
    p.add_argument("--max-frames", type=int, default=None, metavar="N", help="stop after N processed frames")
    p.add_argument("--out", metavar="VIDEO", help="also write the annotated frames to this video (.mp4 / .avi)")
    p.add_argument("--fp32", metavar="MODEL", help="FP32 model (.onnx or .tflite) to track INT8 agreement live")
    p.add_argument("--shadow-every", type=int, default=10, metavar="N",
                   help="run the FP32 model on every N-th frame (10)")
    p.add_argument("--window", type=int, default=50, metavar="K",
                   help="rolling agreement over the last K comparisons (50)")
    p.add_argument("--warn-below", type=float, default=90.0, metavar="PCT",
                   help="warn when the rolling agreement falls below this percentage (90)")
    p.add_argument("--min-comparisons", type=int, default=10, help="no warning before this many comparisons (10)")
    p.add_argument("--shadow-max-load", type=float, default=0.25, metavar="FRACTION",
                   help="the FP32 worker rests after each run so that it is busy at most this fraction of "
                   "one core (0.25); frames handed over while it rests are skipped")
    p.add_argument("--threads", type=int, default=None,
                   help="inference threads of the INT8 model (default: every core this process may use)")
    p.add_argument("--max-reconnects", type=int, default=10,
                   help="camera reconnect attempts without a frame before giving up (-1: forever; 10)")
    p.add_argument("--capture", choices=["auto", "thread", "direct"], default="auto",
                   help="auto: capture thread for cameras, direct reads (every frame) for files; "
                   "thread on a file plays it in real time, dropping frames the model cannot keep up with")
    p.add_argument("--width", type=int, default=640, help="camera frame width to request (640)")
    p.add_argument("--height", type=int, default=480, help="camera frame height to request (480)")
    p.add_argument("--fps", type=float, default=30.0,
                   help="rate of an image folder, and of --out when the source has none (30)")
    svc = p.add_argument_group("autostart (systemd)")
    how = svc.add_mutually_exclusive_group()
    how.add_argument("--print-systemd-unit", action="store_true",
                     help="print a systemd service that runs this command (headless) at boot, then exit")
    how.add_argument("--install-systemd-unit", metavar="PATH",
                     help="write that service to PATH (a .service file, e.g. /etc/systemd/system/"
                     "edgesqueeze-camera.service; written whole or not at all), then exit")
    svc.add_argument("--unit-user", metavar="USER",
                     help="User= of the service (default: who runs this; under sudo, $SUDO_USER)")
    return p


def add_camera_parser(subparsers) -> argparse.ArgumentParser:
    """`edgesqueeze camera ...`: add to the CLI's subparsers (sets func=run_camera)."""
    p = subparsers.add_parser("camera", help="real-time demo: INT8 model on a camera, video or folder, "
                              "live FP32 agreement", epilog=EXAMPLES,
                              formatter_class=argparse.RawDescriptionHelpFormatter)
    configure_parser(p)
    p.set_defaults(func=run_camera)
    return p


def _check_args(args) -> None:
    if args.max_frames is not None and args.max_frames < 1:
        raise OptionError(f"--max-frames {args.max_frames}: must be at least 1")
    if args.shadow_every < 1:
        raise OptionError(f"--shadow-every {args.shadow_every}: must be at least 1")
    if args.window < 1:
        raise OptionError(f"--window {args.window}: must be at least 1")
    if not 0 <= args.warn_below <= 100:
        raise OptionError(f"--warn-below {args.warn_below}: a percentage, 0 to 100")
    if args.fps <= 0:
        raise OptionError(f"--fps {args.fps}: must be positive")
    if args.shadow_max_load is not None and not 0 < args.shadow_max_load <= 1:
        raise OptionError(f"--shadow-max-load {args.shadow_max_load}: a fraction of one core, above 0 and at most 1")


def _print_json(doc: dict) -> bool:
    try:
        sys.stdout.write(json.dumps(doc) + "\n")
        sys.stdout.flush()
        return True
    except BrokenPipeError:  # `| head`: stop quietly
        try:
            sys.stdout = open(os.devnull, "w")  # noqa: SIM115 - avoid a second error at exit
        except OSError:
            pass
        return False


def _setup_logging() -> None:
    if not log.handlers:
        h = logging.StreamHandler(sys.stderr)
        h.setFormatter(logging.Formatter("edgesqueeze camera: %(message)s"))
        log.addHandler(h)
        log.setLevel(logging.WARNING)
        log.propagate = False


# ---------------------------------------------------------------- autostart (systemd)


UNIT_NAME = "edgesqueeze-camera.service"
_UNIT_EXCLUDED = {"help", "model", "source", "headless", "fp32", "out", "print_systemd_unit",
                  "install_systemd_unit", "unit_user"}
_SYSTEMD_SAFE = set("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_-+=.,/:@")


def systemd_quote(arg: str) -> str:
    """One ExecStart= word: as is when it has only safe characters, else double-quoted with \\
    and " escaped. `%` (a unit specifier) is written %% and `$` (variable expansion) $$, so
    systemd passes the text through unchanged. Control characters (a newline would end the
    line and could add a directive) are refused."""
    if any(ord(c) < 32 or ord(c) == 127 for c in arg):
        raise OptionError(f"{arg!r}: a control character (newline, tab, ...) cannot go into a systemd unit; "
                          "rename the file or folder")
    text = arg.replace("%", "%%").replace("$", "$$")
    if arg and set(arg) <= _SYSTEMD_SAFE:
        return text
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _unit_model(option: str, path: str) -> str:
    """The absolute path of a model file that exists and is a .tflite/.onnx model (its bytes are
    checked as Classifier.load checks them, without loading a runtime): ModelFileError if not."""
    from .runtime import _format_of, _read_model_bytes

    p = Path(path).expanduser().absolute()
    try:
        _format_of(p, _read_model_bytes(p))
    except DataError as e:
        raise type(e)(f"{option}: {e}") from None
    return str(p)


def _unit_source(spec: str) -> str:
    """A camera index, /dev/videoN, URL or picamera2 as it is; a file or folder made absolute
    (the service starts in WorkingDirectory, not here); DataError when it does not exist."""
    if spec == "picamera2" or spec.isdigit() or spec.startswith("/dev/video") or "://" in spec:
        return spec
    p = Path(spec).expanduser()
    if not p.exists():
        raise DataError(f"--source {spec}: no such file or folder, and not a camera index (0, 1, ...), "
                        "/dev/videoN, a stream URL or 'picamera2'")
    return str(p.absolute())


def _unit_user(args) -> str:
    import getpass

    user = args.unit_user
    if not user:
        sudo_user = os.environ.get("SUDO_USER")
        user = sudo_user if sudo_user and hasattr(os, "geteuid") and os.geteuid() == 0 else getpass.getuser()
    try:
        import pwd
    except ImportError:  # pragma: no cover - not POSIX: no systemd either
        return user
    try:
        pwd.getpwnam(user)
    except KeyError:
        raise OptionError(f"--unit-user {user}: no such user on this machine; name an existing user "
                          "(the one in the 'video' group that owns the camera)") from None
    return user


def unit_command(args, *, python: str | None = None) -> list[str]:
    """The argv of the service: this Python (`sys.executable`, not resolved: in a venv it must
    stay the venv's python) -m edgesqueeze.cli camera, absolute paths, --headless, and every
    other option that differs from its default."""
    _check_args(args)
    model = args.model or _default_model()
    if not model:
        raise OptionError("no --model given and no export/*-int8.tflite here; pass --model PATH")
    argv = [os.path.abspath(python or sys.executable), "-m", "edgesqueeze.cli", "camera",
            "--model", _unit_model("--model", model), "--source", _unit_source(str(args.source)), "--headless"]
    if args.fp32:
        argv += ["--fp32", _unit_model("--fp32", args.fp32)]
    if args.out:
        out = Path(args.out).expanduser().absolute()
        if not out.parent.is_dir():
            raise OptionError(f"--out {args.out}: folder {out.parent} does not exist; create it first")
        argv += ["--out", str(out)]
    for action in configure_parser(argparse.ArgumentParser(add_help=False))._actions:
        if action.dest in _UNIT_EXCLUDED or not action.option_strings:
            continue
        value = getattr(args, action.dest, action.default)
        if value == action.default:
            continue
        flag = action.option_strings[0]
        argv += [flag] if isinstance(action, argparse._StoreTrueAction) else [flag, str(value)]
    return argv


def systemd_unit(args, *, python: str | None = None, user: str | None = None,
                 workdir: str | os.PathLike | None = None) -> str:
    """A systemd service that runs `edgesqueeze camera` with these options at boot: headless
    (one JSON line per frame on stdout -> the journal), restarted 5 s after any failure (exit 1:
    the camera is gone; 2: it could not be opened, e.g. not yet there at boot), never given up;
    `systemctl stop` sends SIGTERM, which ends the loop like Ctrl-C (summary, exit 0).
    Raises ModelFileError / DataError / OptionError for a model, source or user that does not
    exist, before anything is printed or written."""
    argv = unit_command(args, python=python)
    user = user or _unit_user(args)
    workdir = Path(workdir or Path.cwd()).absolute()
    source = argv[argv.index("--source") + 1]
    network = "://" in source  # a stream: start once the network is up
    for value in (user, str(workdir)):
        systemd_quote(value)  # refuses control characters
    exec_start = " ".join(systemd_quote(a) for a in argv)
    lines = [
        f"# {UNIT_NAME}: the edgesqueeze camera demo at boot.",
        "# Written by `edgesqueeze camera ... --print-systemd-unit`. Install it with",
        f"#   sudo cp THIS_FILE /etc/systemd/system/{UNIT_NAME}",
        "#   sudo systemctl daemon-reload && sudo systemctl enable --now edgesqueeze-camera",
        "# Its JSON lines (one per frame, summary last): journalctl -u edgesqueeze-camera -f -o cat",
        "# The user needs the camera: on Raspberry Pi OS, membership of the 'video' group.",
        "[Unit]",
        f"Description=edgesqueeze camera demo ({Path(argv[argv.index('--model') + 1]).name} on {source})".replace(
            "%", "%%"),
        "After=network-online.target" if network else "After=network.target",
        *(["Wants=network-online.target"] if network else []),
        "# restart however often it fails (by default systemd gives up after 5 starts in 10 s)",
        "StartLimitIntervalSec=0",
        "",
        "[Service]",
        "Type=simple",
        f"User={user}",
        f"WorkingDirectory={systemd_quote(str(workdir))}",
        "Environment=PYTHONUNBUFFERED=1",
        f"ExecStart={exec_start}",
        "Restart=on-failure",
        "RestartSec=5",
        "StandardOutput=journal",
        "StandardError=journal",
        "SyslogIdentifier=edgesqueeze-camera",
        "# SIGTERM ends the loop like Ctrl-C: a summary line, exit 0 (not restarted)",
        "KillSignal=SIGTERM",
        "TimeoutStopSec=15",
        "",
        "[Install]",
        "WantedBy=multi-user.target",
    ]
    return "\n".join(lines) + "\n"


def _systemd(args) -> int:
    """--print-systemd-unit / --install-systemd-unit: the whole unit is built (and every path
    checked) first; it is printed, or written through atomic_output (all or nothing)."""
    target = None
    if args.install_systemd_unit:
        target = Path(args.install_systemd_unit).expanduser()
        if target.suffix != ".service":
            raise OptionError(f"--install-systemd-unit {target}: a systemd service file name must end in "
                              f".service, e.g. /etc/systemd/system/{UNIT_NAME}")
        from .export.files import check_output_path

        check_output_path(target)  # a missing or read-only folder: say so before anything else
    text = systemd_unit(args)
    if target is None:
        sys.stdout.write(text)
        sys.stdout.flush()
        return 0
    from .export.files import atomic_output

    with atomic_output(target) as tmp:
        tmp.write_text(text, encoding="utf-8")
    print(f"edgesqueeze camera: wrote {target}; now: sudo systemctl daemon-reload && "
          f"sudo systemctl enable --now {target.stem}", file=sys.stderr)
    return 0


def run_camera(args) -> int:
    """The `edgesqueeze camera` command. 0 on a normal end (end of the video, --max-frames, q/Esc,
    Ctrl-C: all with a summary on stderr), 1 when the source failed for good."""
    import signal

    _check_args(args)
    if getattr(args, "print_systemd_unit", False) or getattr(args, "install_systemd_unit", None):
        return _systemd(args)  # nothing is opened or loaded
    _setup_logging()
    model = args.model or _default_model()
    if not model:
        raise OptionError("no --model given and no export/*-int8.tflite here; pass --model PATH "
                          "(make one with `edgesqueeze quantize`)")
    from .runtime import Classifier

    classifier = Classifier.load(model, threads=args.threads)
    fp32 = Classifier.load(args.fp32, threads=1) if args.fp32 else None
    if fp32 is not None and len(fp32.metadata.labels) != len(classifier.metadata.labels):
        raise OptionError(f"--fp32 {args.fp32} has {len(fp32.metadata.labels)} classes, the INT8 model "
                          f"{len(classifier.metadata.labels)}: they must be the same network")
    on_frame = (lambda r: _print_json(r.to_dict())) if args.headless else None
    threaded = {"auto": None, "thread": True, "direct": False}[args.capture]
    source = writer = display = shadow = None
    old_term = None
    if threading.current_thread() is threading.main_thread():
        def _term(signum, frame):  # SIGTERM (systemd, docker stop) ends the loop like Ctrl-C
            raise KeyboardInterrupt
        old_term = signal.signal(signal.SIGTERM, _term)
    try:
        display = None if args.headless else CvWindow(f"edgesqueeze - {Path(model).name}")
        source = open_source(args.source, loop=args.loop, width=args.width, height=args.height,
                             max_reconnects=args.max_reconnects, fps=args.fps)
        if args.out:
            writer = VideoOut(args.out, fps=source.fps if isinstance(source, VideoSource) else args.fps)
        if fp32 is not None:
            shadow = ShadowTracker(fp32, every=args.shadow_every, window=args.window, warn_below=args.warn_below,
                                   max_load=args.shadow_max_load,
                                   min_comparisons=args.min_comparisons)
        summary = run_loop(source, classifier, shadow=shadow, headless=args.headless, max_frames=args.max_frames,
                           on_frame=on_frame, display=display, writer=writer, threaded=threaded)
    finally:
        if old_term is not None:
            signal.signal(signal.SIGTERM, old_term)
        for thing in (shadow, source, writer, display):
            if thing is not None:
                thing.close()
    print(f"edgesqueeze camera: {format_summary(summary)}", file=sys.stderr)
    if writer is not None:
        print(f"edgesqueeze camera: wrote {writer.frames} annotated frames to {writer.path}", file=sys.stderr)
    if args.headless:
        _print_json({"summary": True, **summary.to_dict()})
    return 0 if summary.ok else 1


def main(argv: list[str] | None = None) -> int:
    """Stand-alone entry point (demos/camera.py): errors are one line, exit code 2."""
    p = argparse.ArgumentParser(prog="camera", description="Real-time INT8 SqueezeNet demo with live FP32 "
                                "agreement tracking.", epilog=EXAMPLES,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    configure_parser(p)
    args = p.parse_args(argv)
    return run_command("camera", lambda: run_camera(args))

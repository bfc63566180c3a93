"""Frame sources: a camera (OpenCV device or stream URL, reconnecting with back-off), the
Raspberry Pi camera (picamera2), a video file, an image folder; `open_source` picks one from
the `--source` text.

A source's `read()` returns a frame, or None for a missing or bad frame this time, and raises
EndOfStream when there are no more. `live` sources are read by a capture thread by default
(see capture.py); files are read in the loop itself, every frame.
"""

from __future__ import annotations

import logging
import os
import threading
from collections import deque
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from ..errors import DataError, EdgeSqueezeError

log = logging.getLogger("edgesqueeze.camera")

BACKOFF_INITIAL_S = 0.5
BACKOFF_CAP_S = 8.0


class EndOfStream(Exception):
    """A source has no more frames (a video or a folder that is not looped ended)."""


class SourceFailed(EdgeSqueezeError, RuntimeError):
    """A source cannot deliver frames any more (camera gone after every reconnect attempt)."""


def _cv2():
    from ..data import _cv2 as load

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
        from ..data import list_images

        if isinstance(files_or_folder, (str, os.PathLike)):
            p = Path(files_or_folder)
            self.files = list_images(p) if p.is_dir() else [p]
            self.name = str(p)
        else:
            self.files = [Path(f) for f in files_or_folder]
            self.name = str(self.files[0]) if len(self.files) == 1 else f"{len(self.files)} images"
        if not self.files:
            raise DataError(f"{self.name}: no images in this folder")
        self.loop, self.fps = loop, fps
        self._i = 0
        self._good_this_pass = 0

    def read(self) -> np.ndarray | None:
        from ..data import load_image

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
    from ..data import IMAGE_SUFFIXES

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
